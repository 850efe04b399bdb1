//! Upgrade decisions: the path policy as a table, the flags, the lock's steps, and properties
//! over random views and random sequences of events.

use proptest::prelude::*;

use super::*;

fn v(text: &str) -> Version {
    text.parse().unwrap()
}

fn name(n: &str) -> MemberName {
    MemberName::new(n.to_owned()).unwrap()
}

/// `running` as `3.4.23 3.4.23 3.5.16`, the cluster version, the target: the path's kind
/// or the refusal's.
fn path(running: &str, cluster: Option<&str>, to: &str) -> String {
    let running: Vec<Version> = running.split_whitespace().map(v).collect();
    let cluster = cluster.map(|c| c.parse::<Minor>().unwrap());
    match check_path(&running, cluster, v(to)) {
        Ok(Path::Done) => "done".to_owned(),
        Ok(Path::Patch) => "patch".to_owned(),
        Ok(Path::MinorUp { upgrade }) => format!(
            "minor up {} -> {}{}",
            upgrade.from,
            upgrade.to,
            if upgrade.v2store_check {
                " (v2store check)"
            } else {
                ""
            }
        ),
        Ok(Path::Rollback) => "rollback".to_owned(),
        Err(Refusal::OtherMajor { .. }) => "refused: other major".to_owned(),
        Err(Refusal::SkipsMinor { .. }) => "refused: skips a minor".to_owned(),
        Err(Refusal::MinorDowngrade { .. }) => "refused: minor downgrade".to_owned(),
        Err(Refusal::EveryMemberAbove { .. }) => "refused: every member above".to_owned(),
        Err(Refusal::MixedMinors { .. }) => "refused: mixed minors".to_owned(),
        Err(Refusal::BelowFloor { floor, .. }) => format!("refused: below floor {floor}"),
        Err(Refusal::UnknownMinorUpgrade { .. }) => "refused: unknown minor upgrade".to_owned(),
    }
}

#[test]
fn the_path_policy() {
    let cases = [
        ("3.5.16 3.5.16 3.5.16", Some("3.5"), "3.5.16", "done"),
        // Patch releases, both ways.
        ("3.5.16 3.5.16 3.5.16", Some("3.5"), "3.5.30", "patch"),
        ("3.5.30 3.5.30 3.5.16", Some("3.5"), "3.5.16", "patch"),
        ("3.4.23 3.4.23 3.4.23", Some("3.4"), "3.4.42", "patch"),
        // One minor up, from a cluster on the older minor, or part way through.
        (
            "3.4.23 3.4.23 3.4.23",
            Some("3.4"),
            "3.5.16",
            "minor up 3.4 -> 3.5",
        ),
        (
            "3.4.23 3.5.16 3.5.16",
            Some("3.4"),
            "3.5.16",
            "minor up 3.4 -> 3.5",
        ),
        (
            "3.4.23 3.5.1 3.5.16",
            Some("3.4"),
            "3.5.16",
            "minor up 3.4 -> 3.5",
        ),
        (
            "3.5.32 3.5.32 3.5.32",
            Some("3.5"),
            "3.6.0",
            "minor up 3.5 -> 3.6 (v2store check)",
        ),
        (
            "3.5.33 3.6.0 3.6.0",
            Some("3.5"),
            "3.6.0",
            "minor up 3.5 -> 3.6 (v2store check)",
        ),
        // The 3.6 floor.
        (
            "3.5.16 3.5.16 3.5.16",
            Some("3.5"),
            "3.6.0",
            "refused: below floor 3.5.32",
        ),
        (
            "3.5.32 3.5.31 3.5.32",
            Some("3.5"),
            "3.6.5",
            "refused: below floor 3.5.32",
        ),
        // Skipping a minor, up or down.
        (
            "3.4.23 3.4.23 3.4.23",
            Some("3.4"),
            "3.6.0",
            "refused: skips a minor",
        ),
        (
            "3.6.0 3.6.0 3.6.0",
            Some("3.6"),
            "3.4.23",
            "refused: skips a minor",
        ),
        // A minor down: only back from a stopped upgrade whose cluster version did not move.
        (
            "3.5.16 3.5.16 3.5.16",
            Some("3.5"),
            "3.4.23",
            "refused: every member above",
        ),
        (
            "3.5.16 3.5.16 3.5.16",
            None,
            "3.4.23",
            "refused: every member above",
        ),
        // Every member on 3.5 while the cluster version is still 3.4: etcd moves it within
        // seconds, so going back is refused already.
        (
            "3.5.16 3.5.16 3.5.16",
            Some("3.4"),
            "3.4.23",
            "refused: every member above",
        ),
        (
            "3.5.16 3.5.16 3.4.23",
            Some("3.5"),
            "3.4.23",
            "refused: minor downgrade",
        ),
        (
            "3.5.16 3.5.16 3.4.23",
            None,
            "3.4.23",
            "refused: minor downgrade",
        ),
        ("3.5.16 3.4.23 3.4.23", Some("3.4"), "3.4.23", "rollback"),
        // Members on both sides of the target.
        (
            "3.4.23 3.6.0 3.5.16",
            Some("3.4"),
            "3.5.16",
            "refused: mixed minors",
        ),
        (
            "3.5.16 3.5.16 3.5.16",
            Some("3.5"),
            "4.0.0",
            "refused: other major",
        ),
        // A minor upgrade the policy has no rule for yet.
        (
            "3.6.5 3.6.5 3.6.5",
            Some("3.6"),
            "3.7.0",
            "refused: unknown minor upgrade",
        ),
        // Back from a stopped 3.6 upgrade only to a release the way up starts from.
        ("3.5.33 3.6.0 3.6.0", Some("3.5"), "3.5.33", "rollback"),
        (
            "3.5.33 3.6.0 3.6.0",
            Some("3.5"),
            "3.5.16",
            "refused: below floor 3.5.32",
        ),
    ];
    for (running, cluster, to, want) in cases {
        assert_eq!(
            path(running, cluster, to),
            want,
            "{running} ({cluster:?}) -> {to}"
        );
    }
}

#[test]
fn every_refusal_says_why_and_what_to_do() {
    let refused = check_path(&[v("3.5.16")], Some(Minor::new(3, 5)), v("3.6.0")).unwrap_err();
    assert_eq!(
        refused.describe(),
        "3.5.16 -> 3.6 is allowed only from 3.5.32 or later: upgrade to 3.5.32 (or a later 3.5) \
         first (https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/)"
    );
    let refused = check_path(&[v("3.5.16")], Some(Minor::new(3, 5)), v("3.4.23")).unwrap_err();
    assert!(
        refused
            .describe()
            .contains("restore a backup taken before the upgrade")
    );
    let refused = check_path(&[v("3.4.23")], Some(Minor::new(3, 4)), v("3.7.0")).unwrap_err();
    assert!(refused.describe().contains("skips a minor"));
}

#[test]
fn versions_parse_from_etcd_and_from_people() {
    assert_eq!(
        from_version_output("etcd Version: 3.5.16\nGit SHA: abc\nGo Version: go1.22\n"),
        Some(Version::new(3, 5, 16))
    );
    assert_eq!(from_version_output("etcd Version: 3.6.0-rc.1\n"), None);
    assert_eq!(from_version_output("not etcd"), None);
    assert_eq!(v("v3.4.23"), Version::new(3, 4, 23));
    assert!("3.5".parse::<Version>().is_err());
    assert_eq!("3.5.0".parse::<Minor>(), Ok(Minor::new(3, 5)));
    assert_eq!(Version::new(3, 5, 16).to_string(), "3.5.16");
}

#[test]
fn flagged_releases() {
    let reasons = |text: &str| {
        warnings(v(text))
            .iter()
            .map(|f| f.reason.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons("3.5.1"),
        ["not for production:", "below 3.5's security"]
    );
    assert_eq!(reasons("3.4.23"), ["3.4 is out", "below 3.4's security"]);
    assert_eq!(reasons("3.4.45"), ["3.4 is out"]);
    assert_eq!(reasons("3.5.16"), ["below 3.5's security"]);
    assert!(reasons("3.5.33").is_empty());
    assert!(reasons("3.6.0").is_empty());
}

/// A member from a word: `m1:3.4.23>3.5.16` runs 3.4.23, wants 3.5.16; suffixes: `*` leads,
/// `!` unhealthy, `~` a learner, `x` rolled back; `?` in place of a version: its pilot does
/// not say.
fn member(spec: &str) -> UpgradeMember {
    let (spec, failed) = spec.strip_suffix('x').map_or((spec, false), |s| (s, true));
    let (spec, leader) = spec.strip_suffix('*').map_or((spec, false), |s| (s, true));
    let (spec, unhealthy) = spec.strip_suffix('!').map_or((spec, false), |s| (s, true));
    let (spec, learner) = spec.strip_suffix('~').map_or((spec, false), |s| (s, true));
    let (n, versions) = spec.split_once(':').unwrap();
    let (running, desired) = versions.split_once('>').unwrap();
    let parse = |t: &str| (t != "?").then(|| v(t));
    UpgradeMember {
        name: name(n),
        running: parse(running),
        desired: parse(desired),
        healthy: !unhealthy,
        leader,
        learner,
        failed: failed.then(|| "not healthy within 2m".to_owned()),
        stepping: false,
    }
}

fn lock(holder: &str, target: &str) -> Option<Lock> {
    Some(Lock {
        holder: name(holder),
        target: v(target),
    })
}

fn view(members: &str) -> UpgradeView {
    UpgradeView {
        members: members.split_whitespace().map(member).collect(),
        cluster: Some(Minor::new(3, 4)),
        lock: None,
        maintenance: None,
        change_in_flight: false,
        backup: BackupState::Fresh,
        v2store_checked: false,
    }
}

fn names(names: &[MemberName]) -> String {
    names
        .iter()
        .map(MemberName::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn show(step: &UpgradeStep) -> String {
    match step {
        UpgradeStep::Done => "done".to_owned(),
        UpgradeStep::Hold { holder } => format!("hold {holder}"),
        UpgradeStep::Release { holder } => format!("release {holder}"),
        UpgradeStep::Wait(UpgradeWait::UnknownVersions { names: n }) => {
            format!("wait unknown {}", names(n))
        }
        UpgradeStep::Wait(UpgradeWait::DesiredDiffers { .. }) => "wait desired differs".to_owned(),
        UpgradeStep::Wait(UpgradeWait::Unhealthy { names: n }) => {
            format!("wait unhealthy {}", names(n))
        }
        UpgradeStep::Wait(UpgradeWait::ChangeInFlight) => "wait change".to_owned(),
        UpgradeStep::Wait(UpgradeWait::MaintenanceHolds { holder }) => {
            format!("wait defrag {holder}")
        }
        UpgradeStep::Wait(UpgradeWait::LeaderUnknown) => "wait leader".to_owned(),
        UpgradeStep::Wait(UpgradeWait::V2StoreCheck) => "wait v2store".to_owned(),
        UpgradeStep::Refused(r) => format!("refused {}", r.describe().split(':').next().unwrap()),
        UpgradeStep::TakeBackup => "backup".to_owned(),
        UpgradeStep::MoveLeader { from, to } => format!("move leader from {from} to {to}"),
        UpgradeStep::Grant { member } => format!("grant {member}"),
        UpgradeStep::Stopped { member, .. } => format!("stopped by {member}"),
    }
}

#[test]
fn the_lock_goes_to_followers_first_and_to_the_leader_last() {
    let up = "3.4.23>3.5.16";
    let done = "3.5.16>3.5.16";
    let cases: Vec<(String, &str)> = vec![
        (format!("m1:{up}* m2:{up} m3:{up}"), "grant m2"),
        (format!("m1:{done} m2:{up}* m3:{up}"), "grant m3"),
        (
            format!("m1:{done} m2:{up}* m3:{done}"),
            "move leader from m2 to m1",
        ),
        (format!("m1:{done}* m2:{up} m3:{done}"), "grant m2"),
        (format!("m1:{done}* m2:{done} m3:{done}"), "done"),
        (format!("m1:{up}*"), "grant m1"),
        (format!("m1:{up}* m2:{up}! m3:{up}"), "wait unhealthy m2"),
        (format!("m1:{up}* m2:{up} m3:{up} m4:{up}~"), "wait change"),
        (format!("m1:{up}* m2:3.4.23>? m3:{up}"), "wait unknown m2"),
        (
            format!("m1:{up}* m2:3.4.23>3.5.30 m3:{up}"),
            "wait desired differs",
        ),
        (
            "m1:3.4.23>3.6.0* m2:3.4.23>3.6.0 m3:3.4.23>3.6.0".to_owned(),
            "refused 3.4.23 -> 3.6.0 skips a minor",
        ),
    ];
    for (members, want) in cases {
        assert_eq!(show(&next_step(&view(&members))), want, "{members}");
    }
    // No leader known, or two: the leader could not be kept for last.
    assert_eq!(
        show(&next_step(&view(&format!("m1:{up} m2:{up} m3:{up}")))),
        "wait leader"
    );
    assert_eq!(
        show(&next_step(&view(&format!("m1:{up}* m2:{up}* m3:{up}")))),
        "wait leader"
    );
    // 3.5 -> 3.6 waits for etcdutl check v2store.
    let to36 = "3.5.33>3.6.0";
    let mut v2 = view(&format!("m1:{to36}* m2:{to36} m3:{to36}"));
    v2.cluster = Some(Minor::new(3, 5));
    assert_eq!(show(&next_step(&v2)), "wait v2store");
    v2.v2store_checked = true;
    assert_eq!(show(&next_step(&v2)), "grant m2");
    let mut stale = view(&format!("m1:{up}* m2:{up} m3:{up}"));
    stale.backup = BackupState::Stale;
    assert_eq!(show(&next_step(&stale)), "backup");
    stale.backup = BackupState::NoStore;
    assert_eq!(show(&next_step(&stale)), "grant m2");
    let mut busy = view(&format!("m1:{up}* m2:{up} m3:{up}"));
    busy.change_in_flight = true;
    assert_eq!(show(&next_step(&busy)), "wait change");
    // The lock held for a defragmentation: no grant, no backup, until it is released.
    let mut defrag = view(&format!("m1:{up}* m2:{up} m3:{up}"));
    defrag.maintenance = Some(name("m3"));
    defrag.backup = BackupState::Stale;
    assert_eq!(show(&next_step(&defrag)), "wait defrag m3");
    // A held lock: nothing else until its member runs its release and is healthy.
    let mut held = view(&format!("m1:{up}* m2:{up}! m3:{up}"));
    held.lock = lock("m2", "3.5.16");
    assert_eq!(show(&next_step(&held)), "hold m2");
    held.members[1] = member(&format!("m2:{done}!"));
    assert_eq!(show(&next_step(&held)), "hold m2");
    held.members[1] = member(&format!("m2:{done}"));
    assert_eq!(show(&next_step(&held)), "release m2");
    // Its pilot still checks that it caught up: not yet.
    held.members[1].stepping = true;
    assert_eq!(show(&next_step(&held)), "hold m2");
    // Rolled back, or its pilot asks for another release now: released.
    held.members[1] = member(&format!("m2:{up}x"));
    assert_eq!(show(&next_step(&held)), "release m2");
    // Rolled back but not healthy again yet: held.
    held.members[1] = member(&format!("m2:{up}!x"));
    assert_eq!(show(&next_step(&held)), "hold m2");
    held.members[1] = member("m2:3.4.23>3.5.30");
    assert_eq!(show(&next_step(&held)), "release m2");
    // Its pilot does not answer (it may be restarting its member): the lock stays.
    held.members[1] = member("m2:?>?");
    assert_eq!(show(&next_step(&held)), "hold m2");
    held.lock = lock("m9", "3.5.16");
    assert_eq!(
        show(&next_step(&held)),
        "release m9",
        "a holder that is no member"
    );
    // A rollback stops the upgrade, whoever else is behind.
    assert_eq!(
        show(&next_step(&view(&format!("m1:{up}* m2:{up}x m3:{up}")))),
        "stopped by m2"
    );
}

#[test]
fn a_member_rolls_back_only_while_going_back_is_allowed() {
    let cluster34 = Some(Minor::new(3, 4));
    let cluster35 = Some(Minor::new(3, 5));
    let old = [v("3.4.23"), v("3.4.23")];
    assert_eq!(
        after_timeout(v("3.4.23"), v("3.5.16"), &old, cluster34),
        AfterTimeout::RollBack
    );
    assert!(matches!(
        after_timeout(v("3.4.23"), v("3.5.16"), &old, cluster35),
        AfterTimeout::Stay { .. }
    ));
    assert!(matches!(
        after_timeout(v("3.4.23"), v("3.5.16"), &old, None),
        AfterTimeout::Stay { .. }
    ));
    // The last member of a minor upgrade: every member runs the new minor, and etcd moves
    // the cluster version to it at once.
    assert!(matches!(
        after_timeout(
            v("3.4.23"),
            v("3.5.16"),
            &[v("3.5.16"), v("3.5.16")],
            cluster34
        ),
        AfterTimeout::Stay { .. }
    ));
    // Patch releases go back whatever the cluster version.
    assert_eq!(
        after_timeout(v("3.5.16"), v("3.5.30"), &[v("3.5.16")], cluster35),
        AfterTimeout::RollBack
    );
    assert_eq!(
        after_timeout(v("3.5.30"), v("3.5.16"), &[], None),
        AfterTimeout::RollBack
    );
    assert!(caught_up(10, 10) && caught_up(11, 10) && !caught_up(9, 10));
}

fn arb_view() -> impl Strategy<Value = UpgradeView> {
    let versions = prop::sample::select(vec!["3.4.23", "3.5.16", "3.5.30"]);
    let member = (
        versions.clone(),
        versions,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    (
        prop::collection::vec(member, 1..6),
        prop::option::of(0usize..6),
        prop::option::of(0usize..7),
        (any::<bool>(), prop::option::of(0usize..6)),
        prop::sample::select(vec![
            BackupState::NoStore,
            BackupState::Fresh,
            BackupState::Stale,
        ]),
    )
        .prop_map(
            |(specs, leader, lock, (change_in_flight, defrag), backup)| {
                let n = specs.len();
                let members = specs
                    .into_iter()
                    .enumerate()
                    .map(
                        |(i, (running, desired, healthy, learner, known))| UpgradeMember {
                            name: name(&format!("m{}", i + 1)),
                            running: known.then(|| v(running)),
                            desired: Some(v(desired)),
                            healthy,
                            leader: leader.is_some_and(|l| l % n == i),
                            learner: learner && i > 0,
                            failed: None,
                            stepping: false,
                        },
                    )
                    .collect();
                UpgradeView {
                    members,
                    cluster: Some(Minor::new(3, 4)),
                    lock: lock.map(|l| Lock {
                        holder: name(&format!("m{}", l + 1)),
                        target: v("3.5.16"),
                    }),
                    maintenance: defrag.map(|d| name(&format!("m{}", d % n + 1))),
                    change_in_flight,
                    backup,
                    v2store_checked: true,
                }
            },
        )
}

proptest! {
    #[test]
    fn a_grant_goes_only_to_a_behind_non_leader_while_nobody_holds_the_lock(view in arb_view()) {
        let voters = view.members.iter().filter(|m| !m.learner).count();
        if let UpgradeStep::Grant { member } = next_step(&view) {
            prop_assert!(view.lock.is_none(), "granted while {:?} holds the lock", view.lock);
            prop_assert!(view.maintenance.is_none(), "granted while {:?} defragments", view.maintenance);
            let m = view.members.iter().find(|m| m.name == member).unwrap();
            prop_assert!(m.running.is_some() && m.running != m.desired);
            prop_assert!(!m.leader || voters == 1, "granted the leader of {voters} voters");
            prop_assert!(view.members.iter().all(|m| m.healthy && !m.learner));
            prop_assert!(!view.change_in_flight && view.backup != BackupState::Stale);
        }
        if view.lock.is_some() {
            let held = matches!(next_step(&view), UpgradeStep::Hold { .. } | UpgradeStep::Release { .. });
            prop_assert!(held);
        }
    }

    /// Whatever the order of events (coordinator steps, a holder's restart and return,
    /// crashes that make members unhealthy for a while, leadership moves), at most one
    /// member restarts for the upgrade at a time, and the leader is never restarted for it
    /// while another member still runs the old release.
    #[test]
    fn one_member_at_a_time_and_the_leader_last(
        n in 1usize..6,
        events in prop::collection::vec((0u8..9, 0usize..6), 1..150),
    ) {
        let old = v("3.4.23");
        let new = v("3.5.16");
        let mut members: Vec<UpgradeMember> = (0..n)
            .map(|i| UpgradeMember {
                name: name(&format!("m{}", i + 1)),
                running: Some(old),
                desired: Some(new),
                healthy: true,
                leader: i == 0,
                learner: false,
                failed: None,
                stepping: false,
            })
            .collect();
        let mut lock: Option<Lock> = None;
        // Members restarting for the upgrade (their etcd down, about to run `new`).
        let mut restarting: Vec<usize> = Vec::new();
        // Members whose pilot does not answer the coordinator.
        let mut silent = vec![false; n];
        // Members whose pilot is in the middle of its upgrade step, and the release that
        // step restarts them on (the new one, or the old one when going back).
        let mut stepping = vec![false; n];
        let mut back_to = vec![new; n];
        for (event, pick) in events {
            let i = pick % n;
            match event {
                // The coordinator's step.
                0 | 1 => {
                    let seen: Vec<UpgradeMember> = members
                        .iter()
                        .enumerate()
                        .map(|(j, m)| UpgradeMember {
                            running: if silent[j] { None } else { m.running },
                            desired: if silent[j] { None } else { m.desired },
                            stepping: !silent[j] && stepping[j],
                            ..m.clone()
                        })
                        .collect();
                    let view = UpgradeView {
                        members: seen,
                        cluster: Some(Minor::new(3, 4)),
                        lock: lock.clone(),
                        maintenance: None,
                        change_in_flight: false,
                        backup: BackupState::Fresh,
                        v2store_checked: true,
                    };
                    match next_step(&view) {
                        UpgradeStep::Grant { member } => {
                            let g = members.iter().position(|m| m.name == member).unwrap();
                            lock = Some(Lock { holder: member, target: new });
                            // The holder's pilot stops its etcd at once.
                            stepping[g] = true;
                            back_to[g] = new;
                            members[g].healthy = false;
                            restarting.push(g);
                        }
                        UpgradeStep::Release { .. } => lock = None,
                        UpgradeStep::MoveLeader { from, to } => {
                            prop_assert!(from != to);
                            let to = members.iter().position(|m| m.name == to).unwrap();
                            prop_assert_eq!(members[to].running, Some(new));
                            if members[to].healthy {
                                for m in &mut members {
                                    m.leader = false;
                                }
                                members[to].leader = true;
                            }
                        }
                        _ => {}
                    }
                }
                // A restarting member's etcd answers healthy again, on the release it
                // restarted on (its pilot may not have seen it catch up yet).
                2 => {
                    if let Some(pos) = restarting.iter().position(|&r| r == i) {
                        restarting.remove(pos);
                        members[i].running = Some(back_to[i]);
                        members[i].healthy = true;
                    }
                }
                // Its pilot sees it caught up: the step ends (rolled back: failed).
                7 => {
                    if stepping[i] && !silent[i] && !restarting.contains(&i) && members[i].healthy
                    {
                        stepping[i] = false;
                        if back_to[i] == old {
                            members[i].failed = Some("rolled back".to_owned());
                        }
                    }
                }
                // Its pilot gives up on the new release in time: back to the old one.
                8 => {
                    if stepping[i] && !silent[i] && !restarting.contains(&i) && back_to[i] == new
                    {
                        back_to[i] = old;
                        members[i].healthy = false;
                        restarting.push(i);
                    }
                }
                // Its pilot dies: what it runs and wants is unknown; its etcd runs on.
                5 => {
                    silent[i] = true;
                    if let Some(pos) = restarting.iter().position(|&r| r == i) {
                        restarting.remove(pos);
                        members[i].running = Some(back_to[i]);
                        members[i].healthy = true;
                    }
                }
                // It comes back: a member in the middle of its step restarts its etcd (on the
                // release of its step) and goes on with the step.
                6 => {
                    if silent[i] && stepping[i] && !restarting.contains(&i) {
                        members[i].healthy = false;
                        restarting.push(i);
                    }
                    silent[i] = false;
                }
                // A crash: unhealthy for a while (not for the upgrade).
                3 => {
                    if !restarting.contains(&i) {
                        members[i].healthy = false;
                    }
                }
                // It recovers.
                _ => {
                    if !restarting.contains(&i) {
                        members[i].healthy = true;
                    }
                }
            }
            prop_assert!(restarting.len() <= 1, "restarting at once: {restarting:?}");
            for &r in &restarting {
                if members[r].leader && n > 1 {
                    let others_old = members
                        .iter()
                        .enumerate()
                        .any(|(j, m)| j != r && m.running == Some(old));
                    prop_assert!(!others_old, "the leader restarts before the others moved");
                }
            }
        }
    }
}
