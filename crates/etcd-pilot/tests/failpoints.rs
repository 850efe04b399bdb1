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
