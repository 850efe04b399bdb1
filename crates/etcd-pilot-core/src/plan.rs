//! The coordinator's next membership change, if any: `plan(observed, policy) -> Plan`.
//!
//! Level-triggered: the caller observes the whole cluster, calls [`plan`], executes at most
//! one [`Action`] and observes again. Removal of members whose node left discovery, cleanup of
//! stalled learners, promotion of caught-up learners, and the leadership move that must come
//! before removing the leader's own member are decided here, with every safety rule
//! (quorum, one change at a time, the mass-removal guard). How the world is observed, who may
//! execute (the fenced coordinator) and how, is the `etcd-pilot` crate's.

use std::time::Duration;

use crate::model::{Health, Member, MemberId, Peer, quorum};

/// What the coordinator saw.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Every member, with what we know of it.
    pub members: Vec<ObservedMember>,
    /// The current leader, if any member reported one.
    pub leader: Option<MemberId>,
    /// What discovery said.
    pub discovery: Discovery,
}

/// Discovery's answer.
#[derive(Clone, Debug)]
pub enum Discovery {
    /// The peers that should be members.
    Listed(Vec<Peer>),
    /// Discovery failed: we do not know who should be a member.
    Failed {
        /// The error, for the plan's reason.
        error: String,
    },
}

/// A member and what we know of it.
#[derive(Clone, Debug)]
pub struct ObservedMember {
    /// The member as the member list reports it.
    pub member: Member,
    /// Its health; `Unknown` when it did not answer.
    pub health: Health,
    /// Its raft index, when it answered.
    pub raft_index: Option<u64>,
    /// How long the coordinator has seen it absent from discovery; `None` while listed.
    pub unlisted_for: Option<Duration>,
    /// How long the coordinator has seen it pending (added, not started, or a learner).
    pub pending_for: Option<Duration>,
    /// How long the coordinator has seen it not healthy; `None` while healthy (or unknown).
    pub down_for: Option<Duration>,
    /// Its own pilot says its data is unusable (etcd cannot run on it).
    pub data_unusable: bool,
    /// Its instance is terminating (a lifecycle hook said so): remove it as soon as the
    /// quorum and the full-strength rule allow, without waiting `remove_after`, listed or not.
    pub terminating: bool,
    /// What is known to be wrong with it, for the plan's reason: it answers as another
    /// cluster or member, or its pilot cannot run etcd (a crash loop that is not the data's
    /// fault). Such a member is never healthy; this never makes it a removal candidate.
    pub problem: Option<String>,
}

impl ObservedMember {
    /// `member` as one probe saw it: its health and raft index when it answered (`Unknown`
    /// otherwise), and nothing else known yet (no timers, no fault, no problem).
    pub fn probed(member: Member, answer: Option<(Health, u64)>) -> Self {
        Self {
            member,
            health: answer.map_or(Health::Unknown, |(health, _)| health),
            raft_index: answer.map(|(_, index)| index),
            unlisted_for: None,
            pending_for: None,
            down_for: None,
            data_unusable: false,
            terminating: false,
            problem: None,
        }
    }
}

/// The knobs of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// How long a member must be absent from discovery before it is removed.
    pub remove_after: Duration,
    /// How long a learner may stay unpromoted before it is removed (its pilot then retries).
    pub learner_timeout: Duration,
    /// A learner is promoted once its raft index reaches this share of the leader's.
    pub learner_catch_up: f64,
}

/// The share of the leader's raft index a learner must reach to be promoted: close enough
/// that the promotion does not stall writes while it catches up the rest.
pub const LEARNER_CATCH_UP: f64 = 0.9;

/// The policy the core's tests plan with (the shell builds its policy from the config).
#[cfg(test)]
pub(crate) fn test_policy() -> Policy {
    Policy {
        remove_after: Duration::from_secs(30),
        learner_timeout: Duration::from_secs(300),
        learner_catch_up: LEARNER_CATCH_UP,
    }
}

/// The coordinator's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Membership matches discovery; nothing to do.
    Converged,
    /// Something should change but may not yet.
    Wait {
        /// What blocks it, in words an operator can act on.
        reason: String,
    },
    /// Do this, then observe again.
    Act {
        /// The one change.
        action: Action,
        /// Why.
        reason: String,
    },
}

/// One membership change (or the leadership move that must precede one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Remove a member.
    RemoveMember {
        /// The member.
        id: MemberId,
        /// Why it goes.
        kind: RemovalKind,
    },
    /// Promote a caught-up learner to a voter.
    PromoteLearner {
        /// The learner.
        id: MemberId,
    },
    /// Move leadership away from a member about to be removed.
    MoveLeader {
        /// The new leader.
        to: MemberId,
    },
}

/// Why a member is removed; also the metric label of the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalKind {
    /// Its node left discovery (gone, or scaled down).
    Unlisted,
    /// A learner that did not catch up within the learner timeout.
    StalledLearner,
    /// Its own pilot reports its data unusable; it rejoins as a learner.
    DataUnusable,
    /// Its instance is terminating; the lifecycle hook waits for the removal.
    Terminating,
}

impl Action {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RemoveMember {
                kind: RemovalKind::Unlisted,
                ..
            } => "remove_unlisted",
            Action::RemoveMember {
                kind: RemovalKind::StalledLearner,
                ..
            } => "remove_stalled_learner",
            Action::RemoveMember {
                kind: RemovalKind::DataUnusable,
                ..
            } => "remove_unusable",
            Action::RemoveMember {
                kind: RemovalKind::Terminating,
                ..
            } => "remove_terminating",
            Action::PromoteLearner { .. } => "promote_learner",
            Action::MoveLeader { .. } => "move_leader",
        }
    }

    /// The membership change this action is, if it is one (a leadership move is not).
    pub fn changes_membership(&self) -> bool {
        !matches!(self, Action::MoveLeader { .. })
    }
}

/// Whether discovery lists `member`: by exact name once it has started, by peer URL before.
pub fn is_listed(member: &Member, peers: &[Peer]) -> bool {
    if member.is_started() {
        member
            .name
            .as_ref()
            .is_some_and(|name| peers.iter().any(|p| &p.name == name))
    } else {
        member
            .peer_urls
            .iter()
            .any(|url| peers.iter().any(|p| &p.peer_url == url))
    }
}

fn describe(member: &ObservedMember) -> String {
    match &member.member.name {
        Some(name) => format!("{name} ({})", member.member.id),
        None => format!("unstarted member {}", member.member.id),
    }
}

/// Who takes leadership over from `leaving`: the first other voter that answers healthy and
/// is `eligible`, in member-list order. The plan moves leadership away from a member it is
/// about to remove; a pilot that shuts down moves it away from its own.
pub fn successor(
    members: &[ObservedMember],
    leaving: MemberId,
    eligible: impl Fn(&ObservedMember) -> bool,
) -> Option<&ObservedMember> {
    members.iter().find(|m| {
        m.member.id != leaving
            && m.member.is_started()
            && !m.member.is_learner
            && m.health == Health::Healthy
            && eligible(m)
    })
}

/// Decides the next membership change. Pure: same input, same output.
pub fn plan(observed: &Observed, policy: &Policy) -> Plan {
    let members = &observed.members;

    // Stalled learners go first: they block every other change, and removing a learner
    // never touches the quorum.
    if let Some(stalled) = members
        .iter()
        .find(|m| m.member.is_learner && m.pending_for.is_some_and(|d| d >= policy.learner_timeout))
    {
        return Plan::Act {
            action: Action::RemoveMember {
                id: stalled.member.id,
                kind: RemovalKind::StalledLearner,
            },
            reason: format!(
                "{} has been joining for over {:?} without catching up; removing it so its \
                 pilot retries",
                describe(stalled),
                policy.learner_timeout
            ),
        };
    }

    // A change in flight is a learner (we only ever add learners). An unstarted voter is an
    // initial member that never came up: a member like any other, not a change.
    let pending: Vec<&ObservedMember> = members.iter().filter(|m| m.member.is_learner).collect();
    if let Some(learner) = pending.first() {
        // A joining member whose node left discovery again is removed like any other.
        if learner.terminating
            || (matches!(&observed.discovery, Discovery::Listed(peers) if !is_listed(&learner.member, peers))
                && learner
                    .unlisted_for
                    .is_some_and(|d| d >= policy.remove_after))
        {
            let (kind, why) = if learner.terminating {
                (RemovalKind::Terminating, "its instance is terminating")
            } else {
                (RemovalKind::Unlisted, "it left discovery")
            };
            return Plan::Act {
                action: Action::RemoveMember {
                    id: learner.member.id,
                    kind,
                },
                reason: format!("{} was joining but {why}", describe(learner)),
            };
        }
        if pending.len() == 1
            && let Some(reason) = promotion_ready(learner, observed, policy)
        {
            return Plan::Act {
                action: Action::PromoteLearner {
                    id: learner.member.id,
                },
                reason,
            };
        }
        return Plan::Wait {
            reason: format!(
                "one change at a time: {} is still joining ({})",
                describe(learner),
                match learner.raft_index {
                    None => "not answering yet".to_owned(),
                    Some(index) => format!("raft index {index}"),
                }
            ),
        };
    }

    let peers = match &observed.discovery {
        Discovery::Failed { error } => {
            return Plan::Wait {
                reason: format!(
                    "discovery failed ({error}); nothing is removed until it answers again"
                ),
            };
        }
        Discovery::Listed(peers) => peers,
    };
    let staying = |m: &ObservedMember| is_listed(&m.member, peers) && !m.terminating;
    let listed = members.iter().filter(|m| staying(m)).count();
    let unlisted: Vec<&ObservedMember> = members
        .iter()
        .filter(|m| !staying(m) && !m.terminating)
        .collect();
    let terminating: Vec<&ObservedMember> = members.iter().filter(|m| m.terminating).collect();
    let unusable: Vec<&ObservedMember> = members
        .iter()
        .filter(|m| m.data_unusable && staying(m))
        .collect();
    if unlisted.is_empty() && unusable.is_empty() && terminating.is_empty() {
        return degraded(observed, peers);
    }
    // The guard is for discovery's answers; a terminating instance was named one by one.
    // Half or more of the members gone at once looks like a discovery fault, not a fleet
    // change: remove nothing.
    if !unlisted.is_empty() && listed * 2 <= members.len() - terminating.len() {
        return Plan::Wait {
            reason: format!(
                "discovery lists only {listed} of the {} members; a sudden drop to half or \
                 fewer looks like a discovery fault, so nothing is removed (mass-removal guard)",
                members.len()
            ),
        };
    }
    // The size the cluster should have: the listed peers that are staying.
    let desired = peers
        .iter()
        .filter(|peer| {
            !members
                .iter()
                .any(|m| m.terminating && m.member.name.as_ref() == Some(&peer.name))
        })
        .count();

    // Terminating instances first (the group waits on them), then unusable data (its member
    // cannot serve anyway), then dead unlisted members, then healthy unlisted ones
    // (scale-down); by name within each group, for a stable order.
    let mut candidates: Vec<(&ObservedMember, RemovalKind)> = terminating
        .iter()
        .map(|m| (*m, RemovalKind::Terminating))
        .collect();
    candidates.extend(unusable.iter().map(|m| (*m, RemovalKind::DataUnusable)));
    let mut gone: Vec<&ObservedMember> = unlisted.clone();
    gone.sort_by_key(|m| {
        (
            m.health == Health::Healthy,
            m.member.name.clone(),
            m.member.id,
        )
    });
    candidates.extend(gone.into_iter().map(|m| (m, RemovalKind::Unlisted)));

    let mut blocked = Vec::new();
    for (target, kind) in candidates {
        if kind == RemovalKind::Unlisted {
            let waited = target.unlisted_for.unwrap_or_default();
            if waited < policy.remove_after {
                blocked.push(format!(
                    "{} left discovery {}s ago; removing it after {}s",
                    describe(target),
                    waited.as_secs(),
                    policy.remove_after.as_secs()
                ));
                continue;
            }
        }
        if let Some(reason) = removal_blocked(members, target, kind, desired) {
            blocked.push(reason);
            continue;
        }
        if observed.leader == Some(target.member.id) {
            let successor = successor(members, target.member.id, staying);
            match successor {
                Some(successor) => {
                    return Plan::Act {
                        action: Action::MoveLeader {
                            to: successor.member.id,
                        },
                        reason: format!(
                            "{} leads and is to be removed; moving leadership to {} first",
                            describe(target),
                            describe(successor)
                        ),
                    };
                }
                None => {
                    blocked.push(format!(
                        "{} leads and no healthy listed voter can take over",
                        describe(target)
                    ));
                    continue;
                }
            }
        }
        let why = match kind {
            RemovalKind::Unlisted => format!(
                "{} left discovery {}s ago",
                describe(target),
                target.unlisted_for.unwrap_or_default().as_secs()
            ),
            RemovalKind::DataUnusable => format!(
                "the pilot of {} reports its data unusable; it rejoins as a learner",
                describe(target)
            ),
            RemovalKind::StalledLearner => describe(target),
            RemovalKind::Terminating => format!(
                "the instance of {} is terminating; its lifecycle hook waits for the removal",
                describe(target)
            ),
        };
        return Plan::Act {
            action: Action::RemoveMember {
                id: target.member.id,
                kind,
            },
            reason: why,
        };
    }
    Plan::Wait {
        reason: blocked.join("; "),
    }
}

/// Why `learner` may be promoted now, if it may.
fn promotion_ready(
    learner: &ObservedMember,
    observed: &Observed,
    policy: &Policy,
) -> Option<String> {
    if !learner.member.is_learner || !learner.member.is_started() {
        return None;
    }
    let leader_index = observed
        .members
        .iter()
        .find(|m| Some(m.member.id) == observed.leader)
        .and_then(|m| m.raft_index)?;
    let index = learner.raft_index?;
    // Compare in integers: index / leader_index >= catch_up, with catch_up in thousandths.
    let needed = (u128::from(leader_index)
        * (policy.learner_catch_up.clamp(0.0, 1.0) * 1000.0) as u128)
        / 1000;
    (u128::from(index) >= needed).then(|| {
        format!(
            "{} has caught up (raft index {index} of the leader's {leader_index}); promoting it",
            describe(learner)
        )
    })
}

/// Why removing `target` would risk the quorum or shrink the cluster, if it would.
///
/// Two rules, both needed:
/// - quorum: the remaining voters keep a healthy quorum;
/// - full strength: a healthy member is removed only when every other voter is healthy (a
///   learner would have stopped the plan earlier); a member that does not answer healthy may
///   go while others are down too (the quorum rule still holds). And a member removed to come
///   back (unusable data) or to be replaced by a node that joins first (terminating) is
///   removed only if that leaves at least one less than the `desired` size (the peers
///   discovery lists that are staying). Together they make every such removal one step away
///   from full strength, so a fault that repeats member after member (a bad config rolled out
///   one node at a time) costs at most one member, never the cluster.
///
/// The floor does not apply to a member that left discovery: its replacement joins only once
/// it is gone (remove before add), so holding it would hold the replacement too; the
/// mass-removal guard covers a discovery fault there.
fn removal_blocked(
    members: &[ObservedMember],
    target: &ObservedMember,
    kind: RemovalKind,
    desired: usize,
) -> Option<String> {
    if target.member.is_learner {
        return None;
    }
    let voters_after: Vec<&ObservedMember> = members
        .iter()
        .filter(|m| !m.member.is_learner && m.member.id != target.member.id)
        .collect();
    if voters_after.is_empty() {
        return Some(format!("{} is the last voter", describe(target)));
    }
    let healthy_after = voters_after
        .iter()
        .filter(|m| m.health == Health::Healthy)
        .count();
    let needed = quorum(voters_after.len());
    if healthy_after < needed {
        return Some(format!(
            "removing {} would leave {healthy_after} of {} voters healthy, below a quorum of {needed}",
            describe(target),
            voters_after.len()
        ));
    }
    if target.health == Health::Healthy
        && let Some(down) = voters_after.iter().find(|m| m.health != Health::Healthy)
    {
        return Some(format!(
            "{} is healthy and is removed only at full strength; {} is not healthy (full-strength rule)",
            describe(target),
            describe(down)
        ));
    }
    let floor = match kind {
        RemovalKind::DataUnusable | RemovalKind::Terminating => desired.saturating_sub(1),
        RemovalKind::Unlisted | RemovalKind::StalledLearner => 0,
    };
    (voters_after.len() < floor).then(|| {
        format!(
            "removing {} would leave {} voters, below {floor} (one less than the {desired} \
             listed): the cluster must be back at full strength first (full-strength rule)",
            describe(target),
            voters_after.len()
        )
    })
}

/// Converged, or what keeps a cluster without members to remove from full strength: each
/// member that is not a healthy voter, the listed peers that have not joined, and how many
/// more failures the cluster survives.
fn degraded(observed: &Observed, peers: &[Peer]) -> Plan {
    let members = &observed.members;
    let down: Vec<String> = members
        .iter()
        .filter(|m| !m.member.is_started() || m.health != Health::Healthy || m.problem.is_some())
        .map(|m| {
            let what = match (&m.problem, m.health) {
                (Some(problem), _) => problem.clone(),
                (None, _) if !m.member.is_started() => "has not started".to_owned(),
                (None, Health::Unhealthy) => "answers but is not healthy".to_owned(),
                (None, _) => "does not answer".to_owned(),
            };
            format!("{} {what}", describe(m))
        })
        .collect();
    let missing: Vec<String> = peers
        .iter()
        .filter(|peer| {
            !members
                .iter()
                .any(|m| is_listed(&m.member, std::slice::from_ref(*peer)))
        })
        .map(|peer| peer.name.to_string())
        .collect();
    if down.is_empty() && missing.is_empty() {
        return Plan::Converged;
    }
    let voters = members.iter().filter(|m| !m.member.is_learner).count();
    let healthy = members
        .iter()
        .filter(|m| {
            !m.member.is_learner
                && m.member.is_started()
                && m.health == Health::Healthy
                && m.problem.is_none()
        })
        .count();
    let tolerance = if healthy >= quorum(voters) {
        format!(
            "the cluster survives {} more failure(s)",
            healthy - quorum(voters)
        )
    } else {
        format!("the cluster has lost its quorum ({healthy} of {voters} voters healthy)")
    };
    let mut said = Vec::new();
    if !missing.is_empty() {
        said.push(format!(
            "discovery lists {} that {} not a member yet (its pilot adds it as a learner)",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        ));
    }
    if !down.is_empty() {
        said.push(down.join("; "));
    }
    Plan::Wait {
        reason: format!(
            "{}, but not at full strength: {}; {tolerance}",
            if missing.is_empty() {
                "membership matches discovery"
            } else {
                "no member to remove"
            },
            said.join("; ")
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests;
