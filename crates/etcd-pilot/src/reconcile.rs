//! The reconcile loop's step, run by every pilot while its etcd runs: observe the cluster,
//! compute the core's `plan`, publish it, and, on the coordinator only, execute at most one
//! action under the fence.
//!
//! The coordinator is the pilot next to the etcd leader. It holds [`COORDINATOR_KEY`] under a
//! lease; the key's create revision is its fencing token, and every cluster-wide write it makes
//! is a txn that compares that revision, so a deposed coordinator's writes fail. Each
//! membership call is preceded by a fenced write of the intent ([`INTENT_KEY`]) and followed
//! by one of its outcome. This module does not decide what to change (the core does) and does
//! not speak the etcd API itself (`etcd.rs` does).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use etcd_pilot_core::condition::{self, Condition};
use etcd_pilot_core::plan::{self, Action, Plan, Policy};
use etcd_pilot_core::{ClusterId, Health, Identity, MemberId, MemberName};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::aws::lifecycle::Terminating;
use crate::discovery::{Discovery as _, Provider};
use crate::dns::Records;
use crate::etcd::{self, ClientOptions, Created, Etcd, Lease};
use crate::metrics::{HealthLabel, KindLabel, Metrics};
use crate::state::{ActionStatus, MemberFaults, PilotStatus, PlanStatus};

/// Held under the coordinator's lease; its value is the coordinator's name.
pub(crate) const COORDINATOR_KEY: &str = "/etcd-pilot/coordinator";
/// The coordinator's last plan, written under the fence; read by `etcd-pilot plan`.
pub(crate) const PLAN_KEY: &str = "/etcd-pilot/coordinator/plan";
/// The membership change in flight (or the last one) and its state.
pub(crate) const INTENT_KEY: &str = "/etcd-pilot/coordinator/intent";

/// How often the coordinator rewrites an unchanged plan record: the heartbeat that lets
/// `etcd-pilot plan` tell a live record from a stale one.
const RECORD_EVERY: Duration = Duration::from_secs(5);

/// What a step found about this node itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Continue,
    /// This node's etcd is not the member its data's marker describes (it answers as another
    /// cluster or member): stop it, quarantine its data once, and join afresh.
    Quarantine {
        reason: String,
    },
    /// This node's data may not be, or no longer be, the cluster's: another cluster answers
    /// (through other members while the local one has no leader, or from most of the listed
    /// peers), or the leader's list lacks this member (removed). A stray etcd can cause
    /// either, so the start decision, from what the peers' pilots say, tells whether the data
    /// goes aside; otherwise etcd keeps running.
    Recheck,
}

/// The role of coordinator, while held.
struct Coordinator {
    lease: Lease,
    token: i64,
    client: Etcd,
    last_record: Option<(Instant, String)>,
}

pub(crate) struct Reconciler {
    name: MemberName,
    /// This node's peer URL, to find its member before etcd has started it.
    peer_url: String,
    options: ClientOptions,
    /// Connections to every member, kept between steps.
    pool: etcd::Pool,
    /// For peer pilots' `/v1/status`; every request has a timeout.
    http: reqwest::Client,
    policy: Policy,
    lease_ttl: Duration,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
    coordinator: Option<Coordinator>,
    unlisted_since: HashMap<MemberId, Instant>,
    pending_since: HashMap<MemberId, Instant>,
    /// Since when each member that is not healthy has been seen so.
    down_since: HashMap<MemberId, Instant>,
    /// Instances the lifecycle hook says are terminating (empty without a hook).
    terminating: Terminating,
    /// DNS records of the healthy voters, published while coordinator (if configured).
    dns: Option<Records>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn plan_summary(plan: &Plan) -> (String, String) {
    match plan {
        Plan::Converged => (
            "converged".to_owned(),
            "membership matches discovery and every member is a healthy voter".to_owned(),
        ),
        Plan::Wait { reason } => ("wait".to_owned(), reason.clone()),
        Plan::Act { action, reason } => (action.kind().to_owned(), reason.clone()),
    }
}

impl Reconciler {
    /// `me` is this node as a peer (its name and peer URL identify its member).
    pub(crate) fn new(
        me: etcd_pilot_core::Peer,
        options: ClientOptions,
        http: reqwest::Client,
        policy: Policy,
        lease_ttl: Duration,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
    ) -> Self {
        Self {
            name: me.name,
            peer_url: me.peer_url,
            pool: etcd::Pool::new(options.clone()),
            options,
            http,
            policy,
            lease_ttl,
            status,
            metrics,
            coordinator: None,
            unlisted_since: HashMap::new(),
            pending_since: HashMap::new(),
            down_since: HashMap::new(),
            terminating: Terminating::default(),
            dns: None,
        }
    }

    /// Marks the members of the instances in `terminating` for removal now.
    pub(crate) fn with_terminating(mut self, terminating: Terminating) -> Self {
        self.terminating = terminating;
        self
    }

    /// Publishes the healthy voters' DNS records while coordinator.
    pub(crate) fn with_dns(mut self, dns: Option<Records>) -> Self {
        self.dns = dns;
        self
    }

    /// One step: observe, plan, and (as coordinator) act once. `identity` is this node's
    /// member, from its marker; `local` its client URL.
    pub(crate) async fn step(
        &mut self,
        identity: Option<&Identity>,
        local: &str,
        discovery: &Provider,
    ) -> Outcome {
        let peers = discovery.peers().await;
        let mut endpoints = vec![local.to_owned()];
        if let Ok(peers) = &peers {
            endpoints.extend(peers.iter().map(|p| p.client_url.clone()));
        }
        // The leader's view: "our member is gone" must not come from a lagging member.
        // Asked through the local member first (one call), the others only if it does not answer.
        let found = match self.pool.leader_member_list(&endpoints[..1]).await {
            Some(found) => Some(found),
            None => self.pool.leader_member_list(&endpoints[1..]).await,
        };
        let Some((list, probes)) = found else {
            // Nothing known of the cluster's strength, except that this pilot sees no leader.
            self.metrics.fault_tolerance.set(-1);
            self.status.send_modify(|s| s.fault_tolerance = None);
            self.publish_plan(
                &Plan::Wait {
                    reason: "no member answers with a leader".to_owned(),
                },
                Vec::new(),
            );
            return Outcome::Continue;
        };
        if let Some(identity) = identity {
            if let Some(cluster_id) = identity.cluster_id
                && cluster_id != list.cluster_id
            {
                tracing::warn!(local = %cluster_id, live = %list.cluster_id, "the cluster answering is not the local data's");
                return Outcome::Recheck;
            }
            // Before etcd first answered, the marker has no member id: find the member by
            // name or peer URL instead.
            let ours = |m: &&etcd_pilot_core::Member| match identity.member_id {
                Some(id) => m.id == id,
                None => m.name.as_ref() == Some(&self.name) || m.peer_urls.contains(&self.peer_url),
            };
            if !list.members.iter().any(|m| ours(&m)) {
                tracing::warn!("the cluster no longer lists this member: it may have been removed");
                return Outcome::Recheck;
            }
        }
        // Listed peers that are not members of the cluster we see: if most of the other
        // peers answer as another cluster, ours may be the foreign one (data copied in, a
        // restart while the peers were electing): the start decision tells.
        if let Ok(peers) = &peers {
            let member_urls: Vec<&String> =
                list.members.iter().flat_map(|m| &m.client_urls).collect();
            let outsiders: Vec<String> = peers
                .iter()
                .filter(|p| p.name != self.name && !member_urls.contains(&&p.client_url))
                .map(|p| p.client_url.clone())
                .collect();
            if !outsiders.is_empty() {
                let n_others = peers.iter().filter(|p| p.name != self.name).count();
                let foreign = self
                    .pool
                    .cluster_ids(&outsiders)
                    .await
                    .iter()
                    .filter(|(_, id)| *id != list.cluster_id)
                    .count();
                if foreign * 2 > n_others {
                    tracing::warn!(cluster_id = %list.cluster_id, foreign, "most listed peers answer as another cluster");
                    return Outcome::Recheck;
                }
            }
        }
        let faults = match &peers {
            Ok(peers) => self.member_faults(&list.members, &probes, peers).await,
            Err(_) => HashMap::new(),
        };
        let leader = probes.iter().flatten().find_map(|s| s.leader);
        let now = Instant::now();
        let discovery = match &peers {
            Ok(peers) => plan::Discovery::Listed(peers.clone()),
            Err(err) => plan::Discovery::Failed {
                error: crate::error::error_chain(err),
            },
        };
        let mut members = Vec::new();
        for (member, probe) in list.members.iter().zip(&probes) {
            let fault = faults.get(&member.id);
            // What is known to be wrong: it answers as someone else, or its pilot cannot run
            // etcd. Shown in the plan, never a reason to remove it.
            let problem = match probe {
                Err(err @ etcd::Error::WrongIdentity { .. }) => Some(err.to_string()),
                _ => fault
                    .and_then(|f| f.cannot_run.as_ref())
                    .map(|reason| format!("cannot run etcd: {reason}")),
            };
            let unlisted = match &discovery {
                plan::Discovery::Listed(peers) => !plan::is_listed(member, peers),
                plan::Discovery::Failed { .. } => false,
            };
            let unlisted_for = if unlisted {
                Some(now - *self.unlisted_since.entry(member.id).or_insert(now))
            } else {
                self.unlisted_since.remove(&member.id);
                None
            };
            let pending_for = if member.is_learner {
                Some(now - *self.pending_since.entry(member.id).or_insert(now))
            } else {
                self.pending_since.remove(&member.id);
                None
            };
            let health = probe.as_ref().map_or(Health::Unknown, |s| s.health());
            let down_for = if health == Health::Healthy && problem.is_none() {
                self.down_since.remove(&member.id);
                None
            } else {
                Some(now - *self.down_since.entry(member.id).or_insert(now))
            };
            members.push(plan::ObservedMember {
                member: member.clone(),
                health,
                raft_index: probe.as_ref().ok().map(|s| s.raft_index),
                unlisted_for,
                pending_for,
                down_for,
                data_unusable: fault.is_some_and(|f| f.data_unusable.is_some()),
                terminating: member
                    .name
                    .as_ref()
                    .is_some_and(|n| self.terminating.contains(n.as_str())),
                problem,
            });
        }
        let ids: Vec<MemberId> = list.members.iter().map(|m| m.id).collect();
        self.unlisted_since.retain(|id, _| ids.contains(id));
        self.pending_since.retain(|id, _| ids.contains(id));
        self.down_since.retain(|id, _| ids.contains(id));
        for health in [Health::Healthy, Health::Unhealthy, Health::Unknown] {
            let n = members.iter().filter(|m| m.health == health).count();
            self.metrics
                .members
                .get_or_create(&HealthLabel {
                    health: format!("{health:?}").to_lowercase(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }

        let tolerance = condition::fault_tolerance(&members);
        self.metrics.fault_tolerance.set(
            tolerance
                .can_lose
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        self.status
            .send_modify(|s| s.fault_tolerance = Some(tolerance));
        let observed = plan::Observed {
            members,
            leader,
            discovery,
        };
        let plan = plan::plan(&observed, &self.policy);
        let conditions = condition::conditions(&observed, &self.policy);
        let my_id = identity.and_then(|i| i.member_id);
        self.maintain_role(
            leader.is_some() && leader == my_id,
            list.cluster_id,
            local,
            &plan,
            &conditions,
        )
        .await;
        self.publish_plan(&plan, conditions);
        if let (Some(coordinator), Plan::Act { action, reason }) = (&self.coordinator, &plan) {
            let (token, client) = (coordinator.token, coordinator.client.clone());
            self.execute(&client, token, action, reason, &observed)
                .await;
        }
        if let Some(dns) = &mut self.dns {
            if self.coordinator.is_some() {
                dns.publish(&crate::dns::published(&observed.members)).await;
            } else {
                dns.forget();
            }
        }
        Outcome::Continue
    }

    /// What the pilots of members that are not healthy say is wrong with them (data
    /// unusable, or etcd cannot run). Only members that are not healthy are asked (a member
    /// with either fault cannot be), so a healthy cluster costs no calls.
    async fn member_faults(
        &self,
        members: &[etcd_pilot_core::Member],
        probes: &[etcd::Result<etcd::EndpointStatus>],
        peers: &[etcd_pilot_core::Peer],
    ) -> HashMap<MemberId, MemberFaults> {
        let mut set = tokio::task::JoinSet::new();
        for (member, probe) in members.iter().zip(probes) {
            if probe.as_ref().is_ok_and(|s| s.health() == Health::Healthy) {
                continue;
            }
            let Some(peer) = peers.iter().find(|p| Some(&p.name) == member.name.as_ref()) else {
                continue;
            };
            let (url, http, id) = (
                format!("{}/v1/status", peer.admin_url),
                self.http.clone(),
                member.id,
            );
            set.spawn(async move {
                let faults: MemberFaults = http.get(url).send().await.ok()?.json().await.ok()?;
                Some((id, faults))
            });
        }
        set.join_all().await.into_iter().flatten().collect()
    }

    /// Keeps, takes or gives up the coordinator role. The fence is checked first: a
    /// coordinator that was paused writes its record, finds it rejected, and steps down.
    async fn maintain_role(
        &mut self,
        leads: bool,
        cluster_id: ClusterId,
        local: &str,
        plan: &Plan,
        conditions: &[Condition],
    ) {
        if let Some(coordinator) = &mut self.coordinator {
            let (next, reason) = plan_summary(plan);
            let record = serde_json::json!({
                "by": self.name.as_str(),
                "fencing_token": coordinator.token,
                "next": next,
                "reason": reason,
                "at": now_rfc3339(),
                "conditions": conditions,
            })
            .to_string();
            // Rewritten when what it says changes (not its ages: a reader ages them from
            // `at`), and every RECORD_EVERY as a heartbeat.
            let shape = format!(
                "{next}{reason}{:?}",
                conditions
                    .iter()
                    .map(|c| c.clone().timeless())
                    .collect::<Vec<_>>()
            );
            let due = coordinator
                .last_record
                .as_ref()
                .is_none_or(|(at, last)| at.elapsed() >= RECORD_EVERY || *last != shape);
            let mut keep = true;
            if due {
                match coordinator
                    .client
                    .put_fenced(COORDINATOR_KEY, coordinator.token, PLAN_KEY, &record)
                    .await
                {
                    Ok(true) => coordinator.last_record = Some((Instant::now(), shape)),
                    Ok(false) => {
                        tracing::warn!(
                            fencing_token = coordinator.token,
                            "fenced write rejected: another pilot holds the coordinator role now; stepping down"
                        );
                        keep = false;
                    }
                    Err(err) => tracing::warn!("cannot write the plan record: {err:#}"),
                }
            }
            if keep && let Err(err) = coordinator.lease.refresh().await {
                tracing::warn!("coordinator lease lost, stepping down: {err:#}");
                keep = false;
            }
            if keep && !leads {
                tracing::info!("the local member no longer leads; giving up the coordinator role");
                if let Err(err) = coordinator.client.revoke_lease(coordinator.lease.id).await {
                    tracing::debug!("cannot revoke the coordinator lease, it will expire: {err:#}");
                }
                keep = false;
            }
            if !keep {
                self.coordinator = None;
                self.metrics.coordinator.set(0);
            }
            return;
        }
        if !leads {
            return;
        }
        match self.acquire(local).await {
            Ok(Some(coordinator)) => {
                tracing::info!(fencing_token = coordinator.token, %cluster_id, "became the coordinator");
                self.metrics.coordinator.set(1);
                self.coordinator = Some(coordinator);
            }
            Ok(None) => {}
            Err(err) => tracing::debug!("cannot take the coordinator role: {err:#}"),
        }
    }

    async fn acquire(&self, local: &str) -> anyhow::Result<Option<Coordinator>> {
        let client = Etcd::connect_one(local, &self.options).await?;
        let lease = client.grant_lease(self.lease_ttl).await?;
        match client
            .create_if_absent(COORDINATOR_KEY, self.name.as_str(), lease.id)
            .await?
        {
            Created::Created { revision } => {
                if let Ok(Some(intent)) = client.get(INTENT_KEY).await
                    && intent.contains("\"state\":\"started\"")
                {
                    tracing::warn!(
                        %intent,
                        "the previous coordinator left a change unfinished; planning afresh from the live cluster"
                    );
                }
                Ok(Some(Coordinator {
                    lease,
                    token: revision,
                    client,
                    last_record: None,
                }))
            }
            Created::Exists { value, .. } => {
                tracing::debug!(holder = %value, "the coordinator role is held by another pilot");
                let _ = client.revoke_lease(lease.id).await;
                Ok(None)
            }
        }
    }

    /// Executes one action: fenced intent, the call, fenced outcome.
    async fn execute(
        &mut self,
        client: &Etcd,
        token: i64,
        action: &Action,
        reason: &str,
        observed: &plan::Observed,
    ) {
        let (member, target) = match action {
            Action::RemoveMember { id, .. }
            | Action::PromoteLearner { id }
            | Action::MoveLeader { to: id } => {
                let name = observed
                    .members
                    .iter()
                    .find(|m| m.member.id == *id)
                    .and_then(|m| m.member.name.clone())
                    .map_or_else(|| id.to_string(), |n| n.to_string());
                (name, *id)
            }
        };
        let intent = |state: &str| {
            serde_json::json!({
                "kind": action.kind(),
                "member": member,
                "member_id": target.to_string(),
                "reason": reason,
                "by": self.name.as_str(),
                "fencing_token": token,
                "state": state,
                "at": now_rfc3339(),
            })
            .to_string()
        };
        match client
            .put_fenced(COORDINATOR_KEY, token, INTENT_KEY, &intent("started"))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("fenced intent rejected: no longer the coordinator; stepping down");
                self.coordinator = None;
                self.metrics.coordinator.set(0);
                return;
            }
            Err(err) => {
                tracing::warn!("cannot record the intent, not acting: {err:#}");
                return;
            }
        }
        tracing::info!(kind = action.kind(), %member, member_id = %target, %reason, "membership change");
        let result = match action {
            Action::RemoveMember { id, .. } => client.remove_member(*id).await,
            Action::PromoteLearner { id } => client.promote_member(*id).await,
            Action::MoveLeader { to } => client.move_leader(*to).await,
        };
        if matches!(action, Action::RemoveMember { .. }) && result.is_ok() {
            // Crash test: the coordinator dies between MemberRemove and recording the outcome.
            fail::fail_point!("after-member-remove", |_| std::process::abort());
        }
        let outcome = match &result {
            Ok(()) => {
                tracing::info!(kind = action.kind(), %member, "membership change done");
                self.metrics
                    .membership_changes
                    .get_or_create(&KindLabel {
                        kind: action.kind().to_owned(),
                    })
                    .inc();
                "ok".to_owned()
            }
            Err(err) => {
                // Expected now and then (a learner not caught up yet); the plan is retried.
                let why = crate::error::error_chain(err);
                tracing::info!(kind = action.kind(), %member, "membership change failed, will re-plan: {why}");
                why
            }
        };
        let state = if result.is_ok() { "done" } else { "failed" };
        if let Ok(false) = client
            .put_fenced(COORDINATOR_KEY, token, INTENT_KEY, &intent(state))
            .await
        {
            tracing::warn!("fenced outcome rejected: no longer the coordinator; stepping down");
            self.coordinator = None;
            self.metrics.coordinator.set(0);
        }
        self.status.send_modify(|s| {
            s.last_action = Some(ActionStatus {
                kind: action.kind().to_owned(),
                member: member.clone(),
                outcome,
                at: now_rfc3339(),
            });
        });
    }

    fn publish_plan(&self, plan: &Plan, conditions: Vec<Condition>) {
        let (next, reason) = plan_summary(plan);
        let coordinator = self.coordinator.as_ref().map(|c| c.token);
        self.status.send_modify(|s| {
            s.plan = Some(PlanStatus {
                next,
                reason,
                coordinator: coordinator.is_some(),
                fencing_token: coordinator,
                at: now_rfc3339(),
                conditions,
            });
        });
    }

    /// Gives up the role at shutdown, so the next coordinator need not wait for the lease.
    pub(crate) async fn resign(&mut self) {
        if let Some(coordinator) = self.coordinator.take() {
            let _ = coordinator.client.revoke_lease(coordinator.lease.id).await;
            self.metrics.coordinator.set(0);
            tracing::info!("gave up the coordinator role");
        }
    }
}
