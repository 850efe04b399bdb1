//! Quorum loss, with real pilots and real etcd: what the survivors see and say.
//!
//! Each test has its own loopback /24 (the number passed to `running_with`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test helpers may unwrap and spawn.

mod common;

use std::time::Duration;

use common::{Version, eventually, get, put};

/// Two of three voters stop. While discovery lists them they may be alive behind a
/// partition: the survivor reports the quorum lost and never names a seed. Once they are gone
/// from discovery it names itself as the seed, with the raft entries it lacks; it changes
/// nothing (this version only reports). When they come back the quorum and every write are
/// back, and the report clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_is_reported_with_its_survivors_and_why_nothing_is_reseeded() {
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

    let status = eventually(
        "the survivor to report the quorum lost",
        Duration::from_secs(30),
        || async {
            cluster.pilot_status(0).await.filter(|s| {
                s["quorum"]["lost"] == true && s["quorum"]["lost_for_secs"].as_u64() >= Some(2)
            })
        },
    )
    .await;
    let quorum = &status["quorum"];
    assert_eq!(
        quorum["unreachable"],
        serde_json::json!(["m2", "m3"]),
        "{status}"
    );
    assert_eq!(quorum["survivors"][0]["name"], "m1", "{status}");
    assert!(
        quorum["survivors"][0]["applied_index"].as_u64() > Some(20),
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

    // Gone from discovery: the survivor would be the seed, lacking nothing it has seen.
    cluster.write_peers(&[0]);
    let status = eventually(
        "the survivor to name itself the seed",
        Duration::from_secs(30),
        || async {
            cluster
                .pilot_status(0)
                .await
                .filter(|s| s["quorum"]["seed"]["name"] == "m1")
        },
    )
    .await;
    assert_eq!(status["quorum"]["seed_behind"], 0, "{status}");
    let verdict = status["quorum"]["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("gone from discovery") && verdict.contains("does not reseed on its own"),
        "{verdict}"
    );

    // They come back: the quorum, every write and a clear report.
    cluster.write_peers(&[0, 1, 2]);
    cluster.start(1);
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    eventually("the report to clear", Duration::from_secs(20), || async {
        cluster
            .pilot_status(0)
            .await
            .filter(|s| s["quorum"].is_null())
    })
    .await;
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
