//! Upgrades of etcd, with real pilots and real etcd: the check of a path before anything
//! moves (`etcd-pilot upgrade check`), and rolling upgrades under a writer (3.4 -> 3.5 with
//! three and five members, patch releases up and down), refusals, a broken binary rolled
//! back, and pilots killed mid-upgrade.
//!
//! Each test has its own loopback /24 (the number passed to `Cluster::with`).
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::print_stderr
)] // Test code: it prints what it measured.

mod common;

use std::path::Path;
use std::time::Duration;

use common::workload::Workload;
use common::{Cluster, Version, etcd_bin};

/// A 3.5.1 cluster whose nodes also have 3.5.16, the newest 3.5 and a test double that says
/// it is 3.7.0 (`etcd.versions`). The check allows the patch upgrades and names the order
/// (the leader last), refuses going back to 3.4, skipping to 3.7 and 3.6 from below its
/// floor, and says which nodes lack a release; the double is only ever asked its version.
#[tokio::test(flavor = "multi_thread")]
async fn the_upgrade_check_allows_patches_and_refuses_what_etcd_forbids() {
    let (Some(v35), Some(v3516), Some(newest), Some(v34)) = (
        etcd_bin(Version::V35),
        etcd_bin(Version::V3516),
        etcd_bin(Version::V35Newest),
        etcd_bin(Version::V34),
    ) else {
        return;
    };
    let mut cluster = Cluster::with(94, 3, v35, "", &[]);
    let (double, calls) = double_37(&cluster);
    let pattern = cluster.tmp.path().join("etcd-*/etcd");
    add_versions(&cluster, &[&v3516, &newest, &pattern]);
    cluster.start_all();
    cluster.wait_settled().await;
    let status = cluster.pilot_status(0).await.unwrap();
    let available = status["release"]["available"].to_string();
    assert!(
        available.contains("3.5.1 ")
            && available.contains("3.5.16 ")
            && available.contains("3.7.0 "),
        "{available}"
    );
    let endpoints = cluster.endpoints().join(",");
    let check = |to: &str| {
        let out = cluster.cli(&["upgrade", "check", "--to", to, "--endpoints", &endpoints]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    let (ok, text) = check("3.5.16");
    assert!(ok, "{text}");
    assert!(
        text.contains("path:     patch releases of one minor"),
        "{text}"
    );
    assert!(text.contains("cluster version 3.5"), "{text}");
    assert!(text.contains("below 3.5's security floor"), "{text}");
    let order = text.lines().find(|l| l.starts_with("order:")).unwrap();
    assert!(
        order.ends_with("(the leader, after leadership moves away)"),
        "{order}"
    );
    let (ok, text) = check(newest.to_str().unwrap());
    assert!(ok, "a binary names its release: {text}");

    let (ok, text) = check("3.4.23");
    assert!(!ok);
    assert!(
        text.contains("goes back a minor, but every member runs 3.5"),
        "{text}"
    );
    let (ok, text) = check(double.to_str().unwrap());
    assert!(!ok);
    assert!(text.contains("3.5.1 -> 3.7.0 skips a minor"), "{text}");
    let (ok, text) = check("3.6.0");
    assert!(!ok);
    assert!(text.contains("allowed only from 3.5.32 or later"), "{text}");
    // 3.4.23 is allowed by nothing here, and no node has it either: both are said.
    let (ok, text) = check(v34.to_str().unwrap());
    assert!(!ok);
    assert!(
        text.contains("MISSING: add its binary to etcd.versions"),
        "{text}"
    );

    let out = cluster.cli(&[
        "upgrade",
        "check",
        "--to",
        "3.5.16",
        "--json",
        "--endpoints",
        &endpoints,
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["allowed"], true, "{json}");
    assert_eq!(json["members"].as_array().unwrap().len(), 3, "{json}");
    assert!(
        json["members"][0]["target_bin"]
            .as_str()
            .unwrap()
            .ends_with("etcd"),
        "{json}"
    );

    // The double was only ever asked its version.
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        !calls.is_empty() && calls.lines().all(|l| l == "--version"),
        "{calls}"
    );
}

/// A test double that says it is etcd 3.7.0 (`etcd-3.7/etcd` in the cluster's folder) and
/// logs every call's arguments; returns its path and its log's.
fn double_37(cluster: &Cluster) -> (std::path::PathBuf, std::path::PathBuf) {
    let double = cluster.tmp.path().join("etcd-3.7/etcd");
    let calls = cluster.tmp.path().join("double-calls.log");
    std::fs::create_dir_all(double.parent().unwrap()).unwrap();
    std::fs::write(
        &double,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\necho 'etcd Version: 3.7.0'\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&double, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (double, calls)
}

/// Points every node's `etcd.bin` at `bin`, as an operator does (the pilots read it again
/// while they run).
fn set_bin(cluster: &Cluster, bin: &Path) {
    for node in &cluster.nodes {
        let path = node.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut done = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                if !done && line.starts_with("bin = ") {
                    done = true;
                    format!("bin = {:?}", bin.display().to_string())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        assert!(done, "{} names no etcd.bin", path.display());
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
}

/// Adds `versions = [...]` to every node's `[etcd]`.
fn add_versions(cluster: &Cluster, bins: &[&Path]) {
    let versions = format!(
        "versions = [{}]\n",
        bins.iter()
            .map(|b| format!("{:?}", b.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for node in &cluster.nodes {
        let path = node.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("[etcd]\n", &format!("[etcd]\n{versions}")),
        )
        .unwrap();
    }
}

/// Samples every member's status every 100 ms: the most members that did not answer in one
/// round, over the whole run.
struct Sampler {
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(usize, usize)>,
    /// A member not counted while set: one whose pilot the test killed, until it is back.
    excused: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Sampler {
    fn start(endpoints: Vec<String>) -> Self {
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        let excused = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let skip = excused.clone();
        let task = tokio::spawn(async move {
            let (mut worst, mut rounds) = (0, 0);
            while !stop.is_cancelled() {
                let mut asks = tokio::task::JoinSet::new();
                let excused = skip.lock().unwrap().clone();
                for endpoint in endpoints
                    .iter()
                    .filter(|e| Some(*e) != excused.as_ref())
                    .cloned()
                {
                    let endpoint2 = endpoint.clone();
                    asks.spawn(async move {
                        let status = async {
                            let mut client = common::connect(&[endpoint]).await?;
                            client.status().await
                        };
                        let up = matches!(
                            tokio::time::timeout(Duration::from_millis(800), status).await,
                            Ok(Ok(_))
                        );
                        (endpoint2, up)
                    });
                }
                let answers = asks.join_all().await;
                let down: Vec<&String> = answers
                    .iter()
                    .filter(|(_, up)| !*up)
                    .map(|(endpoint, _)| endpoint)
                    .collect();
                if down.len() > 1 {
                    eprintln!(
                        "sampler: {} down at {}: {down:?}",
                        down.len(),
                        humantime::format_rfc3339_millis(std::time::SystemTime::now())
                    );
                }
                worst = worst.max(down.len());
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (worst, rounds)
        });
        Self {
            cancel,
            task,
            excused,
        }
    }

    /// Stops counting `endpoint` (`None`: counts every member again).
    fn excuse(&self, endpoint: Option<String>) {
        *self.excused.lock().unwrap() = endpoint;
    }

    /// The most members down at once, and how many rounds were sampled.
    async fn finish(self) -> (usize, usize) {
        self.cancel.cancel();
        self.task.await.unwrap()
    }
}

/// Each member's release, as its etcd reports it.
async fn releases(cluster: &Cluster) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for endpoint in cluster.endpoints() {
        let status = async {
            let mut client = common::connect(&[endpoint]).await?;
            client.status().await
        };
        out.push(
            tokio::time::timeout(Duration::from_secs(2), status)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|s| s.version().to_owned()),
        );
    }
    out
}

/// The cluster version (`/version`'s `etcdcluster`) through the first member that says.
async fn cluster_version(cluster: &Cluster) -> Option<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    for endpoint in cluster.endpoints() {
        if let Ok(response) = http.get(format!("{endpoint}/version")).send().await
            && let Ok(json) = response.json::<serde_json::Value>().await
        {
            return json["etcdcluster"].as_str().map(ToOwned::to_owned);
        }
    }
    None
}

/// The nodes whose pilot was granted the upgrade lock, in the order of their log lines.
fn grant_order(cluster: &Cluster) -> Vec<String> {
    let mut grants: Vec<(String, String)> = Vec::new();
    for node in &cluster.nodes {
        for line in node.log().lines() {
            if line.contains("the coordinator granted the upgrade lock") {
                let at = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                grants.push((at, node.name.clone()));
            }
        }
    }
    grants.sort();
    grants.into_iter().map(|(_, name)| name).collect()
}

/// The index of the node whose etcd leads, as its pilot says.
async fn leader(cluster: &Cluster) -> usize {
    common::eventually("a leader", Duration::from_secs(20), || async {
        for i in 0..cluster.nodes.len() {
            if let Some(status) = cluster.pilot_status(i).await
                && status["member"]["is_leader"] == true
            {
                return Some(i);
            }
        }
        None
    })
    .await
}

/// Runs `etcd-pilot upgrade --to <to> --endpoints ...` (following the upgrade the pilots do
/// once `etcd.bin` names the target) and returns its success and output.
fn upgrade(cluster: &Cluster, to: &Path) -> (bool, String) {
    let endpoints = cluster.endpoints().join(",");
    let out = cluster.cli(&[
        "upgrade",
        "--to",
        to.to_str().unwrap(),
        "--timeout",
        "4m",
        "--endpoints",
        &endpoints,
    ]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `n` members on `from`, upgraded to `to` under a writer that retries a failed put on the
/// next member: every member ends on `to`, the cluster version is `to`'s minor, the leader
/// went last, no member was down while another was, no write failed on every member and
/// every acknowledged write is there.
async fn rolling_upgrade(subnet: u8, n: usize, from: &Path, to: &Path, to_release: &str) {
    let mut cluster = Cluster::with(subnet, n, from.to_owned(), "", &[]);
    add_versions(&cluster, &[to]);
    cluster.start_all();
    cluster.wait_settled().await;
    let first_leader = cluster.nodes[leader(&cluster).await].name.clone();
    let cluster_id = common::cluster_id(&cluster.endpoints()[0]).await;
    let workload = Workload::start_retrying(cluster.endpoints(), cluster_id, "/upgrade");
    let sampler = Sampler::start(cluster.endpoints());
    tokio::time::sleep(Duration::from_secs(2)).await;

    set_bin(&cluster, to);
    let (ok, text) = upgrade(&cluster, to);
    eprintln!("{text}");
    assert!(ok, "{text}\n{}", cluster.logs());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (worst, rounds) = sampler.finish().await;
    let seen = workload.finish().await;

    assert_eq!(
        releases(&cluster).await,
        vec![Some(to_release.to_owned()); n],
        "{}",
        cluster.logs()
    );
    let minor = to_release.rsplit_once('.').unwrap().0;
    assert_eq!(
        cluster_version(&cluster).await.as_deref(),
        Some(&*format!("{minor}.0"))
    );
    let order = grant_order(&cluster);
    assert_eq!(order.len(), n, "one grant per member: {order:?}");
    assert_eq!(
        order.last(),
        Some(&first_leader),
        "the leader goes last: {order:?}"
    );
    assert!(worst <= 1, "{worst} members down at once ({rounds} rounds)");
    assert!(rounds > 20, "the sampler ran: {rounds} rounds");
    assert_eq!(seen.failed, 0, "a write failed on every member: {seen:?}");
    eprintln!(
        "upgrade of {n}: order {order:?}, at most {worst} down in {rounds} rounds, {} writes, {} through another member, longest gap {:?}",
        seen.acked.len(),
        seen.retried,
        seen.longest_gap
    );
    // The pilots' records and metrics say it is over.
    for i in 0..n {
        let status = cluster.pilot_status(i).await.unwrap();
        assert_eq!(status["release"]["running"], to_release, "{status}");
        assert!(status["upgrade"]["failed"].is_null(), "{status}");
        let metrics = cluster.nodes[i].metrics().await;
        assert!(
            metrics.contains("etcd_pilot_upgrade_in_progress 0"),
            "{metrics}"
        );
    }
}

/// 3.4.23 to 3.5.16, three members, under a writer.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_upgrade_from_3_4_to_3_5_one_at_a_time_leader_last() {
    let (Some(v34), Some(v3516)) = (etcd_bin(Version::V34), etcd_bin(Version::V3516)) else {
        return;
    };
    rolling_upgrade(95, 3, &v34, &v3516, "3.5.16").await;
}

/// 3.4.23 to 3.5.16, five members, under a writer.
#[tokio::test(flavor = "multi_thread")]
async fn five_members_upgrade_from_3_4_to_3_5_one_at_a_time_leader_last() {
    let (Some(v34), Some(v3516)) = (etcd_bin(Version::V34), etcd_bin(Version::V3516)) else {
        return;
    };
    rolling_upgrade(96, 5, &v34, &v3516, "3.5.16").await;
}

/// 3.5.16 to the newest 3.5 and back to 3.5.16 (patch releases go both ways), under a writer.
#[tokio::test(flavor = "multi_thread")]
async fn a_patch_upgrade_and_back_under_a_writer() {
    let (Some(v3516), Some(newest)) = (etcd_bin(Version::V3516), etcd_bin(Version::V35Newest))
    else {
        return;
    };
    let newest_release = common::release_of(&newest);
    let mut cluster = Cluster::with(97, 3, v3516.clone(), "", &[]);
    add_versions(&cluster, &[&newest]);
    cluster.start_all();
    cluster.wait_settled().await;
    let cluster_id = common::cluster_id(&cluster.endpoints()[0]).await;
    let workload = Workload::start_retrying(cluster.endpoints(), cluster_id, "/patch");
    let sampler = Sampler::start(cluster.endpoints());
    for (bin, release) in [(&newest, newest_release.as_str()), (&v3516, "3.5.16")] {
        set_bin(&cluster, bin);
        let (ok, text) = upgrade(&cluster, bin);
        eprintln!("{text}");
        assert!(ok, "{text}\n{}", cluster.logs());
        assert_eq!(
            releases(&cluster).await,
            vec![Some(release.to_owned()); 3],
            "{}",
            cluster.logs()
        );
        assert_eq!(cluster_version(&cluster).await.as_deref(), Some("3.5.0"));
    }
    let (worst, rounds) = sampler.finish().await;
    let seen = workload.finish().await;
    assert!(worst <= 1, "{worst} members down at once ({rounds} rounds)");
    assert_eq!(seen.failed, 0, "a write failed on every member: {seen:?}");
    assert_eq!(grant_order(&cluster).len(), 6);
}

/// A 3.5 cluster asked for 3.4.23 (a minor back once every member runs 3.5) or for a
/// release that skips a minor (a test double that says it is 3.7.0): `upgrade` refuses and
/// changes nothing; with etcd.bin changed by hand anyway, the plan says why and no etcd is
/// restarted; the double is only ever asked its version.
#[tokio::test(flavor = "multi_thread")]
async fn going_back_a_minor_or_skipping_one_is_refused_and_nothing_restarts() {
    let (Some(v3516), Some(v34)) = (etcd_bin(Version::V3516), etcd_bin(Version::V34)) else {
        return;
    };
    let mut cluster = Cluster::with(98, 3, v3516.clone(), "", &[]);
    let (double, calls) = double_37(&cluster);
    add_versions(&cluster, &[&v34]);
    cluster.start_all();
    cluster.wait_settled().await;
    let pids: Vec<Option<u32>> = cluster.nodes.iter().map(common::Node::etcd_pid).collect();

    for (bin, refusal) in [
        (&v34, "every member runs 3.5"),
        (&double, "3.5.16 -> 3.7.0 skips a minor"),
    ] {
        let (ok, text) = upgrade(&cluster, bin);
        assert!(!ok, "{text}");
        assert!(text.contains(refusal), "{text}");
        assert!(text.contains("nothing was changed"), "{text}");

        // etcd.bin changed by hand: the coordinator refuses, and says so in the plan.
        set_bin(&cluster, bin);
        let plan = common::eventually("the plan to refuse", Duration::from_secs(30), || async {
            let out = cluster.cli(&["plan", "--endpoints", &cluster.endpoints().join(",")]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("upgrade:      refused: ") && text.contains(refusal)).then_some(text)
        })
        .await;
        assert!(plan.contains("m1 runs 3.5.16, wants"), "{plan}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now: Vec<Option<u32>> = cluster.nodes.iter().map(common::Node::etcd_pid).collect();
        assert_eq!(now, pids, "no etcd restarted");
        assert!(grant_order(&cluster).is_empty());
    }
    // The double was only ever asked its version.
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(
        !calls.is_empty() && calls.lines().all(|l| l == "--version"),
        "{calls}"
    );
    // Back to what runs: nothing to do.
    set_bin(&cluster, &v3516);
    let (ok, text) = upgrade(&cluster, &v3516);
    assert!(ok, "{text}");
    assert_eq!(
        cluster
            .nodes
            .iter()
            .map(common::Node::etcd_pid)
            .collect::<Vec<_>>(),
        pids
    );
}

/// A new binary that cannot start (it names 3.5.16 but exits at once): the first member
/// granted the lock is rolled back to 3.4.23 after `upgrade.member_timeout`, the upgrade
/// stops with the reason in `plan` and `upgrade`, the cluster is healthy at full strength
/// on 3.4.23 and no acknowledged write is lost. A working binary named afterwards goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_binary_is_rolled_back_and_the_upgrade_stops() {
    let (Some(v34), Some(v3516)) = (etcd_bin(Version::V34), etcd_bin(Version::V3516)) else {
        return;
    };
    let mut cluster = Cluster::with(
        99,
        3,
        v34.clone(),
        "[upgrade]\nmember_timeout = \"8s\"\n",
        &[],
    );
    let broken = cluster.tmp.path().join("broken/etcd");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'etcd Version: 3.5.16'; exit 0; fi\n\
         echo 'cannot start: this binary is broken' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    cluster.start_all();
    cluster.wait_settled().await;
    let cluster_id = common::cluster_id(&cluster.endpoints()[0]).await;
    let workload = Workload::start_retrying(cluster.endpoints(), cluster_id, "/broken");
    let sampler = Sampler::start(cluster.endpoints());

    set_bin(&cluster, &broken);
    let (ok, text) = upgrade(&cluster, &broken);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the upgrade to etcd 3.5.16 stopped"),
        "{text}"
    );
    assert!(text.contains("rolled back to 3.4.23"), "{text}");
    let order = grant_order(&cluster);
    assert_eq!(order.len(), 1, "only one member tried: {order:?}");
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert_eq!(releases(&cluster).await, vec![Some("3.4.23".to_owned()); 3]);
    // Once the member is back and caught up on 3.4.23, the lock is released; the plan says
    // the upgrade stopped, and why.
    let plan = common::eventually("the lock released", Duration::from_secs(30), || async {
        let out = cluster.cli(&["plan", "--endpoints", &cluster.endpoints().join(",")]);
        let plan = String::from_utf8_lossy(&out.stdout).into_owned();
        plan.contains("lock held by nobody").then_some(plan)
    })
    .await;
    assert!(plan.contains("upgrade:      stopped:"), "{plan}");
    let failed = cluster
        .pilot_status(order[0][1..].parse::<usize>().unwrap() - 1)
        .await
        .unwrap();
    assert!(
        failed["upgrade"]["failed"]
            .as_str()
            .unwrap()
            .contains("did not answer within upgrade.member_timeout"),
        "{failed}"
    );
    // It stays stopped: nobody else tries the broken binary.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(grant_order(&cluster).len(), 1);

    // A working binary: the upgrade goes on, the member that rolled back included.
    set_bin(&cluster, &v3516);
    let (ok, text) = upgrade(&cluster, &v3516);
    assert!(ok, "{text}\n{}", cluster.logs());
    assert_eq!(releases(&cluster).await, vec![Some("3.5.16".to_owned()); 3]);
    let (worst, rounds) = sampler.finish().await;
    let seen = workload.finish().await;
    assert!(worst <= 1, "{worst} members down at once ({rounds} rounds)");
    assert_eq!(seen.failed, 0, "a write failed on every member: {seen:?}");
}

/// Pilots that die mid-upgrade: each pilot crashes once while its etcd runs the new
/// release and it waits for it to catch up (a failpoint; the etcd is left running), and the
/// coordinator's pilot is killed (SIGKILL) while another member holds the lock. Each comes
/// back, the upgrade resumes and ends with every member on 3.5.16, no acknowledged write
/// lost, and never two members down at once, the killed coordinator's own member aside until
/// its pilot is back (a restarted pilot restarts its etcd; it waits for the holder's release
/// first, but that is the fault the test injects, not a step of the upgrade).
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_resumes_after_holders_and_the_coordinator_die() {
    let (Some(v34), Some(v3516)) = (etcd_bin(Version::V34), etcd_bin(Version::V3516)) else {
        return;
    };
    let mut cluster = Cluster::with(93, 3, v34.clone(), "", &[]);
    for i in 0..3 {
        cluster.start_with_env(i, &[("FAILPOINTS", "upgrade-waiting=return")]);
    }
    cluster.wait_settled().await;
    let cluster_id = common::cluster_id(&cluster.endpoints()[0]).await;
    let workload = Workload::start_retrying(cluster.endpoints(), cluster_id, "/resume");
    let sampler = Sampler::start(cluster.endpoints());
    set_bin(&cluster, &v3516);

    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let (mut crashed, mut coordinator_killed) = (Vec::new(), false);
    let mut excused: Option<usize> = None;
    loop {
        // The killed coordinator's member counts again once its pilot says it is ready.
        if let Some(c) = excused
            && cluster
                .pilot_status(c)
                .await
                .is_some_and(|s| s["ready"] == true)
        {
            sampler.excuse(None);
            excused = None;
        }
        // A pilot that died (the failpoint) comes back without it.
        for i in 0..3 {
            let exited = cluster.nodes[i]
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().unwrap().is_some());
            if exited {
                cluster.nodes[i].child = None;
                crashed.push(cluster.nodes[i].name.clone());
                cluster.start(i);
            }
        }
        // Once the second member holds the lock, the coordinator's pilot dies too.
        if !coordinator_killed
            && grant_order(&cluster).len() >= 2
            && let Some(c) = cluster.coordinator().await
        {
            // Its own member may go down when its pilot restarts it: that is the fault
            // itself, not counted; every other member still is.
            sampler.excuse(Some(cluster.nodes[c].client_url()));
            kill_pilot(&mut cluster, c);
            coordinator_killed = true;
            excused = Some(c);
            tokio::time::sleep(Duration::from_secs(1)).await;
            if crashed.contains(&cluster.nodes[c].name) {
                cluster.start(c);
            } else {
                cluster.start_with_env(c, &[("FAILPOINTS", "upgrade-waiting=return")]);
            }
        }
        if releases(&cluster).await == vec![Some("3.5.16".to_owned()); 3]
            && cluster_version(&cluster).await.as_deref() == Some("3.5.0")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upgrade did not finish: {:?}\n{}",
            releases(&cluster).await,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, text) = upgrade(&cluster, &v3516);
    assert!(ok, "{text}\n{}", cluster.logs());
    crashed.sort();
    assert_eq!(crashed, ["m1", "m2", "m3"], "each pilot died once mid-step");
    assert!(coordinator_killed);
    let (worst, rounds) = sampler.finish().await;
    let seen = workload.finish().await;
    assert!(worst <= 1, "{worst} members down at once ({rounds} rounds)");
    assert_eq!(seen.failed, 0, "a write failed on every member: {seen:?}");
}

/// SIGKILL to node `i`'s pilot alone: its etcd keeps running, as after a pilot crash.
fn kill_pilot(cluster: &mut Cluster, i: usize) {
    if let Some(mut child) = cluster.nodes[i].child.take() {
        common::signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }
}
