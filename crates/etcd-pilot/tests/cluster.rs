//! Bootstrap, join, restart and quarantine, with real pilots and real etcd.
//!
//! Each test has its own loopback /24 (the number passed to `running` or `Cluster::new`).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // Test helpers may unwrap and spawn.

mod common;

use std::time::Duration;

use common::{Cluster, Version, etcd_bin, eventually, get, put};

/// `flag`: words of a flag the release carries (core `upgrade::FLAGGED`).
async fn bootstrap_three_and_replicate(subnet: u8, version: Version, flag: &str) {
    let Some(mut cluster) = common::running(subnet, 3, version).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "greeting", "hello").await;
    for node in &cluster.nodes[1..] {
        assert_eq!(
            get(&node.client_url(), "greeting").await.as_deref(),
            Some("hello")
        );
    }
    // Every pilot reports the same cluster and a running, ready member.
    let mut cluster_ids = Vec::new();
    for i in 0..3 {
        let status = eventually("a ready pilot", Duration::from_secs(10), || async {
            cluster.pilot_status(i).await.filter(|s| s["ready"] == true)
        })
        .await;
        assert_eq!(status["phase"], "running");
        // An error of the first second (etcd not answering yet) clears once it answers.
        assert!(status["last_error"].is_null(), "{status}");
        cluster_ids.push(status["member"]["cluster_id"].clone());
    }
    assert!(
        cluster_ids.windows(2).all(|w| w[0] == w[1]),
        "{cluster_ids:?}"
    );
    // The release etcd.bin is, the one the member runs, and their flags, everywhere.
    let status = cluster.pilot_status(0).await.unwrap();
    let release = &status["release"];
    let running = release["running"].as_str().unwrap().to_owned();
    assert_eq!(release["bin_version"], running.as_str(), "{release}");
    assert!(release["flags"].to_string().contains(flag), "{release}");
    let metrics = cluster.nodes[0].metrics().await;
    assert!(
        metrics.contains(&format!(
            "etcd_pilot_member_version_info{{version=\"{running}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(!metrics.contains("etcd_pilot_release_flags 0"), "{metrics}");
    let endpoints = cluster.endpoints().join(",");
    for command in ["status", "plan"] {
        let out = cluster.cli(&[command, "--endpoints", &endpoints]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("etcd {running} (m1, m2, m3): ")) && text.contains(flag),
            "{command}: {text}"
        );
    }
    // The cluster itself carries the formed marker.
    assert!(
        get(&cluster.nodes[2].client_url(), "/etcd-pilot/cluster/formed")
            .await
            .is_some()
    );
    for i in 0..3 {
        assert_eq!(cluster.stop(i), Some(0), "{}", cluster.logs());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_pilots_bootstrap_a_cluster_with_etcd_3_4() {
    bootstrap_three_and_replicate(21, Version::V34, "3.4 is out of support").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_pilots_bootstrap_a_cluster_with_etcd_3_5() {
    bootstrap_three_and_replicate(22, Version::V35, "not for production").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_etcd_is_restarted_with_its_data() {
    let Some(cluster) = common::running(23, 3, Version::V35).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "k", "v1").await;
    let before = common::member_id(&cluster.nodes[1].client_url()).await;
    let pid = cluster.nodes[1].etcd_pid().expect("etcd pid file");
    common::signal(pid, libc::SIGKILL);
    common::wait_gone(pid);
    let new_pid = eventually("a restarted etcd", Duration::from_secs(10), || async {
        cluster.nodes[1].etcd_pid().filter(|p| *p != pid)
    })
    .await;
    assert_ne!(new_pid, pid);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert_eq!(
        common::member_id(&cluster.nodes[1].client_url()).await,
        before
    );
    assert_eq!(
        get(&cluster.nodes[1].client_url(), "k").await.as_deref(),
        Some("v1")
    );
    let status = cluster.pilot_status(1).await.unwrap();
    assert_eq!(status["etcd_restarts"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_pilot_and_etcd_come_back_as_the_same_member() {
    let Some(mut cluster) = common::running(24, 3, Version::V35).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "k", "before").await;
    let before = common::member_id(&cluster.nodes[2].client_url()).await;
    cluster.kill(2);
    put(&cluster.nodes[0].client_url(), "k2", "while-down").await;
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    assert_eq!(
        common::member_id(&cluster.nodes[2].client_url()).await,
        before
    );
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "k").await.as_deref(),
        Some("before")
    );
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "k2").await.as_deref(),
        Some("while-down")
    );
    assert!(
        cluster.nodes[2]
            .log()
            .contains("restarting etcd on its data"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pilot_left_running_etcd_is_replaced_not_duplicated() {
    // The pilot dies alone (SIGKILL) and its etcd keeps running: the new pilot stops the
    // leftover etcd (it holds the ports and the data lock) and starts its own.
    let Some(mut cluster) = common::running(25, 3, Version::V35).await else {
        return;
    };
    let leftover = cluster.nodes[0].etcd_pid().unwrap();
    let mut pilot = cluster.nodes[0].child.take().unwrap();
    common::signal(pilot.id(), libc::SIGKILL);
    let _ = pilot.wait();
    // The orphan may also die by itself: its log pipe to the dead pilot is closed, and the
    // next line it writes kills it (SIGPIPE). Either way exactly one etcd must run after.
    let offset = cluster.nodes[0].log().len();
    cluster.start(0);
    let fresh = eventually("a new etcd", Duration::from_secs(20), || async {
        cluster.nodes[0].etcd_pid().filter(|p| *p != leftover)
    })
    .await;
    common::wait_gone(leftover);
    assert!(
        !common::alive(leftover),
        "the leftover etcd {leftover} still runs beside {fresh}"
    );
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(30))
        .await;
    let log = cluster.nodes[0].log_since(offset);
    assert!(
        log.contains("restarting etcd on its data"),
        "{}",
        cluster.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_pilot_joins_as_a_learner_and_becomes_a_voter_with_etcd_3_5() {
    fourth_pilot_joins(26, Version::V35).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fourth_pilot_joins_as_a_learner_and_becomes_a_voter_with_etcd_3_4() {
    fourth_pilot_joins(32, Version::V34).await;
}

async fn fourth_pilot_joins(subnet: u8, version: Version) {
    let Some(mut cluster) = common::running(subnet, 3, version).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "k", "v").await;
    let fourth = cluster.add_node();
    cluster.start(fourth);
    cluster
        .wait_voters(&[0, 1, 2, 3], Duration::from_secs(60))
        .await;
    let log = cluster.nodes[fourth].log();
    assert!(log.contains("added learner"), "{}", cluster.logs());
    // The coordinator (the pilot next to the leader) promoted it.
    let promoted = cluster.nodes.iter().any(|n| {
        n.log()
            .lines()
            .any(|l| l.contains("membership change done") && l.contains("promote_learner"))
    });
    assert!(promoted, "{}", cluster.logs());
    assert!(
        !log.contains("bootstrapping a new cluster"),
        "{}",
        cluster.logs()
    );
    assert_eq!(
        get(&cluster.nodes[fourth].client_url(), "k")
            .await
            .as_deref(),
        Some("v")
    );
    assert_eq!(
        common::cluster_id(&cluster.nodes[fourth].client_url()).await,
        common::cluster_id(&cluster.nodes[0].client_url()).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_member_rejoins_instead_of_creating_a_cluster() {
    let Some(mut cluster) = common::running(27, 3, Version::V35).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "k", "kept").await;
    let cluster_id = common::cluster_id(&cluster.nodes[0].client_url()).await;
    let old_member = common::member_id(&cluster.nodes[2].client_url()).await;
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.nodes[2].data_dir()).unwrap();
    let offset = cluster.nodes[2].log().len();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    let log = cluster.nodes[2].log_since(offset);
    assert!(
        log.contains("removing the stale member"),
        "{}",
        cluster.logs()
    );
    assert!(log.contains("added learner"), "{}", cluster.logs());
    assert!(
        !log.contains("bootstrapping a new cluster"),
        "{}",
        cluster.logs()
    );
    assert_eq!(
        common::cluster_id(&cluster.nodes[2].client_url()).await,
        cluster_id
    );
    assert_ne!(
        common::member_id(&cluster.nodes[2].client_url()).await,
        old_member
    );
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "k").await.as_deref(),
        Some("kept")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_node_waits_while_peers_with_data_cannot_form_a_quorum() {
    let Some(mut cluster) = common::running(28, 3, Version::V35).await else {
        return;
    };
    put(&cluster.nodes[0].client_url(), "k", "kept").await;
    for i in 0..3 {
        assert_eq!(cluster.stop(i), Some(0), "{}", cluster.logs());
    }
    // Node 3 loses its whole data dir (markers included) and starts alone.
    std::fs::remove_dir_all(cluster.nodes[2].data_dir()).unwrap();
    let offset = cluster.nodes[2].log().len();
    cluster.start(2);
    let reason = eventually(
        "m3 waiting for its peers",
        Duration::from_secs(20),
        || async {
            let status = cluster.pilot_status(2).await?;
            (status["phase"] == "waiting")
                .then(|| status["reason"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert!(
        reason.contains("waiting for the pilots of m1, m2"),
        "{reason}"
    );
    // m1 comes back with data but cannot form a quorum alone: m3 must keep waiting.
    cluster.start(0);
    let reason = eventually("m3 to see m1's data", Duration::from_secs(20), || async {
        let status = cluster.pilot_status(2).await?;
        let reason = status["reason"].as_str().unwrap_or_default().to_owned();
        (status["phase"] == "waiting" && reason.contains("peer m1 has data")).then_some(reason)
    })
    .await;
    assert!(reason.contains("never created"), "{reason}");
    // m2 comes back: quorum; m3 rejoins the same cluster.
    cluster.start(1);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    assert!(
        !cluster.nodes[2]
            .log_since(offset)
            .contains("bootstrapping a new cluster"),
        "{}",
        cluster.logs()
    );
    assert_eq!(
        get(&cluster.nodes[2].client_url(), "k").await.as_deref(),
        Some("kept")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_of_another_cluster_is_quarantined_and_the_node_rejoins() {
    let Some(etcd) = etcd_bin(Version::V35) else {
        return;
    };
    // A one-member cluster whose member is also called m3: its data is "foreign".
    let mut other = Cluster::new(29, 3, etcd.clone());
    other.write_peers(&[2]);
    other.start(2);
    other.wait_voters(&[2], Duration::from_secs(60)).await;
    put(&other.nodes[2].client_url(), "foreign", "yes").await;
    eventually(
        "the foreign identity marker",
        Duration::from_secs(10),
        || async {
            let text =
                std::fs::read_to_string(other.nodes[2].data_dir().join("identity.json")).ok()?;
            let identity: serde_json::Value = serde_json::from_str(&text).ok()?;
            (!identity["cluster_id"].is_null()).then_some(())
        },
    )
    .await;
    assert_eq!(other.stop(2), Some(0));

    let mut cluster = Cluster::new(30, 3, etcd);
    cluster.start_all();
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    cluster.kill(2);
    let data = cluster.nodes[2].data_dir();
    std::fs::remove_dir_all(data.join("etcd")).unwrap();
    common::copy_dir(&other.nodes[2].data_dir().join("etcd"), &data.join("etcd"));
    std::fs::copy(
        other.nodes[2].data_dir().join("identity.json"),
        data.join("identity.json"),
    )
    .unwrap();
    cluster.start(2);
    // A restart while m1 and m2 elect sees nobody answer and runs the foreign data for a
    // moment; the next reconcile step finds the listed peers in another cluster and sets it
    // aside. Voters alone cannot tell (m3's URL answers with a leader either way).
    eventually(
        "m3 to quarantine the foreign data",
        Duration::from_secs(60),
        || async {
            cluster.nodes[2]
                .log()
                .contains("quarantined local data")
                .then_some(())
        },
    )
    .await;
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    assert_eq!(
        common::cluster_id(&cluster.nodes[2].client_url()).await,
        common::cluster_id(&cluster.nodes[0].client_url()).await,
        "m3 serves the cluster, not the foreign one"
    );
    let quarantined: Vec<_> = std::fs::read_dir(data.join("quarantine"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(quarantined.len(), 1);
    let folder = quarantined[0].path();
    assert!(
        folder.join("etcd/member").is_dir(),
        "the foreign data is kept"
    );
    let reason = std::fs::read_to_string(folder.join("reason.txt")).unwrap();
    assert!(reason.contains("belongs to cluster"), "{reason}");
    assert_eq!(get(&cluster.nodes[2].client_url(), "foreign").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_on_the_leader_moves_leadership_then_exits_zero() {
    let Some(mut cluster) = common::running(31, 3, Version::V35).await else {
        return;
    };
    let leader = eventually("a leader", Duration::from_secs(10), || async {
        for i in 0..3 {
            if cluster.pilot_status(i).await?["member"]["is_leader"] == true {
                return Some(i);
            }
        }
        None
    })
    .await;
    assert_eq!(cluster.stop(leader), Some(0));
    let log = cluster.nodes[leader].log();
    assert!(log.contains("moved leadership"), "{}", cluster.logs());
    assert!(log.contains("shutdown complete"), "{}", cluster.logs());
    assert!(
        cluster.nodes[leader].etcd_pid().is_none(),
        "pid file removed after a clean stop"
    );
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    put(&cluster.nodes[rest[0]].client_url(), "after", "ok").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_bootstrapped_again_with_the_same_members_is_a_new_cluster() {
    // After a total loss the same nodes bootstrap again; data of the old cluster must be told
    // apart from the new one, so the two must not share a cluster id.
    let Some(mut cluster) = common::running(35, 3, Version::V35).await else {
        return;
    };
    let old_id = common::cluster_id(&cluster.nodes[0].client_url()).await;
    for i in 0..3 {
        assert_eq!(cluster.stop(i), Some(0), "{}", cluster.logs());
    }
    let stale = common::tmp_path(&cluster, "stale-m3");
    common::copy_dir(&cluster.nodes[2].data_dir(), &stale);
    for node in &cluster.nodes {
        std::fs::remove_dir_all(node.data_dir()).unwrap();
    }
    cluster.start_all();
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    let new_id = common::cluster_id(&cluster.nodes[0].client_url()).await;
    assert_ne!(old_id, new_id);
    // m3 gets the old cluster's data back: it is quarantined, and m3 rejoins the new cluster.
    cluster.kill(2);
    std::fs::remove_dir_all(cluster.nodes[2].data_dir()).unwrap();
    common::copy_dir(&stale, &cluster.nodes[2].data_dir());
    let offset = cluster.nodes[2].log().len();
    cluster.start(2);
    cluster
        .wait_voters(&[0, 1, 2], Duration::from_secs(60))
        .await;
    let log = cluster.nodes[2].log_since(offset);
    assert!(log.contains("quarantined local data"), "{}", cluster.logs());
    assert_eq!(
        common::cluster_id(&cluster.nodes[2].client_url()).await,
        new_id
    );
}

/// A listed voter killed (pilot and etcd): `plan`, `status`, `/v1/status` and the metric say
/// the cluster cannot lose another member, and name the unreachable one with its age; back to
/// one when it returns. Then the node is lost for good and replaced: the member awaiting
/// removal is shown with the time left of `remove_after`, until the replacement brings the
/// cluster back to full strength.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_voter_is_shown_as_no_fault_tolerance_left() {
    let env = [(
        "ETCD_PILOT_TIMERS_REMOVE_AFTER".to_owned(),
        "20s".to_owned(),
    )];
    let Some(mut cluster) = common::running_with(80, 3, Version::V35, "", &env).await else {
        return;
    };
    let endpoints = cluster.endpoints().join(",");
    let plan = |cluster: &Cluster| {
        let out = cluster.cli(&["plan", "--json", "--endpoints", &endpoints]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let condition = |view: &serde_json::Value, kind: &str, member: &str| {
        view["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["kind"] == kind && c["member"] == member)
            .cloned()
    };
    let first = plan(&cluster);
    assert_eq!(first["fault_tolerance"]["can_lose"], 1, "{first}");
    assert_eq!(first["conditions"], serde_json::json!([]), "{first}");
    cluster.kill(2);
    // The age comes from the coordinator, which has watched m3 since it stopped answering.
    let view = eventually(
        "plan to show no tolerance left and m3 down for a while",
        Duration::from_secs(40),
        || {
            let view = plan(&cluster);
            let aged = condition(&view, "voter_down", "m3")
                .is_some_and(|c| c["for_secs"].as_u64().is_some_and(|s| s >= 3));
            async move { (view["fault_tolerance"]["can_lose"] == 0 && aged).then_some(view) }
        },
    )
    .await;
    let degraded = view["degraded"].to_string();
    assert!(
        degraded.contains("m3: voter does not answer for "),
        "{view}"
    );
    assert!(
        degraded.contains("kept, because discovery lists it"),
        "{view}"
    );
    assert!(
        view["conditions_from"]
            .as_str()
            .unwrap()
            .starts_with("the coordinator's record"),
        "{view}"
    );
    assert_ne!(view["plan"]["next"], "converged", "{view}");
    let text = cluster.cli(&["plan", "--endpoints", &endpoints]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("tolerance:    cannot lose any member: 2 of 3 voters healthy, quorum 2"),
        "{text}"
    );
    assert!(
        text.contains("degraded:     m3: voter does not answer for "),
        "{text}"
    );
    let status = cluster.cli(&["status", "--endpoints", &endpoints]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("fault tolerance: cannot lose any member"),
        "{status}"
    );
    assert!(
        status.contains("degraded: m3: voter does not answer for "),
        "{status}"
    );
    let json = cluster.cli(&["status", "--json", "--endpoints", &endpoints]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["fault_tolerance"]["can_lose"], 0, "{json}");
    assert_eq!(json["members"].as_array().unwrap().len(), 3, "{json}");
    let pilot = eventually("the pilot to see it", Duration::from_secs(30), || async {
        let s = cluster.pilot_status(0).await?;
        (s["fault_tolerance"]["can_lose"] == 0).then_some(s)
    })
    .await;
    assert_eq!(pilot["fault_tolerance"]["healthy"], 2);
    assert!(
        pilot["plan"]["conditions"]
            .to_string()
            .contains("voter_down"),
        "{pilot}"
    );
    let metrics = cluster.nodes[0].metrics().await;
    assert!(
        metrics.contains("etcd_pilot_fault_tolerance 0"),
        "{metrics}"
    );

    // Full strength: can lose one again, and nothing degraded.
    let full_strength = |view: serde_json::Value| {
        (view["fault_tolerance"]["can_lose"] == 1 && view["conditions"] == serde_json::json!([]))
            .then_some(())
    };
    cluster.start(2);
    eventually("tolerance back to one", Duration::from_secs(60), || {
        let done = full_strength(plan(&cluster));
        async move { done }
    })
    .await;

    // Lost for good and replaced: m3 waits out remove_after, shown with the time left.
    cluster.lose(2);
    let view = eventually(
        "m3 shown as awaiting removal",
        Duration::from_secs(30),
        || {
            let view = plan(&cluster);
            let waiting = condition(&view, "awaiting_removal", "m3").is_some_and(|c| {
                c["removal_in_secs"]
                    .as_u64()
                    .is_some_and(|left| (1..=20).contains(&left))
            });
            async move { waiting.then_some(view) }
        },
    )
    .await;
    assert!(
        view["degraded"].to_string().contains("(remove_after)"),
        "{view}"
    );
    let new = cluster.add_node();
    cluster.write_peers(&[0, 1, new]);
    cluster.start(new);
    cluster
        .wait_voters(&[0, 1, new], Duration::from_secs(90))
        .await;
    eventually("full strength again", Duration::from_secs(30), || {
        let done = full_strength(plan(&cluster));
        async move { done }
    })
    .await;
}

/// The coordinator's node killed: `plan` says the holder does not answer and when its lease
/// expires, then names the new coordinator.
#[tokio::test(flavor = "multi_thread")]
async fn plan_says_when_the_coordinator_does_not_answer() {
    let env = [(
        "ETCD_PILOT_TIMERS_COORDINATOR_LEASE".to_owned(),
        "20s".to_owned(),
    )];
    let Some(mut cluster) = common::running_with(82, 3, Version::V35, "", &env).await else {
        return;
    };
    let coordinator = cluster.coordinator().await.expect("one coordinator");
    let old = cluster.nodes[coordinator].name.clone();
    let endpoints = cluster.endpoints().join(",");
    let plan = |cluster: &Cluster| {
        let out = cluster.cli(&["plan", "--endpoints", &endpoints]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = plan(&cluster);
    assert!(
        text.contains(&format!("coordinator:  {old} (fencing token")),
        "{text}"
    );
    assert!(text.contains("lease renewed"), "{text}");
    eventually(
        "the coordinator's first plan record",
        Duration::from_secs(30),
        || {
            let text = plan(&cluster);
            async move { text.contains("next:         converged").then_some(()) }
        },
    )
    .await;
    cluster.kill(coordinator);
    let text = eventually(
        "plan to say the coordinator does not answer",
        Duration::from_secs(30),
        || {
            let text = plan(&cluster);
            async move {
                text.contains("does not answer (its lease expires in")
                    .then_some(text)
            }
        },
    )
    .await;
    assert!(
        text.contains(&format!("unknown: {old} holds the role")),
        "{text}"
    );
    // Its last plan record is not shown as what happens next.
    assert!(text.contains("(stale record, see below)"), "{text}");
    assert!(
        text.contains(&format!(
            "stale:        written by {old}, which does not answer"
        )),
        "{text}"
    );
    eventually("a new coordinator", Duration::from_secs(60), || {
        let text = plan(&cluster);
        let old = old.clone();
        async move {
            (text.contains("coordinator:  m")
                && !text.contains(&format!("coordinator:  {old}"))
                && !text.contains("unknown:"))
            .then_some(())
        }
    })
    .await;
}
