//! Day-2 maintenance decisions. Compaction: the revision the coordinator compacts to,
//! keeping `keep_revisions` revisions or `keep_for` of history, whichever keeps more, from
//! the revisions it has seen over time (`compaction_target`, with `remember` keeping those
//! samples small). Nothing is compacted while the history it would drop cannot be dated:
//! a coordinator that has not been in the role for `keep_for` compacts nothing by time.
//!
//! Defragmentation and space alarms (`next_step`): one member at a time, through the lock
//! upgrades use (never while an upgrade holds it), followers first, the leader last once
//! leadership moved away, only while every voter answers. A raised NOSPACE alarm starts a
//! round that does without the lock (etcd refuses every put, so none can be written or
//! released) and waits for every voter to answer instead: compact, defragment every member
//! (followers first, the leader last and in place), disarm once every member's file is back
//! under the quota with room to spare, or say that it cannot be.
//! A raised CORRUPT alarm stops everything here and is never disarmed.

use crate::model::MemberName;

/// How much history compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// At least this many of the newest revisions stay.
    pub keep_revisions: i64,
    /// Every revision written within this many seconds stays.
    pub keep_for_secs: u64,
}

/// The cluster's revision, seen at a time (seconds on the observer's monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionSample {
    pub at_secs: u64,
    pub revision: i64,
}

/// How far apart kept samples are: the age of the history kept is known to this precision.
pub const SAMPLE_EVERY_SECS: u64 = 10;

/// The revision to compact to (etcd drops every revision below it), or `None`: nothing to
/// compact. With `current` the cluster's revision now, `samples` the revisions seen (oldest
/// first), `compacted` the revision compacted to last (0: never), and `hold` a revision no
/// compaction may pass (a backup reading it), if any.
///
/// The target keeps at least `keep_revisions` revisions and everything written within
/// `keep_for_secs`: it is at most `current - keep_revisions`, and at most the revision seen
/// `keep_for_secs` ago or earlier (with no sample that old, nothing is compacted).
pub fn compaction_target(
    policy: CompactionPolicy,
    now_secs: u64,
    current: i64,
    samples: &[RevisionSample],
    compacted: i64,
    hold: Option<i64>,
) -> Option<i64> {
    let by_count = current.saturating_sub(policy.keep_revisions.max(1));
    let horizon = now_secs.checked_sub(policy.keep_for_secs)?;
    let by_time = samples
        .iter()
        .filter(|s| s.at_secs <= horizon)
        .map(|s| s.revision)
        .max()?;
    let mut target = by_count.min(by_time);
    if let Some(hold) = hold {
        target = target.min(hold);
    }
    (target > compacted && target > 1).then_some(target)
}

/// `samples` with `sample` added: at most one per [`SAMPLE_EVERY_SECS`], and of those older
/// than `keep_for_secs`, only the newest (the one a compaction by time uses).
pub fn remember(samples: &mut Vec<RevisionSample>, sample: RevisionSample, keep_for_secs: u64) {
    if samples
        .last()
        .is_some_and(|last| sample.at_secs < last.at_secs + SAMPLE_EVERY_SECS)
    {
        return;
    }
    samples.push(sample);
    if let Some(horizon) = sample.at_secs.checked_sub(keep_for_secs) {
        let old = samples.iter().filter(|s| s.at_secs <= horizon).count();
        if old > 1 {
            samples.drain(..old - 1);
        }
    }
}

/// When a member's file is worth defragmenting: what a defrag gives back
/// (`db_size - in_use`) is at least `percent` of the file and at least `min_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragThreshold {
    pub percent: u64,
    pub min_bytes: u64,
}

impl DefragThreshold {
    pub fn wants(self, db_size: u64, in_use: u64) -> bool {
        let free = db_size.saturating_sub(in_use);
        free > 0
            && free >= self.min_bytes
            && free.saturating_mul(100) >= db_size.saturating_mul(self.percent)
    }
}

/// After a space alarm's round, every member's file must be this far (in percent of the
/// quota) under the quota before the alarm is disarmed: less would raise it again at once.
pub const DISARM_HEADROOM_PERCENT: u64 = 10;

/// What the one-member-at-a-time lock is held for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Upgrade,
    Defrag,
}

/// Who holds the lock, and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    pub holder: MemberName,
    pub kind: LockKind,
}

/// One member, as maintenance sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceMember {
    pub name: MemberName,
    /// It answers, follows a leader and reports no error but a space alarm.
    pub healthy: bool,
    pub leader: bool,
    pub learner: bool,
    /// Its file's size and the part holding live data; `None` when it does not answer.
    pub db_size: Option<u64>,
    pub in_use: Option<u64>,
    /// A NOSPACE alarm is raised for it.
    pub nospace: bool,
    /// A CORRUPT alarm is raised for it.
    pub corrupt: bool,
}

impl SpaceMember {
    fn wants(&self, threshold: DefragThreshold) -> bool {
        matches!((self.db_size, self.in_use), (Some(size), Some(used)) if threshold.wants(size, used))
    }
}

/// The round a raised NOSPACE alarm started, as far as the coordinator got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmRound {
    /// The history was compacted in this round.
    pub compacted: bool,
    /// Members defragmented in this round.
    pub defragged: Vec<MemberName>,
    /// The round ended without freeing enough: nothing more is tried until something
    /// changes (the revision moves: keys were deleted) and the caller starts a new round.
    pub gave_up: bool,
}

/// What the coordinator sees for maintenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceView {
    pub members: Vec<SpaceMember>,
    /// The lock, as stored.
    pub lock: Option<HeldLock>,
    /// This coordinator's defragmentation, while it runs, and the member whose
    /// defragmentation finished (until its lock is released).
    pub defragging: Option<MemberName>,
    pub finished: Option<MemberName>,
    /// An upgrade has a step to take (a member is behind): it goes first.
    pub upgrade_moving: bool,
    /// A membership change or a learner catching up.
    pub change_in_flight: bool,
    /// A backup or drill reads the data now.
    pub backup_busy: bool,
    /// The defragmentation window is open (threshold defragmentation only).
    pub window_open: bool,
    pub threshold: DefragThreshold,
    /// `--quota-backend-bytes`.
    pub quota: u64,
    pub alarm: AlarmRound,
    /// Members an operator asked to defragment (`maintenance defrag`) and not done yet.
    pub requested: Vec<MemberName>,
}

/// Why maintenance waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaintenanceWait {
    /// Members raised CORRUPT: nothing is done until an operator acts.
    Corrupt {
        names: Vec<MemberName>,
    },
    /// The lock is held for an upgrade.
    UpgradeHolds {
        holder: MemberName,
    },
    /// An upgrade has a member to move: it takes the lock first.
    Upgrading,
    Unhealthy {
        names: Vec<MemberName>,
    },
    ChangeInFlight,
    BackupBusy,
    /// Members are worth defragmenting, outside `maintenance.defrag_window`.
    OutsideWindow {
        names: Vec<MemberName>,
    },
    LeaderUnknown,
}

/// The coordinator's next maintenance step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaintenanceStep {
    /// Nothing to do.
    Idle,
    Wait(MaintenanceWait),
    /// A space alarm's round: compact now (down to `keep_revisions`, whatever `keep_for`
    /// says: the cluster takes no writes).
    Compact,
    /// Take the lock for this member's defragmentation.
    Grant {
        member: MemberName,
    },
    /// Defragment this member (under the lock, or in a space alarm's round, when etcd takes
    /// no writes and the lock cannot be written: this coordinator's own one-at-a-time task
    /// is all that keeps two apart).
    Defrag {
        member: MemberName,
        locked: bool,
    },
    /// This coordinator's defragmentation of the member runs: wait for it.
    Hold {
        member: MemberName,
    },
    /// The holder's defragmentation finished: release the lock.
    Release {
        member: MemberName,
    },
    /// Only the leader is left: move leadership to a voter first.
    MoveLeader {
        from: MemberName,
        to: MemberName,
    },
    /// The space alarm's round freed enough: disarm it.
    Disarm,
    /// The round freed too little: say so, and do not loop.
    TooLarge {
        largest: u64,
        quota: u64,
    },
}

/// The next maintenance step. At most one member defragments at a time: this coordinator's
/// own task is waited on, and outside a space alarm's round so is a lock held for anything
/// (in the round, which cannot write the lock, every voter must answer instead); the leader
/// of several voters is defragmented under the lock only after leadership moved away (in a
/// space alarm's round, last and in place); nothing happens while a CORRUPT alarm is
/// raised; a space alarm is disarmed only when every member's file is under the quota with
/// [`DISARM_HEADROOM_PERCENT`] to spare.
pub fn next_step(view: &MaintenanceView) -> MaintenanceStep {
    let mut members = view.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let corrupt: Vec<MemberName> = members
        .iter()
        .filter(|m| m.corrupt)
        .map(|m| m.name.clone())
        .collect();
    if !corrupt.is_empty() {
        return MaintenanceStep::Wait(MaintenanceWait::Corrupt { names: corrupt });
    }
    if let Some(member) = &view.defragging {
        return MaintenanceStep::Hold {
            member: member.clone(),
        };
    }
    let unhealthy: Vec<MemberName> = members
        .iter()
        .filter(|m| !m.learner && !m.healthy)
        .map(|m| m.name.clone())
        .collect();
    let voters = members.iter().filter(|m| !m.learner).count();
    let leaders = members.iter().filter(|m| m.leader).count();
    // A space alarm's round comes first and does without the lock: etcd refuses every put,
    // so no lock can be written or released, and a lock left held (by an upgrade or a
    // defragmentation) would keep the cluster read-only for good. Its steps wait instead
    // for every voter to answer, which a member restarting for an upgrade does not.
    if members.iter().any(|m| m.nospace) {
        if view.alarm.gave_up {
            return too_large(&members, view.quota);
        }
        if view.backup_busy {
            return MaintenanceStep::Wait(MaintenanceWait::BackupBusy);
        }
        if !unhealthy.is_empty() {
            return MaintenanceStep::Wait(MaintenanceWait::Unhealthy { names: unhealthy });
        }
        if !view.alarm.compacted {
            return MaintenanceStep::Compact;
        }
        // Every member, whatever its sizes say: etcd updates the in-use size a while after
        // a compaction, so a member that looks full may have been freed. A learner that does
        // not answer is left out (it takes no part in the quorum, and cannot be reached).
        let left: Vec<&SpaceMember> = members
            .iter()
            .filter(|m| !view.alarm.defragged.contains(&m.name) && (m.healthy || !m.learner))
            .collect();
        if left.is_empty() {
            let headroom = view.quota / 100 * DISARM_HEADROOM_PERCENT;
            let fits = members.iter().filter(|m| m.healthy).all(|m| {
                m.db_size
                    .is_some_and(|s| s.saturating_add(headroom) <= view.quota)
            });
            return if fits {
                MaintenanceStep::Disarm
            } else {
                too_large(&members, view.quota)
            };
        }
        // The holder of a defragmentation lock first: a predecessor's call may still run
        // inside etcd, and a second one on that member waits for it.
        if let Some(HeldLock {
            holder,
            kind: LockKind::Defrag,
        }) = &view.lock
            && left.iter().any(|m| &m.name == holder)
        {
            return MaintenanceStep::Defrag {
                member: holder.clone(),
                locked: false,
            };
        }
        return pick(&members, &left, voters, leaders, Mode::Alarm);
    }
    match &view.lock {
        Some(HeldLock {
            holder,
            kind: LockKind::Upgrade,
        }) => {
            return MaintenanceStep::Wait(MaintenanceWait::UpgradeHolds {
                holder: holder.clone(),
            });
        }
        Some(HeldLock {
            holder,
            kind: LockKind::Defrag,
        }) => {
            // Finished: release. Not running here (granted by a predecessor, or this
            // coordinator restarted): defragment it again; a second defragmentation of the
            // same member waits for the first and costs little.
            // A holder that became the leader of several voters meanwhile hands leadership
            // over first.
            return if view.finished.as_ref() == Some(holder) {
                MaintenanceStep::Release {
                    member: holder.clone(),
                }
            } else if let Some(m) = members.iter().find(|m| &m.name == holder) {
                if m.leader && voters > 1 {
                    match members
                        .iter()
                        .find(|o| !o.leader && !o.learner && o.healthy)
                    {
                        Some(to) => MaintenanceStep::MoveLeader {
                            from: holder.clone(),
                            to: to.name.clone(),
                        },
                        None => MaintenanceStep::Wait(MaintenanceWait::LeaderUnknown),
                    }
                } else {
                    MaintenanceStep::Defrag {
                        member: holder.clone(),
                        locked: true,
                    }
                }
            } else {
                MaintenanceStep::Release {
                    member: holder.clone(),
                }
            };
        }
        None => {}
    }
    let mut left: Vec<&SpaceMember> = members
        .iter()
        .filter(|m| view.requested.contains(&m.name))
        .collect();
    let over: Vec<&SpaceMember> = members
        .iter()
        .filter(|m| !view.requested.contains(&m.name) && m.wants(view.threshold))
        .collect();
    if view.window_open {
        left.extend(over);
    } else if left.is_empty() && !over.is_empty() {
        return MaintenanceStep::Wait(MaintenanceWait::OutsideWindow {
            names: over.iter().map(|m| m.name.clone()).collect(),
        });
    }
    left.sort_by(|a, b| a.name.cmp(&b.name));
    if left.is_empty() {
        return MaintenanceStep::Idle;
    }
    if view.upgrade_moving {
        return MaintenanceStep::Wait(MaintenanceWait::Upgrading);
    }
    if !unhealthy.is_empty() {
        return MaintenanceStep::Wait(MaintenanceWait::Unhealthy { names: unhealthy });
    }
    if view.change_in_flight {
        return MaintenanceStep::Wait(MaintenanceWait::ChangeInFlight);
    }
    if view.backup_busy {
        return MaintenanceStep::Wait(MaintenanceWait::BackupBusy);
    }
    pick(&members, &left, voters, leaders, Mode::Locked)
}

/// How a member is defragmented.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Under the lock; the leader of several voters hands leadership over first.
    Locked,
    /// In a space alarm's round: no lock can be written, and leadership stays (the next
    /// leader's pilot would start the round again); the leader goes last, in place, while
    /// etcd takes no writes anyway.
    Alarm,
}

/// The member to defragment next among `left`: a follower first (by name), the leader last
/// (once leadership moved to another voter, under the lock).
fn pick(
    members: &[SpaceMember],
    left: &[&SpaceMember],
    voters: usize,
    leaders: usize,
    mode: Mode,
) -> MaintenanceStep {
    if voters > 1 && leaders != 1 {
        return MaintenanceStep::Wait(MaintenanceWait::LeaderUnknown);
    }
    let Some(next) = left.iter().find(|m| !m.leader).or_else(|| left.first()) else {
        return MaintenanceStep::Idle;
    };
    if next.leader && voters > 1 && mode == Mode::Locked {
        return match members
            .iter()
            .find(|m| !m.leader && !m.learner && m.healthy)
        {
            Some(to) => MaintenanceStep::MoveLeader {
                from: next.name.clone(),
                to: to.name.clone(),
            },
            None => MaintenanceStep::Wait(MaintenanceWait::LeaderUnknown),
        };
    }
    if mode == Mode::Locked {
        MaintenanceStep::Grant {
            member: next.name.clone(),
        }
    } else {
        MaintenanceStep::Defrag {
            member: next.name.clone(),
            locked: false,
        }
    }
}

fn too_large(members: &[SpaceMember], quota: u64) -> MaintenanceStep {
    MaintenanceStep::TooLarge {
        largest: members.iter().filter_map(|m| m.db_size).max().unwrap_or(0),
        quota,
    }
}

/// Whether `minute` (of the day, UTC) is within the window `start..end` (minutes of the day;
/// a window that ends before it starts runs over midnight; `None`: any time).
pub fn in_window(window: Option<(u32, u32)>, minute: u32) -> bool {
    match window {
        None => true,
        Some((start, end)) if start <= end => (start..end).contains(&minute),
        Some((start, end)) => minute >= start || minute < end,
    }
}

#[cfg(test)]
mod defrag_tests;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: CompactionPolicy = CompactionPolicy {
        keep_revisions: 100,
        keep_for_secs: 3600,
    };

    fn samples(pairs: &[(u64, i64)]) -> Vec<RevisionSample> {
        pairs
            .iter()
            .map(|&(at_secs, revision)| RevisionSample { at_secs, revision })
            .collect()
    }

    #[test]
    fn compaction_keeps_the_count_or_the_time_whichever_keeps_more() {
        let seen = samples(&[(0, 50), (1800, 400), (3600, 1000)]);
        // An hour in: the revision seen an hour ago (50) keeps more than the count (900).
        assert_eq!(
            compaction_target(POLICY, 3600, 1000, &seen, 0, None),
            Some(50)
        );
        // Half an hour later: the revision seen at 1800 s is an hour old.
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 50, None),
            Some(400)
        );
        // Little written: the count keeps more.
        assert_eq!(
            compaction_target(POLICY, 5400, 450, &seen, 0, None),
            Some(350)
        );
        // Not an hour of samples yet: nothing can be dated, nothing compacted.
        assert_eq!(compaction_target(POLICY, 1800, 1000, &seen, 0, None), None);
        // Already compacted that far, or a backup holds it back.
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 400, None),
            None
        );
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 0, Some(300)),
            Some(300)
        );
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 300, Some(300)),
            None
        );
        // A young cluster: nothing below revision 2.
        assert_eq!(
            compaction_target(POLICY, 9000, 101, &samples(&[(0, 1)]), 0, None),
            None
        );
    }

    #[test]
    fn samples_stay_few() {
        let mut kept = Vec::new();
        for at in 0..20_000u64 {
            remember(
                &mut kept,
                RevisionSample {
                    at_secs: at,
                    revision: i64::try_from(at).unwrap(),
                },
                3600,
            );
        }
        assert!(
            kept.len() <= 3600 / SAMPLE_EVERY_SECS as usize + 2,
            "{}",
            kept.len()
        );
        // The newest sample an hour old or older is kept, so compaction by time still works.
        assert!(kept.iter().any(|s| s.at_secs <= 20_000 - 3600));
    }

    proptest! {
        /// Whatever was seen, the target keeps `keep_revisions` revisions and every revision
        /// written within `keep_for` (any revision seen later than the horizon is above it),
        /// never passes a hold, and only moves forward.
        #[test]
        fn compaction_never_drops_what_the_policy_keeps(
            steps in prop::collection::vec((1u64..600, 0i64..500), 1..60),
            keep_revisions in 1i64..2000,
            keep_for_secs in 1u64..7200,
            hold in prop::option::of(0i64..20_000),
        ) {
            let policy = CompactionPolicy { keep_revisions, keep_for_secs };
            let (mut now, mut current, mut compacted) = (0u64, 1i64, 0i64);
            let mut seen = Vec::new();
            let mut all = Vec::new();
            for (dt, writes) in steps {
                now += dt;
                current += writes;
                let sample = RevisionSample { at_secs: now, revision: current };
                all.push(sample);
                remember(&mut seen, sample, keep_for_secs);
                if let Some(target) = compaction_target(policy, now, current, &seen, compacted, hold) {
                    prop_assert!(target > compacted);
                    prop_assert!(target <= current - keep_revisions);
                    if let Some(hold) = hold {
                        prop_assert!(target <= hold);
                    }
                    // Every revision current within keep_for is at or above the target.
                    for s in all.iter().filter(|s| s.at_secs + keep_for_secs > now) {
                        prop_assert!(s.revision >= target, "{s:?} dropped by {target}");
                    }
                    compacted = target;
                }
            }
        }
    }
}
