//! Upgrades of etcd, with real pilots and real etcd: the check of a path before anything
//! moves (`etcd-pilot upgrade check`), and rolling upgrades under a writer (3.4 -> 3.5 with
//! three and five members, patch releases up and down), refusals, a broken binary rolled
//! back, and pilots killed mid-upgrade.
//!
//! Each test has its own loopback /24 (the number passed to `Cluster::with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test code.

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
    let versions = format!(
        "versions = [{:?}, {:?}, {:?}]\n",
        v3516.display().to_string(),
        newest.display().to_string(),
        cluster.tmp.path().join("etcd-*/etcd").display().to_string()
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
        text.contains("goes back a minor, but the cluster version is 3.5 already"),
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
}

impl Sampler {
    fn start(endpoints: Vec<String>) -> Self {
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let (mut worst, mut rounds) = (0, 0);
            while !stop.is_cancelled() {
                let mut asks = tokio::task::JoinSet::new();
                for endpoint in endpoints.clone() {
                    asks.spawn(async move {
                        let status = async {
                            let mut client = common::connect(&[endpoint]).await?;
                            client.status().await
                        };
                        matches!(
                            tokio::time::timeout(Duration::from_millis(800), status).await,
                            Ok(Ok(_))
                        )
                    });
                }
                let down = asks.join_all().await.iter().filter(|up| !**up).count();
                worst = worst.max(down);
                rounds += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (worst, rounds)
        });
        Self { cancel, task }
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
