//! The reconcile loop's step, run by every pilot while its etcd runs: observe the cluster,
//! compute the core's `plan` and conditions, publish them, and, on the coordinator only,
//! execute at most one action.
//!
//! The coordinator is the pilot next to the etcd leader; `coordinator.rs` takes and keeps the
//! role and makes its fenced writes. Each membership call is preceded by a fenced write of the
//! intent and followed by one of its outcome (`records::Intent`). This module does not decide
//! what to change (the core does) and does not speak the etcd API itself (`etcd.rs` does).

use std::collections::HashMap;

use etcd_pilot_core::condition::{self, Condition};
use etcd_pilot_core::plan::{self, Action, Plan, Policy};
use etcd_pilot_core::timers;
use etcd_pilot_core::{ClusterId, Health, Identity, MemberId, MemberName};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::coordinator::{Fenced, Seat};
use crate::discovery::{Discovery as _, Provider};
use crate::dns::Records;
use crate::etcd::{self, ClientOptions, EndpointStatus, Etcd};
use crate::lifecycle::Terminating;
use crate::maintenance::Maintenance;
use crate::metrics::{HealthLabel, KindLabel, Metrics};
use crate::peer_api::{PeerApi, PeerStatus};
use crate::records::{self, Intent, IntentState, PlanRecord};
use crate::rolling::Rolling;
use crate::state::{ActionStatus, PilotStatus, PlanStatus};

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
    /// The quorum is lost for good and this member is the seed (every other survivor's pilot
    /// names it, or an operator ordered it), its claim taken: stop etcd, copy its data aside
    /// and restart it alone (`quorum.rs`, `pilot/`). The record is written beside the data
    /// before etcd stops.
    Reseed(Box<records::Reseed>),
    /// A reseeded etcd leads alone: restart it without `--force-new-cluster`.
    Reseeded,
    /// Restart etcd on the binary recorded beside the data: a step of a rolling upgrade
    /// (this pilot holds the lock) or its rollback (`pilot/upgrade.rs`).
    Upgrade,
}

pub(crate) struct Reconciler {
    name: MemberName,
    /// This node's peer URL, to find its member before etcd has started it.
    peer_url: String,
    /// Connections to every member, kept between steps.
    pool: etcd::Pool,
    /// For peer pilots' `/v1/status`; every request has a timeout.
    peers: PeerApi,
    policy: Policy,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
    /// The coordinator role: taken when the local member leads.
    seat: Seat,
    /// How long each member has been unlisted, a learner, not healthy.
    timers: timers::Timers,
    /// The origin of the monotonic time the timers are given.
    started: Instant,
    /// Instances the lifecycle hook says are terminating (none without a hook).
    terminating: Option<Terminating>,
    /// DNS records of the healthy voters, published while coordinator (if configured).
    dns: Option<Records>,
    /// The rolling upgrade's step, looked at while the local member leads.
    rolling: Option<Rolling>,
    /// Compaction (sampled on every pilot, done by the coordinator).
    maintenance: Option<Maintenance>,
    /// The last maintenance step, for the plan record.
    maintenance_summary: Option<records::MaintenanceSummary>,
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
        peers: PeerApi,
        policy: Policy,
        seat: Seat,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
    ) -> Self {
        Self {
            name: me.name,
            peer_url: me.peer_url,
            pool: etcd::Pool::new(options),
            peers,
            policy,
            status,
            metrics,
            seat,
            timers: timers::Timers::default(),
            started: Instant::now(),
            terminating: None,
            dns: None,
            rolling: None,
            maintenance: None,
            maintenance_summary: None,
        }
    }

    /// Marks the members of the instances in `terminating` for removal now.
    pub(crate) fn with_terminating(mut self, terminating: Terminating) -> Self {
        self.terminating = Some(terminating);
        self
    }

    /// Samples the revision and, as coordinator, compacts.
    pub(crate) fn with_maintenance(mut self, maintenance: Maintenance) -> Self {
        self.maintenance = Some(maintenance);
        self
    }

    /// Looks at (and, as coordinator, carries out) rolling upgrades of etcd.
    pub(crate) fn with_rolling(mut self, rolling: Rolling) -> Self {
        self.rolling = Some(rolling);
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
        // Every line of the step says so, and under which fencing token it acted.
        let span = tracing::info_span!("reconcile", fencing_token = tracing::field::Empty);
        if let Some((token, _)) = self.seat.held() {
            span.record("fencing_token", token);
        }
        self.observe_and_act(identity, local, discovery)
            .instrument(span)
            .await
    }

    async fn observe_and_act(
        &mut self,
        identity: Option<&Identity>,
        local: &str,
        discovery: &Provider,
    ) -> Outcome {
        let (observed, cluster_id, statuses) = match self.observe(identity, local, discovery).await
        {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        self.publish_strength(&observed.members);
        self.act(&observed, cluster_id, &statuses, identity, local)
            .await;
        Outcome::Continue
    }

    /// The cluster as the leader sees it, with what discovery, the members' pilots and the
    /// timers add; or what this node must do about itself first (`Err`). With no leader in
    /// sight, the plan says so and the step ends (`Err(Continue)`).
    async fn observe(
        &mut self,
        identity: Option<&Identity>,
        local: &str,
        discovery: &Provider,
    ) -> Result<(plan::Observed, ClusterId, Vec<Option<EndpointStatus>>), Outcome> {
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
                None,
                None,
            );
            return Err(Outcome::Continue);
        };
        if let Some(identity) = identity {
            if let Some(cluster_id) = identity.cluster_id
                && cluster_id != list.cluster_id
            {
                tracing::warn!(local = %cluster_id, live = %list.cluster_id, "the cluster answering is not the local data's");
                return Err(Outcome::Recheck);
            }
            // Before etcd first answered, the marker has no member id: find the member by
            // name or peer URL instead.
            let ours = |m: &&etcd_pilot_core::Member| match identity.member_id {
                Some(id) => m.id == id,
                None => m.name.as_ref() == Some(&self.name) || m.peer_urls.contains(&self.peer_url),
            };
            if !list.members.iter().any(|m| ours(&m)) {
                tracing::warn!("the cluster no longer lists this member: it may have been removed");
                return Err(Outcome::Recheck);
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
                    return Err(Outcome::Recheck);
                }
            }
        }
        let faults = match &peers {
            Ok(peers) => self.member_faults(&list.members, &probes, peers).await,
            Err(_) => HashMap::new(),
        };
        let leader = probes.iter().flatten().find_map(|s| s.leader);
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
            members.push(plan::ObservedMember {
                data_unusable: fault.is_some_and(|f| f.data_unusable.is_some()),
                terminating: member.name.as_ref().is_some_and(|n| {
                    self.terminating
                        .as_ref()
                        .is_some_and(|t| t.borrow().contains(n.as_str()))
                }),
                problem,
                ..plan::ObservedMember::probed(
                    member.clone(),
                    probe.as_ref().ok().map(|s| (s.health(), s.raft_index)),
                )
            });
        }
        // How long each has been unlisted, a learner, not healthy (the core keeps the books).
        let seen: Vec<timers::Seen> = members
            .iter()
            .map(|m| timers::Seen {
                id: m.member.id,
                unlisted: match &discovery {
                    plan::Discovery::Listed(peers) => !plan::is_listed(&m.member, peers),
                    plan::Discovery::Failed { .. } => false,
                },
                pending: m.member.is_learner,
                down: m.health != Health::Healthy || m.problem.is_some(),
            })
            .collect();
        let ages = self.timers.observe(self.started.elapsed(), &seen);
        for (member, age) in members.iter_mut().zip(ages) {
            member.unlisted_for = age.unlisted_for;
            member.pending_for = age.pending_for;
            member.down_for = age.down_for;
        }
        Ok((
            plan::Observed {
                members,
                leader,
                discovery,
            },
            list.cluster_id,
            probes.into_iter().map(Result::ok).collect(),
        ))
    }

    /// Members by health, and what the cluster can lose, into the metrics and `/v1/status`.
    fn publish_strength(&self, members: &[plan::ObservedMember]) {
        for health in [Health::Healthy, Health::Unhealthy, Health::Unknown] {
            let n = members.iter().filter(|m| m.health == health).count();
            self.metrics
                .members
                .get_or_create(&HealthLabel {
                    health: format!("{health:?}").to_lowercase(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }

        let tolerance = condition::fault_tolerance(members);
        self.metrics.fault_tolerance.set(
            tolerance
                .can_lose
                .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        );
        self.status
            .send_modify(|s| s.fault_tolerance = Some(tolerance));
    }

    /// The core's plan and conditions for `observed`: published, recorded and (on the
    /// coordinator) acted on.
    async fn act(
        &mut self,
        observed: &plan::Observed,
        cluster_id: ClusterId,
        statuses: &[Option<EndpointStatus>],
        identity: Option<&Identity>,
        local: &str,
    ) {
        let leader = observed.leader;
        let plan = plan::plan(observed, &self.policy);
        let conditions = condition::conditions(observed, &self.policy);
        let my_id = identity.and_then(|i| i.member_id);
        let leads = leader.is_some() && leader == my_id;
        // The upgrade is looked at where the coordinator is (or is about to be).
        let upgrade = match (&mut self.rolling, leads) {
            (Some(rolling), true) => {
                let own = self.status.borrow().clone();
                Some(
                    rolling
                        .observe(observed, &plan, &self.pool, local, &own)
                        .await,
                )
            }
            _ => None,
        };
        if !leads && let Some(rolling) = &self.rolling {
            rolling.idle();
        }
        let summary = upgrade.as_ref().and_then(|u| u.summary.clone());
        // A coordinator acts on the upgrade from its second step on: what it read before it
        // held the role may predate its predecessor's last write.
        let held_before = self.seat.held().is_some();
        let (next, reason) = plan_summary(&plan);
        // What the record says without its ages: it is rewritten when that changes.
        let maintenance_summary = self.maintenance_summary.clone();
        let shape = format!(
            "{next}{reason}{:?}{summary:?}{maintenance_summary:?}",
            conditions
                .iter()
                .map(|c| c.clone().timeless())
                .collect::<Vec<_>>()
        );
        let record = |fencing_token| PlanRecord {
            by: self.name.to_string(),
            fencing_token,
            next,
            reason,
            at: records::now_rfc3339(),
            conditions: Some(conditions.clone()),
            upgrade: summary.clone(),
            maintenance: maintenance_summary.clone(),
        };
        self.seat
            .maintain(leads, cluster_id, local, record, shape)
            .await;
        self.publish_plan(&plan, conditions, summary.clone(), maintenance_summary);
        match (self.seat.held(), &plan) {
            (Some((token, client)), Plan::Act { action, reason }) => {
                let span = tracing::info_span!("membership_change", kind = action.kind());
                self.execute(&client, token, action, reason, observed)
                    .instrument(span)
                    .await;
            }
            (Some((token, client)), _) if held_before => {
                if let (Some(rolling), Some(seen)) = (&mut self.rolling, &upgrade) {
                    let span = tracing::info_span!("upgrade");
                    rolling
                        .act(seen, &mut self.seat, &client, token)
                        .instrument(span)
                        .await;
                }
            }
            _ => {}
        }
        if let Some(maintenance) = &mut self.maintenance {
            maintenance.sample(&self.pool, local).await;
            if let Some((_, client)) = self.seat.held() {
                maintenance.compact(&client, false).await;
            }
            // Defragmentation and space alarms: the lock as the upgrade read it (an
            // unreadable lock, or no upgrade view, grants nothing).
            let input = crate::maintenance::StepInput {
                observed,
                statuses,
                plan: &plan,
                lock: upgrade.as_ref().and_then(|u| u.lock_read()),
                upgrade_moving: upgrade.as_ref().is_some_and(|u| u.moving()),
                leads,
                held_before,
                local,
            };
            let span = tracing::info_span!("maintenance");
            self.maintenance_summary = maintenance
                .step(&input, &mut self.seat, &self.pool)
                .instrument(span)
                .await;
        }
        if let Some(dns) = &mut self.dns {
            if self.seat.held().is_some() {
                dns.publish(&crate::dns::published(&observed.members)).await;
            } else {
                dns.forget();
            }
        }
    }

    /// What the pilots of members that are not healthy say is wrong with them (data
    /// unusable, or etcd cannot run). Only members that are not healthy are asked (a member
    /// with either fault cannot be), so a healthy cluster costs no calls.
    async fn member_faults(
        &self,
        members: &[etcd_pilot_core::Member],
        probes: &[etcd::Result<etcd::EndpointStatus>],
        peers: &[etcd_pilot_core::Peer],
    ) -> HashMap<MemberId, PeerStatus> {
        let mut set = tokio::task::JoinSet::new();
        for (member, probe) in members.iter().zip(probes) {
            if probe.as_ref().is_ok_and(|s| s.health() == Health::Healthy) {
                continue;
            }
            let Some(peer) = peers.iter().find(|p| Some(&p.name) == member.name.as_ref()) else {
                continue;
            };
            let (admin_url, api, id) = (peer.admin_url.clone(), self.peers.clone(), member.id);
            set.spawn(async move { Some((id, api.status(&admin_url).await?)) });
        }
        set.join_all().await.into_iter().flatten().collect()
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
        let intent = |state| Intent {
            kind: action.kind().to_owned(),
            member: member.clone(),
            member_id: target.to_string(),
            reason: reason.to_owned(),
            by: self.name.to_string(),
            fencing_token: token,
            state,
            at: records::now_rfc3339(),
        };
        match self.seat.write_intent(&intent(IntentState::Started)).await {
            Fenced::Written => {}
            Fenced::Deposed => {
                tracing::warn!("fenced intent rejected: no longer the coordinator; stepping down");
                return;
            }
            Fenced::Failed(err) => {
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
        let state = if result.is_ok() {
            IntentState::Done
        } else {
            IntentState::Failed
        };
        match self.seat.write_intent(&intent(state)).await {
            Fenced::Written => {}
            Fenced::Deposed => {
                tracing::warn!("fenced outcome rejected: no longer the coordinator; stepping down");
            }
            Fenced::Failed(err) => tracing::warn!("cannot record the outcome: {err:#}"),
        }
        self.status.send_modify(|s| {
            s.last_action = Some(ActionStatus {
                kind: action.kind().to_owned(),
                member: member.clone(),
                outcome,
                at: records::now_rfc3339(),
            });
        });
    }

    fn publish_plan(
        &self,
        plan: &Plan,
        conditions: Vec<Condition>,
        upgrade: Option<records::UpgradeSummary>,
        maintenance: Option<records::MaintenanceSummary>,
    ) {
        let (next, reason) = plan_summary(plan);
        let coordinator = self.seat.held().map(|(token, _)| token);
        self.status.send_modify(|s| {
            s.plan = Some(PlanStatus {
                next,
                reason,
                coordinator: coordinator.is_some(),
                fencing_token: coordinator,
                at: records::now_rfc3339(),
                conditions,
                upgrade,
                maintenance,
            });
        });
    }

    /// Gives up the coordinator role (at shutdown, or when etcd stops).
    pub(crate) async fn resign(&mut self) {
        self.seat.resign().await;
    }
}
