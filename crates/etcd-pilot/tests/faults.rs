//! The fault catalog: each fault against a real cluster while a writer puts unique keys
//! through every client URL and a watcher asks every client URL for its cluster id every
//! 100 ms. Each test then checks that every acknowledged write is readable, that no client URL
//! ever answered as another cluster, and that the cluster ends at full strength.
//!
//! Faults: a stopped member's WAL deleted (its `snap/db` kept), the same after a power loss and
//! right after a bootstrap (no marker yet), a marker without a member id beside data without a
//! WAL, a data dir that answers EIO, a pilot killed at each step of a join, a bad
//! `etcd.extra_args` rolled out to two members (3 and 5 members), an etcd that stops answering
//! (SIGSTOP), and an etcd of another cluster answering on a member's client URL.
// Test code: it may block, unwrap and print, and it measures real time.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::unwrap_used,
    clippy::print_stderr
)]

mod common;

use std::time::{Duration, Instant};

use common::workload::Workload;
use common::{Cluster, Version};

/// A running cluster of `n` with a workload on it.
async fn loaded(subnet: u8, n: usize, extra: &str) -> Option<(Cluster, Workload)> {
    let cluster = common::running_with(subnet, n, Version::V35, extra, &[]).await?;
    let id = common::cluster_id(&cluster.nodes[0].client_url()).await;
    let workload = Workload::start(cluster.endpoints(), id, "/faults");
    // Let some writes land before the fault.
    common::eventually("the first writes", Duration::from_secs(20), || async {
        (workload.acked() >= 20).then_some(())
    })
    .await;
    Some((cluster, workload))
}

/// Deletes node `i`'s WAL folder, keeping `snap/db`: what a crash between etcd's first write
/// and its first WAL leaves.
fn remove_wal(cluster: &Cluster, i: usize) {
    let member = cluster.nodes[i].data_dir().join("etcd/member");
    std::fs::remove_dir_all(member.join("wal")).unwrap();
    assert!(member.join("snap/db").exists());
}

/// Writes node `i`'s identity marker as a join in progress leaves it: a name, no ids.
fn write_pending_marker(cluster: &Cluster, i: usize) {
    std::fs::write(
        cluster.nodes[i].data_dir().join("identity.json"),
        format!(
            r#"{{"name":"{}","cluster_id":null,"member_id":null}}"#,
            cluster.nodes[i].name
        ),
    )
    .unwrap();
}

fn quarantined(cluster: &Cluster, i: usize) -> Vec<String> {
    let dir = cluster.nodes[i].data_dir().join("quarantine");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| std::fs::read_to_string(e.unwrap().path().join("reason.txt")).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The reproduction of the rogue cluster: m3's pilot stopped, its WAL deleted with `snap/db`
/// kept (what a crash between etcd's first write and its first WAL leaves), m3 started again.
/// It must never answer as a cluster of its own, and be back as a member within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_wal_is_gone_rejoins_and_never_forms_a_cluster_of_its_own() {
    let Some((mut cluster, workload)) = loaded(60, 3, "").await else {
        return;
    };
    assert_eq!(cluster.stop(2), Some(0));
    remove_wal(&cluster, 2);
    let offset = cluster.nodes[2].log().len();
    let started = Instant::now();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(15))
        .await;
    eprintln!(
        "m3 back as a voter {:?} after its pilot started",
        started.elapsed()
    );
    let log = cluster.nodes[2].log_since(offset);
    assert!(log.contains("holds no WAL file"), "{}", cluster.logs());
    assert!(!log.contains("restarting etcd on its data"), "{log}");
    assert_eq!(
        quarantined(&cluster, 2).len(),
        1,
        "the remains are kept, once"
    );
    workload.finish().await;
}

/// The same after a power loss (pilot and etcd SIGKILLed), and with the marker a join in
/// progress leaves (a name, no cluster or member id): the pilot must not record any cluster id
/// it cannot confirm with a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_without_wal_and_with_a_pending_marker_rejoins() {
    let Some((mut cluster, workload)) = loaded(61, 3, "").await else {
        return;
    };
    cluster.kill(2);
    let data = cluster.nodes[2].data_dir();
    remove_wal(&cluster, 2);
    write_pending_marker(&cluster, 2);
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let real = common::cluster_id(&cluster.nodes[0].client_url()).await;
    common::eventually(
        "m3's marker to name the cluster",
        Duration::from_secs(10),
        || {
            let data = data.clone();
            async move {
                let identity: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(data.join("identity.json")).ok()?,
                )
                .ok()?;
                (identity["cluster_id"].as_u64() == Some(real)).then_some(())
            }
        },
    )
    .await;
    workload.finish().await;
}

/// What a crash during a bootstrap leaves on one member: etcd's `snap/db` without a WAL, and
/// neither identity nor formed marker (both are written once etcd has answered). The member
/// must join the cluster the others formed, never form one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_crashed_in_its_bootstrap_before_its_wal_joins_the_others() {
    let Some((mut cluster, workload)) = loaded(69, 3, "").await else {
        return;
    };
    cluster.kill(2);
    let data = cluster.nodes[2].data_dir();
    remove_wal(&cluster, 2);
    std::fs::remove_file(data.join("identity.json")).unwrap();
    std::fs::remove_file(data.join("cluster-formed.json")).unwrap();
    let offset = cluster.nodes[2].log().len();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let log = cluster.nodes[2].log_since(offset);
    assert!(log.contains("holds no WAL file"), "{log}");
    assert!(log.contains("adding this node as a learner"), "{log}");
    assert!(!log.contains("bootstrapping a new cluster"), "{log}");
    workload.finish().await;
}

/// A pilot killed at each step of a join: before anything (a wiped member restarted), right
/// after MemberAdd, and once its etcd runs, before its member is promoted. Each time it comes back
/// as one member of the one cluster.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_killed_at_each_step_of_a_join_leaves_one_cluster() {
    let Some((mut cluster, workload)) = loaded(70, 3, "").await else {
        return;
    };
    for failpoint in ["", "after-member-add", "etcd-started"] {
        cluster.kill(2);
        std::fs::remove_dir_all(cluster.nodes[2].data_dir()).unwrap();
        if failpoint.is_empty() {
            cluster.start(2);
        } else {
            let env = format!("{failpoint}=return");
            cluster.start_with_env(2, &[("FAILPOINTS", &env)]);
            let status = common::wait_child(
                cluster.nodes[2].child.as_mut().unwrap(),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|| panic!("the pilot never reached {failpoint}: {}", cluster.logs()));
            assert!(!status.success(), "{failpoint}");
            cluster.nodes[2].child = None;
            // Its etcd, if it started, is left running, as after a crash.
            cluster.start(2);
        }
        cluster
            .wait_voters(&[0, 1, 2], Duration::from_secs(60))
            .await;
        let mut client = common::connect(&[cluster.nodes[0].client_url()])
            .await
            .unwrap();
        let members = client.member_list().await.unwrap();
        assert_eq!(
            members.members().len(),
            3,
            "after {failpoint:?}: {:?}",
            members.members()
        );
    }
    workload.finish().await;
}

/// A pending marker beside good data (a crash between etcd's first answer and the marker's
/// write): the identity is recorded once a peer confirms the cluster id, and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_marker_beside_good_data_is_confirmed_by_the_peers() {
    let Some((mut cluster, workload)) = loaded(62, 3, "").await else {
        return;
    };
    let old = common::member_id(&cluster.nodes[2].client_url()).await;
    assert_eq!(cluster.stop(2), Some(0));
    let data = cluster.nodes[2].data_dir();
    write_pending_marker(&cluster, 2);
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert_eq!(common::member_id(&cluster.nodes[2].client_url()).await, old);
    common::eventually(
        "m3's marker to be recorded",
        Duration::from_secs(10),
        || {
            let data = data.clone();
            async move {
                let text = std::fs::read_to_string(data.join("identity.json")).ok()?;
                text.contains(&format!("{old}")).then_some(())
            }
        },
    )
    .await;
    assert!(quarantined(&cluster, 2).is_empty());
    workload.finish().await;
}

/// A data dir that answers EIO: the pilot waits and says why; it never takes the disk for
/// empty, never quarantines, and comes back with its data once the disk reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_data_dir_is_an_error_never_an_empty_disk() {
    let Some((mut cluster, workload)) = loaded(63, 3, "").await else {
        return;
    };
    let old = common::member_id(&cluster.nodes[2].client_url()).await;
    assert_eq!(cluster.stop(2), Some(0));
    let offset = cluster.nodes[2].log().len();
    // EIO for the first 30 reads, then the disk recovers.
    cluster.start_with_env(2, &[("FAILPOINTS", "local-data-eio=30*return")]);
    common::eventually(
        "m3's pilot to report the read error",
        Duration::from_secs(20),
        || async {
            let status = cluster.pilot_status(2).await?;
            let reason = status["reason"].as_str()?.to_owned();
            reason.contains("Input/output error").then_some(reason)
        },
    )
    .await;
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    assert_eq!(common::member_id(&cluster.nodes[2].client_url()).await, old);
    let log = cluster.nodes[2].log_since(offset);
    assert!(!log.contains("bootstrapping"), "{log}");
    assert!(!log.contains("adding this node as a learner"), "{log}");
    assert!(quarantined(&cluster, 2).is_empty());
    workload.finish().await;
}

/// Rewrites node `i`'s config with `extra_args` under `[etcd]` (the harness's config as it
/// was first written, plus that one line).
fn set_extra_args(cluster: &Cluster, i: usize, args: &str) {
    let path = cluster.nodes[i].config_path();
    let original = path.with_extension("orig");
    if !original.exists() {
        std::fs::copy(&path, &original).unwrap();
    }
    let config = std::fs::read_to_string(&original).unwrap();
    let config = config.replacen("[etcd]\n", &format!("[etcd]\nextra_args = {args}\n"), 1);
    std::fs::write(path, config).unwrap();
}

/// A bad flag rolled out node after node: each member crash-loops, is reported as "cannot
/// run", and is never removed; its data stays; fixing the config brings it back as itself.
async fn bad_config_rolled_out(subnet: u8, n: usize, bad: &[usize]) {
    let Some((mut cluster, workload)) = loaded(subnet, n, "").await else {
        return;
    };
    let mut ids = Vec::new();
    for &i in bad {
        ids.push(common::member_id(&cluster.nodes[i].client_url()).await);
        assert_eq!(cluster.stop(i), Some(0));
        set_extra_args(&cluster, i, r#"["--no-such-flag"]"#);
        cluster.start(i);
        common::eventually(
            "the pilot to say etcd cannot run",
            Duration::from_secs(30),
            || async {
                let status = cluster.pilot_status(i).await?;
                let reason = status["cannot_run"].as_str()?.to_owned();
                reason.contains("flag").then_some(reason)
            },
        )
        .await;
    }
    // Long enough for several crash cycles and for `remove_after` (2 s) many times over.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let healthy = (0..n).find(|i| !bad.contains(i)).unwrap();
    let mut client = common::connect(&[cluster.nodes[healthy].client_url()])
        .await
        .unwrap();
    let members = client.member_list().await.unwrap();
    assert_eq!(
        members.members().len(),
        n,
        "no member was removed: {:?}",
        members.members()
    );
    for &i in bad {
        let status = cluster.pilot_status(i).await.unwrap();
        assert!(status["data_unusable"].is_null(), "{status}");
        assert!(quarantined(&cluster, i).is_empty(), "data kept in place");
    }
    // `plan` names the cause where a majority survives (with 3 members and 2 down, no
    // leader answers and no plan is made).
    if n - bad.len() > n / 2 {
        let plan = common::eventually(
            "the plan to name the cause",
            Duration::from_secs(20),
            || async {
                let endpoints = cluster.endpoints().join(",");
                let out = cluster.cli(&["plan", "--endpoints", &endpoints]);
                let plan = String::from_utf8_lossy(&out.stdout).into_owned();
                plan.contains("cannot run etcd").then_some(plan)
            },
        )
        .await;
        eprintln!("{plan}");
    }
    for &i in bad {
        cluster.stop(i);
        set_extra_args(&cluster, i, "[]");
        cluster.start(i);
    }
    cluster
        .wait_voters(&(0..n).collect::<Vec<_>>(), Duration::from_secs(60))
        .await;
    for (&i, id) in bad.iter().zip(ids) {
        assert_eq!(common::member_id(&cluster.nodes[i].client_url()).await, id);
    }
    workload.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_flag_rolled_out_to_two_of_three_removes_no_member() {
    bad_config_rolled_out(64, 3, &[2, 1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_flag_on_two_of_five_keeps_five_members() {
    bad_config_rolled_out(65, 5, &[4, 3]).await;
}

/// An etcd that stops answering (SIGSTOP: a hung disk or a deadlock, seen from outside) is
/// restarted by its pilot and comes back with its data; it is never removed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_etcd_is_restarted_with_its_data() {
    let extra = "liveness_timeout = \"4s\"\nstop_grace = \"2s\"\n";
    // The extra lines land in [timers], the last section of the harness's config.
    let Some((cluster, workload)) = loaded(66, 3, extra).await else {
        return;
    };
    let old = common::member_id(&cluster.nodes[1].client_url()).await;
    // Only an etcd that answered in its current run is restarted for silence: wait until m2's
    // pilot reports its member ready and its liveness probe (every second) has seen this run.
    let pid = common::eventually(
        "m2 ready on a settled etcd",
        Duration::from_secs(30),
        || async {
            let status = cluster.pilot_status(1).await?;
            let pid = cluster.nodes[1].etcd_pid()?;
            (status["ready"] == true).then_some(pid)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        cluster.nodes[1].etcd_pid(),
        Some(pid),
        "m2's etcd restarted meanwhile"
    );
    let offset = cluster.nodes[1].log().len();
    common::signal(pid, libc::SIGSTOP);
    // 4 s of silence, then SIGCONT and SIGTERM; generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    let restarted = loop {
        if let Some(new) = cluster.nodes[1].etcd_pid().filter(|new| *new != pid) {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "m2's etcd was not replaced within 60 s; m2's log since:\n{}\nwhole log:\n{}",
            cluster.nodes[1].log_since(offset),
            cluster.nodes[1].log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert!(!common::alive(pid), "the wedged etcd was killed");
    assert_ne!(restarted, pid);
    assert_eq!(common::member_id(&cluster.nodes[1].client_url()).await, old);
    let log = cluster.nodes[1].log_since(offset);
    assert!(
        log.contains("has not answered for the liveness timeout"),
        "{log}"
    );
    let metrics = cluster.nodes[1].metrics().await;
    assert!(
        metrics.contains(r#"etcd_pilot_etcd_crashes_total{kind="unresponsive"} 1"#),
        "{metrics}"
    );
    workload.finish().await;
}

/// An etcd of another cluster on a member's client URL (its pilot stopped): `status` shows it
/// as foreign, never as healthy and never as the cluster; the plan says what blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_answering_as_another_cluster_is_shown_as_such() {
    let Some(mut cluster) = common::running(68, 3, Version::V35).await else {
        return;
    };
    assert_eq!(cluster.stop(2), Some(0));
    let node = &cluster.nodes[2];
    let rogue_dir = common::tmp_path(&cluster, "rogue");
    let mut rogue = std::process::Command::new(&cluster.etcd)
        .args([
            "--name=m3".to_owned(),
            format!("--data-dir={}", rogue_dir.display()),
            format!("--listen-peer-urls={}", node.peer_url()),
            format!("--initial-advertise-peer-urls={}", node.peer_url()),
            format!("--listen-client-urls={}", node.client_url()),
            format!("--advertise-client-urls={}", node.client_url()),
            format!("--initial-cluster=m3={}", node.peer_url()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let real = common::cluster_id(&cluster.nodes[0].client_url()).await;
    common::eventually(
        "the rogue etcd to answer",
        Duration::from_secs(20),
        || async {
            let mut client = common::connect(&[node.client_url()]).await.ok()?;
            let id = client.status().await.ok()?.header()?.cluster_id();
            (id != real).then_some(())
        },
    )
    .await;
    // The rogue's endpoint first: it must not be taken for the cluster.
    let endpoints = format!(
        "{},{},{}",
        cluster.nodes[2].client_url(),
        cluster.nodes[0].client_url(),
        cluster.nodes[1].client_url()
    );
    for _ in 0..5 {
        let out = cluster.cli(&["status", "--endpoints", &endpoints]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let m3 = text
            .lines()
            .find(|l| l.starts_with("m3 "))
            .unwrap_or_default()
            .to_owned();
        assert!(m3.contains("foreign"), "{text}");
        assert!(text.contains("m1 ") && text.contains("m2 "), "{text}");
        assert!(text.contains("answers as member"), "{text}");
    }
    let plan = common::eventually(
        "the plan to say m3 answers as another cluster",
        Duration::from_secs(20),
        || async {
            let out = cluster.cli(&["plan", "--endpoints", &endpoints]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("answers as member").then_some(text)
        },
    )
    .await;
    assert!(!plan.contains("next:         converged"), "{plan}");
    rogue.kill().unwrap();
    rogue.wait().unwrap();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
}
