//! Reseed decisions: a table of quorum-loss situations and properties over random ones.

use proptest::prelude::*;

use super::*;

fn name(n: &str) -> MemberName {
    MemberName::new(n.to_owned()).unwrap()
}

fn policy() -> ReseedPolicy {
    ReseedPolicy {
        quorum_lost_after: Duration::from_secs(30),
        remove_after: Duration::from_secs(30),
        auto: true,
    }
}

/// A voter from a word: `m1:120` answers with applied index 120, `m2:-` does not answer;
/// suffixes: `~N` unlisted for N s, `!` its pilot is silent, `*` it sees a leader.
fn voter(spec: &str) -> Voter {
    let (spec, leader) = spec.strip_suffix('*').map_or((spec, false), |s| (s, true));
    let (spec, silent) = spec.strip_suffix('!').map_or((spec, false), |s| (s, true));
    let (spec, listing) = match spec.split_once('~') {
        Some((s, secs)) => (
            s,
            Listing::Unlisted {
                for_secs: secs.parse().unwrap(),
            },
        ),
        None => (spec, Listing::Listed),
    };
    let (n, index) = spec.split_once(':').unwrap();
    let status = (index != "-").then(|| VoterStatus {
        raft_index: index.parse().unwrap(),
        has_leader: leader,
    });
    Voter {
        name: name(n),
        pilot_answers: status.is_some() && !silent,
        status,
        listing,
    }
}

fn observed(specs: &str, lost_for_secs: u64) -> Observed {
    let voters: Vec<Voter> = specs.split_whitespace().map(voter).collect();
    let highest_seen = voters
        .iter()
        .filter_map(|v| v.status.map(|s| s.raft_index))
        .max()
        .unwrap_or(0);
    Observed {
        voters,
        discovery_ok: true,
        lost_for_secs,
        highest_seen,
        strangers: Vec::new(),
    }
}

fn show(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Held => "held".to_owned(),
        Verdict::Lost { why, .. } => format!("wait: {}", why.describe()),
        Verdict::Reseed { seed, .. } => format!(
            "reseed from {} at {} ({} behind)",
            seed.name, seed.raft_index, seed.behind
        ),
    }
}

#[test]
fn quorum_loss_table() {
    let cases = [
        ("m1:100* m2:100 m3:-", 60, "held"),
        ("m1:100 m2:90 m3:-", 60, "held"),
        ("m1:100 m2:- m3:-", 10, "wait"),
        ("m1:100 m2:-~60 m3:-~60", 60, "reseed from m1"),
        (
            "m1:100 m2:- m3:-~60",
            60,
            "wait: m2 still listed by discovery",
        ),
        (
            "m1:100 m2:-~10 m3:-~60",
            60,
            "wait: m2 gone from discovery for less",
        ),
        (
            "m1:90 m2:100 m3:- m4:-~99 m5:-~99",
            60,
            "wait: m3 still listed by discovery",
        ),
        (
            "m1:90 m2:100 m3:-~99 m4:-~99 m5:-~99",
            60,
            "reseed from m2 at 100",
        ),
        (
            "m1:100 m2:100 m3:-~99 m4:-~99 m5:-~99",
            60,
            "reseed from m1 at 100",
        ),
        (
            "m1:100 m2:90! m3:-~99 m4:-~99 m5:-~99",
            60,
            "wait: the pilots of survivors m2",
        ),
        (
            "m1:100~5 m2:90 m3:-~99 m4:-~99 m5:-~99",
            60,
            "wait: the best survivor m1",
        ),
        ("m1:- m2:-~99 m3:-~99", 60, "wait: no voter answers"),
    ];
    for (specs, lost_for, expected) in cases {
        let got = show(&decide(&observed(specs, lost_for), &policy()));
        assert!(got.starts_with(expected), "{specs}: {got}");
    }
    let mut o = observed("m1:100 m2:-~60 m3:-~60", 60);
    o.discovery_ok = false;
    assert!(show(&decide(&o, &policy())).starts_with("wait: discovery does not answer"));
    let mut o = observed("m1:100 m2:-~60 m3:-~60", 60);
    o.strangers = vec!["m4 at http://127.0.0.4:2379".to_owned()];
    assert!(show(&decide(&o, &policy())).starts_with("wait: m4 at http://127.0.0.4:2379 answer"));
    let manual_only = ReseedPolicy {
        auto: false,
        ..policy()
    };
    let o = observed("m1:100 m2:-~60 m3:-~60", 60);
    assert!(show(&decide(&o, &manual_only)).starts_with("wait: automatic reseeds are off"));
    let mut o = observed("m1:80 m2:-~60 m3:-~60", 60);
    o.highest_seen = 100;
    assert_eq!(
        show(&decide(&o, &policy())),
        "reseed from m1 at 80 (20 behind)"
    );
}

#[test]
fn manual_reseed_refuses_a_worse_survivor_without_force() {
    let o = observed("m1:90 m2:100 m3:- m4:- m5:-", 0);
    assert_eq!(
        manual(&o, &name("m1"), false),
        Err(Refusal::NotTheBest {
            best: name("m2"),
            best_index: 100,
            index: 90
        })
    );
    assert_eq!(manual(&o, &name("m1"), true).unwrap().behind, 10);
    assert_eq!(manual(&o, &name("m2"), false).unwrap().raft_index, 100);
    assert_eq!(
        manual(&o, &name("m3"), true),
        Err(Refusal::NotASurvivor { name: name("m3") })
    );
    let held = observed("m1:90 m2:100 m3:-", 0);
    assert_eq!(manual(&held, &name("m2"), true), Err(Refusal::QuorumHeld));
    let stale = Observed {
        strangers: vec!["m6 at http://127.0.0.6:2379".to_owned()],
        ..o.clone()
    };
    assert!(matches!(
        manual(&stale, &name("m2"), false),
        Err(Refusal::Strangers { .. })
    ));
    assert_eq!(manual(&stale, &name("m2"), true).unwrap().raft_index, 100);
}

fn arb_voter(i: usize) -> impl Strategy<Value = Voter> {
    (
        proptest::option::of((0u64..50, any::<bool>())),
        any::<bool>(),
        proptest::option::of(0u64..60),
    )
        .prop_map(move |(status, pilot, unlisted)| Voter {
            name: name(&format!("m{i}")),
            status: status.map(|(raft_index, has_leader)| VoterStatus {
                raft_index,
                has_leader,
            }),
            pilot_answers: pilot,
            listing: unlisted.map_or(Listing::Listed, |for_secs| Listing::Unlisted { for_secs }),
        })
}

fn arb_observed() -> impl Strategy<Value = Observed> {
    (1usize..=7)
        .prop_flat_map(|n| {
            (
                (0..n).map(arb_voter).collect::<Vec<_>>(),
                any::<bool>(),
                0u64..60,
                0u64..10,
                proptest::bool::weighted(0.2),
            )
        })
        .prop_map(|(voters, discovery_ok, lost_for_secs, extra, stranger)| {
            let highest = voters
                .iter()
                .filter_map(|v| v.status.map(|s| s.raft_index))
                .max()
                .unwrap_or(0);
            Observed {
                voters,
                discovery_ok,
                lost_for_secs,
                highest_seen: highest + extra,
                strangers: if stranger {
                    vec!["m9@127.0.0.9".to_owned()]
                } else {
                    Vec::new()
                },
            }
        })
}

proptest! {
    #[test]
    fn an_automatic_reseed_only_when_every_missing_voter_is_gone_for_good(
        o in arb_observed(),
        auto in any::<bool>(),
    ) {
        let policy = ReseedPolicy { auto, ..policy() };
        if let Verdict::Reseed { seed, .. } = decide(&o, &policy) {
            prop_assert!(auto && o.discovery_ok && o.lost_for_secs >= 30);
            prop_assert!(o.strangers.is_empty(), "an etcd outside the list answers");
            prop_assert!(!quorum_held(&o.voters));
            for v in &o.voters {
                match (v.status, v.listing) {
                    // Every unreachable voter absent from discovery for remove_after.
                    (None, Listing::Listed) => prop_assert!(false, "{} listed", v.name),
                    (None, Listing::Unlisted { for_secs }) => prop_assert!(for_secs >= 30),
                    // Every listed survivor's pilot answers.
                    (Some(_), Listing::Listed) => prop_assert!(v.pilot_answers),
                    (Some(_), Listing::Unlisted { .. }) => {}
                }
            }
            // The seed answers, is listed, and no survivor applied more.
            let chosen = o.voters.iter().find(|v| v.name == seed.name).unwrap();
            prop_assert_eq!(chosen.listing, Listing::Listed);
            let index = chosen.status.unwrap().raft_index;
            prop_assert_eq!(seed.raft_index, index);
            for v in &o.voters {
                if let Some(s) = v.status {
                    prop_assert!(s.raft_index < index
                        || (s.raft_index == index && v.name >= seed.name));
                }
            }
            prop_assert_eq!(seed.behind, o.highest_seen - index);
        }
    }

    #[test]
    fn every_pilot_with_the_same_view_picks_the_same_seed(
        o in arb_observed(),
        rotate in 0usize..7,
    ) {
        let mut shuffled = o.clone();
        let len = shuffled.voters.len();
        shuffled.voters.rotate_left(rotate % len);
        shuffled.voters.reverse();
        prop_assert_eq!(decide(&o, &policy()), decide(&shuffled, &policy()));
    }

    #[test]
    fn a_held_quorum_is_never_reseeded_by_hand_or_on_its_own(
        o in arb_observed(),
        force in any::<bool>(),
        pick in 0usize..7,
    ) {
        let from = o.voters[pick % o.voters.len()].name.clone();
        if quorum_held(&o.voters) {
            prop_assert_eq!(decide(&o, &policy()), Verdict::Held);
            prop_assert_eq!(manual(&o, &from, force), Err(Refusal::QuorumHeld));
        }
        if let Ok(seed) = manual(&o, &from, force) {
            let best = ranked(&o.voters)[0].1;
            prop_assert!(force || seed.raft_index == best);
            prop_assert!(force || o.strangers.is_empty());
            prop_assert_eq!(seed.name, from);
        }
    }
}

#[test]
fn the_reseed_claim_goes_to_one_node_and_only_an_operator_takes_an_open_one_over() {
    let open = |holder: &str| ClaimView {
        generation: 3,
        holder: holder.to_owned(),
        ended: false,
    };
    let ended = ClaimView {
        ended: true,
        ..open("m2")
    };
    let cases: Vec<(Option<&ClaimView>, bool, ClaimStep)> = vec![
        (None, false, ClaimStep::Create { generation: 1 }),
        (Some(&ended), false, ClaimStep::Create { generation: 4 }),
        (Some(&ended), true, ClaimStep::Create { generation: 4 }),
    ];
    for (latest, take_over, step) in cases {
        assert_eq!(
            claim_step(latest, "m1", take_over),
            step,
            "{latest:?} {take_over}"
        );
    }
    assert_eq!(
        claim_step(Some(&open("m1")), "m1", false),
        ClaimStep::Held { generation: 3 }
    );
    assert_eq!(
        claim_step(Some(&open("m2")), "m1", false),
        ClaimStep::Wait {
            holder: "m2".to_owned(),
            generation: 3
        }
    );
    assert_eq!(
        claim_step(Some(&open("m2")), "m1", true),
        ClaimStep::Create { generation: 4 }
    );
}

proptest! {
    #[test]
    fn a_claim_step_never_holds_another_nodes_open_claim_nor_reuses_a_generation(
        generation in 1u64..1000,
        holder in prop::sample::select(vec!["m1", "m2", "m3"]),
        ended in any::<bool>(),
        me in prop::sample::select(vec!["m1", "m2", "m3"]),
        take_over in any::<bool>(),
    ) {
        let latest = ClaimView { generation, holder: holder.to_owned(), ended };
        match claim_step(Some(&latest), me, take_over) {
            ClaimStep::Create { generation: g } => {
                prop_assert_eq!(g, generation + 1);
                prop_assert!(ended || holder != me && take_over);
            }
            ClaimStep::Held { generation: g } => {
                prop_assert_eq!(g, generation);
                prop_assert!(!ended && holder == me);
            }
            ClaimStep::Wait { holder: h, .. } => {
                prop_assert!(!ended && h != me && !take_over);
            }
        }
    }
}
