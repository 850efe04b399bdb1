//! What keeps a cluster from full strength, each with its cause and age:
//! `conditions(observed, policy) -> Vec<Condition>`.
//!
//! `plan` and `status` print them, `/v1/status` and the coordinator's plan record carry them.
//! A cluster with no condition, whose discovery answered, is the only one `plan` calls
//! converged (property `converged_exactly_when_nothing_is_degraded`). Ages are whole seconds
//! as of the observation; [`Condition::aged`] moves them to a later moment, for a reader of
//! a record written earlier.

use serde::{Deserialize, Serialize};

use crate::model::{FaultTolerance, Health, quorum};
use crate::plan::{Discovery, Observed, ObservedMember, Policy, is_listed};

/// One thing that keeps the cluster from full strength.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    /// Fewer healthy voters than a quorum: no membership change is possible.
    QuorumLost {
        /// Healthy voters.
        healthy: usize,
        /// Voting members (an initial member that never started counts).
        voters: usize,
    },
    /// A voter discovery still lists that is not healthy: kept, because it is listed.
    VoterDown {
        /// Its name (or id, before it started).
        member: String,
        /// What is wrong, in words.
        cause: String,
        /// For how long it has been seen so; `None` when the observer does not know.
        for_secs: Option<u64>,
        /// Whether discovery lists it; `None` when discovery did not answer (or was not
        /// asked): nobody is removed then either.
        listed: Option<bool>,
    },
    /// A member discovery no longer lists: removed once `remove_after` has passed and the
    /// quorum and full-strength rules allow.
    AwaitingRemoval {
        /// Its name.
        member: String,
        /// Whether it still answers healthy (a scale-down) or not (a lost node).
        healthy: bool,
        /// How long it has been absent from discovery.
        unlisted_secs: u64,
        /// Time left of `remove_after`; 0: due.
        removal_in_secs: u64,
    },
    /// Its instance is terminating: removed as soon as the rules allow.
    Terminating {
        /// Its name.
        member: String,
    },
    /// Its own pilot says its data is unusable: removed so that it rejoins empty.
    DataUnusable {
        /// Its name.
        member: String,
    },
    /// Added to the cluster, its etcd has not started yet.
    NotStarted {
        /// Its id (it has no name yet).
        member: String,
        /// A voter (an initial member that never came up) or a learner being added.
        voter: bool,
        /// Why, when its pilot says (it cannot run etcd).
        cause: Option<String>,
        /// For how long.
        for_secs: Option<u64>,
        /// Time left before it is removed as stalled.
        removed_in_secs: Option<u64>,
    },
    /// A learner catching up with the leader before it is promoted.
    LearnerCatchingUp {
        /// Its name.
        member: String,
        /// Its raft index, if it answered.
        raft_index: Option<u64>,
        /// The leader's raft index, if known.
        leader_index: Option<u64>,
        /// For how long it has been a learner.
        for_secs: Option<u64>,
        /// Time left before it is removed as stalled (its pilot then retries).
        removed_in_secs: Option<u64>,
    },
    /// A peer discovery lists that is not a member yet (its pilot adds it as a learner).
    NotJoined {
        /// The peer's name.
        member: String,
    },
}

/// Every condition of `observed`: quorum lost first, then one per member that is not a
/// healthy listed voter (in member-list order), then the listed peers that are not members.
pub fn conditions(observed: &Observed, policy: &Policy) -> Vec<Condition> {
    let members = &observed.members;
    let mut out = Vec::new();
    let tolerance = fault_tolerance(members);
    if tolerance.can_lose.is_none() {
        out.push(Condition::QuorumLost {
            healthy: tolerance.healthy,
            voters: tolerance.voters,
        });
    }
    let leader_index = members
        .iter()
        .find(|m| Some(m.member.id) == observed.leader)
        .and_then(|m| m.raft_index);
    let secs = |d: std::time::Duration| d.as_secs();
    let removed_in = |m: &ObservedMember| {
        m.pending_for
            .map(|p| secs(policy.learner_timeout.saturating_sub(p)))
    };
    for m in members {
        let member = label(m);
        let condition = if m.terminating {
            Condition::Terminating { member }
        } else if let Some(unlisted) = m.unlisted_for {
            Condition::AwaitingRemoval {
                member,
                healthy: is_healthy(m),
                unlisted_secs: secs(unlisted),
                removal_in_secs: secs(policy.remove_after.saturating_sub(unlisted)),
            }
        } else if m.data_unusable {
            Condition::DataUnusable { member }
        } else if !m.member.is_started() {
            Condition::NotStarted {
                member,
                voter: !m.member.is_learner,
                cause: m.problem.clone(),
                for_secs: m.pending_for.or(m.down_for).map(secs),
                removed_in_secs: removed_in(m),
            }
        } else if m.member.is_learner {
            Condition::LearnerCatchingUp {
                member,
                raft_index: m.raft_index,
                leader_index,
                for_secs: m.pending_for.map(secs),
                removed_in_secs: removed_in(m),
            }
        } else if !is_healthy(m) {
            let cause = match (&m.problem, m.health) {
                (Some(problem), _) => problem.clone(),
                (None, Health::Unhealthy) => "answers but is not healthy".to_owned(),
                (None, _) => "does not answer".to_owned(),
            };
            Condition::VoterDown {
                member,
                cause,
                for_secs: m.down_for.map(secs),
                listed: matches!(observed.discovery, Discovery::Listed(_)).then_some(true),
            }
        } else {
            continue;
        };
        out.push(condition);
    }
    if let Discovery::Listed(peers) = &observed.discovery {
        for peer in peers {
            let joined = members
                .iter()
                .any(|m| is_listed(&m.member, std::slice::from_ref(peer)));
            if !joined {
                out.push(Condition::NotJoined {
                    member: peer.name.to_string(),
                });
            }
        }
    }
    out
}

/// What the cluster can lose: its voters (an initial member that never started is one too,
/// raft counts it in the quorum) and those that answer healthy as themselves.
pub fn fault_tolerance(members: &[ObservedMember]) -> FaultTolerance {
    let voters: Vec<&ObservedMember> = members.iter().filter(|m| !m.member.is_learner).collect();
    let healthy = voters
        .iter()
        .filter(|m| m.member.is_started() && is_healthy(m))
        .count();
    FaultTolerance::of(voters.len(), healthy)
}

fn is_healthy(m: &ObservedMember) -> bool {
    m.health == Health::Healthy && m.problem.is_none()
}

fn label(m: &ObservedMember) -> String {
    m.member
        .name
        .as_ref()
        .map_or_else(|| format!("member {}", m.member.id), ToString::to_string)
}

fn age(secs: Option<u64>) -> String {
    secs.map_or_else(String::new, |s| format!(" for {s} s"))
}

impl Condition {
    /// The member it is about, if any.
    pub fn member(&self) -> Option<&str> {
        match self {
            Condition::QuorumLost { .. } => None,
            Condition::VoterDown { member, .. }
            | Condition::AwaitingRemoval { member, .. }
            | Condition::Terminating { member }
            | Condition::DataUnusable { member }
            | Condition::NotStarted { member, .. }
            | Condition::LearnerCatchingUp { member, .. }
            | Condition::NotJoined { member } => Some(member),
        }
    }

    /// The same condition `secs` seconds later: ages grow, countdowns shrink (to 0).
    pub fn aged(mut self, secs: u64) -> Self {
        let grow = |v: &mut Option<u64>| *v = v.map(|v| v.saturating_add(secs));
        let shrink = |v: &mut Option<u64>| *v = v.map(|v| v.saturating_sub(secs));
        match &mut self {
            Condition::VoterDown { for_secs, .. } => grow(for_secs),
            Condition::AwaitingRemoval {
                unlisted_secs,
                removal_in_secs,
                ..
            } => {
                *unlisted_secs = unlisted_secs.saturating_add(secs);
                *removal_in_secs = removal_in_secs.saturating_sub(secs);
            }
            Condition::NotStarted {
                for_secs,
                removed_in_secs,
                ..
            }
            | Condition::LearnerCatchingUp {
                for_secs,
                removed_in_secs,
                ..
            } => {
                grow(for_secs);
                shrink(removed_in_secs);
            }
            Condition::QuorumLost { .. }
            | Condition::Terminating { .. }
            | Condition::DataUnusable { .. }
            | Condition::NotJoined { .. } => {}
        }
        self
    }

    /// The same condition without its ages and countdowns: what it says, not how long.
    pub fn timeless(mut self) -> Self {
        match &mut self {
            Condition::VoterDown { for_secs, .. } => *for_secs = None,
            Condition::AwaitingRemoval {
                unlisted_secs,
                removal_in_secs,
                ..
            } => {
                *unlisted_secs = 0;
                *removal_in_secs = 0;
            }
            Condition::NotStarted {
                for_secs,
                removed_in_secs,
                ..
            }
            | Condition::LearnerCatchingUp {
                for_secs,
                removed_in_secs,
                ..
            } => {
                *for_secs = None;
                *removed_in_secs = None;
            }
            Condition::QuorumLost { .. }
            | Condition::Terminating { .. }
            | Condition::DataUnusable { .. }
            | Condition::NotJoined { .. } => {}
        }
        self
    }

    /// In words, for `plan` and `status`: the member, the cause, its age, and what happens
    /// next.
    pub fn describe(&self) -> String {
        match self {
            Condition::QuorumLost { healthy, voters } => format!(
                "quorum lost: {healthy} of {voters} voters healthy, {} needed; no membership \
                 change is possible until a majority answers",
                quorum(*voters)
            ),
            Condition::VoterDown {
                member,
                cause,
                for_secs,
                listed,
            } => format!(
                "{member}: voter {cause}{}{}",
                age(*for_secs),
                if *listed == Some(true) {
                    "; kept, because discovery lists it"
                } else {
                    ""
                }
            ),
            Condition::AwaitingRemoval {
                member,
                healthy,
                unlisted_secs,
                removal_in_secs,
            } => format!(
                "{member}: left discovery {unlisted_secs} s ago ({}); {}",
                if *healthy {
                    "still answers"
                } else {
                    "does not answer"
                },
                if *removal_in_secs == 0 {
                    "removal due, once the quorum and full-strength rules allow it".to_owned()
                } else {
                    format!("removed in {removal_in_secs} s (remove_after)")
                }
            ),
            Condition::Terminating { member } => format!(
                "{member}: its instance is terminating; removed once the quorum and \
                 full-strength rules allow it"
            ),
            Condition::DataUnusable { member } => format!(
                "{member}: its pilot says its data is unusable; removed so that it rejoins empty"
            ),
            Condition::NotStarted {
                member,
                voter,
                cause,
                for_secs,
                removed_in_secs,
            } => format!(
                "{member}: {} whose etcd has not started yet{}{}{}",
                if *voter { "a voter" } else { "a learner" },
                age(*for_secs),
                cause
                    .as_ref()
                    .map_or_else(String::new, |cause| format!(" ({cause})")),
                removed_in_secs
                    .map_or_else(String::new, |s| format!(" (removed as stalled in {s} s)"))
            ),
            Condition::LearnerCatchingUp {
                member,
                raft_index,
                leader_index,
                for_secs,
                removed_in_secs,
            } => {
                let progress = match (raft_index, leader_index) {
                    (Some(index), Some(leader)) if *leader > 0 => format!(
                        "raft index {index} of the leader's {leader} ({}%)",
                        (u128::from(*index) * 100 / u128::from(*leader)).min(100)
                    ),
                    (Some(index), _) => format!("raft index {index}, the leader's unknown"),
                    (None, _) => "not answering yet".to_owned(),
                };
                format!(
                    "{member}: learner catching up{}: {progress}{}",
                    age(*for_secs),
                    removed_in_secs.map_or_else(String::new, |s| format!(
                        "; removed as stalled if not promoted in {s} s"
                    ))
                )
            }
            Condition::NotJoined { member } => format!(
                "{member}: listed by discovery, not a member yet (its pilot adds it as a learner)"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
