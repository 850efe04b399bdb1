//! Backups against real etcd and real stores (a local folder, moto S3 and SeaweedFS over
//! HTTP): total loss restores by itself from the newest verified backup; a corrupt backup
//! fails verify and is skipped; another cluster's backup is refused unless forced; a store
//! outage leaves etcd alone and the next backup succeeds once the store is back.
#![allow(clippy::unwrap_used)] // Test code.

mod common;

use std::path::Path;
use std::time::Duration;

use common::s3::{Kind, S3};
use common::{Cluster, Version, eventually};

/// Takes a backup now and returns its manifest.
fn backup_now(cluster: &Cluster) -> serde_json::Value {
    let out = cluster.cli_ok(&["backup", "now"]);
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    cluster
        .backups()
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap()
}

/// Waits until the scheduled drill has verified backup `id`.
async fn wait_verified(cluster: &Cluster, id: &str) {
    eventually(
        &format!("the scheduled drill to verify backup {id}"),
        Duration::from_secs(90),
        || async {
            cluster
                .backups()
                .iter()
                .any(|m| m["id"] == id && m["verification"]["result"] == "passed")
                .then_some(())
        },
    )
    .await;
}

async fn put_keys(cluster: &Cluster, prefix: &str, n: usize) {
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    for i in 0..n {
        client
            .put(format!("{prefix}{i:04}"), format!("value-{i}"), None)
            .await
            .unwrap();
    }
}

async fn count_keys(cluster: &Cluster, prefix: &str) -> usize {
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    let response = client.get(prefix, Some(options)).await.unwrap();
    usize::try_from(response.count()).unwrap()
}

/// Keys under `prefix`, asking one endpoint (a client of several may pick a dead one).
async fn count_keys_at(endpoint: &str, prefix: &str) -> usize {
    let mut client = common::connect(&[endpoint.to_owned()]).await.unwrap();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    let response = client.get(prefix, Some(options)).await.unwrap();
    usize::try_from(response.count()).unwrap()
}

async fn revision(cluster: &Cluster) -> i64 {
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Every node killed and its disk wiped, then every pilot started again.
fn lose_everything(cluster: &mut Cluster) {
    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
        std::fs::remove_dir_all(cluster.nodes[i].data_dir()).unwrap();
    }
}

/// Total loss: the cluster comes back by itself from the newest verified backup, with every
/// key written before it and a revision not lower than the backup's.
async fn total_loss_restores(subnet: u8, version: Version, store: &str, env: &[(String, String)]) {
    let extra = format!("{store}interval = \"1h\"\n");
    let Some(mut cluster) = common::running_with(subnet, 3, version, &extra, env).await else {
        return;
    };
    // The first scheduled backup streams from a follower, not from the leader beside the
    // coordinator.
    let scheduled = eventually(
        "the first scheduled backup",
        Duration::from_secs(60),
        || async { cluster.backups().first().cloned() },
    )
    .await;
    let mut leaders = Vec::new();
    for i in 0..3 {
        let status = cluster.pilot_status(i).await.unwrap();
        if status["member"]["is_leader"] == true {
            leaders.push(status["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        !leaders.iter().any(|l| scheduled["member"] == l.as_str()),
        "backup {} streamed from the leader {leaders:?}",
        scheduled["id"]
    );
    put_keys(&cluster, "before/", 200).await;
    let backup = backup_now(&cluster);
    let id = backup["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &id).await;
    put_keys(&cluster, "after/", 10).await;

    lose_everything(&mut cluster);
    cluster.start_all();
    cluster.wait_settled().await;

    assert_eq!(count_keys(&cluster, "before/").await, 200);
    assert_eq!(
        count_keys(&cluster, "after/").await,
        0,
        "keys after the backup cannot exist"
    );
    assert!(revision(&cluster).await >= backup["revision"].as_i64().unwrap());
    let logs = cluster.logs();
    assert!(
        logs.contains(&format!(
            "total loss: restoring the newest verified backup backup={id}"
        )),
        "{logs}"
    );
    // The tools installed here (etcdctl 3.4, etcdutl 3.5) have no --bump-revision: detected,
    // and said.
    assert!(
        logs.contains("the restore tool cannot --bump-revision"),
        "{logs}"
    );
    // Exactly one pilot restored.
    assert_eq!(
        logs.matches("backup restored; starting etcd on it").count(),
        1,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn total_loss_restores_from_a_local_folder_with_etcd_35() {
    let store = tempfile::tempdir().unwrap();
    let section = format!("\n[backup]\nurl = \"file://{}\"\n", store.path().display());
    total_loss_restores(43, Version::V35, &section, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn total_loss_restores_from_moto_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3::start(Kind::Moto, 21460, dir.path()).await else {
        return;
    };
    total_loss_restores(46, Version::V35, &s3.backup_config("prod", ""), &S3::env()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn total_loss_restores_from_seaweedfs_with_etcd_34() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3::start(Kind::Seaweed, 21470, dir.path()).await else {
        return;
    };
    total_loss_restores(47, Version::V34, &s3.backup_config("prod", ""), &S3::env()).await;
}

fn flip_bytes(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

/// A corrupt backup fails verify with a clear error and automatic restore skips it for the
/// previous verified one; a backup of another cluster is refused unless forced.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_and_foreign_backups_are_refused() {
    let store = tempfile::tempdir().unwrap();
    // No scheduled drills: the test corrupts a backup before verifying it itself.
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\ndrill = false\n",
        store.path().display()
    );
    let Some(mut cluster) = common::running_with(44, 3, Version::V34, &extra, &[]).await else {
        return;
    };
    put_keys(&cluster, "first/", 50).await;
    let good = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    let out = cluster.cli_ok(&["backup", "verify", &good]);
    assert!(out.contains("restores: "), "{out}");
    put_keys(&cluster, "second/", 50).await;
    let bad = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    let backups = store.path().join("test/backups");
    flip_bytes(&backups.join(&bad).join("snapshot.db.zst"));

    let config = cluster.nodes[0].config_path();
    let output = cluster.cli(&[
        "backup",
        "verify",
        &bad,
        "--config",
        config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("backup {bad} failed verification")) && stderr.contains("corrupt"),
        "{stderr}"
    );
    let listed = cluster.cli_ok(&["backup", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&bad) && l.ends_with("FAILED")),
        "{listed}"
    );

    // A copy of the good backup claiming another cluster.
    let foreign = "20200101T000000.000Z";
    common::copy_dir(&backups.join(&good), &backups.join(foreign));
    let manifest_path = backups.join(foreign).join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["id"] = foreign.into();
    manifest["cluster_id"] = "deadbeef".into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    lose_everything(&mut cluster);
    cluster.start_all();
    cluster.wait_settled().await;
    assert_eq!(count_keys(&cluster, "first/").await, 50);
    assert_eq!(count_keys(&cluster, "second/").await, 0);
    assert!(cluster.logs().contains(&format!(
        "total loss: restoring the newest verified backup backup={good}"
    )));

    // The operator restores by hand: another cluster's backup is refused unless forced.
    lose_everything(&mut cluster);
    let output = cluster.cli(&[
        "restore",
        "--from",
        foreign,
        "--config",
        config.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("was taken by cluster deadbeef") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = cluster.cli_ok(&["restore", "--from", foreign, "--force"]);
    assert!(out.contains("as a one-member cluster of m1"), "{out}");
    cluster.start_all();
    cluster.wait_settled().await;
    assert_eq!(count_keys(&cluster, "first/").await, 50);
}

/// The store dies under scheduled backups: etcd is unaffected, the error shows in status and
/// metrics, and backups resume once the store is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_leaves_etcd_alone_and_backups_resume() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut s3) = S3::start(Kind::Seaweed, 21480, dir.path()).await else {
        return;
    };
    // Retention keeps every backup for 6 s only, and its hourly, daily and weekly tiers
    // reach back 1 s: old ones go, even when the run crosses an hour (the first backup would
    // otherwise stay as its hour's newest).
    let extra = s3.backup_config(
        "outage",
        "interval = \"2s\"\ntimeout = \"3s\"\ndrill = false\nkeep_all = \"6s\"\n\
         keep_hourly = \"1s\"\nkeep_daily = \"1s\"\nkeep_weekly = \"1s\"",
    );
    let Some(cluster) = common::running_with(45, 3, Version::V35, &extra, &S3::env()).await else {
        return;
    };
    let first = eventually("a scheduled backup", Duration::from_secs(30), || async {
        cluster
            .backups()
            .first()
            .map(|m| m["id"].as_str().unwrap().to_owned())
    })
    .await;
    let coordinator = cluster.coordinator().await.unwrap();

    let newest_before = cluster.backups().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s3.kill();
    let status = eventually(
        "the backup error in status",
        Duration::from_secs(60),
        || async {
            let status = cluster.pilot_status(coordinator).await?;
            status["backup"]["last_error"].is_string().then_some(status)
        },
    )
    .await;
    eprintln!("backup error shown: {}", status["backup"]["last_error"]);
    let metrics = cluster.nodes[coordinator].metrics().await;
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("etcd_pilot_backup_failures_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 1.0, "{metrics}");
    // etcd does not notice.
    common::put(&cluster.nodes[0].client_url(), "during-outage", "ok").await;
    assert_eq!(
        common::get(&cluster.nodes[2].client_url(), "during-outage")
            .await
            .as_deref(),
        Some("ok")
    );
    assert_eq!(status["phase"], "running");

    s3.restart().await;
    eventually("backups to resume", Duration::from_secs(60), || async {
        let status = cluster.pilot_status(coordinator).await?;
        let newer = cluster
            .backups()
            .iter()
            .any(|m| m["id"].as_str().unwrap() > newest_before.as_str());
        (status["backup"]["last_error"].is_null() && newer).then_some(())
    })
    .await;
    eventually(
        "retention to delete the first backup",
        Duration::from_secs(30),
        || async {
            let listed = cluster.backups();
            (!listed.is_empty() && !listed.iter().any(|m| m["id"] == first.as_str())).then_some(())
        },
    )
    .await;
}

/// The store says a cluster existed, every disk is empty and no backup passed a drill: the
/// pilots refuse to create an empty cluster and say so in status and plan, until the operator
/// passes the override.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_cluster_without_a_verified_backup_is_not_recreated_empty() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\ndrill = false\n",
        store.path().display()
    );
    let Some(mut cluster) = common::running_with(49, 3, Version::V35, &extra, &[]).await else {
        return;
    };
    eventually(
        "the first scheduled backup",
        Duration::from_secs(30),
        || async { (!cluster.backups().is_empty()).then_some(()) },
    )
    .await;
    lose_everything(&mut cluster);
    cluster.start_all();
    let refusal = "refusing to create an empty cluster";
    eventually("every pilot to refuse", Duration::from_secs(30), || async {
        for i in 0..3 {
            let status = cluster.pilot_status(i).await?;
            let reason = status["reason"].as_str()?;
            if status["phase"] != "waiting" || !reason.contains(refusal) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let endpoints = cluster.endpoints().join(",");
    let output = cluster.cli(&["plan", "--endpoints", &endpoints]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the pilots say:") && stderr.contains(refusal),
        "{stderr}"
    );

    // The operator's override: an empty cluster.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_with_env(i, &[("ETCD_PILOT_RESTORE_ALLOW_EMPTY_CLUSTER", "true")]);
    }
    cluster.wait_settled().await;
    common::put(&cluster.nodes[0].client_url(), "fresh", "yes").await;
    assert_eq!(
        common::get(&cluster.nodes[2].client_url(), "fresh")
            .await
            .as_deref(),
        Some("yes")
    );
}

/// Whoever can write to the store controls what a manifest says: a manifest whose id escapes
/// (`x/../../etcd` would resolve to the live data from the drill's scratch folder), is
/// absolute, holds a NUL or differs from the key it is stored under is refused, and nothing
/// outside the pilot's scratch folders is touched.
#[tokio::test(flavor = "multi_thread")]
async fn manifests_whose_ids_escape_are_refused_and_touch_nothing() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n",
        store.path().display()
    );
    let Some(cluster) = common::running_with(71, 3, Version::V35, &extra, &[]).await else {
        return;
    };
    put_keys(&cluster, "k/", 20).await;
    let good = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &good).await;
    let canaries: Vec<_> = cluster
        .nodes
        .iter()
        .map(|node| {
            let canary = node.data_dir().join("canary");
            std::fs::write(&canary, b"still here").unwrap();
            canary
        })
        .collect();

    // Newer than the good backup, so each would be the next drill's target.
    let backups = store.path().join("test/backups");
    let forged = [
        ("20300101T000000.000Z", "x/../../etcd"),
        ("20300101T000001.000Z", "/etc"),
        ("20300101T000002.000Z", "20300101T000002.000Z\u{0}"),
        ("20300101T000003.000Z", "20200101T000000.000Z"),
    ];
    for (key, id) in forged {
        common::copy_dir(&backups.join(&good), &backups.join(key));
        let path = backups.join(key).join("manifest.json");
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        manifest["id"] = id.into();
        manifest["verification"] = serde_json::json!({ "result": "unverified" });
        manifest["created_unix_ms"] = 1_893_456_000_000_u64.into();
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    }
    // A key that is no backup id at all.
    common::copy_dir(&backups.join(&good), &backups.join("not-an-id"));

    let listed = cluster.cli_ok(&["backup", "list"]);
    assert!(
        !listed.contains("2030") && !listed.contains("not-an-id") && listed.contains(&good),
        "{listed}"
    );
    let output = cluster.cli(&[
        "backup",
        "verify",
        "20300101T000000.000Z",
        "--config",
        cluster.nodes[0].config_path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("a manifest must name the backup"),
        "{stderr}"
    );
    let output = cluster.cli(&[
        "backup",
        "verify",
        "../../etcd",
        "--config",
        cluster.nodes[0].config_path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("is not a backup id"),
        "{stderr}"
    );

    // The schedule lists the store again and drills what it finds: a new backup, drilled.
    let next = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &next).await;
    for canary in &canaries {
        assert_eq!(std::fs::read(canary).unwrap(), b"still here");
    }
    assert_eq!(count_keys(&cluster, "k/").await, 20);
    for node in &cluster.nodes {
        assert!(node.data_dir().join("etcd/member/wal").is_dir());
    }
    assert!(
        cluster
            .logs()
            .contains("a manifest must name the backup it is stored under"),
        "the refused manifests are not logged"
    );
}

async fn connect_as_root(cluster: &Cluster) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_user("root", "s3cret")
        .with_auto_token_refresh(true)
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect(cluster.endpoints(), Some(options))
        .await
        .unwrap()
}

/// With etcd auth on (a root user, the pilots reading its password from a file): backups,
/// drills (the restored snapshot keeps auth on) and the automatic restore after total loss.
#[tokio::test(flavor = "multi_thread")]
async fn backups_drills_and_restores_work_with_auth_enabled() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n",
        store.path().display()
    );
    // 3.5.1 loses simple tokens on members that recover from a snapshot (fixed in 3.5.3-3.5.6).
    let Some(mut cluster) = common::running_with(73, 3, Version::V3516, &extra, &[]).await else {
        return;
    };
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    client.user_add("root", "s3cret", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.auth_enable().await.unwrap();
    let password = cluster.tmp.path().join("etcd-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    cluster.env.extend([
        ("ETCD_PILOT_ETCD_USERNAME".to_owned(), "root".to_owned()),
        (
            "ETCD_PILOT_ETCD_PASSWORD_FILE".to_owned(),
            password.display().to_string(),
        ),
    ]);
    for i in 0..3 {
        cluster.stop(i);
        cluster.start(i);
    }
    cluster.wait_settled().await;

    let mut root = connect_as_root(&cluster).await;
    for i in 0..30 {
        root.put(format!("auth/{i:02}"), "v", None).await.unwrap();
    }
    let id = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &id).await;
    let out = cluster.cli_ok(&["backup", "verify", &id]);
    assert!(out.contains("restores: "), "{out}");

    lose_everything(&mut cluster);
    cluster.start_all();
    cluster.wait_settled().await;
    let mut root = connect_as_root(&cluster).await;
    let count = root
        .get(
            "auth/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(count, 30);
    let refused = common::connect(&cluster.endpoints())
        .await
        .unwrap()
        .get("auth/00", None)
        .await;
    assert!(refused.is_err(), "auth is still on after the restore");
}

/// Two restores of one loss started at once (`etcd-pilot restore` on two nodes, both reading
/// "no claim" before either creates one: the failpoint holds them there): exactly one
/// restores, the other is refused naming the holder; the cluster then comes up around it.
#[cfg(feature = "failpoints")]
async fn racing_restores_make_one_restorer(
    subnet: u8,
    version: Version,
    store: &str,
    env: &[(String, String)],
) {
    let extra = format!("{store}interval = \"1h\"\n");
    let Some(mut cluster) = common::running_with(subnet, 2, version, &extra, env).await else {
        return;
    };
    put_keys(&cluster, "raced/", 40).await;
    let id = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &id).await;
    lose_everything(&mut cluster);

    let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let config = cluster.nodes[i].config_path();
                let cluster = &cluster;
                scope.spawn(move || {
                    cluster.cli_env(
                        &[
                            "restore",
                            "--from",
                            "latest",
                            "--config",
                            config.to_str().unwrap(),
                        ],
                        &[("FAILPOINTS", "claim-before-create=sleep(2000)")],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..2).filter(|&i| outputs[i].status.success()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one restore: {:?}",
        outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
    let lost = 1 - won[0];
    let refused = String::from_utf8_lossy(&outputs[lost].stderr);
    assert!(
        refused.contains("holds the restore claim of this loss"),
        "{refused}"
    );
    assert!(!cluster.nodes[lost].data_dir().join("etcd").exists());

    cluster.start_all();
    cluster.wait_settled().await;
    assert_eq!(count_keys(&cluster, "raced/").await, 40);
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn racing_restores_make_one_restorer_on_a_local_folder() {
    let store = tempfile::tempdir().unwrap();
    let section = format!("\n[backup]\nurl = \"file://{}\"\n", store.path().display());
    racing_restores_make_one_restorer(74, Version::V35, &section, &[]).await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn racing_restores_make_one_restorer_on_moto_s3() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3::start(Kind::Moto, 21490, dir.path()).await else {
        return;
    };
    racing_restores_make_one_restorer(75, Version::V35, &s3.backup_config("prod", ""), &S3::env())
        .await;
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn racing_restores_make_one_restorer_on_seaweedfs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s3) = S3::start(Kind::Seaweed, 21500, dir.path()).await else {
        return;
    };
    racing_restores_make_one_restorer(76, Version::V35, &s3.backup_config("prod", ""), &S3::env())
        .await;
}

/// A claimant killed mid-restore (its instance gone: the peers file drops it) holds its claim
/// until the heartbeat has stood still for `restore.claim_timeout`; then the next pilot takes
/// it over and the cluster comes up. A second total loss after that restores again (a new
/// claim for a new incident), and a claimant killed then is released by the operator.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_claimant_is_taken_over_and_the_next_loss_restores_again() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n\n[restore]\nclaim_timeout = \"8s\"\n",
        store.path().display()
    );
    let Some(mut cluster) = common::running_with(77, 3, Version::V35, &extra, &[]).await else {
        return;
    };
    put_keys(&cluster, "kept/", 25).await;
    let id = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &id).await;

    // m1 (first by name) claims the restore and dies before its data is in place.
    lose_everything(&mut cluster);
    cluster.start_with_env(0, &[("FAILPOINTS", "restore-before-install=return")]);
    cluster.start(1);
    cluster.start(2);
    let status = common::wait_child(
        cluster.nodes[0].child.as_mut().unwrap(),
        Duration::from_secs(60),
    )
    .expect("m1 dies at the failpoint");
    assert!(!status.success());
    cluster.nodes[0].child = None;
    cluster.write_peers(&[1, 2]);
    cluster.wait_voters(&[1, 2], Duration::from_secs(90)).await;
    assert_eq!(
        count_keys_at(&cluster.nodes[2].client_url(), "kept/").await,
        25
    );
    let logs = cluster.logs();
    assert!(logs.contains("taking it over"), "{logs}");
    assert!(
        logs.contains("waiting: pilot m1 holds the restore claim"),
        "{logs}"
    );

    // That loss is over: the restored cluster recorded itself in the store, so a new loss
    // would be its own, with no claim yet.
    let config = cluster.nodes[1].config_path();
    let release = |cluster: &Cluster| {
        let output = cluster.cli(&[
            "restore",
            "--release-claim",
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let out = release(&cluster);
    assert!(out.contains("nothing to release"), "{out}");

    // A second total loss, no backup taken since: restored again, by a claim of the new loss.
    // Its claimant dies too, and the operator releases the claim instead of waiting.
    for i in 1..3 {
        cluster.kill(i);
        std::fs::remove_dir_all(cluster.nodes[i].data_dir()).unwrap();
    }
    cluster.start_with_env(1, &[("FAILPOINTS", "restore-before-install=return")]);
    cluster.start(2);
    let status = common::wait_child(
        cluster.nodes[1].child.as_mut().unwrap(),
        Duration::from_secs(60),
    )
    .expect("m2 dies at the failpoint");
    assert!(!status.success());
    cluster.nodes[1].child = None;
    let out = release(&cluster);
    assert!(
        out.contains("released restore claim 1 of pilot m2"),
        "{out}"
    );
    cluster.start(1);
    cluster.wait_voters(&[1, 2], Duration::from_secs(90)).await;
    assert_eq!(
        count_keys_at(&cluster.nodes[2].client_url(), "kept/").await,
        25
    );
    assert!(
        !cluster
            .logs()
            .contains("cannot mark the restore claim finished")
    );
}

/// Total loss restored with etcd 3.5.16, whose `etcdutl` bumps revisions: the restored
/// cluster's revision is above every revision a client saw before the loss (including the
/// writes after the backup, which are lost), and a watch resumed from a pre-loss revision gets
/// etcd's "compacted" answer instead of silently missing events.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_with_bumped_revisions_never_goes_back_in_time() {
    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n",
        store.path().display()
    );
    let Some(mut cluster) = common::running_with(79, 3, Version::V3516, &extra, &[]).await else {
        return;
    };
    put_keys(&cluster, "kept/", 30).await;
    let id = backup_now(&cluster)["id"].as_str().unwrap().to_owned();
    wait_verified(&cluster, &id).await;
    // Writes after the backup: lost with the cluster, but clients saw their revisions.
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    let mut seen = 0;
    for i in 0..20 {
        let response = client.put(format!("lost/{i}"), "v", None).await.unwrap();
        seen = seen.max(response.header().unwrap().revision());
    }
    drop(client);

    lose_everything(&mut cluster);
    cluster.start_all();
    cluster.wait_settled().await;
    assert_eq!(count_keys(&cluster, "kept/").await, 30);
    assert_eq!(count_keys(&cluster, "lost/").await, 0);
    let now = revision(&cluster).await;
    assert!(
        now > seen,
        "revision {now} after the restore, {seen} seen before the loss"
    );
    let logs = cluster.logs();
    assert!(!logs.contains("cannot --bump-revision"), "{logs}");

    // A watcher that saw revision `seen` resumes from the next one.
    let mut client = common::connect(&cluster.endpoints()).await.unwrap();
    let mut watch = client
        .watch(
            "lost/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(seen + 1),
            ),
        )
        .await
        .unwrap();
    let mut compacted = 0;
    for _ in 0..3 {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the watch answers")
            .unwrap()
            .expect("the watch stream stays open");
        if response.canceled() {
            compacted = response.compact_revision();
            break;
        }
        assert!(
            response.events().is_empty(),
            "events from before the restore"
        );
    }
    assert!(
        compacted > seen,
        "compacted at {compacted}, {seen} seen before"
    );
}
