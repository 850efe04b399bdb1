//! Table of coordinator plans, through one DSL helper, and property tests of the safety rules.

use expect_test::{Expect, expect};
use proptest::prelude::*;

use super::*;
use crate::model::MemberName;

fn peer(name: &str) -> Peer {
    Peer {
        name: MemberName::new(name).unwrap(),
        peer_url: format!("http://{name}:2380"),
        client_url: format!("http://{name}:2379"),
        admin_url: format!("http://{name}:2378"),
    }
}

/// Members: `NAME#ID[:attr]...`; attributes: `healthy` (default), `unhealthy`, `unknown`,
/// `learner`, `unstarted`, `leader`, `i=INDEX`, `gone=SECS` (unlisted that long),
/// `pending=SECS`, `down=SECS` (not healthy that long), `unusable`, `terminating`, `foreign` (answers as cluster 9), `cannotrun`
/// (its pilot cannot run etcd). Discovery: peer names, or `FAILED`.
pub(crate) fn observed(members: &str, discovery: &str) -> Observed {
    let mut leader = None;
    let members = members
        .split_whitespace()
        .map(|word| {
            let mut parts = word.split(':');
            let (name, id) = parts.next().unwrap().split_once('#').unwrap();
            let id = MemberId(id.parse().unwrap());
            let mut m = ObservedMember::probed(
                Member {
                    id,
                    name: Some(MemberName::new(name).unwrap()),
                    peer_urls: vec![peer(name).peer_url],
                    client_urls: vec![peer(name).client_url],
                    is_learner: false,
                },
                Some((Health::Healthy, 100)),
            );
            for part in parts {
                match part.split_once('=') {
                    Some(("i", v)) => m.raft_index = Some(v.parse().unwrap()),
                    Some(("gone", v)) => {
                        m.unlisted_for = Some(Duration::from_secs(v.parse().unwrap()))
                    }
                    Some(("pending", v)) => {
                        m.pending_for = Some(Duration::from_secs(v.parse().unwrap()))
                    }
                    Some(("down", v)) => m.down_for = Some(Duration::from_secs(v.parse().unwrap())),
                    _ => match part {
                        "healthy" => m.health = Health::Healthy,
                        "unhealthy" => m.health = Health::Unhealthy,
                        "unknown" => {
                            m.health = Health::Unknown;
                            m.raft_index = None;
                        }
                        "learner" => m.member.is_learner = true,
                        "terminating" => m.terminating = true,
                        "unstarted" => {
                            m.member.client_urls.clear();
                            m.member.name = None;
                            m.health = Health::Unknown;
                            m.raft_index = None;
                        }
                        "leader" => leader = Some(id),
                        "unusable" => m.data_unusable = true,
                        "foreign" => {
                            m.health = Health::Unknown;
                            m.problem = Some("answers as cluster 9".into());
                        }
                        "cannotrun" => {
                            m.health = Health::Unknown;
                            m.problem = Some("cannot run etcd: bad flag".into());
                        }
                        _ => panic!("bad attribute {part:?}"),
                    },
                }
            }
            m
        })
        .collect();
    let discovery = if discovery == "FAILED" {
        Discovery::Failed {
            error: "timeout".into(),
        }
    } else {
        Discovery::Listed(discovery.split_whitespace().map(peer).collect())
    };
    Observed {
        members,
        leader,
        discovery,
    }
}

#[track_caller]
fn check(members: &str, discovery: &str, expect: Expect) {
    let plan = plan(&observed(members, discovery), &crate::plan::test_policy());
    expect.assert_eq(&format!("{plan:?}"));
}

#[test]
fn a_cluster_matching_discovery_is_converged() {
    check("a#1:leader b#2 c#3", "a b c", expect![[r#"Converged"#]]);
}

#[test]
fn a_listed_peer_that_has_not_joined_is_not_converged() {
    check(
        "a#1:leader b#2",
        "a b c",
        expect![[
            r#"Wait { reason: "no member to remove, but not at full strength: discovery lists c that is not a member yet (its pilot adds it as a learner); the cluster survives 0 more failure(s)" }"#
        ]],
    );
}

#[test]
fn a_member_gone_from_discovery_is_removed_after_the_grace_period() {
    check(
        "a#1:leader b#2 c#3:unknown:gone=10",
        "a b",
        expect![[r#"Wait { reason: "c (3) left discovery 10s ago; removing it after 30s" }"#]],
    );
    check(
        "a#1:leader b#2 c#3:unknown:gone=31",
        "a b",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: Unlisted }, reason: "c (3) left discovery 31s ago" }"#
        ]],
    );
}

#[test]
fn removal_waits_when_it_would_break_the_quorum() {
    check(
        "a#1:leader b#2:unknown c#3:unknown:gone=60",
        "a b",
        expect![[
            r#"Wait { reason: "removing c (3) would leave 1 of 2 voters healthy, below a quorum of 2" }"#
        ]],
    );
}

#[test]
fn a_listed_member_is_never_removed_for_being_unreachable() {
    check(
        "a#1:leader b#2 c#3:unknown",
        "a b c",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: c (3) does not answer; the cluster survives 0 more failure(s)" }"#
        ]],
    );
    check(
        "a#1:leader b#2:unhealthy c#3:unknown",
        "a b c",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: b (2) answers but is not healthy; c (3) does not answer; the cluster has lost its quorum (1 of 3 voters healthy)" }"#
        ]],
    );
}

#[test]
fn a_member_with_unusable_data_is_removed_to_rejoin() {
    check(
        "a#1:leader b#2 c#3:unhealthy:unusable",
        "a b c",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: DataUnusable }, reason: "the pilot of c (3) reports its data unusable; it rejoins as a learner" }"#
        ]],
    );
}

#[test]
fn the_leader_is_removed_only_after_moving_leadership() {
    check(
        "a#1:leader:gone=40 b#2 c#3",
        "b c",
        expect![[
            r#"Act { action: MoveLeader { to: MemberId(2) }, reason: "a (1) leads and is to be removed; moving leadership to b (2) first" }"#
        ]],
    );
    check(
        "a#1:gone=40 b#2:leader c#3",
        "b c",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(1), kind: Unlisted }, reason: "a (1) left discovery 40s ago" }"#
        ]],
    );
}

#[test]
fn scale_down_removes_one_member_at_a_time_dead_ones_first() {
    check(
        "a#1:leader b#2 c#3 d#4:gone=40 e#5:unknown:gone=40",
        "a b c",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(5), kind: Unlisted }, reason: "e (5) left discovery 40s ago" }"#
        ]],
    );
}

#[test]
fn mass_removal_guard_stops_removals_when_discovery_drops_below_half() {
    check(
        "a#1:leader b#2:gone=60 c#3:gone=60 d#4:gone=60 e#5:gone=60",
        "a",
        expect![[
            r#"Wait { reason: "discovery lists only 1 of the 5 members; a sudden drop to half or fewer looks like a discovery fault, so nothing is removed (mass-removal guard)" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3:gone=60",
        "FAILED",
        expect![[
            r#"Wait { reason: "discovery failed (timeout); nothing is removed until it answers again" }"#
        ]],
    );
}

#[test]
fn a_terminating_instance_is_removed_at_once_when_the_quorum_allows() {
    // Still listed (the group keeps it in Terminating:Wait), no grace period.
    check(
        "a#1:leader b#2 c#3:terminating",
        "a b c",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: Terminating }, reason: "the instance of c (3) is terminating; its lifecycle hook waits for the removal" }"#
        ]],
    );
    check(
        "a#1:leader:terminating b#2 c#3",
        "b c",
        expect![[
            r#"Act { action: MoveLeader { to: MemberId(2) }, reason: "a (1) leads and is to be removed; moving leadership to b (2) first" }"#
        ]],
    );
    check(
        "a#1:leader b#2:unknown c#3:terminating",
        "a b c",
        expect![[
            r#"Wait { reason: "removing c (3) would leave 1 of 2 voters healthy, below a quorum of 2" }"#
        ]],
    );
    // Terminations do not trip the mass-removal guard; a terminating learner goes too.
    check(
        "a#1:leader b#2:terminating c#3:terminating",
        "a",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(2), kind: Terminating }, reason: "the instance of b (2) is terminating; its lifecycle hook waits for the removal" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3 d#4:learner:terminating",
        "a b c d",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(4), kind: Terminating }, reason: "d (4) was joining but its instance is terminating" }"#
        ]],
    );
}

#[test]
fn a_caught_up_learner_is_promoted_and_a_lagging_one_waits() {
    check(
        "a#1:leader:i=1000 b#2:i=1000 c#3:i=1000 d#4:learner:i=950",
        "a b c d",
        expect![[
            r#"Act { action: PromoteLearner { id: MemberId(4) }, reason: "d (4) has caught up (raft index 950 of the leader's 1000); promoting it" }"#
        ]],
    );
    check(
        "a#1:leader:i=1000 b#2:i=1000 c#3:i=1000 d#4:learner:i=500",
        "a b c d",
        expect![[
            r#"Wait { reason: "one change at a time: d (4) is still joining (raft index 500)" }"#
        ]],
    );
}

#[test]
fn a_joining_member_blocks_removals() {
    check(
        "a#1:leader b#2 c#3:gone=60 d#4:learner:unstarted",
        "a b d",
        expect![[
            r#"Wait { reason: "one change at a time: unstarted member 4 is still joining (not answering yet)" }"#
        ]],
    );
}

#[test]
fn an_initial_member_that_never_started_is_a_member_not_a_change() {
    check(
        "a#1:leader b#2 c#3:unstarted",
        "a b c",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: unstarted member 3 has not started; the cluster survives 0 more failure(s)" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3:unstarted:gone=60",
        "a b",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: Unlisted }, reason: "unstarted member 3 left discovery 60s ago" }"#
        ]],
    );
}

#[test]
fn a_stalled_learner_is_removed_after_the_learner_timeout() {
    check(
        "a#1:leader b#2 c#3 d#4:learner:i=10:pending=301",
        "a b c d",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(4), kind: StalledLearner }, reason: "d (4) has been joining for over 300s without catching up; removing it so its pilot retries" }"#
        ]],
    );
}

#[test]
fn names_match_exactly_never_by_substring() {
    check(
        "m1#1:leader m10#2 m11#3:gone=60",
        "m1 m10 m1x",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: Unlisted }, reason: "m11 (3) left discovery 60s ago" }"#
        ]],
    );
}

#[test]
fn a_cluster_below_full_strength_is_not_converged_and_says_why() {
    check(
        "a#1:leader b#2 c#3:unknown",
        "a b c",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: c (3) does not answer; the cluster survives 0 more failure(s)" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3:foreign d#4 e#5:cannotrun",
        "a b c d e",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: c (3) answers as cluster 9; e (5) cannot run etcd: bad flag; the cluster survives 0 more failure(s)" }"#
        ]],
    );
    check(
        "a#1:leader b#2:unknown c#3:unknown",
        "a b c",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: b (2) does not answer; c (3) does not answer; the cluster has lost its quorum (1 of 3 voters healthy)" }"#
        ]],
    );
}

#[test]
fn full_strength_rule_removes_a_healthy_member_only_when_every_other_is_healthy() {
    // Scale-down of a healthy member waits while another voter is down.
    check(
        "a#1:leader b#2 c#3 d#4:unknown e#5:gone=60",
        "a b c d",
        expect![[
            r#"Wait { reason: "e (5) is healthy and is removed only at full strength; d (4) is not healthy (full-strength rule)" }"#
        ]],
    );
    // A terminating healthy member waits too (its hook heartbeats meanwhile).
    check(
        "a#1:leader b#2:unknown c#3 d#4 e#5:terminating",
        "a b c d e",
        expect![[
            r#"Wait { reason: "e (5) is healthy and is removed only at full strength; b (2) is not healthy (full-strength rule)" }"#
        ]],
    );
    // A dead member may go while another is down, when the quorum allows.
    check(
        "a#1:leader b#2:unknown c#3 d#4 e#5:unknown:gone=60",
        "a b c d",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(5), kind: Unlisted }, reason: "e (5) left discovery 60s ago" }"#
        ]],
    );
}

#[test]
fn full_strength_rule_never_removes_a_second_member_before_the_first_is_back() {
    // c was removed for unusable data and has not rejoined; b's data is now unusable too.
    check(
        "a#1:leader b#2:unknown:unusable",
        "a b c",
        expect![[
            r#"Wait { reason: "removing b (2) would leave 1 voters, below 2 (one less than the 3 listed): the cluster must be back at full strength first (full-strength rule)" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3 d#4:unknown:unusable e#5:unknown:unusable",
        "a b c d e",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(4), kind: DataUnusable }, reason: "the pilot of d (4) reports its data unusable; it rejoins as a learner" }"#
        ]],
    );
    check(
        "a#1:leader b#2 c#3 e#5:unknown:unusable",
        "a b c d e",
        expect![[
            r#"Wait { reason: "removing e (5) would leave 3 voters, below 4 (one less than the 5 listed): the cluster must be back at full strength first (full-strength rule)" }"#
        ]],
    );
}

#[test]
fn replacements_of_members_that_left_discovery_are_never_held_by_the_floor() {
    // Two dead members of five replaced by f and g: both go, one at a time (remove before add
    // means f and g join only after them).
    check(
        "a#1:leader b#2 c#3 e#5:unknown:gone=60",
        "a b c f g",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(5), kind: Unlisted }, reason: "e (5) left discovery 60s ago" }"#
        ]],
    );
    // A peers file edited from a b c to a b d e, everyone healthy: c goes, then d and e join.
    check(
        "a#1:leader b#2 c#3:gone=60",
        "a b d e",
        expect![[
            r#"Act { action: RemoveMember { id: MemberId(3), kind: Unlisted }, reason: "c (3) left discovery 60s ago" }"#
        ]],
    );
}

#[test]
fn a_member_that_cannot_run_etcd_is_never_removed() {
    check(
        "a#1:leader b#2:cannotrun c#3:cannotrun d#4 e#5",
        "a b c d e",
        expect![[
            r#"Wait { reason: "membership matches discovery, but not at full strength: b (2) cannot run etcd: bad flag; c (3) cannot run etcd: bad flag; the cluster survives 0 more failure(s)" }"#
        ]],
    );
}

#[test]
fn mass_removal_guard_stops_removals_when_half_is_gone() {
    check(
        "a#1:leader b#2 c#3:gone=60 d#4:gone=60",
        "a b",
        expect![[
            r#"Wait { reason: "discovery lists only 2 of the 4 members; a sudden drop to half or fewer looks like a discovery fault, so nothing is removed (mass-removal guard)" }"#
        ]],
    );
}

fn arb_member(id: u64) -> impl Strategy<Value = ObservedMember> {
    (
        prop_oneof![
            Just(Health::Healthy),
            Just(Health::Unhealthy),
            Just(Health::Unknown)
        ],
        any::<bool>(),
        0..3u8,
        prop::option::of(0..100u64),
        prop::option::of(0..400u64),
        any::<bool>(),
        0..2000u64,
        prop::bool::weighted(0.15),
    )
        .prop_map(
            move |(health, learner, started, gone, pending, unusable, index, terminating)| {
                let name = format!("n{id}");
                ObservedMember {
                    member: Member {
                        id: MemberId(id),
                        name: (started > 0).then(|| MemberName::new(&name).unwrap()),
                        peer_urls: vec![peer(&name).peer_url],
                        client_urls: if started > 0 {
                            vec![peer(&name).client_url]
                        } else {
                            vec![]
                        },
                        is_learner: learner,
                    },
                    health,
                    raft_index: Some(index),
                    unlisted_for: gone.map(Duration::from_secs),
                    pending_for: pending.map(Duration::from_secs),
                    down_for: (health != Health::Healthy).then(|| Duration::from_secs(index % 90)),
                    data_unusable: unusable,
                    terminating,
                    problem: None,
                }
            },
        )
}

pub(crate) fn arb_observed() -> impl Strategy<Value = Observed> {
    (1..7u64)
        .prop_flat_map(|n| {
            (
                (1..=n).map(arb_member).collect::<Vec<_>>(),
                prop::collection::vec(any::<bool>(), n as usize),
                prop::option::of(1..=n),
                any::<bool>(),
                prop::bool::weighted(0.2),
            )
        })
        .prop_map(|(members, listed, leader, failed, extra)| {
            let mut peers: Vec<Peer> = members
                .iter()
                .zip(&listed)
                .filter(|(_, listed)| **listed)
                .map(|(m, _)| peer(&format!("n{}", m.member.id.0)))
                .collect();
            // Sometimes a listed peer that has not joined yet.
            if extra {
                peers.push(peer("n99"));
            }
            // Keep the timers consistent with discovery: only unlisted members have one.
            let members = members
                .into_iter()
                .zip(&listed)
                .map(|(mut m, listed)| {
                    if *listed {
                        m.unlisted_for = None;
                    } else if m.unlisted_for.is_none() {
                        m.unlisted_for = Some(Duration::ZERO);
                    }
                    m
                })
                .collect();
            Observed {
                members,
                leader: leader.map(MemberId),
                discovery: if failed {
                    Discovery::Failed { error: "x".into() }
                } else {
                    Discovery::Listed(peers)
                },
            }
        })
}

proptest! {
    #[test]
    fn no_plan_drops_below_a_healthy_quorum(observed in arb_observed()) {
        if let Plan::Act { action: Action::RemoveMember { id, .. }, .. } = plan(&observed, &crate::plan::test_policy()) {
            let target = observed.members.iter().find(|m| m.member.id == id).unwrap();
            if !target.member.is_learner {
                let voters: Vec<_> = observed.members.iter()
                    .filter(|m| !m.member.is_learner && m.member.id != id).collect();
                let healthy = voters.iter().filter(|m| m.health == Health::Healthy).count();
                prop_assert!(!voters.is_empty());
                prop_assert!(healthy >= quorum(voters.len()), "{healthy} of {}", voters.len());
            }
        }
    }

    #[test]
    fn never_more_than_one_change_in_flight(observed in arb_observed()) {
        let pending: Vec<MemberId> = observed.members.iter()
            .filter(|m| m.member.is_learner).map(|m| m.member.id).collect();
        if let Plan::Act { action, .. } = plan(&observed, &crate::plan::test_policy())
            && action.changes_membership()
            && !pending.is_empty()
        {
            // The only change allowed while one is pending is to finish or undo that one.
            let target = match action {
                Action::RemoveMember { id, .. } | Action::PromoteLearner { id } => id,
                Action::MoveLeader { .. } => unreachable!(),
            };
            prop_assert!(pending.contains(&target), "{action:?} while {pending:?} pending");
        }
    }

    #[test]
    fn never_removes_a_listed_member_for_unreachability(observed in arb_observed()) {
        if let Plan::Act { action: Action::RemoveMember { id, kind }, .. } = plan(&observed, &crate::plan::test_policy()) {
            let target = observed.members.iter().find(|m| m.member.id == id).unwrap();
            if target.terminating {
                prop_assert!(
                    kind == RemovalKind::Terminating || kind == RemovalKind::StalledLearner,
                    "terminating member {id} removed as {kind:?}"
                );
                return Ok(());
            }
            if let Discovery::Listed(peers) = &observed.discovery
                && is_listed(&target.member, peers)
            {
                prop_assert!(
                    kind == RemovalKind::DataUnusable || kind == RemovalKind::StalledLearner,
                    "listed member {id} removed as {kind:?}"
                );
            }
            if matches!(observed.discovery, Discovery::Failed { .. }) {
                prop_assert_eq!(kind, RemovalKind::StalledLearner, "removal while discovery failed");
            }
        }
    }

    #[test]
    fn never_removes_the_leader_directly(observed in arb_observed()) {
        if let Plan::Act { action: Action::RemoveMember { id, .. }, .. } = plan(&observed, &crate::plan::test_policy()) {
            let target = observed.members.iter().find(|m| m.member.id == id).unwrap();
            if !target.member.is_learner {
                prop_assert_ne!(Some(id), observed.leader);
            }
        }
    }

    #[test]
    fn no_sequence_of_faults_shrinks_the_cluster_below_its_size_minus_one(
        (n, faults) in (2..=7usize).prop_flat_map(|n| {
            (Just(n), prop::collection::vec((0..n, 0..4u8), 0..12))
        })
    ) {
        // n healthy voters, all listed. One member at a time gets a fault and keeps it: its
        // data unusable (dead), its etcd unable to run (dead), dead outright, or its instance
        // terminating (a replacement is listed that never joins). The members never faulted
        // stay healthy. After each fault the plan runs to a fixed point, executing every
        // removal and leadership move; removed members never come back. The cluster must
        // never have fewer than n - 1 voters.
        let mut sim = observed(
            &(1..=n).map(|i| format!("n{i}#{i}")).collect::<Vec<_>>().join(" "),
            &(1..=n).map(|i| format!("n{i}")).collect::<Vec<_>>().join(" "),
        );
        sim.leader = Some(MemberId(1));
        for (index, fault) in faults {
            let Some(target) = sim.members.get_mut(index % n) else { continue };
            let id = target.member.id;
            match fault {
                0 => { target.data_unusable = true; target.health = Health::Unknown; }
                1 => { target.problem = Some("cannot run".into()); target.health = Health::Unknown; }
                2 => target.health = Health::Unknown,
                _ => {
                    target.terminating = true;
                    if let Discovery::Listed(peers) = &mut sim.discovery {
                        peers.push(peer(&format!("r{}", id.0)));
                    }
                }
            }
            if sim.leader == Some(id) && fault < 3 {
                sim.leader = sim.members.iter()
                    .find(|m| m.health == Health::Healthy).map(|m| m.member.id);
            }
            for _ in 0..2 * n {
                match plan(&sim, &crate::plan::test_policy()) {
                    Plan::Act { action: Action::RemoveMember { id, .. }, .. } => {
                        sim.members.retain(|m| m.member.id != id);
                    }
                    Plan::Act { action: Action::MoveLeader { to }, .. } => sim.leader = Some(to),
                    _ => break,
                }
                prop_assert!(sim.members.len() + 1 >= n, "{} voters of {n}: {sim:?}", sim.members.len());
            }
        }
    }

    #[test]
    fn the_mass_removal_guard_holds_when_half_or_more_is_unlisted(observed in arb_observed()) {
        // A joining learner that left discovery again is not a member the guard protects.
        if let (Plan::Act { action: Action::RemoveMember { kind: RemovalKind::Unlisted, id }, .. },
                Discovery::Listed(peers)) = (plan(&observed, &crate::plan::test_policy()), &observed.discovery)
            && observed.members.iter().any(|m| m.member.id == id && !m.member.is_learner)
        {
            let members: Vec<_> = observed.members.iter().filter(|m| !m.terminating).collect();
            let listed = members.iter().filter(|m| is_listed(&m.member, peers)).count();
            prop_assert!(listed * 2 > members.len(), "{listed} of {} listed", members.len());
        }
    }

    #[test]
    fn dead_members_that_left_discovery_are_always_removed_in_the_end(
        (n, dead, extra) in (3..=7usize).prop_flat_map(|n| (Just(n), 1..=(n - 1) / 2, 0..3usize))
    ) {
        // n voters; `dead` of them died and left discovery; discovery lists the survivors and
        // their replacements (plus `extra` new ones). The plan must remove every dead member.
        let members = (1..=n)
            .map(|i| if i > n - dead { format!("n{i}#{i}:unknown:gone=60") } else { format!("n{i}#{i}") })
            .collect::<Vec<_>>()
            .join(" ");
        let listed = (1..=n - dead)
            .map(|i| format!("n{i}"))
            .chain((0..dead + extra).map(|i| format!("r{i}")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut sim = observed(&members, &listed);
        sim.leader = Some(MemberId(1));
        for _ in 0..dead {
            match plan(&sim, &crate::plan::test_policy()) {
                Plan::Act { action: Action::RemoveMember { id, .. }, .. } => {
                    sim.members.retain(|m| m.member.id != id);
                }
                other => prop_assert!(false, "stuck: {other:?}"),
            }
        }
        prop_assert_eq!(sim.members.len(), n - dead);
    }
}

#[test]
fn leadership_goes_to_the_first_other_healthy_voter() {
    let observed = observed(
        "a#1:leader b#2:learner c#3:unknown d#4:unstarted e#5 f#6",
        "a b c d e f",
    );
    let pick = |leaving: u64, eligible: &dyn Fn(&ObservedMember) -> bool| {
        successor(&observed.members, MemberId(leaving), eligible).map(|m| m.member.id.0)
    };
    // Not the learner, not the silent voter, not the unstarted one.
    assert_eq!(pick(1, &|_| true), Some(5));
    assert_eq!(pick(5, &|_| true), Some(1));
    assert_eq!(pick(1, &|m| m.member.id != MemberId(5)), Some(6));
    assert_eq!(pick(1, &|_| false), None);
}
