//! Quorum loss: whether the voters that answer can still commit, and when a new cluster may
//! be reseeded from the best survivor.
//!
//! A survivor is a voter whose etcd answers its own status call, which needs no quorum.
//! [`decide`] reseeds on its own only when the voters that do not answer are gone for good:
//! each has been absent from discovery for `remove_after` (an instance that left its group,
//! a node a person took out of the peers list). A voter that does not answer but is still
//! listed may be alive behind a partition: then nothing is reseeded automatically, ever.
//! The seed is the survivor with the highest committed raft index (ties: the lowest name),
//! so a reseed never loses more than the best survivor lacks, and every pilot that sees the
//! same survivors picks the same seed. An etcd that answers but is not a voter in this
//! member's list blocks it too: this member's list may be stale while a quorum lives on. [`manual`] is the operator's `reseed --from`.

use std::time::Duration;

use crate::model::{MemberName, quorum};

/// The knobs of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReseedPolicy {
    /// How long quorum must stay lost before anything is considered.
    pub quorum_lost_after: Duration,
    /// How long an unreachable voter must be absent from discovery to count as gone.
    pub remove_after: Duration,
    /// `reseed.auto`: `false` leaves every reseed to the operator.
    pub auto: bool,
}

/// One voter of the last member list, as a pilot sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub name: MemberName,
    /// Its etcd's own status, if it answered.
    pub status: Option<VoterStatus>,
    /// Whether its pilot's admin API answered.
    pub pilot_answers: bool,
    /// Whether discovery lists it.
    pub listing: Listing,
}

/// What a voter's etcd says of itself without a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoterStatus {
    /// Its committed raft index. Without a leader it does not move (the applied index still
    /// climbs to it), so every pilot ranks the survivors alike; a `--force-new-cluster` start
    /// keeps the entries up to the commit index its WAL recorded.
    pub raft_index: u64,
    /// Whether it follows or is a leader.
    pub has_leader: bool,
}

/// Whether discovery lists a voter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Listed,
    /// Absent from discovery for this many seconds.
    Unlisted {
        for_secs: u64,
    },
}

/// What [`decide`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Every voter of the last member list.
    pub voters: Vec<Voter>,
    /// Whether discovery answered (an error keeps the previous view; nothing acts on it).
    pub discovery_ok: bool,
    /// Seconds since a quorum was last seen; 0 when seen now.
    pub lost_for_secs: u64,
    /// The highest raft index this pilot has seen in this cluster, for what a seed lacks.
    pub highest_seen: u64,
    /// etcds that answer but are not voters as this member knows them: a listed peer missing
    /// from its member list, or a voter's address answering as another member. This
    /// member's view of the cluster may be out of date (a quorum may live on without it).
    pub strangers: Vec<String>,
}

/// A survivor chosen as the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub name: MemberName,
    pub raft_index: u64,
    /// Raft entries the seed lacks against the highest index ever seen: the most a reseed
    /// from it can lose.
    pub behind: u64,
}

/// The verdict on quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A leader is seen, or a quorum of voters answers.
    Held,
    /// Quorum is lost; no reseed yet, for `why`.
    Lost {
        why: Wait,
        /// The survivors and their applied indexes, best first.
        survivors: Vec<(MemberName, u64)>,
        /// The voters whose etcd does not answer.
        unreachable: Vec<MemberName>,
    },
    /// Quorum is lost for good: reseed from `seed`.
    Reseed {
        seed: Seed,
        survivors: Vec<(MemberName, u64)>,
        unreachable: Vec<MemberName>,
    },
}

/// Why a lost quorum is not reseeded (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Lost for less than `quorum_lost_after`.
    Grace { remaining_secs: u64 },
    /// Discovery did not answer: who is gone is unknown.
    DiscoveryDown,
    /// etcds answer that this member's list does not have as voters.
    Strangers { answering: Vec<String> },
    /// No voter answers: there is nothing to reseed from (a backup restores instead).
    NoSurvivor,
    /// Unreachable voters discovery still lists: maybe alive behind a partition. Never
    /// reseeded automatically.
    Partition { listed: Vec<MemberName> },
    /// Unreachable voters absent from discovery for less than `remove_after`.
    Leaving {
        names: Vec<MemberName>,
        remaining_secs: u64,
    },
    /// Listed survivors whose pilot does not answer: they could not follow the reseed.
    SilentPilots { names: Vec<MemberName> },
    /// The best survivor is leaving discovery: it is not a seed, and a worse one would lose
    /// what it has.
    BestIsLeaving { name: MemberName },
    /// `reseed.auto = false`.
    ManualOnly,
}

/// Whether the answering voters can still commit: a leader is seen, or a quorum answers.
pub fn quorum_held(voters: &[Voter]) -> bool {
    let answering = voters.iter().filter(|v| v.status.is_some()).count();
    voters
        .iter()
        .any(|v| v.status.is_some_and(|s| s.has_leader))
        || answering >= quorum(voters.len())
}

/// The survivors with their applied indexes, best first: highest index, then lowest name.
pub fn ranked(voters: &[Voter]) -> Vec<(MemberName, u64)> {
    let mut survivors: Vec<(MemberName, u64)> = voters
        .iter()
        .filter_map(|v| v.status.map(|s| (v.name.clone(), s.raft_index)))
        .collect();
    survivors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    survivors
}

fn unreachable(voters: &[Voter]) -> Vec<MemberName> {
    voters
        .iter()
        .filter(|v| v.status.is_none())
        .map(|v| v.name.clone())
        .collect()
}

fn seed(observed: &Observed, name: &MemberName, raft_index: u64) -> Seed {
    Seed {
        name: name.clone(),
        raft_index,
        behind: observed.highest_seen.saturating_sub(raft_index),
    }
}

/// Whether quorum is lost and, if so, whether to reseed now and from whom.
pub fn decide(observed: &Observed, policy: &ReseedPolicy) -> Verdict {
    if quorum_held(&observed.voters) {
        return Verdict::Held;
    }
    // In name order: every list below reads the same whatever order the voters came in.
    let mut voters = observed.voters.clone();
    voters.sort_by(|a, b| a.name.cmp(&b.name));
    let survivors = ranked(&voters);
    let unreachable = unreachable(&voters);
    let lost = |why| Verdict::Lost {
        why,
        survivors: survivors.clone(),
        unreachable: unreachable.clone(),
    };
    let grace = policy.quorum_lost_after.as_secs();
    if observed.lost_for_secs < grace {
        return lost(Wait::Grace {
            remaining_secs: grace - observed.lost_for_secs,
        });
    }
    if !observed.discovery_ok {
        return lost(Wait::DiscoveryDown);
    }
    if !observed.strangers.is_empty() {
        let mut answering = observed.strangers.clone();
        answering.sort();
        return lost(Wait::Strangers { answering });
    }
    let Some((best, best_index)) = survivors.first() else {
        return lost(Wait::NoSurvivor);
    };
    let gone = voters.iter().filter(|v| v.status.is_none());
    let listed: Vec<MemberName> = gone
        .clone()
        .filter(|v| v.listing == Listing::Listed)
        .map(|v| v.name.clone())
        .collect();
    if !listed.is_empty() {
        return lost(Wait::Partition { listed });
    }
    let remove_after = policy.remove_after.as_secs();
    let leaving: Vec<(MemberName, u64)> = gone
        .filter_map(|v| match v.listing {
            Listing::Unlisted { for_secs } if for_secs < remove_after => {
                Some((v.name.clone(), remove_after - for_secs))
            }
            _ => None,
        })
        .collect();
    if let Some(remaining_secs) = leaving.iter().map(|(_, r)| *r).max() {
        return lost(Wait::Leaving {
            names: leaving.into_iter().map(|(n, _)| n).collect(),
            remaining_secs,
        });
    }
    let silent: Vec<MemberName> = voters
        .iter()
        .filter(|v| v.status.is_some() && v.listing == Listing::Listed && !v.pilot_answers)
        .map(|v| v.name.clone())
        .collect();
    if !silent.is_empty() {
        return lost(Wait::SilentPilots { names: silent });
    }
    let best_voter = voters.iter().find(|v| &v.name == best);
    if best_voter.is_some_and(|v| v.listing != Listing::Listed) {
        return lost(Wait::BestIsLeaving { name: best.clone() });
    }
    if !policy.auto {
        return lost(Wait::ManualOnly);
    }
    Verdict::Reseed {
        seed: seed(observed, best, *best_index),
        survivors: survivors.clone(),
        unreachable: unreachable.clone(),
    }
}

/// Why the operator's `reseed --from` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A quorum still answers: the cluster can heal itself; a reseed would split it.
    QuorumHeld,
    /// The named member is not a voter whose etcd answers.
    NotASurvivor { name: MemberName },
    /// Addresses answer that are not voters in the survivors' list: a quorum may live on
    /// without them; `--force` reseeds anyway.
    Strangers { answering: Vec<String> },
    /// Another survivor has applied more; `--force` takes the named one anyway.
    NotTheBest {
        best: MemberName,
        best_index: u64,
        index: u64,
    },
}

/// The operator's reseed from `from`: refused while a quorum holds, from a member that does
/// not answer, or (without `force`) from a survivor another one is ahead of or while
/// addresses answer that are not in the survivors' list.
pub fn manual(observed: &Observed, from: &MemberName, force: bool) -> Result<Seed, Refusal> {
    if quorum_held(&observed.voters) {
        return Err(Refusal::QuorumHeld);
    }
    if !observed.strangers.is_empty() && !force {
        let mut answering = observed.strangers.clone();
        answering.sort();
        return Err(Refusal::Strangers { answering });
    }
    let survivors = ranked(&observed.voters);
    let Some((_, index)) = survivors.iter().find(|(name, _)| name == from) else {
        return Err(Refusal::NotASurvivor { name: from.clone() });
    };
    let (best, best_index) = &survivors[0];
    if best_index > index && !force {
        return Err(Refusal::NotTheBest {
            best: best.clone(),
            best_index: *best_index,
            index: *index,
        });
    }
    Ok(seed(observed, from, *index))
}

/// The newest reseed claim of a cluster in the backup store, as a pilot reads it (the store
/// keeps numbered claims, each made by a conditional create: of two pilots creating the same
/// generation, one wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimView {
    pub generation: u64,
    /// The node that holds it.
    pub holder: String,
    /// The reseed it was taken for is done (or was abandoned, or an operator ended it).
    pub ended: bool,
}

/// What a pilot about to reseed does with the store's claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// Create this generation; go on only if the create wins.
    Create { generation: u64 },
    /// It is this node's already (a reseed it started before it restarted): go on.
    Held { generation: u64 },
    /// Another node holds an open claim: it reseeds (or died reseeding). Nothing happens
    /// until it ends the claim or an operator takes it over (`reseed --force`).
    Wait { holder: String, generation: u64 },
}

/// The claim step of `me` given the newest claim: a new generation after an ended one; an
/// open one of another node is taken over only by an operator's forced reseed (`take_over`).
/// No timeout takes a claim over: a holder that died may have started etcd alone already,
/// and whether it did is written only on its own disk.
pub fn claim_step(latest: Option<&ClaimView>, me: &str, take_over: bool) -> ClaimStep {
    match latest {
        None => ClaimStep::Create { generation: 1 },
        Some(claim) if claim.ended => ClaimStep::Create {
            generation: claim.generation + 1,
        },
        Some(claim) if claim.holder == me => ClaimStep::Held {
            generation: claim.generation,
        },
        Some(claim) if take_over => ClaimStep::Create {
            generation: claim.generation + 1,
        },
        Some(claim) => ClaimStep::Wait {
            holder: claim.holder.clone(),
            generation: claim.generation,
        },
    }
}

impl Refusal {
    /// One line for the operator: why not, and what to do instead.
    pub fn describe(&self) -> String {
        match self {
            Refusal::QuorumHeld => "a quorum of voters answers, or a voter sees a leader: the \
                cluster is not lost, and a reseed would split it"
                .to_owned(),
            Refusal::NotASurvivor { name } => {
                format!("{name} is not a voter whose etcd answers: it cannot be the seed")
            }
            Refusal::Strangers { answering } => format!(
                "{} answer but are not voters in the survivors' list: a quorum may live on \
                 without them, and a reseed would split the cluster; look first, then pass \
                 --force",
                answering.join(", ")
            ),
            Refusal::NotTheBest {
                best,
                best_index,
                index,
            } => format!(
                "{best} has applied more (raft index {best_index} against {index}): reseeding \
                 from the other would lose up to {} entries; reseed from {best}, or pass --force",
                best_index - index
            ),
        }
    }
}

impl Wait {
    /// One line an operator can act on.
    pub fn describe(&self) -> String {
        let names = |names: &[MemberName]| {
            names
                .iter()
                .map(MemberName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Wait::Grace { remaining_secs } => format!(
                "lost for less than timers.quorum_lost_after; looked at again in {remaining_secs} s"
            ),
            Wait::DiscoveryDown => {
                "discovery does not answer, so who is gone for good is unknown".to_owned()
            }
            Wait::Strangers { answering } => format!(
                "{} answer but are not voters in this member's list: its view of the cluster \
                 may be out of date, and a quorum may live on without it",
                answering.join(", ")
            ),
            Wait::NoSurvivor => {
                "no voter answers: nothing to reseed from (restore a backup instead)".to_owned()
            }
            Wait::Partition { listed } => format!(
                "{} still listed by discovery: maybe alive behind a partition, so never \
                 reseeded automatically (take them out of discovery once they are gone for good)",
                names(listed)
            ),
            Wait::Leaving {
                names: leaving,
                remaining_secs,
            } => format!(
                "{} gone from discovery for less than timers.remove_after; gone for good in \
                 {remaining_secs} s",
                names(leaving)
            ),
            Wait::SilentPilots { names: silent } => format!(
                "the pilots of survivors {} do not answer; they must, to follow a reseed",
                names(silent)
            ),
            Wait::BestIsLeaving { name } => {
                format!("the best survivor {name} is leaving discovery; waiting until it is gone")
            }
            Wait::ManualOnly => "automatic reseeds are off".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
