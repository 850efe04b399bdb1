//! Table of start decisions, through one DSL helper, and property tests of its safety rules.

use expect_test::{Expect, expect};
use proptest::prelude::*;

use super::*;

fn name(s: &str) -> MemberName {
    MemberName::new(s).unwrap()
}

fn peer(n: &str) -> Peer {
    Peer {
        name: name(n),
        peer_url: format!("http://{n}:2380"),
        client_url: format!("http://{n}:2379"),
        admin_url: format!("http://{n}:2378"),
    }
}

fn expected_cluster() -> String {
    initial_cluster(
        ["m1", "m2", "m3"]
            .map(peer)
            .iter()
            .map(|p| (&p.name, p.peer_url.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// `empty`, `empty formed`, `nowal` (a member folder without a WAL file), `data` (no marker), `data NAME` (pending marker),
/// `data NAME/CLUSTER/MEMBER`.
fn parse_local(local: &str) -> (LocalData, bool) {
    let words: Vec<&str> = local.split_whitespace().collect();
    match words.as_slice() {
        ["empty"] => (LocalData::Empty, false),
        ["empty", "formed"] => (LocalData::Empty, true),
        ["data"] => (LocalData::Data { identity: None }, true),
        ["nowal"] => (
            LocalData::Unusable {
                reason: "etcd/member has no WAL file".into(),
            },
            true,
        ),
        ["data", id] => {
            let parts: Vec<&str> = id.split('/').collect();
            let identity = Identity {
                name: name(parts[0]),
                cluster_id: parts.get(1).map(|c| ClusterId(c.parse().unwrap())),
                member_id: parts.get(2).map(|m| MemberId(m.parse().unwrap())),
            };
            (
                LocalData::Data {
                    identity: Some(identity),
                },
                true,
            )
        }
        _ => panic!("bad local {local:?}"),
    }
}

/// `m2:empty m3:unknown`; states: empty, formed, data (of cluster 1), live (of cluster 7), boot (token "t"), boot2 (token "t2"),
/// restoring (backup b1), other (a different peer list).
fn parse_peers(peers: &str) -> Vec<PeerReport> {
    peers
        .split_whitespace()
        .map(|entry| {
            let (n, state) = entry.split_once(':').unwrap();
            let report = match state {
                "unknown" => PilotReport::Unknown,
                "empty" => PilotReport::Empty {
                    formed: false,
                    initial_cluster: expected_cluster(),
                },
                "formed" => PilotReport::Empty {
                    formed: true,
                    initial_cluster: expected_cluster(),
                },
                "data" => PilotReport::HasData {
                    cluster_id: Some(ClusterId(1)),
                },
                "live" => PilotReport::HasData {
                    cluster_id: Some(ClusterId(7)),
                },
                "boot" => PilotReport::Bootstrapping {
                    initial_cluster: expected_cluster(),
                    token: "t".into(),
                },
                "boot2" => PilotReport::Bootstrapping {
                    initial_cluster: expected_cluster(),
                    token: "t2".into(),
                },
                "restoring" => PilotReport::Restoring {
                    backup: "b1".into(),
                },
                "other" => PilotReport::Empty {
                    formed: false,
                    initial_cluster: "m2=http://m2:2380".into(),
                },
                _ => panic!("bad peer state {state:?}"),
            };
            PeerReport {
                name: name(n),
                report,
            }
        })
        .collect()
}

/// `unreachable`, or `CLUSTER MEMBER...` where MEMBER is `NAME#ID[:learner][:HEALTH]`
/// (health defaults to healthy; `:unstarted` for an initial member that never started) or
/// `?#ID@NAME` for a member added by MemberAdd, not started, with NAME's peer URL.
fn parse_cluster(cluster: &str) -> ClusterView {
    let mut words = cluster.split_whitespace();
    let first = words.next().unwrap();
    if first == "unreachable" {
        return ClusterView::Unreachable;
    }
    let cluster_id = ClusterId(first.trim_start_matches('c').parse().unwrap());
    let members = words
        .map(|word| {
            let mut parts = word.split(':');
            let head = parts.next().unwrap();
            let (n, rest) = head.split_once('#').unwrap();
            let (id, url_of) = match rest.split_once('@') {
                Some((id, url_of)) => (id, url_of),
                None => (rest, n),
            };
            let mut is_learner = false;
            let mut started = n != "?";
            let mut health = Health::Healthy;
            for part in parts {
                match part {
                    "learner" => is_learner = true,
                    "unstarted" => started = false,
                    "healthy" => health = Health::Healthy,
                    "unhealthy" => health = Health::Unhealthy,
                    "unknown" => health = Health::Unknown,
                    _ => panic!("bad member attribute {part:?}"),
                }
            }
            ObservedMember {
                member: Member {
                    id: MemberId(id.parse().unwrap()),
                    name: (n != "?").then(|| name(n)),
                    peer_urls: vec![peer(url_of).peer_url],
                    client_urls: if started {
                        vec![peer(n).client_url]
                    } else {
                        vec![]
                    },
                    is_learner,
                },
                health: if started { health } else { Health::Unknown },
            }
        })
        .collect();
    ClusterView::Reachable(LiveCluster {
        cluster_id,
        members,
        from_leader: true,
    })
}

fn observed(local: &str, peers: &str, cluster: &str) -> Observed {
    observed_as("m1", local, peers, cluster)
}

fn observed_as(me: &str, local: &str, peers: &str, cluster: &str) -> Observed {
    let (local, formed_locally) = parse_local(local);
    Observed {
        me: peer(me),
        expected: ["m1", "m2", "m3"].map(peer).to_vec(),
        leaving: Vec::new(),
        bootstrap_floor: 3,
        local,
        formed_locally,
        peers: parse_peers(peers),
        cluster: parse_cluster(cluster),
        store: StoreView::NotConfigured,
        allow_empty: false,
        nonce: 0xabcd,
    }
}

/// `none` (not configured), `down`, `empty` (answers, records nothing), `record` (records
/// cluster 9, no verified backup), `backup` (records cluster 9 and has verified backup b1).
fn parse_store(store: &str) -> StoreView {
    let source = RestoreSource {
        id: "b1".into(),
        cluster_id: ClusterId(9),
        revision: 42,
    };
    match store {
        "none" => StoreView::NotConfigured,
        "down" => StoreView::Unreadable("connection refused".into()),
        "empty" => StoreView::Read {
            cluster: None,
            candidate: None,
        },
        "record" => StoreView::Read {
            cluster: Some(ClusterId(9)),
            candidate: None,
        },
        "backup" => StoreView::Read {
            cluster: Some(ClusterId(9)),
            candidate: Some(source),
        },
        _ => panic!("bad store {store:?}"),
    }
}

/// Like [`check`] with the cluster unreachable, for node `me`, a store and the override.
#[track_caller]
fn check_loss(me: &str, local: &str, peers: &str, store: &str, allow_empty: bool, expect: Expect) {
    let mut observed = observed_as(me, local, peers, "unreachable");
    observed.store = parse_store(store);
    observed.allow_empty = allow_empty;
    let decision = decide(&observed, "prod");
    expect.assert_eq(&format!("{decision:?}"));
}

#[track_caller]
fn check(local: &str, peers: &str, cluster: &str, expect: Expect) {
    let decision = decide(&observed(local, peers, cluster), "prod");
    expect.assert_eq(&format!("{decision:?}"));
}

#[test]
fn data_with_our_marker_restarts() {
    check(
        "data m1/7/1",
        "m2:unknown m3:unknown",
        "unreachable",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    check(
        "data m1/7/1",
        "",
        "c7 m1#1:unknown m2#2 m3#3",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
}

#[test]
fn data_with_a_pending_or_missing_marker_restarts() {
    check(
        "data m1",
        "",
        "c7 m1#1 m2#2 m3#3",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    check(
        "data m1",
        "",
        "c7 m2#2 m3#3 ?#4@m1",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    // Pending marker, and neither our name nor our peer URL is in the leader's list, which a
    // peer's marker confirms: removed.
    check(
        "data m1",
        "m2:live",
        "c7 m2#2 m3#3",
        expect![[
            r#"Quarantine { reason: "member m1 was removed from cluster 7; its data cannot rejoin" }"#
        ]],
    );
    // The same list with nobody confirming it may be a stray's: restart on the data.
    check(
        "data m1",
        "",
        "c7 m2#2 m3#3",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    check(
        "data",
        "",
        "unreachable",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
}

#[test]
fn data_of_another_member_is_quarantined() {
    check(
        "data m2/7/2",
        "",
        "unreachable",
        expect![[r#"Quarantine { reason: "the data belongs to member m2, but this node is m1" }"#]],
    );
}

#[test]
fn data_of_another_cluster_is_quarantined_when_the_live_cluster_answers() {
    check(
        "data m1/9/1",
        "m2:live",
        "c7 m1#1 m2#2 m3#3",
        expect![[
            r#"Quarantine { reason: "the data belongs to cluster 9, but the live cluster is 7" }"#
        ]],
    );
}

#[test]
fn a_live_cluster_no_peer_confirms_never_sets_our_data_aside() {
    // Only a stray etcd (cluster 9) answers; no pilot's marker names cluster 9: restart on our
    // data (it cannot form a cluster, and rejoins ours if it exists).
    check(
        "data m1/1/1",
        "m2:data m3:unknown",
        "c9 m3#3",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    // A peer's marker confirms the live cluster 7: our data of cluster 9 goes aside.
    check(
        "data m1/9/1",
        "m2:live m3:unknown",
        "c7 m2#2 m3#3",
        expect![[
            r#"Quarantine { reason: "the data belongs to cluster 9, but the live cluster is 7" }"#
        ]],
    );
}

#[test]
fn data_of_a_removed_member_is_quarantined() {
    check(
        "data m1/7/1",
        "",
        "c7 m2#2 m3#3",
        expect![[
            r#"Quarantine { reason: "member 1 was removed from cluster 7; its data cannot rejoin" }"#
        ]],
    );
}

#[test]
fn without_the_leader_s_view_data_is_never_judged_removed_and_nobody_joins() {
    let mut lagging = observed("data m1/7/1", "", "c7 m2#2 m3#3");
    if let ClusterView::Reachable(live) = &mut lagging.cluster {
        live.from_leader = false;
    }
    expect![[
        r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
    ]]
    .assert_eq(&format!("{:?}", decide(&lagging, "prod")));
    let mut foreign = observed("data m1/9/1", "m2:live", "c7 m2#2 m3#3");
    if let ClusterView::Reachable(live) = &mut foreign.cluster {
        live.from_leader = false;
    }
    expect![[
        r#"Quarantine { reason: "the data belongs to cluster 9, but the live cluster is 7" }"#
    ]]
    .assert_eq(&format!("{:?}", decide(&foreign, "prod")));
    let mut empty = observed("empty", "", "c7 m2#2 m3#3");
    if let ClusterView::Reachable(live) = &mut empty.cluster {
        live.from_leader = false;
    }
    expect![[r#"Wait { reason: "the cluster answers but reports no leader (an election, or no quorum); joining waits for a leader" }"#]]
        .assert_eq(&format!("{:?}", decide(&empty, "prod")));
}

#[test]
fn empty_node_joins_a_healthy_cluster_as_a_learner() {
    check(
        "empty",
        "m2:data m3:data",
        "c7 m2#2 m3#3",
        expect![[r#"Join(AddLearner)"#]],
    );
    check(
        "empty formed",
        "",
        "c7 m2#2 m3#3",
        expect!["Join(AddLearner)"],
    );
}

#[test]
fn empty_node_starts_the_unstarted_entry_with_its_peer_url() {
    check(
        "empty",
        "",
        "c7 m2#2 m3#3 ?#5@m1",
        expect![[
            r#"Join(Start { member_id: MemberId(5), initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" })"#
        ]],
    );
}

#[test]
fn empty_initial_member_that_never_started_starts_in_the_formed_cluster() {
    check(
        "empty",
        "m2:data m3:data",
        "c7 m1#1:unstarted m2#2 m3#3",
        expect![[
            r#"Join(Start { member_id: MemberId(1), initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" })"#
        ]],
    );
}

#[test]
fn empty_node_removes_its_stale_started_member_first() {
    check(
        "empty",
        "",
        "c7 m1#1:unknown m2#2 m3#3",
        expect![[r#"Join(RemoveStale { member_id: MemberId(1) })"#]],
    );
    check(
        "empty",
        "",
        "c7 m1#1:learner:unknown m2#2 m3#3",
        expect![[r#"Join(RemoveStale { member_id: MemberId(1) })"#]],
    );
}

#[test]
fn stale_member_removal_waits_for_a_healthy_quorum() {
    check(
        "empty",
        "",
        "c7 m1#1:unknown m2#2 m3#3:unknown",
        expect![[
            r#"Wait { reason: "removing the stale member 1 would leave 1 of 2 voters healthy, below a quorum of 2" }"#
        ]],
    );
}

#[test]
fn a_dead_member_gone_from_discovery_is_removed_before_this_node_joins() {
    check(
        "empty",
        "",
        "c7 m2#2 m3#3 m9#9:unknown",
        expect![[
            r#"Wait { reason: "member m9 left discovery; waiting for the coordinator to remove it before this node joins (remove before add)" }"#
        ]],
    );
}

#[test]
fn an_empty_node_that_discovery_does_not_list_waits() {
    let mut observed = observed("empty", "m2:empty m3:empty", "c7 m2#2 m3#3");
    observed.expected.retain(|p| p.name.as_str() != "m1");
    let decision = decide(&observed, "prod");
    expect![[
        r#"Wait { reason: "discovery does not list this node (m1); it joins once it is listed" }"#
    ]]
    .assert_eq(&format!("{decision:?}"));
}

#[test]
fn joins_happen_one_at_a_time() {
    check(
        "empty",
        "",
        "c7 m2#2 m3#3 m4#4:learner",
        expect![[
            r#"Wait { reason: "one membership change at a time: member m4 (4) is still joining; this node joins after it" }"#
        ]],
    );
    check(
        "empty",
        "",
        "c7 m2#2 m3#3 ?#4@m4",
        expect![[
            r#"Wait { reason: "one membership change at a time: member 4 (added, not started) is still joining; this node joins after it" }"#
        ]],
    );
    check(
        "empty",
        "",
        "c7 m1#1 m2#2 m3#3 m4#4:learner",
        expect![[
            r#"Wait { reason: "one membership change at a time: member m4 (4) is still joining; this node joins after it" }"#
        ]],
    );
}

#[test]
fn joining_waits_for_a_healthy_quorum() {
    check(
        "empty",
        "",
        "c7 m2#2:unknown m3#3:unhealthy",
        expect![[
            r#"Wait { reason: "the cluster has 0 of 2 voters healthy, below its quorum of 2; a member can only be added to a cluster with a healthy quorum" }"#
        ]],
    );
}

#[test]
fn peer_url_taken_by_another_member_waits_with_the_fix() {
    check(
        "empty",
        "",
        "c7 m2#2@m1 m3#3",
        expect![[
            r#"Wait { reason: "peer URL http://m1:2380 is registered to member m2 (2); remove that member (etcdctl member remove 2) or give this node another peer URL" }"#
        ]],
    );
}

#[test]
fn a_node_taking_over_a_lost_member_s_address_waits_for_its_removal() {
    // m1 took over the address of m0, whom discovery no longer lists.
    check(
        "empty",
        "",
        "c7 m2#2 m3#3 m0#9@m1",
        expect![[
            r#"Wait { reason: "peer URL http://m1:2380 is still registered to member m0 (9), which discovery no longer lists: the coordinator removes it after timers.remove_after (once the quorum and the mass-removal guard allow), then this node joins" }"#
        ]],
    );
}

#[test]
fn all_peers_empty_bootstrap_a_new_cluster() {
    check(
        "empty",
        "m2:empty m3:empty",
        "unreachable",
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "prod-13db1039-0000abcd" }"#
        ]],
    );
    check(
        "empty",
        "m2:boot m3:empty",
        "unreachable",
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "t" }"#
        ]],
    );
}

#[test]
fn only_the_first_peer_proposes_the_token_and_the_others_adopt_it() {
    let check_as = |me: &str, peers: &str, expect: Expect| {
        let decision = decide(&observed_as(me, "empty", peers, "unreachable"), "prod");
        expect.assert_eq(&format!("{decision:?}"));
    };
    check_as(
        "m2",
        "m1:empty m3:empty",
        expect![[
            r#"Wait { reason: "every peer is empty; waiting for m1 to start the bootstrap (the first peer by name chooses the cluster token)" }"#
        ]],
    );
    check_as(
        "m3",
        "m1:boot m2:empty",
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "t" }"#
        ]],
    );
    check_as(
        "m3",
        "m1:boot m2:boot2",
        expect![[
            r#"Wait { reason: "peers bootstrap with different cluster tokens (t, t2), so they cannot form one cluster; stop their pilots, move their data dirs aside and start them again" }"#
        ]],
    );
}

#[test]
fn bootstrap_waits_for_every_pilot() {
    check(
        "empty",
        "m2:empty m3:unknown",
        "unreachable",
        expect![[
            r#"Wait { reason: "waiting for the pilots of m3 to answer: a new cluster is only created when every listed peer confirms it holds no data" }"#
        ]],
    );
}

#[test]
fn bootstrap_never_happens_after_a_cluster_formed() {
    check(
        "empty formed",
        "m2:empty m3:empty",
        "unreachable",
        expect![[
            r#"Wait { reason: "a cluster has formed with this node before (marker in the data dir), and no peer's etcd answers: waiting to rejoin it. No backup store is configured to restore from, and a new cluster is never created from empty disks once one has formed (set restore.allow_empty_cluster = true to create one anyway)" }"#
        ]],
    );
    check(
        "empty",
        "m2:empty m3:data",
        "unreachable",
        expect![[
            r#"Wait { reason: "peer m3 has data, but no etcd answers: waiting for the cluster to come back (a new cluster is never created, nor a backup restored, while any peer holds data)" }"#
        ]],
    );
    check(
        "empty",
        "m2:formed m3:empty",
        "unreachable",
        expect![[
            r#"Wait { reason: "peer m2 saw a cluster form, and no peer's etcd answers: waiting to rejoin it. No backup store is configured to restore from, and a new cluster is never created from empty disks once one has formed (set restore.allow_empty_cluster = true to create one anyway)" }"#
        ]],
    );
}

#[test]
fn bootstrap_waits_when_peer_lists_disagree() {
    check(
        "empty",
        "m2:other m3:empty",
        "unreachable",
        expect![[
            r#"Wait { reason: "peer m2 would bootstrap with m2=http://m2:2380, this node with m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380; make the peer lists agree" }"#
        ]],
    );
}

#[test]
fn after_total_loss_the_first_peer_restores_the_verified_backup() {
    check_loss(
        "m1",
        "empty",
        "m2:empty m3:empty",
        "backup",
        false,
        expect![[
            r#"Restore { source: RestoreSource { id: "b1", cluster_id: ClusterId(9), revision: 42 }, initial_cluster: "m1=http://m1:2380", token: "prod-bfc119b5-0000abcd" }"#
        ]],
    );
    check_loss(
        "m2",
        "empty",
        "m1:empty m3:empty",
        "backup",
        false,
        expect![
            "Wait { reason: \"the backup store records cluster 9 and every peer is empty: waiting for m1 to restore backup b1 (the first peer by name restores; the others join it)\" }"
        ],
    );
    // Formed markers count as "a cluster existed" too.
    check_loss(
        "m1",
        "empty formed",
        "m2:formed m3:empty",
        "backup",
        false,
        expect![[
            r#"Restore { source: RestoreSource { id: "b1", cluster_id: ClusterId(9), revision: 42 }, initial_cluster: "m1=http://m1:2380", token: "prod-bfc119b5-0000abcd" }"#
        ]],
    );
    check_loss(
        "m2",
        "empty",
        "m1:restoring m3:empty",
        "backup",
        false,
        expect![
            "Wait { reason: \"peer m1 is restoring backup b1; this node joins the cluster it starts\" }"
        ],
    );
}

#[test]
fn no_restore_while_a_peer_may_hold_data() {
    check_loss(
        "m1",
        "empty",
        "m2:data m3:empty",
        "backup",
        false,
        expect![
            "Wait { reason: \"peer m2 has data, but no etcd answers: waiting for the cluster to come back (a new cluster is never created, nor a backup restored, while any peer holds data)\" }"
        ],
    );
    check_loss(
        "m1",
        "empty",
        "m2:unknown m3:empty",
        "backup",
        false,
        expect![
            "Wait { reason: \"the backup store records cluster 9, and no peer's etcd answers; waiting for the pilots of m2 to answer (a peer that does not answer may hold the cluster's data)\" }"
        ],
    );
    check_loss(
        "m1",
        "empty",
        "m2:boot m3:empty",
        "backup",
        false,
        expect![
            "Wait { reason: \"the backup store records cluster 9, yet peer m2 is bootstrapping a new cluster; stop its pilot and check its backup store settings\" }"
        ],
    );
}

#[test]
fn a_lost_cluster_without_a_readable_backup_is_not_recreated_empty() {
    check_loss(
        "m1",
        "empty",
        "m2:empty m3:empty",
        "record",
        false,
        expect![
            "Wait { reason: \"the backup store records cluster 9, no peer has data, and the backup store holds no verified backup of it: refusing to create an empty cluster (set restore.allow_empty_cluster = true to create one anyway, or restore a backup with `etcd-pilot restore`)\" }"
        ],
    );
    check_loss(
        "m1",
        "empty formed",
        "m2:empty m3:empty",
        "down",
        false,
        expect![
            "Wait { reason: \"a cluster has formed with this node before (marker in the data dir), no peer's etcd answers, and the backup store cannot be read (connection refused): waiting for the store to restore from it\" }"
        ],
    );
    // An unreadable store blocks even a first bootstrap: it may record a cluster.
    check_loss(
        "m1",
        "empty",
        "m2:empty m3:empty",
        "down",
        false,
        expect![
            "Wait { reason: \"the backup store cannot be read (connection refused), so whether a cluster existed before is unknown: a new cluster is only created once the store answers (or with restore.allow_empty_cluster = true)\" }"
        ],
    );
    // The operator's override creates an empty cluster.
    check_loss(
        "m1",
        "empty",
        "m2:empty m3:empty",
        "record",
        true,
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "prod-13db1039-0000abcd" }"#
        ]],
    );
    // With the override, a peer that started the empty bootstrap first is followed.
    check_loss(
        "m2",
        "empty",
        "m1:boot m3:empty",
        "record",
        true,
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "t" }"#
        ]],
    );
    // A store that answers and records nothing: a first bootstrap as usual.
    check_loss(
        "m1",
        "empty",
        "m2:empty m3:empty",
        "empty",
        false,
        expect![[
            r#"BootstrapNew { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380", token: "prod-13db1039-0000abcd" }"#
        ]],
    );
}

#[test]
fn a_member_folder_without_a_wal_is_quarantined_and_the_node_joins() {
    check(
        "nowal",
        "",
        "c7 m1#1:unknown m2#2 m3#3",
        expect![[r#"Quarantine { reason: "etcd/member has no WAL file" }"#]],
    );
    // Even with nobody answering: etcd would bootstrap a cluster of its own on it.
    check(
        "nowal",
        "m2:unknown m3:unknown",
        "unreachable",
        expect![[r#"Quarantine { reason: "etcd/member has no WAL file" }"#]],
    );
}

#[test]
fn a_restart_names_the_live_members_or_else_the_listed_peers() {
    check(
        "data m1/7/1",
        "",
        "c7 m1#1 m2#2 m3#3 ?#4@m4",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
    check(
        "data m1/7/1",
        "m2:unknown m3:unknown",
        "unreachable",
        expect![[
            r#"Restart { initial_cluster: "m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380" }"#
        ]],
    );
}

#[test]
fn a_new_node_joins_the_old_cluster_through_leaving_nodes() {
    // Every old instance terminates at once (held by the hook); the new ones are m1-m3 and
    // the old members o1-o3 are leaving, not listed.
    let mut all = observed("empty", "m2:empty m3:empty", "c7 o1#1 o2#2 o3#3");
    all.leaving = ["o1", "o2", "o3"].map(peer).to_vec();
    expect![[r#"Join(AddLearner)"#]].assert_eq(&format!("{:?}", decide(&all, "prod")));
    // A member that left discovery and is not leaving still blocks (remove before add).
    let mut observed = observed_as("m1", "empty", "", "c7 o1#1 o2#2 o3#3");
    observed.leaving = ["o1", "o2"].map(peer).to_vec();
    expect![[r#"Wait { reason: "member o3 left discovery; waiting for the coordinator to remove it before this node joins (remove before add)" }"#]]
        .assert_eq(&format!("{:?}", decide(&observed, "prod")));
}

#[test]
fn no_cluster_is_created_or_restored_past_a_leaving_node_that_may_hold_data() {
    let mut silent = observed("empty", "m2:empty m3:empty o1:unknown", "unreachable");
    silent.leaving = vec![peer("o1")];
    let observed_silent = silent;
    expect![[r#"Wait { reason: "o1 is leaving but still runs, and its pilot does not answer: it may hold the cluster's data, so no cluster is created or restored until it answers or is gone" }"#]]
        .assert_eq(&format!("{:?}", decide(&observed_silent, "prod")));
    let mut observed = observed_as(
        "m1",
        "empty formed",
        "m2:formed m3:formed o1:data",
        "unreachable",
    );
    observed.leaving = vec![peer("o1")];
    observed.store = parse_store("backup");
    expect![[r#"Wait { reason: "o1 is leaving but still runs with data, and no etcd answers: no cluster is created or restored while it may hold the cluster's data" }"#]]
        .assert_eq(&format!("{:?}", decide(&observed, "prod")));
    // An empty leaving node holds nothing.
    let mut empty = observed_as("m1", "empty", "m2:empty m3:empty o1:empty", "unreachable");
    empty.leaving = vec![peer("o1")];
    assert!(matches!(
        decide(&empty, "prod"),
        Decision::BootstrapNew { .. }
    ));
}

#[test]
fn a_new_cluster_needs_as_many_empty_pilots_as_the_floor() {
    // Discovery lists two of the group's three: a partial view.
    let mut partial = observed_as("m1", "empty", "m2:empty", "unreachable");
    partial.expected = ["m1", "m2"].map(peer).to_vec();
    expect![[r#"Wait { reason: "peer m2 would bootstrap with m1=http://m1:2380,m2=http://m2:2380,m3=http://m3:2380, this node with m1=http://m1:2380,m2=http://m2:2380; make the peer lists agree" }"#]]
        .assert_eq(&format!("{:?}", decide(&partial, "prod")));
    // The same for a restore after total loss.
    let mut observed = observed_as("m1", "empty formed", "m2:formed", "unreachable");
    observed.expected = ["m1", "m2"].map(peer).to_vec();
    observed.store = parse_store("backup");
    expect![[r#"Wait { reason: "2 pilot(s) answer empty, but a new cluster needs 3 (the size discovery expects): waiting for the rest to be listed and to answer" }"#]]
        .assert_eq(&format!("{:?}", decide(&observed, "prod")));
}

fn arb_report() -> impl Strategy<Value = PilotReport> {
    prop_oneof![
        Just(PilotReport::Unknown),
        any::<bool>().prop_map(|formed| PilotReport::Empty {
            formed,
            initial_cluster: expected_cluster()
        }),
        Just(PilotReport::Bootstrapping {
            initial_cluster: expected_cluster(),
            token: "t".into()
        }),
        Just(PilotReport::HasData { cluster_id: None }),
        Just(PilotReport::HasData {
            cluster_id: Some(ClusterId(7))
        }),
        Just(PilotReport::HasData {
            cluster_id: Some(ClusterId(1))
        }),
        Just(PilotReport::Restoring {
            backup: "b1".into()
        }),
    ]
}

fn arb_member(id: u64) -> impl Strategy<Value = ObservedMember> {
    (
        0..4usize,
        any::<bool>(),
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::Unhealthy),
            Just(Health::Unknown)
        ],
        any::<bool>(),
    )
        .prop_map(move |(n, is_learner, health, started)| {
            let who = ["m1", "m2", "m3", "m4"][n];
            ObservedMember {
                member: Member {
                    id: MemberId(id),
                    name: Some(name(who)),
                    peer_urls: vec![peer(who).peer_url],
                    client_urls: if started {
                        vec![peer(who).client_url]
                    } else {
                        vec![]
                    },
                    is_learner,
                },
                health,
            }
        })
}

fn arb_cluster() -> impl Strategy<Value = ClusterView> {
    prop_oneof![
        Just(ClusterView::Unreachable),
        (1..6u64)
            .prop_flat_map(|n| (1..=n).map(arb_member).collect::<Vec<_>>())
            .prop_map(|members| ClusterView::Reachable(LiveCluster {
                cluster_id: ClusterId(7),
                members,
                from_leader: true,
            })),
    ]
}

fn arb_observed() -> impl Strategy<Value = Observed> {
    (
        0..3u8,
        any::<bool>(),
        arb_report(),
        arb_report(),
        arb_cluster(),
        prop::sample::select(vec!["none", "down", "empty", "record", "backup"])
            .prop_map(parse_store),
        any::<bool>(),
    )
        .prop_map(
            |(has_data, formed_locally, r2, r3, cluster, store, allow_empty)| Observed {
                me: peer("m1"),
                expected: ["m1", "m2", "m3"].map(peer).to_vec(),
                leaving: Vec::new(),
                bootstrap_floor: 3,
                local: match has_data {
                    0 => LocalData::Empty,
                    1 => LocalData::Data { identity: None },
                    _ => LocalData::Unusable {
                        reason: "no WAL".into(),
                    },
                },
                formed_locally,
                peers: vec![
                    PeerReport {
                        name: name("m2"),
                        report: r2,
                    },
                    PeerReport {
                        name: name("m3"),
                        report: r3,
                    },
                ],
                cluster,
                store,
                allow_empty,
                nonce: 1,
            },
        )
}

proptest! {
    #[test]
    fn restores_only_after_total_loss_on_the_first_peer_by_name(observed in arb_observed()) {
        if let Decision::Restore { source, .. } = decide(&observed, "prod") {
            prop_assert!(observed.local == LocalData::Empty);
            prop_assert!(matches!(observed.cluster, ClusterView::Unreachable));
            let stored = matches!(&observed.store, StoreView::Read { candidate: Some(c), .. } if *c == source);
            prop_assert!(stored, "restored a backup the store did not offer");
            prop_assert_eq!(observed.me.name.as_str(), "m1");
            for peer in &observed.peers {
                prop_assert!(matches!(peer.report, PilotReport::Empty { .. }),
                    "restored although {} reported {:?}", peer.name, peer.report);
            }
        }
    }

    #[test]
    fn a_cluster_the_store_records_is_never_recreated_empty_without_the_override(
        observed in arb_observed(),
    ) {
        let decision = decide(&observed, "prod");
        if matches!(decision, Decision::BootstrapNew { .. }) && !observed.allow_empty {
            prop_assert!(matches!(
                observed.store,
                StoreView::NotConfigured | StoreView::Read { cluster: None, .. }
            ), "bootstrapped empty with store {:?}", observed.store);
        }
    }

    #[test]
    fn never_bootstraps_when_anything_says_a_cluster_exists(observed in arb_observed()) {
        let decision = decide(&observed, "prod");
        if matches!(decision, Decision::BootstrapNew { .. }) && !observed.allow_empty {
            prop_assert!(observed.local == LocalData::Empty);
            prop_assert!(!observed.formed_locally);
            prop_assert!(matches!(observed.cluster, ClusterView::Unreachable));
            for peer in &observed.peers {
                prop_assert!(matches!(
                    peer.report,
                    PilotReport::Empty { formed: false, .. } | PilotReport::Bootstrapping { .. }
                ), "bootstrapped although {} reported {:?}", peer.name, peer.report);
            }
        }
    }

    #[test]
    fn a_bootstrap_uses_the_token_peers_already_bootstrap_with(observed in arb_observed()) {
        if let Decision::BootstrapNew { token, .. } = decide(&observed, "prod") {
            for peer in &observed.peers {
                if let PilotReport::Bootstrapping { token: theirs, .. } = &peer.report {
                    prop_assert_eq!(&token, theirs);
                }
            }
        }
    }

    #[test]
    fn never_changes_membership_while_another_change_is_pending(observed in arb_observed()) {
        let decision = decide(&observed, "prod");
        let ClusterView::Reachable(live) = &observed.cluster else { return Ok(()) };
        let pending_others = live.members.iter().filter(|m| {
            m.member.is_pending()
                && m.member.name.as_ref() != Some(&observed.me.name)
                && !m.member.peer_urls.contains(&observed.me.peer_url)
        }).count();
        if matches!(decision, Decision::Join(JoinStep::AddLearner | JoinStep::RemoveStale { .. })) {
            prop_assert_eq!(pending_others, 0, "{:?} while another change is pending", decision);
        }
    }

    #[test]
    fn stale_removal_keeps_a_healthy_quorum(observed in arb_observed()) {
        let decision = decide(&observed, "prod");
        let ClusterView::Reachable(live) = &observed.cluster else { return Ok(()) };
        if let Decision::Join(JoinStep::RemoveStale { member_id }) = decision {
            let target = live.members.iter().find(|m| m.member.id == member_id).unwrap();
            if !target.member.is_learner {
                let voters: Vec<_> = live.members.iter()
                    .filter(|m| !m.member.is_learner && m.member.id != member_id).collect();
                let healthy = voters.iter().filter(|m| m.health == Health::Healthy).count();
                prop_assert!(healthy >= quorum(voters.len()));
            }
        }
    }

    #[test]
    fn adds_a_learner_only_to_a_cluster_with_a_healthy_quorum(observed in arb_observed()) {
        let decision = decide(&observed, "prod");
        let ClusterView::Reachable(live) = &observed.cluster else { return Ok(()) };
        if decision == Decision::Join(JoinStep::AddLearner) {
            let voters: Vec<_> = live.members.iter().filter(|m| !m.member.is_learner).collect();
            let healthy = voters.iter().filter(|m| m.health == Health::Healthy).count();
            prop_assert!(healthy >= quorum(voters.len()));
        }
    }

    #[test]
    fn a_restart_always_names_this_node_and_data_without_a_wal_never_restarts(
        observed in arb_observed()
    ) {
        match decide(&observed, "prod") {
            Decision::Restart { initial_cluster } => {
                let has_data = matches!(observed.local, LocalData::Data { .. });
                prop_assert!(has_data);
                prop_assert!(initial_cluster.split(',').any(|pair| pair == "m1=http://m1:2380"),
                    "{initial_cluster}");
            }
            decision if matches!(observed.local, LocalData::Unusable { .. }) => {
                let quarantined = matches!(decision, Decision::Quarantine { .. });
                prop_assert!(quarantined, "{:?}", decision);
            }
            _ => {}
        }
    }

    #[test]
    fn never_bootstraps_or_restores_below_the_floor_or_past_a_leaving_node(
        mut observed in arb_observed(),
        floor in 1..=4usize,
        leaving in arb_report(),
    ) {
        observed.bootstrap_floor = floor;
        observed.leaving = vec![peer("o1")];
        observed.peers.push(PeerReport { name: name("o1"), report: leaving.clone() });
        if let Decision::BootstrapNew { .. } | Decision::Restore { .. } = decide(&observed, "prod") {
            let empty = 1 + observed.peers.iter().filter(|p| p.name.as_str() != "o1"
                && matches!(p.report, PilotReport::Empty { .. } | PilotReport::Bootstrapping { .. })).count();
            prop_assert!(empty >= floor, "{empty} < {floor}");
            let leaving_empty = matches!(leaving, PilotReport::Empty { .. });
            prop_assert!(leaving_empty, "{:?}", leaving);
        }
    }

    #[test]
    fn data_of_another_cluster_goes_aside_only_when_a_peer_confirms_the_live_one(
        mut observed in arb_observed(),
        ours in 1..10u64,
    ) {
        observed.local = LocalData::Data {
            identity: Some(Identity {
                name: name("m1"),
                cluster_id: Some(ClusterId(ours)),
                member_id: Some(MemberId(1)),
            }),
        };
        if let (ClusterView::Reachable(live), Decision::Quarantine { .. }) =
            (&observed.cluster, decide(&observed, "prod"))
            && live.cluster_id != ClusterId(ours)
        {
            let confirmed = observed.peers.iter().any(|p| {
                p.report == PilotReport::HasData { cluster_id: Some(live.cluster_id) }
            });
            prop_assert!(confirmed, "{:?}", observed.peers);
        }
    }
}
