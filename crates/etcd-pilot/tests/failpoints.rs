//! Crashes at the worst moments, injected with failpoints: a pilot dies right after MemberAdd,
//! a coordinator right after MemberRemove. After a restart the cluster converges with no
//! duplicate and no orphan member. Needs `--features failpoints` (`make test` passes it).
#![allow(clippy::unwrap_used)] // Test code.

mod common;

use std::time::Duration;

use common::{Version, eventually};

#[test]
fn failpoints_are_compiled_in_under_ci() {
    assert!(
        cfg!(feature = "failpoints") || std::env::var_os("CI").is_none(),
        "CI runs the crash tests: build with --features failpoints (make test does)"
    );
}

/// The member list's names (unstarted entries by id), through the first node that answers.
async fn member_names(cluster: &common::Cluster) -> Vec<String> {
    let list = eventually("a member list", Duration::from_secs(15), || async {
        for endpoint in cluster.endpoints() {
            if let Ok(mut client) = common::connect(&[endpoint]).await
                && let Ok(Ok(list)) =
                    tokio::time::timeout(Duration::from_secs(2), client.member_list()).await
            {
                return Some(list);
            }
        }
        None
    })
    .await;
    let mut names: Vec<String> = list
        .members()
        .iter()
        .map(|m| {
            if m.name().is_empty() {
                format!("unstarted:{:x}", m.id())
            } else {
                m.name().to_owned()
            }
        })
        .collect();
    names.sort();
    names
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_pilot_that_crashes_right_after_member_add_adopts_its_entry_on_restart() {
    let Some(mut cluster) = common::running(40, 3, Version::V35).await else {
        return;
    };
    let new = cluster.add_node();
    cluster.start_with_env(new, &[("FAILPOINTS", "after-member-add=return")]);
    let status = common::wait_child(
        cluster.nodes[new].child.as_mut().unwrap(),
        Duration::from_secs(60),
    )
    .expect("the pilot crashes at the failpoint");
    assert!(!status.success());
    cluster.nodes[new].child = None;
    let names = member_names(&cluster).await;
    assert_eq!(
        names.len(),
        4,
        "one entry was added before the crash: {names:?}"
    );
    let offset = cluster.nodes[new].log().len();
    cluster.start(new);
    cluster
        .wait_voters(&[0, 1, 2, new], Duration::from_secs(60))
        .await;
    let log = cluster.nodes[new].log_since(offset);
    assert!(log.contains("starting etcd to join"), "{}", cluster.logs());
    assert!(
        !log.contains("added learner"),
        "no second MemberAdd: {}",
        cluster.logs()
    );
    assert_eq!(member_names(&cluster).await, ["m1", "m2", "m3", "m4"]);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_that_crashes_right_after_member_remove_converges_on_restart() {
    let Some(etcd) = common::etcd_bin(Version::V35) else {
        return;
    };
    let mut cluster = common::Cluster::new(41, 3, etcd);
    for i in 0..3 {
        cluster.start_with_env(i, &[("FAILPOINTS", "after-member-remove=return")]);
    }
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    cluster.lose(2);
    let crashed = eventually(
        "the coordinator to crash after MemberRemove",
        Duration::from_secs(60),
        || {
            let crashed = (0..2).find(|&i| {
                cluster.nodes[i]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            });
            async move { crashed }
        },
    )
    .await;
    cluster.nodes[crashed].child = None;
    assert_eq!(
        member_names(&cluster).await,
        ["m1", "m2"],
        "m3 was removed before the crash"
    );
    cluster.start(crashed);
    let new = cluster.add_node();
    cluster.write_peers(&[0, 1, new]);
    cluster.start(new);
    cluster
        .wait_voters(&[0, 1, new], Duration::from_secs(90))
        .await;
    assert_eq!(member_names(&cluster).await, ["m1", "m2", "m4"]);
    let unfinished = cluster.nodes.iter().any(|n| {
        n.log()
            .contains("the previous coordinator left a change unfinished")
    });
    assert!(
        unfinished,
        "the next coordinator saw the started intent: {}",
        cluster.logs()
    );
}

/// A pilot killed mid-upload leaves parts but no manifest, so no backup; the next one works.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_killed_mid_upload_leaves_no_backup_and_the_next_one_succeeds() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\ndrill = false\n",
        store.path().display()
    );
    let Some(cluster) = common::running_with(48, 1, Version::V35, &extra, &[]).await else {
        return;
    };
    // More than one upload part (5 MiB) of incompressible values.
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    for i in 0..12 {
        let value: Vec<u8> = (0..1024 * 1024).map(|_| rand_byte()).collect();
        client.put(format!("big/{i}"), value, None).await.unwrap();
    }
    let scheduled = eventually(
        "the first scheduled backup",
        Duration::from_secs(30),
        || async {
            let listed = cluster.backups();
            (!listed.is_empty()).then_some(listed.len())
        },
    )
    .await;
    let config = cluster.nodes[0].config_path();
    let now = ["backup", "now", "--config", config.to_str().unwrap()];
    let crashed = cluster.cli_env(&now, &[("FAILPOINTS", "backup-mid-upload=return")]);
    assert!(!crashed.status.success(), "the failpoint did not fire");
    assert_eq!(
        cluster.backups().len(),
        scheduled,
        "an interrupted upload must not list as a backup"
    );
    cluster.cli_ok(&["backup", "now"]);
    let listed = cluster.backups();
    assert_eq!(listed.len(), scheduled + 1);
    assert!(listed.last().unwrap()["db_size"].as_u64().unwrap() > 12 * 1024 * 1024);
}

/// A pseudo-random byte (xorshift; the values only need to defeat compression).
fn rand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) });
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 24) as u8
    })
}

/// A pilot killed during a restore drill leaves the drill's etcd running; the pilot's next
/// drill stops it (by the pid it recorded) and clears the scratch folder.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_interrupted_by_a_crash_is_cleaned_up_by_the_next_one() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n",
        store.path().display()
    );
    let Some(etcd) = common::etcd_bin(Version::V35) else {
        return;
    };
    let mut cluster = common::Cluster::with(50, 1, etcd, &extra, &[]);
    cluster.start_with_env(0, &[("FAILPOINTS", "drill-after-etcd-start=return")]);
    // The first scheduled backup is drilled; the pilot dies with the drill's etcd up.
    let status = common::wait_child(
        cluster.nodes[0].child.as_mut().unwrap(),
        Duration::from_secs(90),
    )
    .expect("the failpoint did not fire");
    assert!(!status.success());
    cluster.nodes[0].child = None;
    let drill_dir = cluster.nodes[0].data_dir().join("drill");
    let pid: u32 = std::fs::read_to_string(drill_dir.join("etcd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::alive(pid),
        "the drill's etcd should have outlived its pilot"
    );

    cluster.start(0);
    eventually(
        "the leftover drill etcd to be stopped",
        Duration::from_secs(60),
        || async { (!common::alive(pid)).then_some(()) },
    )
    .await;
    // The next drill (of a new backup) passes and leaves nothing behind.
    cluster.cli_ok(&["backup", "now"]);
    eventually(
        "the new backup to be drilled",
        Duration::from_secs(60),
        || async {
            (cluster.backups().last()?["verification"]["result"] == "passed").then_some(())
        },
    )
    .await;
    let left: Vec<_> = std::fs::read_dir(&drill_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != ".etcd-pilot-scratch")
        .collect();
    assert!(left.is_empty(), "left in the drill folder: {left:?}");
}

/// A drill that cannot start its etcd says nothing about the backup: it stays unverified,
/// the error shows in `/v1/status` and the metrics, and the next drill (after
/// `backup.drill_retry`) passes.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_drill_that_cannot_start_leaves_the_backup_unverified_and_the_next_passes() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\ndrill_retry = \"5s\"\n",
        store.path().display()
    );
    let Some(etcd) = common::etcd_bin(Version::V35) else {
        return;
    };
    let mut cluster = common::Cluster::with(72, 1, etcd, &extra, &[]);
    cluster.start_with_env(0, &[("FAILPOINTS", "drill-etcd-start=1*return")]);
    let retry = eventually(
        "the failed drill to show in /v1/status",
        Duration::from_secs(90),
        || async {
            let status = cluster.pilot_status(0).await?;
            let retry = status["backup"]["drill_retry"].clone();
            (!retry.is_null()).then_some(retry)
        },
    )
    .await;
    assert_eq!(retry["attempts"], 1, "{retry}");
    assert!(
        retry["error"]
            .as_str()
            .unwrap()
            .contains("failpoint drill-etcd-start"),
        "{retry}"
    );
    let id = retry["backup"].as_str().unwrap().to_owned();
    let manifest = cluster
        .backups()
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    assert_eq!(manifest["verification"]["result"], "unverified");
    eventually(
        "the next drill to pass",
        Duration::from_secs(60),
        || async {
            cluster
                .backups()
                .iter()
                .any(|m| m["id"] == id.as_str() && m["verification"]["result"] == "passed")
                .then_some(())
        },
    )
    .await;
    let status = cluster.pilot_status(0).await.unwrap();
    assert!(status["backup"]["drill_retry"].is_null(), "{status}");
    let metrics = cluster.nodes[0].metrics().await;
    assert!(
        metrics.contains("etcd_pilot_drill_errors_total{kind=\"environment\"} 1"),
        "{metrics}"
    );
}

/// The seed's pilot dies in the middle of a reseed: with the data copied and the reseed
/// recorded but etcd not yet forced, or while its forced etcd leads alone. Restarted, it
/// completes the reseed once: one record, counted once, every acknowledged write kept.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_seed_that_crashes_mid_reseed_completes_it_on_restart() {
    for (subnet, failpoint) in [(88, "reseed-before-force"), (89, "reseed-forced")] {
        let extra = "quorum_lost_after = \"2s\"\n";
        let env = [("FAILPOINTS".to_owned(), format!("{failpoint}=return"))];
        let Some(mut cluster) = common::running_with(subnet, 3, Version::V35, extra, &env).await
        else {
            return;
        };
        let m1 = cluster.nodes[0].client_url();
        for i in 0..30 {
            common::put(&m1, &format!("k{i}"), "v").await;
        }
        cluster.lose(1);
        cluster.lose(2);
        let status = common::wait_child(
            cluster.nodes[0].child.as_mut().unwrap(),
            Duration::from_secs(90),
        )
        .expect("the seed's pilot crashes at the failpoint");
        assert!(!status.success(), "{failpoint}");
        cluster.nodes[0].child = None;
        cluster.start_with_env(0, &[("FAILPOINTS", "")]);
        let record = eventually("the reseed record", Duration::from_secs(90), || async {
            let mut client = common::connect(std::slice::from_ref(&m1)).await.ok()?;
            let response = client.get("/etcd-pilot/cluster/reseed", None).await.ok()?;
            let kv = response.kvs().first()?;
            serde_json::from_slice::<serde_json::Value>(kv.value()).ok()
        })
        .await;
        assert_eq!(record["by"], "m1", "{failpoint}: {record}");
        for i in 0..30 {
            assert_eq!(
                common::get(&m1, &format!("k{i}")).await.as_deref(),
                Some("v"),
                "{failpoint}"
            );
        }
        let metrics = cluster.nodes[0].metrics().await;
        assert!(
            metrics.contains("etcd_pilot_reseeds_total 1"),
            "{failpoint}: counted once"
        );
        assert!(
            !cluster.nodes[0].data_dir().join("reseed.json").exists(),
            "{failpoint}: the marker is gone once the record is written"
        );
        // Normal again: the next etcd start is not forced.
        let log = cluster.nodes[0].log();
        let forced = log.matches("--force-new-cluster\"").count();
        assert!(forced >= 1, "{failpoint}: {log}");
    }
}

/// A seed's pilot crashes right after deciding a reseed, and the voters it found gone are
/// back in discovery before it restarts: the reseed is abandoned, its record dropped, etcd
/// restarts normally and the old cluster is whole again with every write.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_reseed_decided_before_a_crash_is_abandoned_when_the_lost_voters_return() {
    let extra = "quorum_lost_after = \"2s\"\n";
    let env = [(
        "FAILPOINTS".to_owned(),
        "reseed-before-force=return".to_owned(),
    )];
    let Some(mut cluster) = common::running_with(90, 3, Version::V35, extra, &env).await else {
        return;
    };
    let m1 = cluster.nodes[0].client_url();
    for i in 0..30 {
        common::put(&m1, &format!("k{i}"), "v").await;
    }
    cluster.kill(1);
    cluster.kill(2);
    cluster.write_peers(&[0]);
    let status = common::wait_child(
        cluster.nodes[0].child.as_mut().unwrap(),
        Duration::from_secs(90),
    )
    .expect("the seed's pilot crashes at the failpoint");
    assert!(!status.success());
    cluster.nodes[0].child = None;
    assert!(cluster.nodes[0].data_dir().join("reseed.json").exists());

    cluster.write_peers(&[0, 1, 2]);
    for i in 0..3 {
        cluster.start_with_env(i, &[("FAILPOINTS", "")]);
    }
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(90))
        .await;
    let log = cluster.nodes[0].log();
    assert!(
        log.contains("discovery lists m2, m3 again: abandoning it"),
        "{log}"
    );
    assert!(!cluster.nodes[0].data_dir().join("reseed.json").exists());
    assert_eq!(common::get(&m1, "/etcd-pilot/cluster/reseed").await, None);
    for i in 0..30 {
        assert_eq!(
            common::get(&cluster.nodes[2].client_url(), &format!("k{i}"))
                .await
                .as_deref(),
            Some("v")
        );
    }
}
