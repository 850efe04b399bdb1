//! Watching for quorum loss. Each interval, while the local etcd sees no leader, the pilot
//! asks every voter's etcd for its status (which needs no quorum) and every listed voter's
//! pilot whether it answers, times how long the quorum has been lost and how long each voter
//! has been absent from discovery, and takes the core's verdict (`reseed::decide`). The
//! verdict is published in `/v1/status` (`quorum`) and as `etcd_pilot_quorum_lost`. When
//! the verdict is a reseed from this member and every other survivor's pilot names
//! the same seed ([`QuorumWatch::confirmed`]), the pilot carries it out (`pilot/`): this
//! module only observes and decides. An operator's order (`etcd-pilot reseed`, through
//! `POST /v1/reseed`) waits in [`Orders`] and is checked against the same observation
//! ([`QuorumWatch::ordered`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use etcd_pilot_core::reseed::{self, Listing, ReseedPolicy, Verdict, Voter, VoterStatus};
use etcd_pilot_core::{Member, MemberName, Peer};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::discovery::{Discovery as _, Provider};
use crate::etcd::{self, EndpointStatus, MemberList};
use crate::metrics::Metrics;
use crate::peer_api::PeerApi;
use crate::state::{PilotStatus, QuorumStatus, Survivor};

/// An operator's reseed order (`etcd-pilot reseed --from NAME`), as `POST /v1/reseed` takes it.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
pub(crate) struct ReseedOrder {
    /// The seed: only that member's pilot takes the order.
    pub(crate) from: String,
    /// Reseed from a survivor that is not the best, or while unknown addresses answer.
    #[serde(default)]
    pub(crate) force: bool,
    /// Who ordered it (user and host), for the record.
    #[serde(default)]
    pub(crate) by: String,
    /// A nonce the command chose: the outcome (`reseed_order` in `/v1/status`) and the
    /// reseed record name it, so the command knows they answer this order.
    #[serde(default)]
    pub(crate) id: String,
}

impl ReseedOrder {
    /// Who ordered it, with the order's id: the reseed record's `ordered_by`.
    pub(crate) fn signed(&self) -> String {
        format!("{} [order {}]", self.by, self.id)
    }
}

/// How long an order waits for the quorum watch before it lapses.
const ORDER_LAPSES_AFTER: Duration = Duration::from_secs(60);

/// Orders from the admin API to the quorum watch: the newest replaces an older one.
#[derive(Clone, Default)]
pub(crate) struct Orders(Arc<Mutex<Option<(ReseedOrder, Instant)>>>);

impl Orders {
    pub(crate) fn put(&self, order: ReseedOrder) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((order, Instant::now()));
    }

    fn take(&self) -> Option<(ReseedOrder, Instant)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// A reseed the quorum watch found this pilot should carry out.
pub(crate) struct Go {
    pub(crate) seed: reseed::Seed,
    pub(crate) survivors: Vec<MemberName>,
    pub(crate) unreachable: Vec<MemberName>,
    /// `automatic`, or who ordered it.
    pub(crate) ordered_by: String,
    /// An operator's forced order: it may take over another node's open claim.
    pub(crate) take_over: bool,
}

/// The quorum watch of one pilot: the timers it keeps between observations.
pub(crate) struct QuorumWatch {
    /// This node's member name.
    me: MemberName,
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
    /// The highest raft index seen in this cluster.
    highest_seen: u64,
    /// The other survivors at the last observation, with their admin URLs (empty when
    /// discovery does not list them): each must name the same seed before a reseed.
    confirmers: Vec<(MemberName, String)>,
    /// Every voter's client URL at the last observation.
    voter_urls: Vec<String>,
    /// Operators' orders, from the admin API.
    orders: Orders,
    /// The last observation that found the quorum lost.
    last: Option<reseed::Observed>,
    /// The admin URL of every other voter's pilot that discovery lists, whether its etcd
    /// answers or not (one that stopped its etcd to reseed does not).
    pilots: Vec<(MemberName, String)>,
}

impl QuorumWatch {
    pub(crate) fn new(
        me: MemberName,
        pool: etcd::Pool,
        peers: PeerApi,
        policy: ReseedPolicy,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
        orders: Orders,
    ) -> Self {
        Self {
            me,
            pool,
            peers,
            policy,
            status,
            metrics,
            origin: Instant::now(),
            lost_since: None,
            unlisted_since: BTreeMap::new(),
            highest_seen: 0,
            confirmers: Vec::new(),
            voter_urls: Vec::new(),
            orders,
            last: None,
            pilots: Vec::new(),
        }
    }

    /// The operator's pending order, checked against this pilot's last observation: the
    /// reseed to carry out, or `None` (no order, or refused: the reason is published in
    /// `reseed_order`). This pilot first publishes itself as the seed, then asks every other
    /// listed pilot: a pilot reseeding, or naming another seed (it may reseed on its own),
    /// refuses the order. A pilot that confirmed itself as seed published that before it
    /// asked this one, so of the two, at least one sees the other.
    pub(crate) async fn ordered(&mut self) -> Option<Go> {
        let (order, at) = self.orders.take()?;
        let decided = self.check_order(&order, at).await;
        let text = match &decided {
            Ok(seed) => format!(
                "reseed from {} ordered by {}: accepted (raft index {}, {} entries behind the \
                 highest seen)",
                seed.name,
                order.signed(),
                seed.raft_index,
                seed.behind
            ),
            Err(why) => format!(
                "reseed from {} ordered by {}: refused: {why}",
                order.from,
                order.signed()
            ),
        };
        tracing::warn!("{text}");
        self.status.send_modify(|s| s.reseed_order = Some(text));
        let seed = decided.ok()?;
        let observed = self.last.as_ref()?;
        let mut voters = observed.voters.clone();
        voters.sort_by(|a, b| a.name.cmp(&b.name));
        Some(Go {
            seed,
            survivors: reseed::ranked(&voters)
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
            unreachable: voters
                .iter()
                .filter(|v| v.status.is_none())
                .map(|v| v.name.clone())
                .collect(),
            ordered_by: order.signed(),
            take_over: order.force,
        })
    }

    /// An accepted reseed that cannot be carried out after all (the store's claim, a leader
    /// seen again): said in `reseed_order` when it was an operator's.
    pub(crate) fn refused(&self, go: &Go, why: &str) {
        if go.ordered_by == "automatic" {
            return;
        }
        let text = format!(
            "reseed from {} ordered by {}: refused: {why}",
            go.seed.name, go.ordered_by
        );
        self.status.send_modify(|s| s.reseed_order = Some(text));
    }

    async fn check_order(&self, order: &ReseedOrder, at: Instant) -> Result<reseed::Seed, String> {
        if at.elapsed() > ORDER_LAPSES_AFTER {
            return Err("the order lapsed before this pilot looked at it".to_owned());
        }
        if order.from != self.me.as_str() {
            return Err(format!(
                "this is the pilot of {}, not of {}",
                self.me, order.from
            ));
        }
        let Some(observed) = &self.last else {
            return Err(
                "this pilot's etcd sees a leader, or does not answer: no quorum loss to end"
                    .to_owned(),
            );
        };
        let seed = reseed::manual(observed, &self.me, order.force).map_err(|r| r.describe())?;
        // Named first, asked second (see `ordered`).
        self.status.send_modify(|s| {
            if let Some(q) = s.quorum.as_mut() {
                q.seed = Some(Survivor {
                    name: seed.name.to_string(),
                    raft_index: seed.raft_index,
                });
                q.seed_behind = Some(seed.behind);
            }
        });
        for (name, admin_url) in &self.pilots {
            let Some(status) = self.peers.status(admin_url).await else {
                // It may have stopped its etcd to reseed, and come back to finish.
                if order.force {
                    continue;
                }
                return Err(format!(
                    "the pilot of {name} is listed but does not answer: it may be reseeding \
                     from its own member; once you know its node is down (or take it out of \
                     discovery), pass --force"
                ));
            };
            if let Some(reseed) = status.reseed {
                return Err(format!(
                    "the pilot of {name} is reseeding from its own member ({}: {}); two seeds \
                     would split the cluster",
                    reseed.step, reseed.detail
                ));
            }
            if let Some(other) = status.quorum.and_then(|q| q.seed)
                && other.name != self.me.as_str()
            {
                return Err(format!(
                    "the pilot of {name} names {} the seed and may be reseeding on its own: two \
                     seeds would split the cluster (wait for it, or set reseed.auto = false on \
                     every pilot first)",
                    other.name
                ));
            }
        }
        Ok(seed)
    }

    /// Every voter's client URL at the last observation.
    pub(crate) fn voter_urls(&self) -> Vec<String> {
        self.voter_urls.clone()
    }

    /// Whether every other survivor's pilot names `seed`, at the same raft index,
    /// as the seed of its own verdict: the fence of a reseed. Survivors cannot agree through
    /// etcd without a quorum; a pilot whose view differs (it still sees a voter this one
    /// does not, or a better survivor) withholds its confirmation, and nothing happens.
    pub(crate) async fn confirmed(&self, seed: &reseed::Seed) -> bool {
        // A listed pilot that reseeds already (its etcd stopped, so it is no survivor here).
        for (name, admin_url) in &self.pilots {
            if let Some(reseed) = self
                .peers
                .status(admin_url)
                .await
                .and_then(|status| status.reseed)
            {
                tracing::info!(
                    pilot = %name,
                    step = %reseed.step,
                    "another pilot is reseeding: this one does not"
                );
                return false;
            }
        }
        for (name, admin_url) in &self.confirmers {
            if admin_url.is_empty() {
                tracing::info!(
                    survivor = %name,
                    "a survivor discovery does not list cannot confirm this seed"
                );
                return false;
            }
            let named = self
                .peers
                .status(admin_url)
                .await
                .and_then(|status| status.quorum)
                .and_then(|quorum| quorum.seed);
            match named {
                Some(s) if s.name == seed.name.as_str() && s.raft_index == seed.raft_index => {}
                other => {
                    tracing::info!(
                        survivor = %name,
                        names = ?other.map(|s| (s.name, s.raft_index)),
                        "a survivor does not confirm this seed yet"
                    );
                    return false;
                }
            }
        }
        true
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
        self.highest_seen = self.highest_seen.max(local.raft_index);
        if local.leader.is_some() {
            self.clear();
            return Some(Verdict::Held);
        }
        let list = match self.pool.client(local_url).await {
            // Not linearizable: the local member answers from its own copy, without a quorum.
            Ok(client) => client.member_list().await.map_err(anyhow::Error::from),
            Err(err) => Err(anyhow::Error::from(err)),
        };
        let list = match list {
            Ok(list) => list,
            Err(err) => {
                // Nothing is timed across a gap: absence must be seen without interruption.
                tracing::debug!("no leader, and no member list from the local etcd: {err:#}");
                self.clear();
                return None;
            }
        };
        let voters = MemberList {
            cluster_id: list.cluster_id,
            members: list
                .members
                .iter()
                .filter(|m| !m.is_learner)
                .cloned()
                .collect(),
        };
        let probes = self.pool.probe_members(&voters).await;
        self.voter_urls = voters
            .members
            .iter()
            .filter_map(|m| m.client_urls.first().cloned())
            .collect();
        // Who discovery lists, and who is leaving but still runs (an instance held in
        // Terminating:Wait keeps its etcd): both count as present.
        let census = match discovery.census().await {
            Ok(census) => Some(census),
            Err(err) => {
                tracing::debug!("no leader, and discovery does not answer: {err}");
                self.unlisted_since.clear();
                None
            }
        };
        let present: Vec<&Peer> = census
            .iter()
            .flat_map(|c| c.peers.iter().chain(&c.leaving))
            .collect();
        let now = self.origin.elapsed();
        let mut seen = Vec::new();
        let mut strangers = Vec::new();
        self.confirmers.clear();
        self.pilots.clear();
        for (member, probe) in voters.members.iter().zip(&probes) {
            let name = voter_name(member);
            let peer = present.iter().find(|p| {
                member.name.as_ref() == Some(&p.name) || member.peer_urls.contains(&p.peer_url)
            });
            let status = probe.as_ref().ok().map(|s| VoterStatus {
                raft_index: s.raft_index,
                has_leader: s.leader.is_some(),
            });
            match status {
                Some(status) => self.highest_seen = self.highest_seen.max(status.raft_index),
                None => {
                    // Its address may answer as another member (replaced on the same address).
                    if let Some(url) = member.client_urls.first()
                        && let Ok(other) = self.pool.status(url).await
                    {
                        strangers.push(format!("{url} (as member {:x})", other.member_id.0));
                    }
                }
            }
            // Every other survivor must confirm a seed, listed or not (one this pilot's
            // discovery does not list may see what this one does not); without an admin
            // URL it cannot.
            if let Some(peer) = peer
                && name != self.me
            {
                self.pilots.push((name.clone(), peer.admin_url.clone()));
            }
            if status.is_some() && name != self.me {
                self.confirmers.push((
                    name.clone(),
                    peer.map(|p| p.admin_url.clone()).unwrap_or_default(),
                ));
            }
            let pilot_answers = match (peer, status) {
                (Some(_), Some(_)) if name == self.me => true,
                (Some(peer), Some(_)) => self.peers.status(&peer.admin_url).await.is_some(),
                _ => false,
            };
            if census.is_some() {
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
        // Listed peers this member's list does not have: if their etcd answers, a quorum may
        // live on without this member (its list is stale).
        for peer in &present {
            // Learners count as known: a listed learner that answers is no stranger.
            let known = list.members.iter().any(|m| {
                m.name.as_ref() == Some(&peer.name) || m.peer_urls.contains(&peer.peer_url)
            });
            if !known && self.pool.status(&peer.client_url).await.is_ok() {
                strangers.push(format!("{} at {}", peer.name, peer.client_url));
            }
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
            discovery_ok: census.is_some(),
            strangers,
            lost_for_secs: self
                .lost_since
                .map_or(0, |(since, _)| now.saturating_sub(since).as_secs()),
            highest_seen: self.highest_seen,
        };
        let verdict = reseed::decide(&observed, &self.policy);
        self.publish(&observed, &verdict);
        self.last = (!matches!(verdict, Verdict::Held)).then_some(observed);
        Some(verdict)
    }

    fn clear(&mut self) {
        self.last = None;
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
                "no leader seen, but a quorum of voters answers its status: etcd elects a \
                 leader once they reach each other"
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
                    "quorum lost: {} do not answer and are gone from discovery; reseeding from \
                     {} (raft index {}, {} entries behind the highest seen) once every listed \
                     survivor's pilot names it",
                    names(unreachable),
                    seed.name,
                    seed.raft_index,
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
                .map(|(name, raft_index)| Survivor {
                    name: name.to_string(),
                    raft_index,
                })
                .collect(),
            unreachable: unreachable.iter().map(ToString::to_string).collect(),
            highest_seen: observed.highest_seen,
            seed_behind: seed.as_ref().map(|s| s.behind),
            seed: seed.map(|s| Survivor {
                name: s.name.to_string(),
                raft_index: s.raft_index,
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

/// Member names for people: `m1, m2`.
pub(crate) fn names(names: &[MemberName]) -> String {
    names
        .iter()
        .map(MemberName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
