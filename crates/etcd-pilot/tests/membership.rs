//! Self-healing membership with real pilots and etcd 3.5: replacement of a lost node, scaling
//! through discovery alone, and the coordinator's fence.
#![allow(clippy::unwrap_used)] // Test code.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Version, eventually, get};

/// Writes `w/00000`, `w/00001`, ... through `endpoints` until stopped; returns the keys etcd
/// acknowledged. A failed put is retried with the same key and value (puts are idempotent).
fn writer(endpoints: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut client = None;
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if client.is_none() {
                client = common::connect(&endpoints).await.ok();
            }
            let Some(c) = client.as_mut() else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let key = format!("w/{i:05}");
            match tokio::time::timeout(Duration::from_secs(3), c.put(key.clone(), "v", None)).await
            {
                Ok(Ok(_)) => {
                    acked.push(key);
                    i += 1;
                }
                _ => {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_lost_with_its_disk_is_replaced_and_no_acknowledged_write_is_lost() {
    let Some(mut cluster) = common::running(36, 3, Version::V35).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let new = cluster.add_node();
    // The client knows every endpoint, the replacement's included.
    let writes = writer(cluster.endpoints(), stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.write_peers(&[0, 1, 2]);
    cluster.lose(2);
    cluster.write_peers(&[0, 1, new]);
    cluster.start(new);
    cluster
        .wait_voters(&[0, 1, new], Duration::from_secs(90))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writes.await.unwrap();
    assert!(
        acked.len() > 20,
        "the writer made progress: {}",
        acked.len()
    );
    let mut client = common::connect(&[cluster.nodes[new].client_url()])
        .await
        .unwrap();
    let stored = client
        .get("w/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|k| !stored.contains(*k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let coordinator_removed = cluster.nodes.iter().any(|n| {
        n.log().lines().any(|l| {
            l.contains("membership change done")
                && l.contains("remove_unlisted")
                && l.contains("m3")
        })
    });
    assert!(coordinator_removed, "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_scales_three_to_five_to_three_through_discovery_alone() {
    let Some(mut cluster) = common::running(37, 3, Version::V35).await else {
        return;
    };
    let m4 = cluster.add_node();
    let m5 = cluster.add_node();
    cluster.start(m4);
    cluster.start(m5);
    cluster
        .wait_voters(&[0, 1, 2, m4, m5], Duration::from_secs(90))
        .await;
    common::put(&cluster.nodes[m5].client_url(), "at-five", "yes").await;

    cluster.write_peers(&[0, 1, 2]);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(90))
        .await;
    assert_eq!(
        get(&cluster.nodes[0].client_url(), "at-five")
            .await
            .as_deref(),
        Some("yes")
    );
    // The removed nodes' pilots stop their etcd and wait to be listed again.
    for i in [m4, m5] {
        let reason = eventually(
            "a removed node waiting",
            Duration::from_secs(30),
            || async {
                let status = cluster.pilot_status(i).await?;
                let reason = status["reason"].as_str().unwrap_or_default().to_owned();
                reason.contains("does not list this node").then_some(reason)
            },
        )
        .await;
        assert!(reason.contains(&cluster.nodes[i].name), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_coordinator_is_fenced_off_and_steps_down() {
    let Some(cluster) = common::running(38, 3, Version::V35).await else {
        return;
    };
    let old = eventually("a coordinator", Duration::from_secs(20), || {
        cluster.coordinator()
    })
    .await;
    let pilot = cluster.nodes[old].child.as_ref().unwrap().id();
    common::signal(pilot, libc::SIGSTOP);
    // Move leadership away from the paused pilot's etcd (it keeps running).
    let mut leader = common::connect(&[cluster.nodes[old].client_url()])
        .await
        .unwrap();
    let members = leader.member_list().await.unwrap();
    let target = members
        .members()
        .iter()
        .find(|m| m.name() != cluster.nodes[old].name)
        .unwrap()
        .id();
    leader.move_leader(target).await.unwrap();
    let new = eventually("a new coordinator", Duration::from_secs(30), || async {
        cluster.coordinator().await.filter(|c| *c != old)
    })
    .await;
    // Stay paused past the old coordinator's lease, so its next step finds the role gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let offset = cluster.nodes[old].log().len();
    common::signal(pilot, libc::SIGCONT);
    // Its first step after resuming either writes its record and finds it rejected by the
    // fence, or, when that write fails outright (a busy machine), finds its lease gone: the
    // key that carries the fencing token went with it. Either way it steps down.
    eventually(
        "the old coordinator to be fenced off",
        Duration::from_secs(20),
        || async {
            let log = cluster.nodes[old].log_since(offset);
            (log.contains("fenced write rejected")
                || log.contains("coordinator lease lost, stepping down"))
            .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(cluster.coordinator().await, Some(new), "{}", cluster.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_whose_data_is_unusable_is_removed_and_rejoins_as_a_learner() {
    let Some(mut cluster) = common::running(42, 3, Version::V35).await else {
        return;
    };
    common::put(&cluster.nodes[0].client_url(), "k", "kept").await;
    let old = common::member_id(&cluster.nodes[2].client_url()).await;
    assert_eq!(cluster.stop(2), Some(0));
    // Garbage in place of the backend: etcd cannot open it and exits at every start.
    let db = cluster.nodes[2].data_dir().join("etcd/member/snap/db");
    std::fs::write(&db, vec![0xa5u8; 64 * 1024]).unwrap();
    let offset = cluster.nodes[2].log().len();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(90))
        .await;
    assert_ne!(common::member_id(&cluster.nodes[2].client_url()).await, old);
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "k").await.as_deref(),
        Some("kept")
    );
    let log = cluster.nodes[2].log_since(offset);
    assert!(log.contains("reporting it unusable"), "{}", cluster.logs());
    assert!(log.contains("quarantined local data"), "{}", cluster.logs());
    assert!(log.contains("added learner"), "{}", cluster.logs());
    let removed = cluster.nodes[..2].iter().any(|n| {
        n.log()
            .lines()
            .any(|l| l.contains("membership change done") && l.contains("remove_unusable"))
    });
    assert!(removed, "{}", cluster.logs());
    let quarantine = cluster.nodes[2].data_dir().join("quarantine");
    assert_eq!(
        std::fs::read_dir(quarantine).unwrap().count(),
        1,
        "the bad data is kept"
    );
}
