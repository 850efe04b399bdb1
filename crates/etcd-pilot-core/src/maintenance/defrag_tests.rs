//! Defragmentation and space alarms: every rule as a table, and a simulation over random
//! clusters, alarms, coordinator changes and upgrades in which two members never
//! defragment at once and the leader of several voters never does.

use proptest::prelude::*;

use super::*;

const MIB: u64 = 1 << 20;

fn name(n: &str) -> MemberName {
    MemberName::new(n.to_owned()).unwrap()
}

fn member(n: &str, size_mib: u64, used_mib: u64) -> SpaceMember {
    SpaceMember {
        name: name(n),
        healthy: true,
        leader: n == "m1",
        learner: false,
        db_size: Some(size_mib * MIB),
        in_use: Some(used_mib * MIB),
        nospace: false,
        corrupt: false,
    }
}

fn view(members: Vec<SpaceMember>) -> MaintenanceView {
    MaintenanceView {
        members,
        lock: None,
        defragging: None,
        finished: None,
        upgrade_moving: false,
        change_in_flight: false,
        backup_busy: false,
        window_open: true,
        threshold: DefragThreshold {
            percent: 25,
            min_bytes: 64 * MIB,
        },
        quota: 2048 * MIB,
        alarm: AlarmRound::default(),
        requested: Vec::new(),
    }
}

fn held(holder: &str, kind: LockKind) -> Option<HeldLock> {
    Some(HeldLock {
        holder: name(holder),
        kind,
    })
}

#[test]
fn threshold_needs_both_the_share_and_the_size() {
    let t = DefragThreshold {
        percent: 25,
        min_bytes: 64 * MIB,
    };
    assert!(t.wants(400 * MIB, 300 * MIB));
    // 25 % but under 64 MiB.
    assert!(!t.wants(200 * MIB, 150 * MIB));
    // 64 MiB but under 25 %.
    assert!(!t.wants(1000 * MIB, 900 * MIB));
    assert!(!t.wants(0, 0));
    assert!(!t.wants(10, 20));
}

#[test]
fn followers_first_then_leadership_moves_then_the_old_leader() {
    let fragmented = || {
        vec![
            member("m1", 1000, 100),
            member("m2", 1000, 100),
            member("m3", 1000, 100),
        ]
    };
    assert_eq!(
        next_step(&view(fragmented())),
        MaintenanceStep::Grant { member: name("m2") }
    );
    let mut v = view(fragmented());
    v.lock = held("m2", LockKind::Defrag);
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Defrag {
            member: name("m2"),
            locked: true
        }
    );
    v.defragging = Some(name("m2"));
    assert_eq!(next_step(&v), MaintenanceStep::Hold { member: name("m2") });
    v.defragging = None;
    v.finished = Some(name("m2"));
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Release { member: name("m2") }
    );
    // Only the leader is left.
    let mut v = view(vec![
        member("m1", 1000, 100),
        member("m2", 100, 100),
        member("m3", 100, 100),
    ]);
    assert_eq!(
        next_step(&v),
        MaintenanceStep::MoveLeader {
            from: name("m1"),
            to: name("m2")
        }
    );
    v.members[0].leader = false;
    v.members[1].leader = true;
    assert_eq!(next_step(&v), MaintenanceStep::Grant { member: name("m1") });
    // A single member defragments itself.
    assert_eq!(
        next_step(&view(vec![member("m1", 1000, 100)])),
        MaintenanceStep::Grant { member: name("m1") }
    );
    // Nothing worth it.
    assert_eq!(
        next_step(&view(vec![member("m1", 100, 90), member("m2", 100, 90)])),
        MaintenanceStep::Idle
    );
}

#[test]
fn waits_for_upgrades_health_changes_backups_and_the_window() {
    let fragmented = || vec![member("m1", 1000, 100), member("m2", 1000, 100)];
    let mut v = view(fragmented());
    v.lock = held("m2", LockKind::Upgrade);
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::UpgradeHolds { holder: name("m2") })
    );
    let mut v = view(fragmented());
    v.upgrade_moving = true;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::Upgrading)
    );
    let mut v = view(fragmented());
    v.members[1].healthy = false;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::Unhealthy {
            names: vec![name("m2")]
        })
    );
    let mut v = view(fragmented());
    v.change_in_flight = true;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::ChangeInFlight)
    );
    let mut v = view(fragmented());
    v.backup_busy = true;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::BackupBusy)
    );
    let mut v = view(fragmented());
    v.window_open = false;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::OutsideWindow {
            names: vec![name("m1"), name("m2")]
        })
    );
    // An operator's request does not wait for the window, and needs no threshold.
    let mut v = view(vec![member("m1", 100, 90), member("m2", 100, 90)]);
    v.window_open = false;
    v.requested = vec![name("m2")];
    assert_eq!(next_step(&v), MaintenanceStep::Grant { member: name("m2") });
    let mut v = view(fragmented());
    v.members[0].leader = false;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::LeaderUnknown)
    );
    let mut v = view(fragmented());
    v.members[1].corrupt = true;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::Corrupt {
            names: vec![name("m2")]
        })
    );
}

#[test]
fn a_space_alarm_compacts_defragments_each_then_disarms_or_gives_up() {
    let quota = 32;
    let alarmed = |sizes: [(u64, u64); 3]| {
        let mut v = view(
            ["m1", "m2", "m3"]
                .iter()
                .zip(sizes)
                .map(|(n, (size, used))| {
                    let mut m = member(n, size, used);
                    m.nospace = true;
                    m.healthy = true;
                    m
                })
                .collect(),
        );
        v.quota = quota * MIB;
        // Outside the window, with nothing over the usual threshold: the alarm goes on.
        v.window_open = false;
        v
    };
    let mut v = alarmed([(32, 31), (32, 31), (32, 31)]);
    assert_eq!(next_step(&v), MaintenanceStep::Compact);
    v.alarm.compacted = true;
    // Every member is defragmented, whatever its in-use size says (etcd updates it a while
    // after the compaction): followers first.
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Defrag {
            member: name("m2"),
            locked: false
        }
    );
    v.alarm.defragged = vec![name("m2"), name("m3")];
    v.members[1].db_size = Some(2 * MIB);
    v.members[2].db_size = Some(2 * MIB);
    // The leader last, in place: leadership stays (no lock, no role can be written).
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Defrag {
            member: name("m1"),
            locked: false
        }
    );
    v.alarm.defragged.push(name("m1"));
    v.members[0].db_size = Some(2 * MIB);
    assert_eq!(next_step(&v), MaintenanceStep::Disarm);
    // Back under the quota, but not by the headroom: it would be raised again at once.
    v.members[0].db_size = Some(30 * MIB);
    v.members[0].in_use = Some(30 * MIB);
    assert_eq!(
        next_step(&v),
        MaintenanceStep::TooLarge {
            largest: 30 * MIB,
            quota: 32 * MIB
        }
    );
    v.alarm.gave_up = true;
    v.members[0].db_size = Some(2 * MIB);
    assert!(matches!(next_step(&v), MaintenanceStep::TooLarge { .. }));
    // A lock left held does not stop the round (it cannot be released while etcd takes no
    // writes); a member that does not answer (an upgrade's holder restarting) does.
    let mut v = alarmed([(32, 2), (32, 2), (32, 2)]);
    v.lock = held("m3", LockKind::Upgrade);
    v.alarm.compacted = true;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Defrag {
            member: name("m2"),
            locked: false
        }
    );
    v.members[2].healthy = false;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::Unhealthy {
            names: vec![name("m3")]
        })
    );
    // After the round, a member that does not answer leaves the sizes unknown: no verdict.
    let mut v = alarmed([(32, 2), (32, 2), (32, 2)]);
    v.alarm.compacted = true;
    v.alarm.defragged = vec![name("m1"), name("m2"), name("m3")];
    v.members[1].healthy = false;
    v.members[1].db_size = None;
    assert_eq!(
        next_step(&v),
        MaintenanceStep::Wait(MaintenanceWait::Unhealthy {
            names: vec![name("m2")]
        })
    );
}

#[test]
fn windows_run_over_midnight() {
    assert!(in_window(None, 0));
    assert!(in_window(Some((60, 120)), 60));
    assert!(!in_window(Some((60, 120)), 120));
    assert!(in_window(Some((22 * 60, 2 * 60)), 23 * 60));
    assert!(in_window(Some((22 * 60, 2 * 60)), 60));
    assert!(!in_window(Some((22 * 60, 2 * 60)), 12 * 60));
}

/// A simulated cluster: members' files, who leads, the lock, which coordinator runs which
/// defragmentation, and an upgrade that sometimes holds the lock.
#[derive(Clone, Debug)]
struct World {
    members: Vec<SpaceMember>,
    lock: Option<HeldLock>,
    /// Defragmentations running, by member, the coordinator generation that started it, and
    /// whether under the lock.
    running: Vec<(MemberName, u32, bool)>,
    generation: u32,
    finished: Option<MemberName>,
    alarm: AlarmRound,
}

#[derive(Clone, Debug)]
enum Event {
    /// The coordinator takes its step.
    Step,
    /// The oldest running defragmentation finishes.
    Finish,
    /// The leader changes on its own (a new coordinator, which knows nothing of tasks).
    NewLeader(usize),
    /// Writes fragment a member's file.
    Fragment(usize),
    /// The alarm is raised on every member.
    Alarm,
    /// An upgrade takes the free lock, or gives it back.
    Upgrade(usize),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Step),
        3 => Just(Event::Finish),
        1 => (0usize..5).prop_map(Event::NewLeader),
        2 => (0usize..5).prop_map(Event::Fragment),
        1 => Just(Event::Alarm),
        1 => (0usize..5).prop_map(Event::Upgrade),
    ]
}

proptest! {
    /// Whatever happens, at most one member defragments at a time (the one exception: a
    /// space alarm's round, which cannot write the lock, left one running when leadership
    /// moved on its own), never while a member restarts for an upgrade (under the lock:
    /// never while an upgrade holds it), and the leader of several voters never under the
    /// lock; an alarm is disarmed only when every file fits under the quota with the
    /// headroom.
    #[test]
    fn one_member_at_a_time_and_never_the_leader(
        n in 1usize..6,
        events in prop::collection::vec(event(), 1..120),
    ) {
        let quota = 64 * MIB;
        let mut w = World {
            members: (1..=n).map(|i| member(&format!("m{i}"), 10, 10)).collect(),
            lock: None,
            running: Vec::new(),
            generation: 0,
            finished: None,
            alarm: AlarmRound::default(),
        };
        for e in events {
            match e {
                Event::Finish => {
                    // The oldest first: etcd runs one defragmentation of a member at a time,
                    // so a resumed one ends after the one it waited for.
                    if !w.running.is_empty() {
                        let (m, generation, _) = w.running.remove(0);
                        let file = w.members.iter_mut().find(|x| x.name == m).unwrap();
                        file.db_size = file.in_use;
                        if generation == w.generation {
                            w.finished = Some(m.clone());
                            if w.members.iter().any(|x| x.nospace) {
                                w.alarm.defragged.push(m);
                            }
                        }
                    }
                }
                Event::NewLeader(i) => {
                    let i = i % n;
                    for (j, m) in w.members.iter_mut().enumerate() {
                        m.leader = i == j;
                    }
                    w.generation += 1;
                    w.finished = None;
                    w.alarm = AlarmRound::default();
                }
                Event::Fragment(i) => {
                    let m = &mut w.members[i % n];
                    m.db_size = m.db_size.map(|s| s + 200 * MIB);
                }
                Event::Alarm => {
                    for m in &mut w.members {
                        m.nospace = true;
                        m.in_use = Some(MIB);
                    }
                }
                // An upgrade takes the free lock (its holder restarts: it does not answer), or
                // its holder is back and the lock is released.
                Event::Upgrade(i) => match &w.lock {
                    None if w.running.is_empty() => {
                        w.lock = Some(HeldLock { holder: w.members[i % n].name.clone(), kind: LockKind::Upgrade });
                        w.members[i % n].healthy = false;
                    }
                    Some(HeldLock { kind: LockKind::Upgrade, .. }) => {
                        w.lock = None;
                        for m in &mut w.members {
                            m.healthy = true;
                        }
                    }
                    _ => {}
                },
                Event::Step => {
                    let v = MaintenanceView {
                        members: w.members.clone(),
                        lock: w.lock.clone(),
                        defragging: w.running.iter().find(|(_, g, _)| *g == w.generation).map(|(m, _, _)| m.clone()),
                        finished: w.finished.clone(),
                        upgrade_moving: false,
                        change_in_flight: false,
                        backup_busy: false,
                        window_open: true,
                        threshold: DefragThreshold { percent: 25, min_bytes: 64 * MIB },
                        quota,
                        alarm: w.alarm.clone(),
                        requested: Vec::new(),
                    };
                    match next_step(&v) {
                        MaintenanceStep::Grant { member } => {
                            prop_assert!(w.lock.is_none());
                            w.lock = Some(HeldLock { holder: member, kind: LockKind::Defrag });
                        }
                        MaintenanceStep::Defrag { member, locked } => {
                            let m = w.members.iter().find(|m| m.name == member).unwrap();
                            prop_assert!(!(m.leader && n > 1 && locked), "defragments the leader {member} under the lock");
                            let holder = w.lock.as_ref().is_some_and(|l| l.kind == LockKind::Defrag && l.holder == member);
                            if m.leader && n > 1 && !holder {
                                // In an alarm's round, the leader goes last (unless it holds
                                // a defragmentation lock: it goes first, as its holder).
                                prop_assert!(w.members.iter().all(|o| o.leader || w.alarm.defragged.contains(&o.name)));
                            }
                            // Never while a member restarts for an upgrade; under the lock,
                            // never while an upgrade holds it at all.
                            prop_assert!(w.members.iter().all(|m| m.healthy), "{member} while a member restarts");
                            prop_assert!(!(locked && w.lock.as_ref().is_some_and(|l| l.kind == LockKind::Upgrade)));
                            if locked {
                                prop_assert_eq!(w.lock.as_ref().map(|l| &l.holder), Some(&member));
                            } else {
                                // Without the lock only in an alarm's round.
                                prop_assert!(w.members.iter().any(|m| m.nospace));
                            }
                            // Two members at once only when the other was started without the
                            // lock (a space alarm's round, when etcd takes no writes) by a
                            // coordinator that lost leadership on its own since.
                            for (r, g, l) in &w.running {
                                prop_assert!(*r == member || (!*l && *g < w.generation), "{member} while {r} ({g}, locked {l})");
                            }
                            w.running.push((member, w.generation, locked));
                            w.finished = None;
                        }
                        MaintenanceStep::Release { member } => {
                            prop_assert_eq!(w.lock.as_ref().map(|l| &l.holder), Some(&member));
                            w.lock = None;
                            w.finished = None;
                        }
                        MaintenanceStep::MoveLeader { from, to } => {
                            prop_assert!(w.running.iter().all(|(_, g, _)| *g != w.generation));
                            for m in &mut w.members {
                                m.leader = m.name == to;
                            }
                            prop_assert_ne!(from, to);
                            w.generation += 1;
                            w.finished = None;
                            w.alarm = AlarmRound { compacted: false, ..AlarmRound::default() };
                        }
                        MaintenanceStep::Compact => w.alarm.compacted = true,
                        MaintenanceStep::Disarm => {
                            for m in &mut w.members {
                                prop_assert!(m.db_size.unwrap() + quota / 10 <= quota);
                                m.nospace = false;
                            }
                            w.alarm = AlarmRound::default();
                        }
                        MaintenanceStep::TooLarge { .. } => w.alarm.gave_up = true,
                        MaintenanceStep::Hold { .. } | MaintenanceStep::Idle | MaintenanceStep::Wait(_) => {}
                    }
                }
            }
        }
    }
}
