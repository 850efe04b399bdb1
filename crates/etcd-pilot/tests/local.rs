//! `etcd-pilot local up`, the main job, run as a user would: start, use, Ctrl-C, start again.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test helpers may unwrap and spawn.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Version, etcd_bin, eventually, get, pilot_bin, put};

/// A `local up` process, stopped (and so its cluster) when dropped, even when the test fails.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            common::signal(self.0.id(), libc::SIGINT);
            let _ = common::wait_child(&mut self.0, Duration::from_secs(60));
        }
    }
}

#[allow(clippy::disallowed_methods)]
fn local_up(dir: &std::path::Path, etcd: &std::path::Path, out: &std::path::Path) -> Stopped {
    let child = Command::new(pilot_bin())
        .args(["local", "up", "--members", "3", "--subnet", "127.0.33"])
        .arg("--dir")
        .arg(dir)
        .arg("--etcd-bin")
        .arg(etcd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Stopped(child)
}

/// Interrupts `local up` as Ctrl-C would and checks it stops everything and exits 0.
fn interrupt(mut child: Stopped, dir: &std::path::Path) {
    let pids: Vec<u32> = (1..=3)
        .filter_map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("m{i}/data/etcd.pid"))).ok()?;
            text.lines().next()?.parse().ok()
        })
        .collect();
    assert_eq!(pids.len(), 3, "every member has a running etcd");
    common::signal(child.0.id(), libc::SIGINT);
    let status = common::wait_child(&mut child.0, Duration::from_secs(60)).expect("local up stops");
    assert_eq!(status.code(), Some(0));
    for pid in pids {
        assert!(!common::alive(pid), "etcd {pid} still running");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn local_up_runs_a_cluster_and_restarts_it_with_its_data() {
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let out = tmp.path().join("out.txt");
    let endpoints: Vec<String> = (1..=3)
        .map(|i| format!("http://127.0.33.{i}:2379"))
        .collect();

    let child = local_up(&dir, &etcd, &out);
    let text = eventually("cluster ready", Duration::from_secs(90), || async {
        let text = std::fs::read_to_string(&out).ok()?;
        text.contains("Ctrl-C stops the cluster").then_some(text)
    })
    .await;
    assert!(text.contains("cluster ready in"), "{text}");
    assert!(
        text.contains(&format!("client endpoints: {}", endpoints.join(","))),
        "{text}"
    );
    assert!(text.contains("etcdctl --endpoints="), "{text}");
    put(&endpoints[0], "survives", "restart").await;
    #[allow(clippy::disallowed_methods)]
    let status = Command::new(pilot_bin())
        .arg("status")
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    let healthy_rows = table
        .lines()
        .filter(|l| l.starts_with('m') && l.contains(" healthy "))
        .count();
    assert_eq!(healthy_rows, 3, "{table}");
    assert!(
        table.contains("fault tolerance: can lose 1 more member"),
        "{table}"
    );
    assert_eq!(table.matches("leader").count(), 1, "{table}");
    interrupt(child, &dir);

    let child = local_up(&dir, &etcd, &out);
    eventually("cluster ready again", Duration::from_secs(90), || async {
        std::fs::read_to_string(&out)
            .ok()?
            .contains("Ctrl-C stops the cluster")
            .then_some(())
    })
    .await;
    assert_eq!(
        get(&endpoints[2], "survives").await.as_deref(),
        Some("restart")
    );
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("m{i}/pilot.log"))).unwrap();
        assert_eq!(
            log.matches("bootstrapping a new cluster").count(),
            1,
            "m{i} bootstrapped once"
        );
        assert!(log.contains("restarting etcd on its data"), "m{i}");
    }
    interrupt(child, &dir);
}

#[test]
fn local_up_refuses_a_member_count_that_does_not_match_the_dir() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("peers.toml"),
        "[[peers]]\nname = \"m1\"\npeer_url = \"http://127.0.34.1:2380\"\nclient_url = \"http://127.0.34.1:2379\"\n",
    )
    .unwrap();
    #[allow(clippy::disallowed_methods)]
    let output = Command::new(pilot_bin())
        .args([
            "local",
            "up",
            "--members",
            "3",
            "--etcd-bin",
            "/bin/sh",
            "--subnet",
            "127.0.34",
        ])
        .arg("--dir")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("holds a cluster of 1 members; pass --members 1"),
        "{stderr}"
    );
    #[allow(clippy::disallowed_methods)]
    let output = Command::new(pilot_bin())
        .args(["local", "up", "--members", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}

/// `etcd-pilot local up | head -n 3`, then Ctrl-C: the pipe is closed long before, and
/// `local up` still stops its pilots and their etcd, within 15 s.
#[tokio::test(flavor = "multi_thread")]
async fn local_up_with_a_closed_stdout_still_stops_its_cluster_on_ctrl_c() {
    use std::io::BufRead as _;
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let mut child = Command::new(pilot_bin())
        .args(["local", "up", "--members", "3", "--subnet", "127.0.78"])
        .arg("--dir")
        .arg(&dir)
        .arg("--etcd-bin")
        .arg(&etcd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `head -n 3`: read three lines, then close the pipe.
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let pids: Vec<u32> = eventually("three etcd running", Duration::from_secs(90), || {
        let pids: Vec<u32> = (1..=3)
            .filter_map(|i| {
                let text = std::fs::read_to_string(dir.join(format!("m{i}/data/etcd.pid"))).ok()?;
                text.lines().next()?.parse().ok()
            })
            .collect();
        async move { (pids.len() == 3).then_some(pids) }
    })
    .await;
    let pilots: Vec<u32> = (1..=3)
        .filter_map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("m{i}/pilot.pid"))).ok()?;
            text.lines().next()?.parse().ok()
        })
        .collect();
    assert_eq!(pilots.len(), 3);
    common::signal(child.id(), libc::SIGINT);
    let status = common::wait_child(&mut child, Duration::from_secs(15))
        .expect("local up stops within 15 s with its stdout closed");
    assert_eq!(status.code(), Some(0));
    for pid in pids.into_iter().chain(pilots) {
        assert!(!common::alive(pid), "process {pid} still running");
    }
}

/// Every original member lost and replaced, one at a time, with `local lose` and `local add`:
/// the `--dir` commands keep working through a member still listed, each new node takes over
/// the lost one's address (so the original endpoints reach the cluster again), and no
/// acknowledged write is lost.
#[tokio::test(flavor = "multi_thread")]
async fn dir_commands_and_addresses_survive_the_turnover_of_every_member() {
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let out = tmp.path().join("out.txt");
    let child = Command::new(pilot_bin())
        .args(["local", "up", "--members", "3", "--subnet", "127.0.81"])
        .arg("--dir")
        .arg(&dir)
        .arg("--etcd-bin")
        .arg(&etcd)
        // Inherited by every pilot, those `local add` starts too: a short wait before a lost
        // member is removed keeps the test short.
        .env("ETCD_PILOT_TIMERS_REMOVE_AFTER", "3s")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Stopped(child);
    eventually("cluster ready", Duration::from_secs(90), || async {
        let text = std::fs::read_to_string(&out).ok()?;
        text.contains("Ctrl-C stops the cluster").then_some(())
    })
    .await;
    let run = |args: &[&str]| {
        Command::new(pilot_bin())
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("ETCD_PILOT_TIMERS_REMOVE_AFTER", "3s")
            .output()
            .unwrap()
    };
    let ok = |args: &[&str]| {
        let output = run(args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let address = |i: u8| format!("http://127.0.81.{i}:2379");
    let original_ids = [
        common::member_id(&address(1)).await,
        common::member_id(&address(2)).await,
        common::member_id(&address(3)).await,
    ];
    let mut written = Vec::new();
    for (round, (lost, new)) in [("m1", "m4"), ("m2", "m5"), ("m3", "m6")]
        .iter()
        .enumerate()
    {
        let key = format!("before-losing-{lost}");
        put(&address(if round == 0 { 2 } else { 1 }), &key, "kept").await;
        written.push(key);
        ok(&["local", "lose", lost]);
        // A lost first member never breaks the --dir commands.
        for args in [&["backup", "list"][..], &["status"][..], &["plan"][..]] {
            ok(args);
        }
        if round == 0 {
            // m2 and m3 answer first; m1, a member until the coordinator removes it, comes
            // last or is gone.
            let listed = ok(&["endpoints"]);
            assert!(
                listed.starts_with(&format!("{},{}", address(2), address(3))),
                "{listed}"
            );
            let patroni = ok(&["endpoints", "--format", "patroni"]);
            assert!(
                patroni.starts_with("etcd3:\n  hosts: 127.0.81.2:2379,127.0.81.3:2379"),
                "{patroni}"
            );
        }
        let added = ok(&["local", "add"]);
        let host = round + 1;
        assert!(
            added.contains(&format!(
                "added {new} (http://127.0.81.{host}:2379), the address of a lost member"
            )),
            "{added}"
        );
        eventually(
            &format!("{new} a healthy voter and the cluster at full strength"),
            Duration::from_secs(90),
            || {
                let status = run(&["status", "--json"]);
                async move {
                    let view: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
                    let members = view["members"].as_array()?;
                    let voter = |m: &serde_json::Value| {
                        (m["role"] == "leader" || m["role"] == "follower")
                            && m["health"] == "healthy"
                    };
                    (members.len() == 3
                        && members.iter().all(voter)
                        && members.iter().any(|m| m["name"] == *new)
                        && view["fault_tolerance"]["can_lose"] == 1)
                        .then_some(())
                }
            },
        )
        .await;
    }
    // Every original member is gone; the original addresses answer, as new members.
    for (i, old) in original_ids.iter().enumerate() {
        let id = common::member_id(&address(u8::try_from(i).unwrap() + 1)).await;
        assert_ne!(id, *old, "the new node answers on {}", address(1));
    }
    for key in &written {
        assert_eq!(
            get(&address(1), key).await.as_deref(),
            Some("kept"),
            "{key}"
        );
    }
    ok(&["backup", "list"]);
    let status = ok(&["status"]);
    assert!(
        status.contains("fault tolerance: can lose 1 more member"),
        "{status}"
    );
    let json = ok(&["endpoints", "--format", "json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut names: Vec<&str> = listed.iter().filter_map(|m| m["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m4", "m5", "m6"], "{json}");
    // The same from a node's config (its etcd and the peers its discovery lists).
    let by_config = Command::new(pilot_bin())
        .args(["endpoints", "--format", "json", "--config"])
        .arg(dir.join("m5/pilot.toml"))
        .output()
        .unwrap();
    assert!(by_config.status.success(), "{by_config:?}");
    let by_config: Vec<serde_json::Value> = serde_json::from_slice(&by_config.stdout).unwrap();
    assert_eq!(by_config.len(), 3, "{by_config:?}");
    // Ctrl-C stops the pilots `local add` started, and their etcd.
    let pids: Vec<u32> = (4..=6)
        .filter_map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("m{i}/data/etcd.pid"))).ok()?;
            text.lines().next()?.parse().ok()
        })
        .collect();
    assert_eq!(pids.len(), 3, "every new member has a running etcd");
    common::signal(child.0.id(), libc::SIGINT);
    let status = common::wait_child(&mut child.0, Duration::from_secs(60)).expect("local up stops");
    assert!(status.success());
    for pid in pids {
        assert!(!common::alive(pid), "etcd {pid} still running");
    }
}

/// One member that cannot start (another process holds its client port) never makes
/// `local up` stop the others: once the other two have served for a while, it reports that
/// member with the reason and runs without it; when the port is free, the member comes back.
#[tokio::test(flavor = "multi_thread")]
async fn local_up_runs_without_a_member_that_cannot_start_and_says_why() {
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let out = tmp.path().join("out.txt");
    let err = tmp.path().join("err.txt");
    // Not etcd: a listener on m3's client address, so m3's etcd cannot bind it.
    let blocker = std::net::TcpListener::bind("127.0.84.3:2379").unwrap();
    let child = Command::new(pilot_bin())
        .args(["local", "up", "--members", "3", "--subnet", "127.0.84"])
        .arg("--dir")
        .arg(&dir)
        .arg("--etcd-bin")
        .arg(&etcd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut child = Stopped(child);
    eventually(
        "the cluster ready without m3",
        Duration::from_secs(150),
        || async {
            let text = std::fs::read_to_string(&out).ok()?;
            text.contains("Ctrl-C stops the cluster").then_some(())
        },
    )
    .await;
    let said = std::fs::read_to_string(&err).unwrap();
    assert!(said.contains("not every member came up"), "{said}");
    assert!(
        said.contains("m3: a voter whose etcd has not started yet")
            && said.contains("(cannot run etcd: "),
        "{said}"
    );
    assert!(
        matches!(child.0.try_wait(), Ok(None)),
        "local up keeps running"
    );
    put("http://127.0.84.1:2379", "without-m3", "written").await;
    // The port free again: m3's pilot, still retrying, brings it up.
    drop(blocker);
    eventually("m3 back", Duration::from_secs(120), || {
        let status = Command::new(pilot_bin())
            .args(["status", "--json", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        async move {
            let view: serde_json::Value = serde_json::from_slice(&status.stdout).ok()?;
            let members = view["members"].as_array()?;
            (members.len() == 3 && members.iter().all(|m| m["health"] == "healthy")).then_some(())
        }
    })
    .await;
    assert_eq!(
        get("http://127.0.84.3:2379", "without-m3").await.as_deref(),
        Some("written")
    );
    common::signal(child.0.id(), libc::SIGINT);
    let status = common::wait_child(&mut child.0, Duration::from_secs(60)).expect("local up stops");
    assert!(status.success());
}

/// The README's tour: m3's pilot stopped and started again by hand; Ctrl-C stops it too
/// (with its etcd), and the next `local up` brings all three members back.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_pilot_started_by_hand_and_local_up_comes_back_whole() {
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let up = |out: &std::path::Path| {
        Command::new(pilot_bin())
            .args(["local", "up", "--members", "3", "--subnet", "127.0.83"])
            .arg("--dir")
            .arg(&dir)
            .arg("--etcd-bin")
            .arg(&etcd)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let ready = |out: std::path::PathBuf| async move {
        eventually("cluster ready", Duration::from_secs(90), || async {
            let text = std::fs::read_to_string(&out).ok()?;
            text.contains("Ctrl-C stops the cluster").then_some(())
        })
        .await;
    };
    let first = tmp.path().join("first.txt");
    let mut child = up(&first);
    ready(first.clone()).await;
    let pid_of = |path: std::path::PathBuf| -> u32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let spawned = pid_of(dir.join("m3/pilot.pid"));
    common::signal(spawned, libc::SIGTERM);
    common::wait_gone(spawned);
    // As the tour says: start it again by hand (a relative config path, from the dir's parent).
    let mut by_hand = Command::new(pilot_bin())
        .args(["agent", "--config", "cluster/m3/pilot.toml"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd_pid = eventually("m3's etcd back", Duration::from_secs(60), || {
        let pid = std::fs::read_to_string(dir.join("m3/data/etcd.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.parse::<u32>().ok())
            .filter(|pid| common::alive(*pid));
        async move { pid }
    })
    .await;
    common::signal(child.id(), libc::SIGINT);
    let status = common::wait_child(&mut child, Duration::from_secs(60)).expect("local up stops");
    assert!(status.success());
    let hand = common::wait_child(&mut by_hand, Duration::from_secs(10));
    assert!(hand.is_some(), "the pilot started by hand still runs");
    assert!(!common::alive(etcd_pid), "m3's etcd still runs");
    let text = std::fs::read_to_string(&first).unwrap();
    assert!(text.contains("stopping the pilot of m3"), "{text}");

    let second = tmp.path().join("second.txt");
    let mut child = up(&second);
    ready(second.clone()).await;
    common::signal(child.id(), libc::SIGINT);
    let status = common::wait_child(&mut child, Duration::from_secs(60)).expect("local up stops");
    assert!(status.success());
}
