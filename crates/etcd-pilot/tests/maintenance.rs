//! Day-2 maintenance with real pilots and etcd: an idle cluster's revision stays still (the
//! pilots write their records on change only), and the coordinator's compaction keeps the
//! history the policy asks for.
//!
//! Each test has its own loopback /24 (the number passed to `Cluster::with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test code.

mod common;

use std::time::{Duration, SystemTime};

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

/// Each node's defragmentations, from its etcd's own log lines ("starting defragment",
/// "finished defragment"): (node, start, end), ordered by start.
fn defrag_intervals(cluster: &Cluster) -> Vec<(usize, SystemTime, SystemTime)> {
    let mut found = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut started = None;
        for line in node.log().lines() {
            let at = || {
                let ts = line.split("\"ts\":\"").nth(1)?.split('"').next()?;
                humantime::parse_rfc3339_weak(&ts.replace('T', " ").trim_end_matches('Z')[..19])
                    .ok()
                    .map(|t| {
                        let frac: f64 = ts
                            .split('.')
                            .nth(1)
                            .map(|f| f.trim_end_matches('Z'))
                            .and_then(|f| format!("0.{}", f.split(['+', '-']).next()?).parse().ok())
                            .unwrap_or(0.0);
                        t + Duration::from_secs_f64(frac)
                    })
            };
            if line.contains("starting defragment") {
                started = at();
            } else if line.contains("finished defragment")
                && let (Some(start), Some(end)) = (started.take(), at())
            {
                found.push((i, start, end));
            }
        }
    }
    found.sort_by_key(|(_, start, _)| *start);
    found
}

/// Pilot environment that keeps etcd's info lines in the pilots' logs.
fn etcd_info() -> Vec<(String, String)> {
    vec![("ETCD_PILOT_LOG".to_owned(), "info".to_owned())]
}

/// Each member's database file size, by node.
async fn db_sizes(cluster: &Cluster) -> Vec<i64> {
    let mut sizes = Vec::new();
    for endpoint in cluster.endpoints() {
        let mut client = common::connect(&[endpoint]).await.unwrap();
        sizes.push(client.status().await.unwrap().db_size());
    }
    sizes
}

/// Overwrites `keys` keys with `size`-byte values as fast as etcd takes them, through every
/// member in turn, and remembers the last acknowledged value of each key; failures
/// (such as a raised NOSPACE alarm) are counted and retried.
struct BigWriter {
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(std::collections::HashMap<String, u64>, usize, Vec<Duration>)>,
}

impl BigWriter {
    fn start(endpoints: Vec<String>, keys: u64, size: usize) -> Self {
        let cancel = tokio_util::sync::CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut acked = std::collections::HashMap::new();
            let (mut failed, mut ack_times) = (0usize, Vec::new());
            let padding = "x".repeat(size);
            let mut n: u64 = 0;
            while !stop.is_cancelled() {
                let key = format!("/big/{}", n % keys);
                let endpoint = endpoints[(n as usize) % endpoints.len()].clone();
                let put = async {
                    let mut client = common::connect(std::slice::from_ref(&endpoint)).await?;
                    client
                        .put(key.as_str(), format!("{n}:{padding}"), None)
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(5), put).await {
                    Ok(Ok(_)) => {
                        acked.insert(key, n);
                        ack_times.push(started.elapsed());
                    }
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                n += 1;
            }
            (acked, failed, ack_times)
        });
        Self { cancel, task }
    }

    async fn finish(self) -> (std::collections::HashMap<String, u64>, usize, Vec<Duration>) {
        self.cancel.cancel();
        self.task.await.unwrap()
    }
}

/// Every key holds its last acknowledged write or a later one.
async fn check_acked(cluster: &Cluster, acked: &std::collections::HashMap<String, u64>) {
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    for (key, n) in acked {
        let got = client.get(key.as_str(), None).await.unwrap();
        let value = got
            .kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_owned());
        let seq: u64 = value
            .as_deref()
            .and_then(|v| v.split(':').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{key} lost: acknowledged write {n}"));
        assert!(
            seq >= *n,
            "{key} holds write {seq}, older than the acknowledged {n}"
        );
    }
}

/// Fragmented files are defragmented by the coordinator on its own, one member at a time
/// (etcd's own log lines never overlap between members), the first leader after the
/// others, under a writer that loses nothing; the files shrink. Then `etcd-pilot
/// maintenance defrag --member` and `maintenance compact` run by hand.
#[tokio::test(flavor = "multi_thread")]
async fn defragmentation_goes_one_member_at_a_time_the_leader_last() {
    let Some(etcd) = etcd_bin(Version::V3516) else {
        return;
    };
    let extra = "[maintenance]\ncompact_interval = \"2s\"\nkeep_revisions = 50\nkeep_for = \"1s\"\n\
                 defrag_threshold = \"25%\"\ndefrag_min_free = \"8MiB\"\n";
    // etcd's own info lines say when each defragmentation starts and ends.
    let mut cluster = Cluster::with(102, 3, etcd, extra, &etcd_info());
    cluster.start_all();
    cluster.wait_settled().await;
    let first_leader = common::eventually("a coordinator", Duration::from_secs(20), || async {
        cluster.coordinator().await
    })
    .await;
    let cluster_id = {
        let mut client = common::connect(&cluster.endpoints()).await.unwrap();
        client
            .member_list()
            .await
            .unwrap()
            .header()
            .unwrap()
            .cluster_id()
    };
    // About 40 MiB written over 20 keys: the files grow, and compaction frees most of them.
    let writer = BigWriter::start(cluster.endpoints(), 20, 128 * 1024);
    common::eventually("40 MiB files", Duration::from_secs(120), || async {
        db_sizes(&cluster)
            .await
            .iter()
            .all(|s| *s > 40 << 20)
            .then_some(())
    })
    .await;
    let (acked, failed, _) = writer.finish().await;
    let before = db_sizes(&cluster).await;
    eprintln!(
        "files before: {before:?}, {} keys, {failed} failed",
        acked.len()
    );
    let workload =
        common::workload::Workload::start_retrying(cluster.endpoints(), cluster_id, "/w");
    common::eventually(
        "every member defragmented",
        Duration::from_secs(180),
        || async {
            let nodes: std::collections::BTreeSet<usize> = defrag_intervals(&cluster)
                .iter()
                .map(|(i, _, _)| *i)
                .collect();
            (nodes.len() == 3).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = workload.finish().await;
    let intervals = defrag_intervals(&cluster);
    eprintln!("defragmentations: {intervals:?}");
    for pair in intervals.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2 || pair[0].0 == pair[1].0,
            "two members defragmenting at once: {pair:?}\n{}",
            cluster.logs()
        );
    }
    let first_of = |i: usize| intervals.iter().position(|(n, _, _)| *n == i).unwrap();
    for other in (0..3).filter(|i| *i != first_leader) {
        assert!(
            first_of(other) < first_of(first_leader),
            "the leader m{} went before m{}: {intervals:?}",
            first_leader + 1,
            other + 1
        );
    }
    let after = db_sizes(&cluster).await;
    eprintln!("files after: {after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert!(a * 2 < *b, "files did not shrink: {before:?} -> {after:?}");
    }
    assert_eq!(seen.failed, 0, "failed writes during defragmentation");
    eprintln!(
        "{} writes, longest gap {:?}",
        seen.acked.len(),
        seen.longest_gap
    );
    check_acked(&cluster, &acked).await;
    let coordinator = cluster.coordinator().await.unwrap();
    let metrics = cluster.nodes[coordinator].metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("etcd_pilot_last_defrag_timestamp_seconds ") && !l.ends_with(" 0")
        ) || {
            // The last defragmentation may have been made by the first coordinator.
            let mut any = false;
            for node in &cluster.nodes {
                any |= node.metrics().await.lines().any(|l| {
                    l.starts_with("etcd_pilot_last_defrag_timestamp_seconds ") && !l.ends_with(" 0")
                });
            }
            any
        },
        "{metrics}"
    );

    // By hand: one member, then a compaction.
    let endpoints = cluster.endpoints().join(",");
    let ok = |args: &[&str]| {
        let out = cluster.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let done = ok(&[
        "maintenance",
        "defrag",
        "--member",
        "m2",
        "--endpoints",
        &endpoints,
    ]);
    assert!(done.contains("m2: "), "{done}");
    let intervals_now = defrag_intervals(&cluster);
    assert_eq!(
        intervals_now.iter().filter(|(n, _, _)| *n == 1).count(),
        intervals.iter().filter(|(n, _, _)| *n == 1).count() + 1,
        "{intervals_now:?}"
    );
    let out = cluster.cli(&[
        "maintenance",
        "defrag",
        "--member",
        "m9",
        "--endpoints",
        &endpoints,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("m9 is not a member"),
        "{err}"
    );
    let done = ok(&["maintenance", "compact", "--endpoints", &endpoints]);
    assert!(done.contains("compact"), "{done}");
}

/// With a 32 MiB quota, a writer overwriting the same keys with large values raises
/// NOSPACE; the pilots compact, defragment each member and disarm without a person, writes
/// succeed again, and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_space_alarm_is_recovered_without_a_person() {
    let Some(etcd) = etcd_bin(Version::V3516) else {
        return;
    };
    // Neither compaction nor defragmentation runs on its own: only the alarm's round acts.
    let extra = "[maintenance]\ncompaction = false\ndefrag = false\nkeep_revisions = 20\n";
    let mut cluster = Cluster::with(103, 3, etcd, extra, &etcd_info());
    for i in 0..3 {
        let path = cluster.nodes[i].config_path();
        let config = std::fs::read_to_string(&path).unwrap();
        let config = config.replacen(
            "[etcd]\n",
            "[etcd]\nextra_args = [\"--quota-backend-bytes=33554432\"]\n",
            1,
        );
        std::fs::write(&path, config).unwrap();
    }
    cluster.start_all();
    cluster.wait_settled().await;
    let writer = BigWriter::start(cluster.endpoints(), 10, 256 * 1024);
    let alarmed = |cluster: &Cluster| {
        let endpoints = cluster.endpoints();
        async move {
            let mut client = common::connect(&endpoints).await.ok()?;
            let alarms = client
                .alarm(
                    etcd_client::AlarmAction::Get,
                    etcd_client::AlarmType::None,
                    None,
                )
                .await
                .ok()?;
            Some(!alarms.alarms().is_empty())
        }
    };
    common::eventually("the NOSPACE alarm", Duration::from_secs(120), || async {
        (alarmed(&cluster).await == Some(true)).then_some(())
    })
    .await;
    let raised = tokio::time::Instant::now();
    eprintln!("NOSPACE raised");
    common::eventually("the alarm disarmed", Duration::from_secs(120), || async {
        (alarmed(&cluster).await == Some(false)).then_some(())
    })
    .await;
    let recovered = raised.elapsed();
    // Writes are taken again.
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    client.put("/after-the-alarm", "yes", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed, _) = writer.finish().await;
    eprintln!(
        "recovered in {recovered:?}; {} keys acknowledged, {failed} writes refused",
        acked.len()
    );
    assert!(failed > 0, "the alarm refused writes");
    check_acked(&cluster, &acked).await;
    let logs = cluster.logs();
    for step in [
        "space alarm: compacting",
        "defragmenting",
        "disarmed the NOSPACE alarm",
    ] {
        assert!(logs.contains(step), "{step} in\n{logs}");
    }
    let intervals = defrag_intervals(&cluster);
    eprintln!("defragmentations: {intervals:?}");
    assert!(intervals.len() >= 3, "{intervals:?}");
    for pair in intervals.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2 || pair[0].0 == pair[1].0,
            "two members defragmenting at once: {pair:?}"
        );
    }
}
