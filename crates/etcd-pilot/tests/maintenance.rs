//! Day-2 maintenance with real pilots and etcd: an idle cluster's revision stays still (the
//! pilots write their records on change only), and the coordinator's compaction keeps the
//! history the policy asks for.
//!
//! Each test has its own loopback /24 (the number passed to `Cluster::with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test code.

mod common;

use std::time::Duration;

use common::{Cluster, Version, etcd_bin};

/// The revision through the first member that answers.
async fn revision(cluster: &Cluster) -> i64 {
    for endpoint in cluster.endpoints() {
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(2), async {
            let mut client = common::connect(&[endpoint]).await?;
            client.status().await
        })
        .await
        {
            return status.header().unwrap().revision();
        }
    }
    panic!("no member answered");
}

/// A settled cluster with no client writes nothing for a minute: the coordinator's plan
/// record is rewritten only when it changes, and `plan` still takes it as the coordinator's.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_cluster_s_revision_stays_still() {
    let Some(etcd) = etcd_bin(Version::V3516) else {
        return;
    };
    let mut cluster = Cluster::with(100, 3, etcd, "", &[]);
    cluster.start_all();
    cluster.wait_settled().await;
    // The first records (formed marker, coordinator, plan, lineage) are written by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = revision(&cluster).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = revision(&cluster).await;
    assert_eq!(
        after,
        before,
        "an idle cluster's revision moved\n{}",
        cluster.logs()
    );
    let endpoints = cluster.endpoints().join(",");
    let out = cluster.cli(&["plan", "--endpoints", &endpoints]);
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(plan.contains("next:         converged"), "{plan}");
    assert!(!plan.contains("stale"), "{plan}");
}

/// With a short interval and small windows, the coordinator compacts: old revisions are
/// gone, the newest `keep_revisions` are still readable, a watch from within the window is
/// not cancelled, and the metric and `/v1/status` say when.
#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_compacts_keeping_what_the_policy_asks() {
    let Some(etcd) = etcd_bin(Version::V3516) else {
        return;
    };
    let extra =
        "[maintenance]\ncompact_interval = \"2s\"\nkeep_revisions = 100\nkeep_for = \"1s\"\n";
    let mut cluster = Cluster::with(101, 3, etcd, extra, &[]);
    cluster.start_all();
    cluster.wait_settled().await;
    let endpoint = cluster.endpoints()[0].clone();
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    for i in 0..400 {
        client
            .put(format!("/compact/{}", i % 20), format!("v{i}"), None)
            .await
            .unwrap();
    }
    let current = revision(&cluster).await;
    // Compacted within two sampling periods and a few intervals.
    common::eventually("a compaction", Duration::from_secs(60), || async {
        let mut client = common::connect(std::slice::from_ref(&endpoint))
            .await
            .ok()?;
        let old = client
            .get(
                "/compact/0",
                Some(etcd_client::GetOptions::new().with_revision(2)),
            )
            .await;
        match old {
            Err(err) if err.to_string().contains("compacted") => Some(()),
            _ => None,
        }
    })
    .await;
    // The newest 100 revisions are still there: a read and a watch from within them.
    let within = current - 90;
    client
        .get(
            "/compact/0",
            Some(etcd_client::GetOptions::new().with_revision(within)),
        )
        .await
        .unwrap();
    let mut stream = client
        .watch(
            "/compact/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(within),
            ),
        )
        .await
        .unwrap();
    // The first answers may be the watch's creation; the events follow, none cancelled.
    loop {
        let answer = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!answer.canceled(), "{answer:?}");
        assert_eq!(answer.compact_revision(), 0, "{answer:?}");
        if !answer.events().is_empty() {
            break;
        }
    }
    let coordinator = common::eventually("a coordinator", Duration::from_secs(20), || async {
        cluster.coordinator().await
    })
    .await;
    let status = cluster.pilot_status(coordinator).await.unwrap();
    assert!(
        status["maintenance"]["last_compaction"]
            .as_str()
            .is_some_and(|s| s.starts_with("revision ")),
        "{status}"
    );
    let metrics = cluster.nodes[coordinator].metrics().await;
    for line in [
        "etcd_pilot_alarms{kind=\"NOSPACE\"} 0",
        "etcd_pilot_alarms{kind=\"CORRUPT\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let size = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_default()
    };
    let (file, in_use) = (
        size("etcd_pilot_db_size_bytes"),
        size("etcd_pilot_db_size_in_use_bytes"),
    );
    assert!(file > 0 && in_use > 0 && in_use <= file, "{metrics}");
    let out = cluster.cli(&["status", "--endpoints", &cluster.endpoints().join(",")]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("IN-USE") && h.contains("ALARMS")),
        "{table}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("etcd_pilot_last_compaction_timestamp_seconds ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}
