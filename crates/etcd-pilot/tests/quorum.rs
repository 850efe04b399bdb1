//! Quorum loss, with real pilots and real etcd: what the survivors see and say.
//!
//! Each test has its own loopback /24 (the number passed to `running_with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test helpers may unwrap and spawn.

mod common;

use std::time::Duration;

use common::{Version, connect, eventually, get, put};

/// Two of three voters stop but stay listed: they may be alive behind a partition. The
/// survivor reports the quorum lost, names no seed and changes nothing; `plan` shows its
/// view. When they come back the quorum and every write are back, and the report clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_whose_voters_are_still_listed_is_reported_and_never_reseeded() {
    let extra = "quorum_lost_after = \"2s\"\n";
    let Some(mut cluster) = common::running_with(85, 3, Version::V35, extra, &[]).await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    for i in 0..20 {
        put(&m1, &format!("key-{i}"), "before").await;
    }
    let healthy = cluster.pilot_status(0).await.unwrap();
    assert_eq!(healthy["quorum"], serde_json::Value::Null, "{healthy}");
    cluster.kill(1);
    cluster.kill(2);

    let status = cluster.wait_quorum_lost(0, 2).await;
    let quorum = &status["quorum"];
    assert_eq!(
        quorum["unreachable"],
        serde_json::json!(["m2", "m3"]),
        "{status}"
    );
    assert_eq!(quorum["survivors"][0]["name"], "m1", "{status}");
    assert!(
        quorum["survivors"][0]["raft_index"].as_u64() > Some(20),
        "{status}"
    );
    assert_eq!(quorum["seed"], serde_json::Value::Null, "{status}");
    let verdict = quorum["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("m2, m3 do not answer; not reseeded: m2, m3 still listed")
            && verdict.contains("never reseeded automatically"),
        "{verdict}"
    );
    assert!(quorum["lost_since"].is_string(), "{status}");
    assert!(
        cluster.nodes[0]
            .metrics()
            .await
            .contains("etcd_pilot_quorum_lost 1"),
        "the metric says the quorum is lost"
    );

    // `plan` cannot read the coordinator's records without a quorum: it shows the pilots'.
    let endpoints = cluster.endpoints().join(",");
    let out = cluster.cli(&["plan", "--json", "--endpoints", &endpoints]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["quorum"][0]["pilot"], "m1", "{plan}");
    assert_eq!(plan["quorum"][0]["survivors"][0]["name"], "m1", "{plan}");
    assert!(
        plan["quorum"][0]["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("still listed")),
        "{plan}"
    );
    let out = cluster.cli(&["plan", "--endpoints", &endpoints]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("quorum:       m1 says: quorum lost"),
        "{text}"
    );

    // They come back: the quorum, every write and a clear report.
    cluster.write_peers(&[0, 1, 2]);
    cluster.start(1);
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    cluster.wait_quorum_clear(0).await;
    assert!(
        cluster.nodes[0]
            .metrics()
            .await
            .contains("etcd_pilot_quorum_lost 0")
    );
    for i in 0..20 {
        assert_eq!(
            get(&cluster.nodes[2].client_url(), &format!("key-{i}"))
                .await
                .as_deref(),
            Some("before")
        );
    }
}

/// Writes `key-N` through `endpoint` one at a time until a write fails; returns the keys
/// whose writes were acknowledged.
async fn write_until_refused(endpoint: String) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(mut client) = connect(&[endpoint]).await else {
        return acked;
    };
    for n in 0.. {
        let key = format!("w-{n:06}");
        match client.put(key.as_str(), "x", None).await {
            Ok(_) => acked.push(key),
            Err(_) => break,
        }
    }
    acked
}

/// Samples the cluster id every endpoint answers with, every 100 ms, until `stop` is set;
/// returns every distinct id seen.
async fn sample_cluster_ids(
    endpoints: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::collections::BTreeSet<u64> {
    let mut seen = std::collections::BTreeSet::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for endpoint in &endpoints {
            if let Ok(mut client) = connect(std::slice::from_ref(endpoint)).await
                && let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(1), client.status()).await
                && let Some(header) = status.header()
            {
                seen.insert(header.cluster_id());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// A majority is lost for good: m2 with its disk, m3 stopped; both dropped from discovery.
/// The survivor m1 reseeds: it copies its data aside, restarts alone with
/// `--force-new-cluster`, then normally, records the reseed and is writable with every write
/// it acknowledged. m3 then comes back with its old data: it is a removed member of the new
/// cluster, so its pilot quarantines the data and joins. A new node m4 joins too: 3 voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_reseeds_after_a_majority_is_gone_for_good_and_the_others_join_it() {
    let extra = "quorum_lost_after = \"2s\"\n";
    let Some(mut cluster) = common::running_with(86, 3, Version::V35, extra, &[]).await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_cluster_ids(
        (0..4)
            .map(|i| format!("http://127.0.86.{}:2379", i + 1))
            .collect(),
        stop.clone(),
    ));
    let writer = tokio::spawn(write_until_refused(m1.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.lose(1);
    cluster.kill(2);
    cluster.write_peers(&[0]);
    let lost_at = tokio::time::Instant::now();
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the writer wrote {} keys", acked.len());

    // The revision a client of m1 saw before the reseed (its status answers without a
    // quorum, until it is stopped to reseed).
    let seen_revision = eventually("m1's status", Duration::from_secs(60), || async {
        let mut client = connect(std::slice::from_ref(&m1)).await.ok()?;
        Some(client.status().await.ok()?.header()?.revision())
    })
    .await;
    // Writable again, from its own data.
    let after = eventually(
        "m1 to take writes again",
        Duration::from_secs(90),
        || async {
            let mut client = connect(std::slice::from_ref(&m1)).await.ok()?;
            client.put("after", "reseed", None).await.ok()
        },
    )
    .await;
    let revision = after.header().unwrap().revision();
    assert!(
        revision > seen_revision,
        "the revision went backwards: {seen_revision} before the reseed, {revision} after"
    );
    println!(
        "quorum lost (2 of 3 gone) -> writable again: {:.1} s, of which quorum_lost_after 2 s \
         and remove_after 2 s",
        lost_at.elapsed().as_secs_f64()
    );
    let mut missing = 0;
    for key in &acked {
        if get(&m1, key).await.is_none() {
            missing += 1;
        }
    }
    println!("acknowledged writes: {}, lost: {missing}", acked.len());
    assert_eq!(missing, 0, "every write m1 acknowledged is kept");
    let record: serde_json::Value =
        serde_json::from_str(&get(&m1, "/etcd-pilot/cluster/reseed").await.unwrap()).unwrap();
    assert_eq!(record["by"], "m1", "{record}");
    assert_eq!(record["behind"], 0, "{record}");
    assert_eq!(
        record["unreachable"],
        serde_json::json!(["m2", "m3"]),
        "{record}"
    );
    let copy = std::path::PathBuf::from(record["copy"].as_str().unwrap());
    assert!(copy.join("etcd/member/wal").is_dir(), "{record}");
    assert!(
        std::fs::read_to_string(copy.join("reason.txt"))
            .unwrap()
            .contains("reseed after quorum loss")
    );
    assert!(
        cluster.nodes[0]
            .metrics()
            .await
            .contains("etcd_pilot_reseeds_total 1")
    );
    let status = eventually("m1 to settle", Duration::from_secs(30), || async {
        cluster
            .pilot_status(0)
            .await
            .filter(|s| s["ready"] == true && s["quorum"].is_null())
    })
    .await;
    assert_eq!(status["phase"], "running", "{status}");

    // The old m3 returns with its data; a new node joins.
    let m4 = cluster.add_node();
    cluster.write_peers(&[0, 2, m4]);
    cluster.start(2);
    cluster.start(m4);
    cluster
        .wait_voters(&[0, 2, m4], Duration::from_secs(120))
        .await;
    let quarantined = std::fs::read_dir(cluster.nodes[2].data_dir().join("quarantine"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert!(quarantined >= 1, "m3's old data was set aside");
    let m4_url = cluster.nodes[m4].client_url();
    for key in acked.iter().step_by(7) {
        assert_eq!(get(&m4_url, key).await.as_deref(), Some("x"), "{key}");
    }
    // One cluster throughout: the reseed keeps the cluster id, and no member ever answered
    // as a cluster of its own.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ids = sampler.await.unwrap();
    assert_eq!(ids.len(), 1, "cluster ids seen: {ids:x?}");
}

/// Five voters, three lost with their disks. m2 lags (its etcd stopped while writes go on):
/// m1 has the higher raft index, so m1 is the seed, and only once m2's pilot names it too.
/// m2's data then belongs to a removed member: it is set aside and m2 joins the new cluster,
/// with a new node, back to three voters holding every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_survivors_the_one_with_more_data_seeds_and_the_other_joins_it() {
    let extra = "quorum_lost_after = \"2s\"\n";
    let Some(mut cluster) = common::running_with(87, 5, Version::V35, extra, &[]).await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    let writer = tokio::spawn(write_until_refused(m1.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lagging = cluster.nodes[1].etcd_pid().unwrap();
    common::signal(lagging, libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 2..5 {
        cluster.lose(i);
    }
    common::signal(lagging, libc::SIGCONT);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the writer wrote {} keys", acked.len());

    let record = eventually("a reseed record", Duration::from_secs(90), || async {
        let mut client = connect(std::slice::from_ref(&m1)).await.ok()?;
        let response = client.get("/etcd-pilot/cluster/reseed", None).await.ok()?;
        let kv = response.kvs().first()?;
        serde_json::from_slice::<serde_json::Value>(kv.value()).ok()
    })
    .await;
    assert_eq!(record["by"], "m1", "{record}");
    assert_eq!(record["survivors"], serde_json::json!(["m2"]), "{record}");
    assert_eq!(
        record["unreachable"],
        serde_json::json!(["m3", "m4", "m5"]),
        "{record}"
    );
    // m2 set its data aside and joins; a new node too.
    let m6 = cluster.add_node();
    cluster.write_peers(&[0, 1, m6]);
    cluster.start(m6);
    cluster
        .wait_voters(&[0, 1, m6], Duration::from_secs(120))
        .await;
    let m2_quarantine = std::fs::read_dir(cluster.nodes[1].data_dir().join("quarantine"))
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert!(m2_quarantine >= 1, "m2's old data was set aside");
    let m2_log = cluster.nodes[1].log();
    assert!(
        !m2_log.contains("restarting etcd alone"),
        "m2 never seeds:\n{m2_log}"
    );
    let mut missing = 0;
    let m6_url = cluster.nodes[m6].client_url();
    for key in &acked {
        if get(&m6_url, key).await.is_none() {
            missing += 1;
        }
    }
    println!("acknowledged writes: {}, lost: {missing}", acked.len());
    assert_eq!(missing, 0, "every write m1 acknowledged is kept");
}

/// Automatic reseeds off (`reseed.auto = false`), a backup store configured. Four voters, two
/// lost with their disks; of the two survivors m2 lags (its etcd stopped while m1, m3 and m4
/// commit). Nothing happens on its own. The operator's `reseed --from m2` is refused without
/// `--force` (m1 has more) and without `--yes` off a terminal; with both, m2 takes the store's
/// reseed claim, puts its data into the store as a reseed snapshot, and reseeds; m1's data
/// (a removed member's now) is set aside and m1 joins it. What m1 had beyond m2 is lost, and
/// said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reseeds_from_a_worse_survivor_only_with_force() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "quorum_lost_after = \"2s\"\n\n[reseed]\nauto = false\n\n[backup]\nurl = \"file://{}\"\n\
         interval = \"1h\"\ndrill = false\n",
        store.path().display()
    );
    let Some(mut cluster) = common::running_with(92, 4, Version::V35, &extra, &[]).await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    let m2 = cluster.nodes[1].client_url();
    for i in 0..10 {
        put(&m1, &format!("both-{i}"), "x").await;
    }
    let cluster_id = common::cluster_id(&m1).await;
    let lagging = cluster.nodes[1].etcd_pid().unwrap();
    common::signal(lagging, libc::SIGSTOP);
    // More one-entry writes than a leader keeps in flight to a silent follower (512 in etcd
    // 3.5): beyond them, nothing reaches m2, not even in its socket buffers.
    // (m2 may have led: a put may time out while the others elect a leader; it is retried.)
    let mut written = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while written < 800 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {written} writes in 120 s"
        );
        let put = async {
            let mut client = connect(std::slice::from_ref(&m1)).await?;
            client.put(format!("m1-only-{written}"), "x", None).await
        };
        match put.await {
            Ok(_) => written += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    cluster.lose(2);
    cluster.lose(3);
    // Only once m1 no longer leads: a leader would bring m2 up to date first.
    eventually("m1 to lose its leader", Duration::from_secs(20), || async {
        let mut client = connect(std::slice::from_ref(&m1)).await.ok()?;
        let status = client.status().await.ok()?;
        (status.leader() == 0).then_some(())
    })
    .await;
    common::signal(lagging, libc::SIGCONT);
    let endpoints = format!("{m1},{m2}");
    cluster.wait_quorum_lost(1, 2).await;
    // Well past every timer: with reseed.auto = false nothing happens on its own.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = cluster.pilot_status(0).await.unwrap();
    assert!(
        status["quorum"]["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("automatic reseeds are off")),
        "{status}"
    );

    let refused = cluster.cli(&["reseed", "--from", "m2", "--yes", "--endpoints", &endpoints]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a worse survivor without --force: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(
        stderr.contains("m1 has applied more") && stderr.contains("--force"),
        "{stderr}"
    );
    let unconfirmed = cluster.cli(&["reseed", "--from", "m1", "--endpoints", &endpoints]);
    let stderr = String::from_utf8_lossy(&unconfirmed.stderr);
    assert!(!unconfirmed.status.success(), "no --yes off a terminal");
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert!(
        cluster.nodes[1]
            .metrics()
            .await
            .contains("etcd_pilot_reseeds_total 0")
    );

    let forced = cluster.cli(&[
        "reseed",
        "--from",
        "m2",
        "--yes",
        "--force",
        "--endpoints",
        &endpoints,
    ]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&forced.stderr),
        cluster.logs()
    );
    assert!(
        stdout.contains("m2") && stdout.contains("<- seed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reseeded: m2 leads the cluster"),
        "{stdout}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&get(&m2, "/etcd-pilot/cluster/reseed").await.unwrap()).unwrap();
    assert_eq!(record["by"], "m2", "{record}");
    assert!(
        record["ordered_by"].as_str().unwrap().contains('@'),
        "{record}"
    );
    assert_eq!(record["claim"], 1, "{record}");
    assert_eq!(
        common::cluster_id(&m2).await,
        cluster_id,
        "the reseed keeps the cluster id"
    );

    // The store: the claim, ended once recorded, and the seed's data marked as a reseed snapshot.
    let claims = store
        .path()
        .join("test/reseeds")
        .join(format!("{cluster_id:x}"));
    let claim: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(claims.join("00000001.json")).unwrap())
            .unwrap();
    assert_eq!(claim["holder"], "m2", "{claim}");
    let state = eventually("the claim to end", Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(claims.join("00000001.state.json")).ok()?;
        let state: serde_json::Value = serde_json::from_str(&text).ok()?;
        (state["ended"] == "reseeded").then_some(state)
    })
    .await;
    assert_eq!(state["ended_by"], "m2", "{state}");
    let snapshot = record["snapshot"].as_str().unwrap().to_owned();
    let backups = cluster.backups();
    let manifest = backups
        .iter()
        .find(|m| m["id"] == snapshot.as_str())
        .unwrap_or_else(|| panic!("snapshot {snapshot} not in {backups:?}"));
    assert_eq!(manifest["taken_for"], "reseed", "{manifest}");
    assert_eq!(manifest["member"], "m2", "{manifest}");

    // m1 (a removed member of the reseeded cluster) sets its data aside and joins m2.
    cluster.write_peers(&[0, 1]);
    cluster.wait_voters(&[0, 1], Duration::from_secs(120)).await;
    assert!(
        std::fs::read_dir(cluster.nodes[0].data_dir().join("quarantine"))
            .map(|entries| entries.count())
            .unwrap_or(0)
            >= 1,
        "m1's old data was set aside"
    );
    for i in 0..10 {
        assert_eq!(get(&m1, &format!("both-{i}")).await.as_deref(), Some("x"));
    }
    let mut lost = 0;
    for i in 0..written {
        if get(&m1, &format!("m1-only-{i}")).await.is_none() {
            lost += 1;
        }
    }
    println!(
        "forced reseed from the worse survivor: {lost} of {written} writes only m1 had are \
         lost (record: {} entries behind the highest seen)",
        record["behind"]
    );
    assert!(lost > 0, "m2 lagged: the writes only m1 had are gone");
}
