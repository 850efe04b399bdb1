//! Watching for quorum loss. Each interval, while the local etcd sees no leader, the pilot
//! asks every voter's etcd for its status (which needs no quorum) and every listed voter's
//! pilot whether it answers, times how long the quorum has been lost and how long each voter
//! has been absent from discovery, and takes the core's verdict (`reseed::decide`). The
//! verdict is published in `/v1/status` (`quorum`) and as `etcd_pilot_quorum_lost`; this
//! module observes and reports, it changes nothing.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use etcd_pilot_core::reseed::{self, Listing, ReseedPolicy, Verdict, Voter, VoterStatus};
use etcd_pilot_core::{Member, MemberName};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::discovery::{Discovery as _, Provider};
use crate::etcd::{self, EndpointStatus, MemberList};
use crate::metrics::Metrics;
use crate::peer_api::PeerApi;
use crate::state::{PilotStatus, QuorumStatus, Survivor};

/// The quorum watch of one pilot: the timers it keeps between observations.
pub(crate) struct QuorumWatch {
    pool: etcd::Pool,
    peers: PeerApi,
    policy: ReseedPolicy,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
    /// The monotonic origin of the offsets below.
    origin: Instant,
    /// When the quorum was first seen lost, as an offset and as a time for people.
    lost_since: Option<(Duration, SystemTime)>,
    /// Since when each voter has been absent from discovery.
    unlisted_since: BTreeMap<MemberName, Duration>,
    /// The highest applied index seen in this cluster.
    highest_seen: u64,
}

impl QuorumWatch {
    pub(crate) fn new(
        pool: etcd::Pool,
        peers: PeerApi,
        policy: ReseedPolicy,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
    ) -> Self {
        Self {
            pool,
            peers,
            policy,
            status,
            metrics,
            origin: Instant::now(),
            lost_since: None,
            unlisted_since: BTreeMap::new(),
            highest_seen: 0,
        }
    }

    /// One observation; `local` is the local etcd's status, if it answered.
    pub(crate) async fn observe(
        &mut self,
        local: Option<&EndpointStatus>,
        local_url: &str,
        discovery: &Provider,
    ) -> Option<Verdict> {
        let Some(local) = local else {
            // A pilot whose etcd does not answer is no survivor: it says nothing of the quorum.
            self.clear();
            return None;
        };
        self.highest_seen = self.highest_seen.max(local.raft_applied_index);
        if local.leader.is_some() {
            self.clear();
            return Some(Verdict::Held);
        }
        let list = match self.pool.client(local_url).await {
            // Not linearizable: the local member answers from its own copy, without a quorum.
            Ok(client) => match client.member_list().await {
                Ok(list) => list,
                Err(err) => {
                    tracing::debug!("no leader, and no member list from the local etcd: {err:#}");
                    return None;
                }
            },
            Err(err) => {
                tracing::debug!("no leader, and the local etcd does not answer: {err:#}");
                return None;
            }
        };
        let voters = MemberList {
            cluster_id: list.cluster_id,
            members: list.members.into_iter().filter(|m| !m.is_learner).collect(),
        };
        let probes = self.pool.probe_members(&voters).await;
        let listed = discovery.peers().await;
        let now = self.origin.elapsed();
        let mut seen = Vec::new();
        for (member, probe) in voters.members.iter().zip(&probes) {
            let name = voter_name(member);
            let peer = listed
                .as_ref()
                .ok()
                .and_then(|peers| peers.iter().find(|p| p.name == name));
            let status = probe.as_ref().ok().map(|s| VoterStatus {
                applied_index: s.raft_applied_index,
                has_leader: s.leader.is_some(),
            });
            if let Some(status) = status {
                self.highest_seen = self.highest_seen.max(status.applied_index);
            }
            let pilot_answers = match (peer, status) {
                (Some(peer), Some(_)) => self.peers.status(&peer.admin_url).await.is_some(),
                _ => false,
            };
            if listed.is_ok() {
                if peer.is_some() {
                    self.unlisted_since.remove(&name);
                } else {
                    self.unlisted_since.entry(name.clone()).or_insert(now);
                }
            }
            let listing = match self.unlisted_since.get(&name) {
                Some(since) => Listing::Unlisted {
                    for_secs: now.saturating_sub(*since).as_secs(),
                },
                None => Listing::Listed,
            };
            seen.push(Voter {
                name,
                status,
                pilot_answers,
                listing,
            });
        }
        self.unlisted_since
            .retain(|name, _| seen.iter().any(|v| &v.name == name));
        let lost = !reseed::quorum_held(&seen);
        if !lost {
            self.lost_since = None;
        } else if self.lost_since.is_none() {
            self.lost_since = Some((now, SystemTime::now()));
        }
        let observed = reseed::Observed {
            voters: seen,
            discovery_ok: listed.is_ok(),
            lost_for_secs: self
                .lost_since
                .map_or(0, |(since, _)| now.saturating_sub(since).as_secs()),
            highest_seen: self.highest_seen,
        };
        let verdict = reseed::decide(&observed, &self.policy);
        self.publish(&observed, &verdict);
        Some(verdict)
    }

    fn clear(&mut self) {
        self.lost_since = None;
        self.unlisted_since.clear();
        self.metrics.quorum_lost.set(0);
        self.status.send_if_modified(|s| s.quorum.take().is_some());
    }

    fn publish(&self, observed: &reseed::Observed, verdict: &Verdict) {
        let counted = matches!(verdict, Verdict::Reseed { .. })
            || matches!(verdict, Verdict::Lost { why, .. } if !matches!(why, reseed::Wait::Grace { .. }));
        self.metrics.quorum_lost.set(i64::from(counted));
        let (survivors, unreachable, seed, text) = match verdict {
            Verdict::Held => (
                reseed::ranked(&observed.voters),
                Vec::new(),
                None,
                "no leader yet, but a quorum of voters answers: an election is under way"
                    .to_owned(),
            ),
            Verdict::Lost {
                why,
                survivors,
                unreachable,
            } => (
                survivors.clone(),
                unreachable.clone(),
                None,
                format!(
                    "quorum lost: {} do not answer; not reseeded: {}",
                    names(unreachable),
                    why.describe()
                ),
            ),
            Verdict::Reseed {
                seed,
                survivors,
                unreachable,
            } => (
                survivors.clone(),
                unreachable.clone(),
                Some(seed.clone()),
                format!(
                    "quorum lost: {} do not answer and are gone from discovery; a reseed from \
                     {} (applied index {}, {} entries behind the highest seen) is safe, but this \
                     version does not reseed on its own",
                    names(unreachable),
                    seed.name,
                    seed.applied_index,
                    seed.behind
                ),
            ),
        };
        let view = QuorumStatus {
            lost: !matches!(verdict, Verdict::Held),
            lost_since: self
                .lost_since
                .map(|(_, at)| humantime::format_rfc3339_seconds(at).to_string()),
            lost_for_secs: observed.lost_for_secs,
            survivors: survivors
                .into_iter()
                .map(|(name, applied_index)| Survivor {
                    name: name.to_string(),
                    applied_index,
                })
                .collect(),
            unreachable: unreachable.iter().map(ToString::to_string).collect(),
            highest_seen: observed.highest_seen,
            seed_behind: seed.as_ref().map(|s| s.behind),
            seed: seed.map(|s| Survivor {
                name: s.name.to_string(),
                applied_index: s.applied_index,
            }),
            verdict: text,
        };
        self.status.send_modify(|s| s.quorum = Some(view));
    }
}

/// A voter's name: its own, or for a member whose etcd never started, its id (it has none).
fn voter_name(member: &Member) -> MemberName {
    member.name.clone().unwrap_or_else(|| {
        MemberName::new(format!("{:x}", member.id.0)).expect("a hex id is a valid member name")
    })
}

fn names(names: &[MemberName]) -> String {
    names
        .iter()
        .map(MemberName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
