//! The conditions of a table of clusters, and the properties that tie them to `plan`.

use expect_test::expect;
use proptest::prelude::*;

use super::*;
use crate::plan::tests::{arb_observed, observed};
use crate::plan::{Plan, plan};

fn said(members: &str, discovery: &str) -> Vec<String> {
    conditions(&observed(members, discovery), &crate::plan::test_policy())
        .iter()
        .map(Condition::describe)
        .collect()
}

#[test]
fn each_degraded_state_is_named_with_its_cause_and_age() {
    let table = [
        ("a#1:leader b#2 c#3", "a b c"),
        ("a#1:leader b#2 c#3:unknown:down=40", "a b c"),
        (
            "a#1:leader b#2:unhealthy:down=5 c#3:unknown:down=40",
            "a b c",
        ),
        ("a#1:leader b#2 c#3:unknown:down=12:gone=12", "a b"),
        ("a#1:leader b#2 c#3:gone=45", "a b"),
        (
            "a#1:leader:i=1000 b#2 c#3 d#4:learner:i=250:pending=20",
            "a b c d",
        ),
        ("a#1:leader b#2 c#3 d#4:unstarted:pending=3", "a b c d"),
        ("a#1:leader b#2 c#3:unstarted:cannotrun", "a b c"),
        ("a#1:leader b#2", "a b c"),
        ("a#1:leader b#2 c#3:terminating", "a b c"),
        ("a#1:leader b#2 c#3:unhealthy:unusable", "a b c"),
        ("a#1:leader b#2 c#3:foreign", "a b c"),
    ];
    let out: Vec<(String, Vec<String>)> = table
        .iter()
        .map(|(m, d)| (format!("{m} / {d}"), said(m, d)))
        .collect();
    expect![[r#"
        [
            (
                "a#1:leader b#2 c#3 / a b c",
                [],
            ),
            (
                "a#1:leader b#2 c#3:unknown:down=40 / a b c",
                [
                    "c: voter does not answer for 40 s; kept, because discovery lists it",
                ],
            ),
            (
                "a#1:leader b#2:unhealthy:down=5 c#3:unknown:down=40 / a b c",
                [
                    "quorum lost: 1 of 3 voters healthy, 2 needed; no membership change is possible until a majority answers",
                    "b: voter answers but is not healthy for 5 s; kept, because discovery lists it",
                    "c: voter does not answer for 40 s; kept, because discovery lists it",
                ],
            ),
            (
                "a#1:leader b#2 c#3:unknown:down=12:gone=12 / a b",
                [
                    "c: left discovery 12 s ago (does not answer); removed in 18 s (remove_after)",
                ],
            ),
            (
                "a#1:leader b#2 c#3:gone=45 / a b",
                [
                    "c: left discovery 45 s ago (still answers); removal due, once the quorum and full-strength rules allow it",
                ],
            ),
            (
                "a#1:leader:i=1000 b#2 c#3 d#4:learner:i=250:pending=20 / a b c d",
                [
                    "d: learner catching up for 20 s: raft index 250 of the leader's 1000 (25%); removed as stalled if not promoted in 280 s",
                ],
            ),
            (
                "a#1:leader b#2 c#3 d#4:unstarted:pending=3 / a b c d",
                [
                    "member 4: a voter whose etcd has not started yet for 3 s (removed as stalled in 297 s)",
                ],
            ),
            (
                "a#1:leader b#2 c#3:unstarted:cannotrun / a b c",
                [
                    "member 3: a voter whose etcd has not started yet (cannot run etcd: bad flag)",
                ],
            ),
            (
                "a#1:leader b#2 / a b c",
                [
                    "c: listed by discovery, not a member yet (its pilot adds it as a learner)",
                ],
            ),
            (
                "a#1:leader b#2 c#3:terminating / a b c",
                [
                    "c: its instance is terminating; removed once the quorum and full-strength rules allow it",
                ],
            ),
            (
                "a#1:leader b#2 c#3:unhealthy:unusable / a b c",
                [
                    "c: its pilot says its data is unusable; removed so that it rejoins empty",
                ],
            ),
            (
                "a#1:leader b#2 c#3:foreign / a b c",
                [
                    "c: voter answers as cluster 9; kept, because discovery lists it",
                ],
            ),
        ]
    "#]]
    .assert_debug_eq(&out);
}

#[test]
fn a_record_read_later_shows_older_ages_and_shorter_countdowns() {
    let observed = observed(
        "a#1:leader b#2 c#3:unknown:down=12:gone=12 d#4:learner:pending=299",
        "a b d",
    );
    let later: Vec<String> = conditions(&observed, &crate::plan::test_policy())
        .into_iter()
        .map(|c| c.aged(20).describe())
        .collect();
    expect![[r#"
        [
            "c: left discovery 32 s ago (does not answer); removal due, once the quorum and full-strength rules allow it",
            "d: learner catching up for 319 s: raft index 100 of the leader's 100 (100%); removed as stalled if not promoted in 0 s",
        ]
    "#]]
    .assert_debug_eq(&later);
}

fn is_member_condition(c: &Condition) -> bool {
    !matches!(
        c,
        Condition::QuorumLost { .. } | Condition::NotJoined { .. }
    )
}

proptest! {
    /// `plan` says converged exactly when discovery answered and nothing is degraded.
    #[test]
    fn converged_exactly_when_nothing_is_degraded(observed in arb_observed()) {
        let said = conditions(&observed, &crate::plan::test_policy());
        let converged = plan(&observed, &crate::plan::test_policy()) == Plan::Converged;
        let listed = matches!(observed.discovery, Discovery::Listed(_));
        prop_assert_eq!(converged, listed && said.is_empty(), "{:?}", said);
    }

    /// Every member that is not a healthy, listed, staying voter has exactly one condition,
    /// and no other member has one.
    #[test]
    fn every_member_short_of_a_healthy_voter_has_one_condition(observed in arb_observed()) {
        let said = conditions(&observed, &crate::plan::test_policy());
        for m in &observed.members {
            let label = label(m);
            let count = said.iter().filter(|c| is_member_condition(c) && c.member() == Some(&label)).count();
            let fine = m.member.is_started() && !m.member.is_learner && is_healthy(m)
                && m.unlisted_for.is_none() && !m.terminating && !m.data_unusable;
            prop_assert_eq!(count, usize::from(!fine), "{} in {:?}", label, said);
        }
    }

    /// Quorum lost is said exactly when the fault tolerance says so.
    #[test]
    fn quorum_lost_agrees_with_the_fault_tolerance(observed in arb_observed()) {
        let voters: Vec<_> = observed.members.iter().filter(|m| !m.member.is_learner).collect();
        let healthy = voters.iter().filter(|m| m.member.is_started() && is_healthy(m)).count();
        let lost = FaultTolerance::of(voters.len(), healthy).can_lose.is_none();
        let said = conditions(&observed, &crate::plan::test_policy());
        prop_assert_eq!(lost, matches!(said.first(), Some(Condition::QuorumLost { .. })));
    }

    /// Ageing never changes what a condition says, only how long.
    #[test]
    fn ageing_keeps_the_timeless_part(observed in arb_observed(), a in 0u64..400) {
        for c in conditions(&observed, &crate::plan::test_policy()) {
            prop_assert_eq!(c.clone().aged(a).timeless(), c.timeless());
        }
    }

    /// Ageing in two steps is ageing once by the sum; countdowns stop at 0.
    #[test]
    fn ageing_adds_up(observed in arb_observed(), a in 0u64..400, b in 0u64..400) {
        for c in conditions(&observed, &crate::plan::test_policy()) {
            prop_assert_eq!(c.clone().aged(a).aged(b), c.clone().aged(a + b));
        }
    }
}
