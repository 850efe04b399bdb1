//! How a node starts: restart on its data, join a live cluster as a learner, bootstrap a new
//! cluster with its peers, quarantine data that is not its own, or wait.
//!
//! [`decide`] is called again after every step the executor takes (a quarantine, a member
//! removal, a member add), each time with a fresh observation: joining is several small,
//! idempotent steps, never one long transaction.
//! This module does not own how the observation is made or how a decision is executed.

use serde::{Deserialize, Serialize};

use crate::model::{
    ClusterId, Health, Identity, Member, MemberId, MemberName, Peer, cluster_token,
    initial_cluster, quorum,
};

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observed {
    /// This node, as it appears in discovery.
    pub me: Peer,
    /// Every peer discovery lists, this node included.
    pub expected: Vec<Peer>,
    /// Nodes on their way out that still run (an autoscaling group's `Terminating:Wait`
    /// instances, held by a lifecycle hook): their etcd may be the cluster. A starting node
    /// asks their pilots too ([`Observed::peers`] has their reports), joins the cluster through
    /// them, and never bootstraps or restores past them.
    pub leaving: Vec<Peer>,
    /// How many pilots, this one included, must answer "empty" before a new cluster is
    /// created or a backup restored: the autoscaling groups' desired capacity, or
    /// the whole static list. Fewer listed peers than this is a partial view, never a cluster.
    pub bootstrap_floor: usize,
    /// What the local data directory holds.
    pub local: LocalData,
    /// Whether the local marker says a cluster has formed with this node before.
    pub formed_locally: bool,
    /// What each other expected peer's pilot, and each leaving node's, said about itself.
    pub peers: Vec<PeerReport>,
    /// What the live cluster looks like, through any expected peer that answered.
    pub cluster: ClusterView,
    /// What the backup store says about earlier clusters and their backups.
    pub store: StoreView,
    /// The operator's override: create an empty cluster even though one existed and no
    /// backup can be restored (`restore.allow_empty_cluster`).
    pub allow_empty: bool,
    /// A random number from the caller, for the token of a cluster this node proposes.
    pub nonce: u32,
}

/// What the backup store says, for a node that finds no live cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreView {
    /// No backup store is configured.
    NotConfigured,
    /// The store did not answer, or answered with an error (the reason).
    Unreadable(String),
    /// The store answered.
    Read {
        /// The cluster the store records (a cluster existed and wrote to it), if any.
        cluster: Option<ClusterId>,
        /// The backup an automatic restore would use (`backup::restore_candidate`).
        candidate: Option<RestoreSource>,
    },
}

/// A backup a node may restore from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreSource {
    /// Its id in the store.
    pub id: String,
    /// The cluster that took it.
    pub cluster_id: ClusterId,
    /// The etcd revision it holds.
    pub revision: i64,
}

/// The contents of the local data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalData {
    /// No etcd data: no `member/` folder.
    Empty,
    /// A `member/` folder etcd cannot have finished creating: its WAL folder holds no WAL
    /// file. etcd writes `member/snap/db` before its first WAL, so a crash in between leaves
    /// this; and etcd started on it without a WAL bootstraps as if the disk were empty.
    Unusable {
        /// What was found, for the quarantine folder.
        reason: String,
    },
    /// etcd data (a WAL file exists), with the identity marker found beside it (`None`: the
    /// marker is missing).
    Data {
        /// The identity marker.
        identity: Option<Identity>,
    },
}

/// What one peer's pilot said about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// The peer's name.
    pub name: MemberName,
    /// Its answer.
    pub report: PilotReport,
}

/// A pilot's answer to "what do you have?", served on its admin API for its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PilotReport {
    /// The pilot did not answer (down, unreachable, or too slow). Proves nothing.
    Unknown,
    /// The pilot has no etcd data.
    Empty {
        /// Whether its local marker says a cluster has formed before.
        formed: bool,
        /// The `--initial-cluster` it would bootstrap with (its view of the expected peers).
        initial_cluster: String,
    },
    /// The pilot has started (or is starting) etcd in a new cluster.
    Bootstrapping {
        /// The `--initial-cluster` it used.
        initial_cluster: String,
        /// The `--initial-cluster-token` it used.
        token: String,
    },
    /// The pilot is restoring a backup to start a one-member cluster the others join.
    Restoring {
        /// The backup's id.
        backup: String,
    },
    /// The pilot has etcd data.
    HasData {
        /// The cluster the data belongs to, when known.
        cluster_id: Option<ClusterId>,
    },
}

/// The live cluster as seen through the client API of any expected peer.
#[derive(Clone, Debug)]
pub enum ClusterView {
    /// No expected peer answered a member list request.
    Unreachable,
    /// A peer answered.
    Reachable(LiveCluster),
}

/// A cluster that answered.
#[derive(Clone, Debug)]
pub struct LiveCluster {
    /// Its id.
    pub cluster_id: ClusterId,
    /// Its members, each with the health we observed.
    pub members: Vec<ObservedMember>,
    /// Whether the member list is the leader's. Only the leader's list may prove that a member
    /// is gone (a lagging member's may miss one); any member's proves the cluster id.
    pub from_leader: bool,
}

/// A member and its observed health.
#[derive(Clone, Debug)]
pub struct ObservedMember {
    /// The member as the member list reports it.
    pub member: Member,
    /// Its health.
    pub health: Health,
}

/// What a starting node does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start etcd on the existing data, always with `--initial-cluster-state=existing` and
    /// this `--initial-cluster`: etcd ignores both when its WAL exists, and if the WAL were
    /// gone by the time it starts, they make it fail instead of bootstrapping a cluster of
    /// its own.
    Restart {
        /// The members the live list (or, without one, discovery) and the marker know.
        initial_cluster: String,
    },
    /// Move the data aside (never delete it), then decide again as an empty node.
    Quarantine {
        /// Why the data is not ours to use, for the log and the quarantine folder's name.
        reason: String,
    },
    /// Start etcd in a new cluster with the expected peers.
    BootstrapNew {
        /// The `--initial-cluster` value.
        initial_cluster: String,
        /// The `--initial-cluster-token` value.
        token: String,
    },
    /// Restore a backup into the (empty) data dir and start a one-member cluster from it; the
    /// other peers join it as learners. The executor first claims the restore in the store
    /// (a conditional create), so at most one node restores even if views differ.
    Restore {
        /// The backup.
        source: RestoreSource,
        /// The `--initial-cluster` value: this node alone.
        initial_cluster: String,
        /// A fresh `--initial-cluster-token`, so the new cluster gets a new id.
        token: String,
    },
    /// Take one step towards joining the live cluster.
    Join(JoinStep),
    /// Do nothing yet; observe again later.
    Wait {
        /// What we are waiting for, in words an operator can act on.
        reason: String,
    },
}

/// One step of joining a live cluster. Each is idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinStep {
    /// Remove a member left over from an earlier life of this node (same name, data gone).
    RemoveStale {
        /// The stale member.
        member_id: MemberId,
    },
    /// Add this node as a learner (MemberAdd with `is_learner`), before etcd starts.
    AddLearner,
    /// The cluster has an entry for this node that has not started: start etcd with state
    /// `existing` and this `--initial-cluster`.
    Start {
        /// The entry's member id.
        member_id: MemberId,
        /// The `--initial-cluster` value, built from the live member list.
        initial_cluster: String,
    },
}

/// Decides how this node starts. Pure; see the module docs.
pub fn decide(observed: &Observed, cluster_name: &str) -> Decision {
    match &observed.local {
        LocalData::Data { identity } => return decide_with_data(observed, identity.as_ref()),
        LocalData::Unusable { reason } => {
            return Decision::Quarantine {
                reason: reason.clone(),
            };
        }
        LocalData::Empty => {}
    }
    if !observed.expected.iter().any(|p| p.name == observed.me.name) {
        return Decision::Wait {
            reason: format!(
                "discovery does not list this node ({}); it joins once it is listed",
                observed.me.name
            ),
        };
    }
    if let ClusterView::Reachable(live) = &observed.cluster {
        return decide_join(&observed.me, &observed.expected, &observed.leaving, live);
    }
    decide_bootstrap(observed, cluster_name)
}

fn decide_with_data(observed: &Observed, identity: Option<&Identity>) -> Decision {
    let Some(identity) = identity else {
        // Data without a marker: written by an etcd we did not start, or by a crash between
        // etcd's first write and the marker's. Starting etcd on it is safe (etcd refuses data
        // of another cluster itself); the executor records the identity once etcd answers.
        return restart(observed, true);
    };
    if identity.name != observed.me.name {
        return Decision::Quarantine {
            reason: format!(
                "the data belongs to member {}, but this node is {}",
                identity.name, observed.me.name
            ),
        };
    }
    let ClusterView::Reachable(live) = &observed.cluster else {
        // Nobody answers: our data may be part of the quorum the cluster needs. Use it.
        return restart(observed, true);
    };
    if let Some(cluster_id) = identity.cluster_id
        && cluster_id != live.cluster_id
    {
        // An etcd that formed a cluster of its own answers as fast as a real member, so the
        // answer alone never sets our data aside: only when another pilot's marker confirms
        // the live cluster (its etcd answered as it, and a second node agreed). Otherwise we
        // restart on our data, which cannot form a cluster (state `existing`) and rejoins ours
        // if it still exists; the next look decides again.
        if !confirmed_by_a_peer(observed, live.cluster_id) {
            return restart(observed, false);
        }
        return Decision::Quarantine {
            reason: format!(
                "the data belongs to cluster {cluster_id}, but the live cluster is {}",
                live.cluster_id
            ),
        };
    }
    // A marker written before etcd first answered has no member id: the member is then
    // found by name or peer URL. Absent from the leader's list either way, it was removed (or
    // never got in), and etcd would refuse the data.
    let listed = |m: &ObservedMember| match identity.member_id {
        Some(member_id) => m.member.id == member_id,
        None => {
            m.member.name.as_ref() == Some(&observed.me.name)
                || m.member.peer_urls.contains(&observed.me.peer_url)
        }
    };
    // With a pending marker the live cluster is not known to be ours: a stray's list lacks
    // us too. "Removed" then needs another pilot's marker to confirm the live cluster.
    let confirmed = identity.cluster_id.is_some() || confirmed_by_a_peer(observed, live.cluster_id);
    if live.from_leader && confirmed && !live.members.iter().any(listed) {
        let member_id = identity
            .member_id
            .map_or_else(|| observed.me.name.to_string(), |id| id.to_string());
        return Decision::Quarantine {
            reason: format!(
                "member {member_id} was removed from cluster {}; its data cannot rejoin",
                live.cluster_id
            ),
        };
    }
    restart(observed, true)
}

/// Whether another pilot's marker names `cluster_id`: its etcd answered as that cluster and a
/// second node confirmed it, so the cluster is not a stray's.
fn confirmed_by_a_peer(observed: &Observed, cluster_id: ClusterId) -> bool {
    observed.peers.iter().any(|p| {
        p.report
            == PilotReport::HasData {
                cluster_id: Some(cluster_id),
            }
    })
}

/// A restart on our data, with the members the live cluster (else discovery) lists and this
/// node, so that etcd could only ever join them, never bootstrap alone. `live_is_ours`: the
/// live cluster is the data's (else discovery's peers are named).
fn restart(observed: &Observed, live_is_ours: bool) -> Decision {
    let me = &observed.me;
    let mut pairs: Vec<(&MemberName, &str)> = vec![(&me.name, me.peer_url.as_str())];
    match &observed.cluster {
        ClusterView::Reachable(live) if live_is_ours => {
            for m in &live.members {
                // A member under our name or peer URL is us: our pair stands for it.
                let ours = m.member.name.as_ref() == Some(&me.name)
                    || m.member.peer_urls.contains(&me.peer_url);
                if let (false, Some(name)) = (ours, &m.member.name) {
                    pairs.extend(m.member.peer_urls.iter().map(|url| (name, url.as_str())));
                }
            }
        }
        ClusterView::Reachable(_) | ClusterView::Unreachable => {
            for peer in observed.expected.iter().filter(|p| p.name != me.name) {
                pairs.push((&peer.name, peer.peer_url.as_str()));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    Decision::Restart {
        initial_cluster: initial_cluster(pairs),
    }
}

fn decide_join(me: &Peer, expected: &[Peer], leaving: &[Peer], live: &LiveCluster) -> Decision {
    if !live.from_leader {
        return Decision::Wait {
            reason: "the cluster answers but reports no leader (an election, or no quorum); \
                     joining waits for a leader"
                .to_owned(),
        };
    }
    let ours_by_url = live
        .members
        .iter()
        .find(|m| m.member.peer_urls.iter().any(|u| u == &me.peer_url));
    let ours_by_name = live
        .members
        .iter()
        .find(|m| m.member.name.as_ref() == Some(&me.name));
    let others_pending: Vec<&ObservedMember> = live
        .members
        .iter()
        .filter(|m| m.member.is_pending())
        .filter(|m| Some(m.member.id) != ours_by_url.map(|o| o.member.id))
        .filter(|m| Some(m.member.id) != ours_by_name.map(|o| o.member.id))
        .collect();

    if let Some(stale) = ours_by_name.filter(|m| m.member.is_started()) {
        // Our name, started, while our disk is empty: an earlier life of this node.
        if let Some(reason) = one_change_at_a_time(&others_pending) {
            return Decision::Wait { reason };
        }
        if let Some(reason) = removal_blocked(live, stale) {
            return Decision::Wait { reason };
        }
        return Decision::Join(JoinStep::RemoveStale {
            member_id: stale.member.id,
        });
    }
    if let Some(entry) = ours_by_url.or(ours_by_name) {
        if entry.member.is_started() || entry.member.name.as_ref().is_some_and(|n| n != &me.name) {
            let other = entry
                .member
                .name
                .as_ref()
                .map_or("(unnamed)", MemberName::as_str);
            // A member discovery no longer lists (a lost node whose address this one took
            // over) is the coordinator's to remove; anything else is the operator's.
            let unlisted = entry.member.is_started()
                && !crate::plan::is_listed(&entry.member, expected)
                && !crate::plan::is_listed(&entry.member, leaving);
            return Decision::Wait {
                reason: if unlisted {
                    format!(
                        "peer URL {} is still registered to member {other} ({}), which \
                         discovery no longer lists: the coordinator removes it after \
                         timers.remove_after (once the quorum and the mass-removal guard \
                         allow), then this node joins",
                        me.peer_url, entry.member.id
                    )
                } else {
                    format!(
                        "peer URL {} is registered to member {other} ({}); remove that member \
                         (etcdctl member remove {}) or give this node another peer URL",
                        me.peer_url, entry.member.id, entry.member.id
                    )
                },
            };
        }
        // Added but never started: it is ours to start (we, an earlier attempt, or the
        // initial bootstrap added it). etcd wants every member in --initial-cluster.
        let pairs = live.members.iter().flat_map(|m| {
            let name = if m.member.id == entry.member.id {
                Some(&me.name)
            } else {
                m.member.name.as_ref()
            };
            name.into_iter().flat_map(move |name| {
                m.member
                    .peer_urls
                    .iter()
                    .map(move |url| (name, url.as_str()))
            })
        });
        return Decision::Join(JoinStep::Start {
            member_id: entry.member.id,
            initial_cluster: initial_cluster(pairs),
        });
    }
    if let Some(reason) = one_change_at_a_time(&others_pending) {
        return Decision::Wait { reason };
    }
    // Remove before add: a member whose node left discovery goes first (the coordinator
    // removes it after its grace period), so the cluster never grows past its size with a
    // dead member in it. A member whose node is leaving but still runs (a termination held by
    // its lifecycle hook) is the exception: it is removed only once the cluster is back at
    // full strength, so its replacement must be able to join first.
    if let Some(gone) = live.members.iter().find(|m| {
        !crate::plan::is_listed(&m.member, expected) && !crate::plan::is_listed(&m.member, leaving)
    }) {
        let who = gone
            .member
            .name
            .as_ref()
            .map_or_else(|| gone.member.id.to_string(), ToString::to_string);
        return Decision::Wait {
            reason: format!(
                "member {who} left discovery; waiting for the coordinator to remove it before \
                 this node joins (remove before add)"
            ),
        };
    }
    let voters: Vec<&ObservedMember> = live
        .members
        .iter()
        .filter(|m| !m.member.is_learner)
        .collect();
    let healthy = voters
        .iter()
        .filter(|m| m.health == Health::Healthy)
        .count();
    if healthy < quorum(voters.len()) {
        return Decision::Wait {
            reason: format!(
                "the cluster has {healthy} of {} voters healthy, below its quorum of {}; \
                 a member can only be added to a cluster with a healthy quorum",
                voters.len(),
                quorum(voters.len())
            ),
        };
    }
    Decision::Join(JoinStep::AddLearner)
}

fn one_change_at_a_time(others_pending: &[&ObservedMember]) -> Option<String> {
    let first = others_pending.first()?;
    let who = match &first.member.name {
        Some(name) => format!("member {name} ({})", first.member.id),
        None => format!("member {} (added, not started)", first.member.id),
    };
    Some(format!(
        "one membership change at a time: {who} is still joining; this node joins after it"
    ))
}

/// Why removing `target` would put the cluster at risk, if it would.
fn removal_blocked(live: &LiveCluster, target: &ObservedMember) -> Option<String> {
    if target.member.is_learner {
        return None;
    }
    let voters_after: Vec<&ObservedMember> = live
        .members
        .iter()
        .filter(|m| !m.member.is_learner && m.member.id != target.member.id)
        .collect();
    let healthy_after = voters_after
        .iter()
        .filter(|m| m.health == Health::Healthy)
        .count();
    (healthy_after < quorum(voters_after.len())).then(|| {
        format!(
            "removing the stale member {} would leave {healthy_after} of {} voters healthy, \
             below a quorum of {}",
            target.member.id,
            voters_after.len(),
            quorum(voters_after.len())
        )
    })
}

fn decide_bootstrap(observed: &Observed, cluster_name: &str) -> Decision {
    let mine = initial_cluster(
        observed
            .expected
            .iter()
            .map(|p| (&p.name, p.peer_url.as_str())),
    );
    let mut unknown = Vec::new();
    let mut saw_formed = Vec::new();
    let mut empty = 1; // This node.
    for peer in &observed.peers {
        if observed.leaving.iter().any(|l| l.name == peer.name) {
            // An empty leaving node holds nothing; any other answer may be the cluster.
            match &peer.report {
                PilotReport::Empty { .. } => continue,
                PilotReport::Unknown => {
                    return Decision::Wait {
                        reason: format!(
                            "{} is leaving but still runs, and its pilot does not answer: it may \
                             hold the cluster's data, so no cluster is created or restored until \
                             it answers or is gone",
                            peer.name
                        ),
                    };
                }
                _ => {
                    return Decision::Wait {
                        reason: format!(
                            "{} is leaving but still runs with data, and no etcd answers: no \
                             cluster is created or restored while it may hold the cluster's data",
                            peer.name
                        ),
                    };
                }
            }
        }
        if matches!(
            peer.report,
            PilotReport::Empty { .. } | PilotReport::Bootstrapping { .. }
        ) {
            empty += 1;
        }
        match &peer.report {
            PilotReport::Unknown => unknown.push(peer.name.as_str()),
            PilotReport::HasData { .. } => {
                return Decision::Wait {
                    reason: format!(
                        "peer {} has data, but no etcd answers: waiting for the cluster to come \
                         back (a new cluster is never created, nor a backup restored, while any \
                         peer holds data)",
                        peer.name
                    ),
                };
            }
            PilotReport::Restoring { backup } => {
                return Decision::Wait {
                    reason: format!(
                        "peer {} is restoring backup {backup}; this node joins the cluster it \
                         starts",
                        peer.name
                    ),
                };
            }
            PilotReport::Empty { formed: true, .. } => saw_formed.push(peer.name.as_str()),
            PilotReport::Empty {
                formed: false,
                initial_cluster,
            }
            | PilotReport::Bootstrapping {
                initial_cluster, ..
            } if initial_cluster != &mine => {
                return Decision::Wait {
                    reason: format!(
                        "peer {} would bootstrap with {initial_cluster}, this node with {mine}; \
                         make the peer lists agree",
                        peer.name
                    ),
                };
            }
            PilotReport::Empty { .. } | PilotReport::Bootstrapping { .. } => {}
        }
    }
    let existed = if observed.formed_locally {
        Some("a cluster has formed with this node before (marker in the data dir)".to_owned())
    } else if let Some(peer) = saw_formed.first() {
        Some(format!("peer {peer} saw a cluster form"))
    } else if let StoreView::Read {
        cluster: Some(id), ..
    } = &observed.store
    {
        Some(format!("the backup store records cluster {id}"))
    } else {
        None
    };
    if let Some(existed) = existed {
        if unknown.is_empty()
            && let Some(reason) = below_floor(observed, empty)
        {
            return Decision::Wait { reason };
        }
        if let Some(decision) = decide_after_loss(observed, cluster_name, &existed, &unknown) {
            return decision;
        }
    } else if let StoreView::Unreadable(error) = &observed.store
        && !observed.allow_empty
    {
        return Decision::Wait {
            reason: format!(
                "the backup store cannot be read ({error}), so whether a cluster existed before \
                 is unknown: a new cluster is only created once the store answers (or with \
                 restore.allow_empty_cluster = true)"
            ),
        };
    }
    if !unknown.is_empty() {
        return Decision::Wait {
            reason: format!(
                "waiting for the pilots of {} to answer: a new cluster is only created when \
                 every listed peer confirms it holds no data",
                unknown.join(", ")
            ),
        };
    }
    if let Some(reason) = below_floor(observed, empty) {
        return Decision::Wait { reason };
    }
    // One token for everyone: the first peer by name proposes it (with a fresh nonce), the
    // others adopt it from its report. A proposer that restarts adopts it back from them.
    let mut tokens: Vec<&str> = observed
        .peers
        .iter()
        .filter_map(|peer| match &peer.report {
            PilotReport::Bootstrapping { token, .. } => Some(token.as_str()),
            _ => None,
        })
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    match tokens.as_slice() {
        [token] => Decision::BootstrapNew {
            initial_cluster: mine,
            token: (*token).to_owned(),
        },
        [] => {
            let proposer = observed.expected.iter().map(|p| &p.name).min();
            match proposer {
                Some(first) if first != &observed.me.name => Decision::Wait {
                    reason: format!(
                        "every peer is empty; waiting for {first} to start the bootstrap (the \
                         first peer by name chooses the cluster token)"
                    ),
                },
                _ => Decision::BootstrapNew {
                    token: cluster_token(cluster_name, &mine, observed.nonce),
                    initial_cluster: mine,
                },
            }
        }
        several => Decision::Wait {
            reason: format!(
                "peers bootstrap with different cluster tokens ({}), so they cannot form one \
                 cluster; stop their pilots, move their data dirs aside and start them again",
                several.join(", ")
            ),
        },
    }
}

/// Why too few pilots answered "empty" (or are bootstrapping) for a new cluster or a
/// restore, if they did.
fn below_floor(observed: &Observed, empty: usize) -> Option<String> {
    (empty < observed.bootstrap_floor).then(|| {
        format!(
            "{empty} pilot(s) answer empty, but a new cluster needs {} (the size discovery \
             expects): waiting for the rest to be listed and to answer",
            observed.bootstrap_floor
        )
    })
}

/// A cluster existed (`existed` says how we know) and no peer holds data or answers: restore
/// the newest verified backup on exactly one node, or wait. `None` only with the operator's
/// override, when there is nothing to restore: then a new cluster is bootstrapped.
fn decide_after_loss(
    observed: &Observed,
    cluster_name: &str,
    existed: &str,
    unknown: &[&str],
) -> Option<Decision> {
    let wait = |reason: String| Some(Decision::Wait { reason });
    if !unknown.is_empty() {
        return wait(format!(
            "{existed}, and no peer's etcd answers; waiting for the pilots of {} to answer (a \
             peer that does not answer may hold the cluster's data)",
            unknown.join(", ")
        ));
    }
    match &observed.store {
        StoreView::Read {
            candidate: Some(source),
            ..
        } => {
            // A peer bootstrapping an empty cluster disagrees with us about the store: neither
            // side may act until that is resolved.
            if let Some(peer) = observed
                .peers
                .iter()
                .find(|p| matches!(p.report, PilotReport::Bootstrapping { .. }))
            {
                return wait(format!(
                    "{existed}, yet peer {} is bootstrapping a new cluster; stop its pilot and \
                     check its backup store settings",
                    peer.name
                ));
            }
            let restorer = observed.expected.iter().map(|p| &p.name).min();
            match restorer {
                Some(first) if first != &observed.me.name => wait(format!(
                    "{existed} and every peer is empty: waiting for {first} to restore backup {} \
                     (the first peer by name restores; the others join it)",
                    source.id
                )),
                _ => {
                    let alone =
                        initial_cluster([(&observed.me.name, observed.me.peer_url.as_str())]);
                    Some(Decision::Restore {
                        source: source.clone(),
                        token: cluster_token(cluster_name, &alone, observed.nonce),
                        initial_cluster: alone,
                    })
                }
            }
        }
        _ if observed.allow_empty => None,
        StoreView::NotConfigured => wait(format!(
            "{existed}, and no peer's etcd answers: waiting to rejoin it. No backup store is \
             configured to restore from, and a new cluster is never created from empty disks \
             once one has formed (set restore.allow_empty_cluster = true to create one anyway)"
        )),
        StoreView::Unreadable(error) => wait(format!(
            "{existed}, no peer's etcd answers, and the backup store cannot be read ({error}): \
             waiting for the store to restore from it"
        )),
        StoreView::Read {
            candidate: None, ..
        } => wait(format!(
            "{existed}, no peer has data, and the backup store holds no verified backup of it: \
             refusing to create an empty cluster (set restore.allow_empty_cluster = true to \
             create one anyway, or restore a backup with `etcd-pilot restore`)"
        )),
    }
}

#[cfg(test)]
mod tests;
