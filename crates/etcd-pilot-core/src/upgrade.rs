//! Rolling upgrades of etcd. Which moves between releases are allowed (`check_path`: each rule
//! with its reason and where etcd says so), which releases are flagged (`warnings`), and the
//! coordinator's next step (`next_step`): one member at a time through a lock, followers
//! first, the leader last once leadership has moved away, only while every voter is healthy,
//! no learner catches up and a fresh backup exists.
//!
//! The path policy is data ([`MINOR_UPGRADES`], [`FLAGGED`]); `next_step` never grants a
//! second member while the lock is held, and never the leader of a cluster of several voters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::MemberName;

/// An etcd release: `3.5.16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// A minor line of releases: `3.5`. The cluster version (`/version`'s `etcdcluster`) is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Minor {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    pub const fn line(self) -> Minor {
        Minor {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl Minor {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Version {
    type Err = String;

    /// `3.5.16`, `v3.5.16`; a pre-release or build suffix (`3.6.0-rc.1`) is refused: the
    /// policy knows releases only.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bare = text.trim().trim_start_matches('v');
        let parts: Vec<&str> = bare.split('.').collect();
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("{text:?} is not an etcd release such as 3.5.16"))
        };
        match parts.as_slice() {
            [major, minor, patch] => Ok(Self::new(number(major)?, number(minor)?, number(patch)?)),
            _ => Err(format!("{text:?} is not an etcd release such as 3.5.16")),
        }
    }
}

impl FromStr for Minor {
    type Err = String;

    /// `3.5` (the cluster version), or `3.5.0` (etcd reports it so in `/version`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let number = |part: &str| {
            part.parse::<u32>()
                .map_err(|_| format!("{text:?} is not a cluster version such as 3.5"))
        };
        match parts.as_slice() {
            [major, minor] | [major, minor, _] => Ok(Self::new(number(major)?, number(minor)?)),
            _ => Err(format!("{text:?} is not a cluster version such as 3.5")),
        }
    }
}

/// The release `etcd --version` prints (its line `etcd Version: 3.5.16`).
pub fn from_version_output(output: &str) -> Option<Version> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("etcd Version:"))
        .and_then(|v| v.parse().ok())
}

/// A minor upgrade etcd documents: from which patch of the older minor, and whether
/// `etcdutl check v2store` must pass first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinorUpgrade {
    pub from: Minor,
    pub to: Minor,
    /// The lowest release of `from` the upgrade may start from; `None`: any.
    pub floor: Option<Version>,
    /// The data must pass `etcdutl check v2store` before the first member moves.
    pub v2store_check: bool,
    pub source: &'static str,
}

/// The minor upgrades the policy knows. Any other minor move is refused.
pub const MINOR_UPGRADES: &[MinorUpgrade] = &[
    MinorUpgrade {
        from: Minor::new(3, 4),
        to: Minor::new(3, 5),
        floor: None,
        v2store_check: false,
        source: "https://etcd.io/docs/v3.5/upgrades/upgrade_3_5/",
    },
    MinorUpgrade {
        from: Minor::new(3, 5),
        to: Minor::new(3, 6),
        floor: Some(Version::new(3, 5, 32)),
        v2store_check: true,
        source: "https://etcd.io/docs/v3.6/upgrades/upgrade_3_6/",
    },
];

/// What moving the cluster to the target release is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Every member runs it already.
    Done,
    /// Patch releases of one minor, up or down: allowed both ways.
    Patch,
    /// One minor up, from the older minor (some members may be on the new one already).
    MinorUp { upgrade: MinorUpgrade },
    /// Members that went one minor up come back while the cluster version has not moved:
    /// the way back from a stopped upgrade.
    Rollback,
}

/// Why a path is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    OtherMajor {
        from: Version,
        to: Version,
    },
    /// More than one minor at once, up or down.
    SkipsMinor {
        from: Version,
        to: Version,
    },
    /// A minor down once the cluster version moved to the newer minor: 3.4 and 3.5 have no
    /// way back (3.6's downgrade API is a separate command).
    MinorDowngrade {
        from: Version,
        to: Version,
        /// `None`: unknown, so it may have moved.
        cluster: Option<Minor>,
    },
    /// A minor down while every member runs the newer minor: etcd moves the cluster version
    /// to it within seconds (if it has not already), and then the older minor cannot serve
    /// the data, so a member sent back could not start.
    EveryMemberAbove {
        from: Version,
        to: Version,
    },
    /// Members on minors both above and below the target.
    MixedMinors {
        running: Vec<Version>,
    },
    /// The older minor's release is below the floor etcd sets for this minor upgrade.
    BelowFloor {
        from: Version,
        floor: Version,
        to: Minor,
        source: &'static str,
    },
    /// A minor upgrade the policy has no rule for.
    UnknownMinorUpgrade {
        from: Minor,
        to: Minor,
    },
}

impl Refusal {
    /// One line: what is refused, why, and where etcd says so.
    pub fn describe(&self) -> String {
        match self {
            Refusal::OtherMajor { from, to } => {
                format!("{from} -> {to} changes the major version: not an upgrade etcd supports")
            }
            Refusal::SkipsMinor { from, to } => format!(
                "{from} -> {to} skips a minor: etcd moves one minor at a time, through every \
                 minor in between (https://etcd.io/docs/v3.5/upgrades/)"
            ),
            Refusal::MinorDowngrade {
                from,
                to,
                cluster: Some(cluster),
            } => format!(
                "{from} -> {to} goes back a minor, but the cluster version is {cluster} already: \
                 etcd {cluster} data cannot be served by {}; restore a backup taken before the \
                 upgrade instead",
                to.line()
            ),
            Refusal::MinorDowngrade {
                from,
                to,
                cluster: None,
            } => format!(
                "{from} -> {to} goes back a minor, and the cluster version is unknown: it may have \
                 moved to {} already, and then {} cannot serve its data",
                from.line(),
                to.line()
            ),
            Refusal::EveryMemberAbove { from, to } => format!(
                "{from} -> {to} goes back a minor, but every member runs {}: etcd moves the \
                 cluster version to {} within seconds of that (if it has not already), and then \
                 {} cannot serve the data; restore a backup taken before the upgrade instead",
                from.line(),
                from.line(),
                to.line()
            ),
            Refusal::MixedMinors { running } => format!(
                "members run {}: an upgrade starts from a cluster whose members all run one \
                 minor; finish or roll back the last one first",
                running
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Refusal::BelowFloor {
                from,
                floor,
                to,
                source,
            } => format!(
                "{from} -> {to} is allowed only from {floor} or later: upgrade to {floor} (or a \
                 later {}) first ({source})",
                floor.line()
            ),
            Refusal::UnknownMinorUpgrade { from, to } => {
                format!("no rule for a {from} -> {to} upgrade: refused until the policy knows it")
            }
        }
    }
}

/// Moving the members that run `running` to `to`, with the cluster version `cluster` (when
/// known): allowed (and what it is) or refused.
pub fn check_path(
    running: &[Version],
    cluster: Option<Minor>,
    to: Version,
) -> Result<Path, Refusal> {
    if running.iter().all(|v| *v == to) {
        return Ok(Path::Done);
    }
    if let Some(from) = running.iter().find(|v| v.major != to.major) {
        return Err(Refusal::OtherMajor { from: *from, to });
    }
    let below: Vec<Version> = running
        .iter()
        .copied()
        .filter(|v| v.minor < to.minor)
        .collect();
    let above: Vec<Version> = running
        .iter()
        .copied()
        .filter(|v| v.minor > to.minor)
        .collect();
    if !below.is_empty() && !above.is_empty() {
        let mut running = running.to_vec();
        running.sort();
        running.dedup();
        return Err(Refusal::MixedMinors { running });
    }
    if let Some(from) = below
        .iter()
        .chain(&above)
        .find(|v| v.minor.abs_diff(to.minor) > 1)
    {
        return Err(Refusal::SkipsMinor { from: *from, to });
    }
    if let Some(from) = above.first() {
        if above.len() == running.len() {
            return Err(Refusal::EveryMemberAbove { from: *from, to });
        }
        return match cluster {
            // Unknown: the cluster version may have moved; refuse rather than guess.
            Some(c) if c <= to.line() => {
                // Back to a release the way up would not start from: the mixed cluster on the
                // way back is one etcd forbids on the way up.
                let rule = MINOR_UPGRADES
                    .iter()
                    .find(|u| u.from == to.line() && u.to == from.line());
                match rule.and_then(|u| u.floor.map(|floor| (floor, u.source))) {
                    Some((floor, source)) if to < floor => Err(Refusal::BelowFloor {
                        from: to,
                        floor,
                        to: from.line(),
                        source,
                    }),
                    _ => Ok(Path::Rollback),
                }
            }
            cluster => Err(Refusal::MinorDowngrade {
                from: *from,
                to,
                cluster,
            }),
        };
    }
    let Some(from) = below.iter().min().copied() else {
        return Ok(Path::Patch);
    };
    let Some(upgrade) = MINOR_UPGRADES
        .iter()
        .find(|u| u.from == from.line() && u.to == to.line())
    else {
        return Err(Refusal::UnknownMinorUpgrade {
            from: from.line(),
            to: to.line(),
        });
    };
    if let Some(floor) = upgrade.floor
        && from < floor
    {
        return Err(Refusal::BelowFloor {
            from,
            floor,
            to: to.line(),
            source: upgrade.source,
        });
    }
    Ok(Path::MinorUp { upgrade: *upgrade })
}

/// Why a release is flagged, wherever it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flag {
    /// The releases it covers, inclusive.
    pub first: Version,
    pub last: Version,
    pub reason: &'static str,
    pub source: &'static str,
}

/// Releases flagged in `plan`, status and a metric (never refused for that alone). Read in
/// etcd's `CHANGELOG/CHANGELOG-3.4.md` and `CHANGELOG-3.5.md` (main, 2026-12).
pub const FLAGGED: &[Flag] = &[
    Flag {
        first: Version::new(3, 5, 0),
        last: Version::new(3, 5, 2),
        reason: "not for production: revision and data may be inconsistent after a crash \
                 (fixed in 3.5.3)",
        source: "https://github.com/etcd-io/etcd/issues/13766, CHANGELOG-3.5 v3.5.3 (pull 13908)",
    },
    Flag {
        first: Version::new(3, 4, 0),
        last: Version::new(3, 4, u32::MAX),
        reason: "3.4 is out of support since 3.4.45 (2026-06-01): no further patches, security \
                 fixes included; upgrade to 3.5",
        source: "CHANGELOG-3.4 v3.4.45",
    },
    Flag {
        first: Version::new(3, 4, 0),
        last: Version::new(3, 4, 41),
        reason: "below 3.4's security floor 3.4.42 (CVE-2026-33413 authorization bypasses in \
                 several APIs, CVE-2026-33343 nested transactions bypass RBAC)",
        source: "https://github.com/etcd-io/etcd/security/advisories/GHSA-q8m4-xhhv-38mg, \
                 GHSA-rfx7-8w68-q57q",
    },
    Flag {
        first: Version::new(3, 5, 0),
        last: Version::new(3, 5, 32),
        reason: "below 3.5's security floor 3.5.33 (GHSA-xg4h-6gfc-h4m8: read permission on one \
                 key receives watch events of every key after it; 3.5.28 fixed CVE-2026-33413 \
                 and CVE-2026-33343)",
        source: "https://github.com/etcd-io/etcd/security/advisories/GHSA-xg4h-6gfc-h4m8",
    },
];

/// The flags of `version`.
pub fn warnings(version: Version) -> Vec<&'static Flag> {
    FLAGGED
        .iter()
        .filter(|f| f.first <= version && version <= f.last)
        .collect()
}

/// One member, as the coordinator sees it for an upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeMember {
    pub name: MemberName,
    /// The release its etcd runs; `None` when its pilot does not say.
    pub running: Option<Version>,
    /// The release its pilot's config asks for; `None` when its pilot does not say.
    pub desired: Option<Version>,
    pub healthy: bool,
    pub leader: bool,
    pub learner: bool,
    /// Its pilot tried its desired release, rolled back and says why: the upgrade stops
    /// until the operator changes the desired release (or the binary).
    pub failed: Option<String>,
    /// Its pilot is in the middle of an upgrade step (restarted on a release, not yet
    /// healthy and caught up, or going back): the lock stays with it.
    pub stepping: bool,
}

/// Who holds the upgrade lock, and for which release it was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub holder: MemberName,
    pub target: Version,
}

/// The backup an upgrade needs before its first step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupState {
    /// No store configured: no backup is required.
    NoStore,
    /// A backup no older than `upgrade.max_backup_age` exists.
    Fresh,
    /// None, or only older ones: take one first.
    Stale,
}

/// What the coordinator sees for an upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeView {
    pub members: Vec<UpgradeMember>,
    /// The cluster version, when known.
    pub cluster: Option<Minor>,
    /// Who holds the upgrade lock.
    pub lock: Option<Lock>,
    /// Who holds the lock for maintenance (a defragmentation): nobody is granted an upgrade.
    pub maintenance: Option<MemberName>,
    /// A membership change, a learner catching up, another maintenance step.
    pub change_in_flight: bool,
    pub backup: BackupState,
    /// `etcdutl check v2store` passed on every member's data (a 3.5 -> 3.6 upgrade needs it).
    pub v2store_checked: bool,
}

/// Why the upgrade waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeWait {
    /// Some pilots do not say what they run or want.
    UnknownVersions {
        names: Vec<MemberName>,
    },
    /// The pilots' configs ask for different releases.
    DesiredDiffers {
        desired: Vec<(MemberName, Version)>,
    },
    Unhealthy {
        names: Vec<MemberName>,
    },
    ChangeInFlight,
    /// The lock is held for maintenance (a defragmentation).
    MaintenanceHolds {
        holder: MemberName,
    },
    /// No member, or more than one, is known to lead: the leader cannot be kept for last.
    LeaderUnknown,
    /// The minor upgrade needs `etcdutl check v2store` to pass on every member first.
    V2StoreCheck,
}

/// The coordinator's next upgrade step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Every member runs the release its pilot asks for, and nobody holds the lock.
    Done,
    /// The holder's member upgrades: wait for it.
    Hold {
        holder: MemberName,
    },
    /// The holder's member runs its desired release and is healthy: release the lock (the
    /// holder's pilot checks it caught up before it says so; releasing is the coordinator's).
    Release {
        holder: MemberName,
    },
    Wait(UpgradeWait),
    Refused(Refusal),
    /// A member's pilot rolled back its upgrade: nothing moves until the operator acts.
    Stopped {
        member: MemberName,
        reason: String,
    },
    /// A store is configured and its newest backup is too old: take one first.
    TakeBackup,
    /// Only the leader is left on the old release: move leadership to an upgraded voter.
    MoveLeader {
        from: MemberName,
        to: MemberName,
    },
    /// Grant the lock to this member's pilot: it restarts its etcd on the new release.
    Grant {
        member: MemberName,
    },
}

/// The next step: at most one member at a time (the lock), followers first by name, the
/// leader last and only once leadership moved away, only from a healthy cluster with no
/// change in flight, after a fresh backup, on a path [`check_path`] allows.
pub fn next_step(view: &UpgradeView) -> UpgradeStep {
    let mut members = view.members.clone();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let behind = |m: &UpgradeMember| matches!((m.running, m.desired), (Some(r), Some(d)) if r != d);
    if let Some(lock) = &view.lock {
        let holder = lock.holder.clone();
        // Released once its pilot has no step under way and its member is healthy: on the
        // release it was granted for, or back after a failed attempt, or its pilot asks for
        // another release now; or when it is no member (any more). A pilot that does not
        // answer says none of that (its member may be restarting), so the lock stays.
        let done = members.iter().find(|m| m.name == holder).is_none_or(|m| {
            let known = m.running.is_some() && m.desired.is_some();
            known
                && !m.stepping
                && m.healthy
                && (m.failed.is_some()
                    || m.desired != Some(lock.target)
                    || m.running == Some(lock.target))
        });
        return if done {
            UpgradeStep::Release { holder }
        } else {
            UpgradeStep::Hold { holder }
        };
    }
    let unknown: Vec<MemberName> = members
        .iter()
        .filter(|m| m.running.is_none() || m.desired.is_none())
        .map(|m| m.name.clone())
        .collect();
    if !members.iter().any(behind) {
        return if unknown.is_empty() {
            UpgradeStep::Done
        } else {
            UpgradeStep::Wait(UpgradeWait::UnknownVersions { names: unknown })
        };
    }
    if !unknown.is_empty() {
        return UpgradeStep::Wait(UpgradeWait::UnknownVersions { names: unknown });
    }
    let desired: Vec<(MemberName, Version)> = members
        .iter()
        .filter_map(|m| m.desired.map(|d| (m.name.clone(), d)))
        .collect();
    let Some((_, target)) = desired.first().cloned() else {
        return UpgradeStep::Done;
    };
    if desired.iter().any(|(_, d)| *d != target) {
        return UpgradeStep::Wait(UpgradeWait::DesiredDiffers { desired });
    }
    let running: Vec<Version> = members.iter().filter_map(|m| m.running).collect();
    match check_path(&running, view.cluster, target) {
        Err(refusal) => return UpgradeStep::Refused(refusal),
        Ok(Path::MinorUp { upgrade }) if upgrade.v2store_check && !view.v2store_checked => {
            return UpgradeStep::Wait(UpgradeWait::V2StoreCheck);
        }
        Ok(_) => {}
    }
    if let Some(failed) = members.iter().find(|m| m.failed.is_some()) {
        return UpgradeStep::Stopped {
            member: failed.name.clone(),
            reason: failed.failed.clone().unwrap_or_default(),
        };
    }
    let unhealthy: Vec<MemberName> = members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.clone())
        .collect();
    if !unhealthy.is_empty() {
        return UpgradeStep::Wait(UpgradeWait::Unhealthy { names: unhealthy });
    }
    if view.change_in_flight || members.iter().any(|m| m.learner) {
        return UpgradeStep::Wait(UpgradeWait::ChangeInFlight);
    }
    if let Some(holder) = &view.maintenance {
        return UpgradeStep::Wait(UpgradeWait::MaintenanceHolds {
            holder: holder.clone(),
        });
    }
    if view.backup == BackupState::Stale {
        return UpgradeStep::TakeBackup;
    }
    let voters = members.iter().filter(|m| !m.learner).count();
    if voters > 1 && members.iter().filter(|m| m.leader).count() != 1 {
        return UpgradeStep::Wait(UpgradeWait::LeaderUnknown);
    }
    if let Some(follower) = members.iter().find(|m| behind(m) && !m.leader) {
        return UpgradeStep::Grant {
            member: follower.name.clone(),
        };
    }
    match members.iter().find(|m| behind(m)) {
        Some(leader) if voters > 1 => {
            // To a voter that runs the target already (every follower does by now).
            match members
                .iter()
                .find(|m| m.name != leader.name && !m.learner && !behind(m))
            {
                Some(to) => UpgradeStep::MoveLeader {
                    from: leader.name.clone(),
                    to: to.name.clone(),
                },
                None => UpgradeStep::Wait(UpgradeWait::LeaderUnknown),
            }
        }
        Some(alone) => UpgradeStep::Grant {
            member: alone.name.clone(),
        },
        None => UpgradeStep::Done,
    }
}

/// What the holder's pilot does when its member is not healthy on the new release within
/// `upgrade.member_timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterTimeout {
    /// Restart it on the release it ran before.
    RollBack,
    /// Keep it on the new release: going back is not allowed (the cluster version moved).
    Stay { reason: String },
}

/// A member that went from `from` to `to` and is not healthy in time, while the other
/// members run `others`: back to `from` only on a path [`check_path`] allows (a patch
/// release, or a minor back while some member still runs the old minor and the cluster
/// version has not moved).
pub fn after_timeout(
    from: Version,
    to: Version,
    others: &[Version],
    cluster: Option<Minor>,
) -> AfterTimeout {
    let mut running = others.to_vec();
    running.push(to);
    match check_path(&running, cluster, from) {
        Ok(_) => AfterTimeout::RollBack,
        Err(refusal) => AfterTimeout::Stay {
            reason: refusal.describe(),
        },
    }
}

/// Whether a member whose raft index is `local` caught up with a leader that was at `leader`
/// a moment earlier.
pub fn caught_up(local: u64, leader: u64) -> bool {
    local >= leader
}

#[cfg(test)]
mod tests;
