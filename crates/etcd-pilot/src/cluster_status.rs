//! `etcd-pilot status` (a table of the cluster's members) and `etcd-pilot plan` (the
//! coordinator's next step and why), read through etcd's API.

use anyhow::Context as _;
use serde::Serialize;

use std::time::SystemTime;

use etcd_pilot_core::condition::{self, Condition};
use etcd_pilot_core::plan;

use crate::etcd::{self, ClientOptions};
use crate::peer_api::PeerApi;
use crate::records::UpgradeSummary;
use crate::records::{
    self, COORDINATOR_KEY, INTENT_KEY, Intent, IntentState, PLAN_KEY, PlanRecord,
};

/// One member, as `status` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct MemberRow {
    pub(crate) name: String,
    pub(crate) id: String,
    /// leader, follower, learner, unstarted, or not-a-member (an endpoint that answers as
    /// another cluster).
    pub(crate) role: String,
    /// healthy, unhealthy, unknown (no answer), or foreign (answers as another member or
    /// cluster).
    pub(crate) health: String,
    pub(crate) raft_index: Option<u64>,
    pub(crate) revision: Option<i64>,
    pub(crate) db_size: Option<i64>,
    /// The part of the file holding live data (the rest is what a defragmentation frees).
    pub(crate) db_size_in_use: Option<i64>,
    /// The alarms the member reports (`NOSPACE`, `CORRUPT`) and other errors of its status.
    pub(crate) alarms: Vec<String>,
    pub(crate) version: Option<String>,
    pub(crate) client_url: Option<String>,
    pub(crate) error: Option<String>,
}

pub(crate) fn options() -> ClientOptions {
    ClientOptions {
        timeout: std::time::Duration::from_secs(2),
        credentials: None,
    }
}

/// What `etcd-pilot plan` shows: the coordinator's last plan record, read from etcd.
#[derive(Debug, Serialize)]
pub(crate) struct PlanView {
    /// The pilot holding the coordinator role, if any.
    pub(crate) coordinator: Option<String>,
    /// Its lease: seconds left and seconds granted (left = granted right after a renewal).
    pub(crate) coordinator_lease: Option<(i64, i64)>,
    /// Whether the coordinator's member answers healthy: a coordinator that does not keeps
    /// the role until its lease expires.
    pub(crate) coordinator_answers: Option<bool>,
    /// Its last plan record (next, reason, fencing token, time), as it wrote it.
    pub(crate) plan: Option<PlanRecord>,
    /// The last membership change it recorded, and its state.
    pub(crate) last_change: Option<Intent>,
    /// Why the records could not be read (no quorum, for one), if so.
    pub(crate) records_error: Option<String>,
    /// Why the plan record no longer says what the coordinator does, if it does not: its
    /// writer does not answer, or it is older than a live coordinator rewrites it.
    pub(crate) plan_stale: Option<String>,
    /// What the cluster can lose now, from the members' own answers (not the record).
    pub(crate) fault_tolerance: Option<etcd_pilot_core::FaultTolerance>,
    /// What keeps the cluster from full strength, with causes and ages ([`Shown`]).
    #[serde(flatten)]
    pub(crate) shown: Shown,
    /// Without a quorum: each answering pilot's view of the loss, read from its admin API.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) quorum: Vec<PilotQuorum>,
    /// The flags of the releases the members run, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) release_warnings: Vec<String>,
}

/// One pilot's view of a lost quorum.
#[derive(Debug, Serialize)]
pub(crate) struct PilotQuorum {
    pub(crate) pilot: String,
    #[serde(flatten)]
    pub(crate) view: crate::peer_api::PeerQuorum,
}

/// The conditions `plan` and `status` show: the coordinator's, aged to now, while its record
/// is fresh (it knows discovery and how long each has lasted); otherwise those a live probe
/// of the members finds, without ages.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Shown {
    pub(crate) conditions: Vec<Condition>,
    /// Each condition in words.
    pub(crate) degraded: Vec<String>,
    /// Where they come from.
    pub(crate) conditions_from: String,
}

/// How far ahead of this machine's clock a record's time may be and still be aged.
const CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// The coordinator's records, as read from one member.
struct Records {
    coordinator: Option<String>,
    plan: Option<PlanRecord>,
    last_change: Option<Intent>,
    lease: Option<(i64, i64)>,
}

/// Reads the coordinator's records through the first of `members` that answers.
async fn records(members: &[String], options: &ClientOptions) -> Result<Records, etcd::Error> {
    let mut last_err = etcd::Error::Unexpected {
        op: "read the coordinator's records",
        what: "no member answers",
    };
    for endpoint in members {
        let result = async {
            let client = crate::etcd::Etcd::connect_one(endpoint, options).await?;
            let coordinator = client.get(COORDINATOR_KEY).await?;
            let plan = client.get(PLAN_KEY).await?;
            let intent = client.get(INTENT_KEY).await?;
            let lease = client.key_lease(COORDINATOR_KEY).await.unwrap_or(None);
            Ok::<_, crate::etcd::Error>((coordinator, plan, intent, lease))
        }
        .await;
        match result {
            Ok((coordinator, plan, intent, lease)) => {
                // A record this pilot cannot read (another version's) is shown as absent.
                return Ok(Records {
                    coordinator,
                    plan: plan.and_then(|t| records::decode(PLAN_KEY, &t).ok()),
                    last_change: intent.and_then(|t| records::decode(INTENT_KEY, &t).ok()),
                    lease,
                });
            }
            Err(err) => last_err = err,
        }
    }
    Err(last_err)
}

/// The cluster as one look at `list` and its probes shows it, for the core's conditions:
/// ages unknown, discovery not asked (the coordinator's record knows both).
fn live_observed(
    list: &etcd::MemberList,
    probes: &[etcd::Result<etcd::EndpointStatus>],
) -> plan::Observed {
    let members = list
        .members
        .iter()
        .zip(probes)
        .map(|(member, probe)| plan::ObservedMember {
            problem: match probe {
                Ok(status) if status.health() != etcd_pilot_core::Health::Healthy => Some(format!(
                    "answers but is not healthy ({})",
                    if status.leader.is_none() {
                        "it has no leader".to_owned()
                    } else {
                        status.errors.join(", ")
                    }
                )),
                Ok(_) => None,
                Err(err @ etcd::Error::WrongIdentity { .. }) => Some(err.to_string()),
                Err(err) if member.is_started() => Some(format!("does not answer: {err}")),
                Err(_) => None,
            },
            ..plan::ObservedMember::probed(
                member.clone(),
                probe.as_ref().ok().map(|s| (s.health(), s.raft_index)),
            )
        })
        .collect();
    plan::Observed {
        members,
        leader: probes.iter().flatten().find_map(|s| s.leader),
        discovery: plan::Discovery::Failed {
            error: "not asked by this command".to_owned(),
        },
    }
}

/// The client URLs of the members that answered their probe: where the records are read.
fn answering(
    list: &etcd::MemberList,
    probes: &[etcd::Result<etcd::EndpointStatus>],
) -> Vec<String> {
    list.members
        .iter()
        .zip(probes)
        .filter(|(_, probe)| probe.is_ok())
        .filter_map(|(m, _)| m.client_urls.first().cloned())
        .collect()
}

/// What to show of `live` and the coordinator's plan record, at `now`.
/// A plan record says what the coordinator sees while its writer still holds the role (the
/// role's key lives under a lease the coordinator renews each step) and answers healthy: it
/// is rewritten whenever what it says changes, so its age alone says nothing.
fn shown(
    live: &plan::Observed,
    record: Option<&PlanRecord>,
    coordinator: Option<&str>,
    now: SystemTime,
) -> Shown {
    let from_record = record.and_then(|record| {
        let at = humantime::parse_rfc3339(&record.at).ok()?;
        // A record from the future is a clock we cannot trust to age it.
        if at
            .duration_since(now)
            .is_ok_and(|ahead| ahead > CLOCK_SLACK)
        {
            return None;
        }
        let age = now.duration_since(at).unwrap_or_default();
        let conditions = record.conditions.clone()?;
        // Its writer must still answer healthy: a dead coordinator's last record says
        // nothing of its own loss.
        let by = record.by.as_str();
        let writer_answers = live.members.iter().any(|m| {
            m.member.name.as_ref().is_some_and(|n| n.as_str() == by)
                && m.health == etcd_pilot_core::Health::Healthy
                && m.problem.is_none()
        });
        (coordinator == Some(by) && writer_answers).then(|| {
            (
                conditions
                    .into_iter()
                    .map(|c| c.aged(age.as_secs()))
                    .collect::<Vec<_>>(),
                format!(
                    "the coordinator's record ({by}, written {} s ago, aged since)",
                    age.as_secs()
                ),
            )
        })
    });
    let (conditions, from) = from_record.unwrap_or_else(|| {
        (
            condition::conditions(live, &crate::config::Timers::default().plan_policy()),
            "a live probe of the members; no fresh coordinator record, so ages and \
             discovery are unknown"
                .to_owned(),
        )
    });
    Shown {
        degraded: conditions.iter().map(Condition::describe).collect(),
        conditions,
        conditions_from: from,
    }
}

pub(crate) async fn plan(endpoints: &[String]) -> anyhow::Result<PlanView> {
    let options = options();
    // Read the records from members of the cluster most endpoints answer for, never from an
    // etcd that answers as a cluster of its own.
    // (A member URL answering as another cluster fails its probe and is skipped.)
    let pool = etcd::Pool::new(options.clone());
    let Some(list) = pool.agreed_member_list(endpoints).await else {
        let pilots = pilot_reasons(endpoints).await;
        anyhow::bail!(
            "no member answered at {}; is the cluster running?{pilots}",
            endpoints.join(",")
        );
    };
    let probes = pool.probe_members(&list).await;
    let live = live_observed(&list, &probes);
    let healthy_names: Vec<String> = live
        .members
        .iter()
        .filter(|m| m.health == etcd_pilot_core::Health::Healthy && m.problem.is_none())
        .filter_map(|m| m.member.name.as_ref().map(ToString::to_string))
        .collect();
    let answering = answering(&list, &probes);
    let tolerance = condition::fault_tolerance(&live.members);
    let fault_tolerance = Some(tolerance);
    let release_warnings = release_warnings(list.members.iter().zip(&probes).filter_map(
        |(member, probe)| {
            let name = member.name.as_ref()?.as_str();
            Some((name, probe.as_ref().ok()?.version.as_str()))
        },
    ));
    // Without a quorum the records cannot be read (each read would time out).
    let read = if tolerance.can_lose.is_some() {
        records(&answering, &options)
            .await
            .map_err(|err| format!("{:#}", anyhow::Error::from(err)))
    } else {
        Err("the cluster has lost its quorum, and the records are read through it".to_owned())
    };
    match read {
        Ok(mut records) => {
            already_done(&mut records.plan, records.last_change.as_ref());
            let coordinator_answers = records
                .coordinator
                .as_ref()
                .map(|name| healthy_names.iter().any(|h| h == name));
            let plan_stale = records
                .plan
                .as_ref()
                .and_then(|plan| stale(plan, &healthy_names, records.coordinator.as_deref()));
            let shown = shown(
                &live,
                records.plan.as_ref(),
                records.coordinator.as_deref(),
                SystemTime::now(),
            );
            Ok(PlanView {
                coordinator: records.coordinator,
                coordinator_lease: records.lease,
                coordinator_answers,
                shown,
                plan: records.plan,
                last_change: records.last_change,
                records_error: None,
                plan_stale,
                fault_tolerance,
                quorum: Vec::new(),
                release_warnings,
            })
        }
        Err(err) => Ok(PlanView {
            quorum: pilots_quorum(&list).await,
            coordinator: None,
            coordinator_lease: None,
            coordinator_answers: None,
            plan: None,
            last_change: None,
            records_error: Some(err),
            plan_stale: None,
            fault_tolerance,
            shown: shown(&live, None, None, SystemTime::now()),
            release_warnings,
        }),
    }
}

/// What the pilots of `list`'s members say of a lost quorum (asked at each member's client
/// host on the default admin port, concurrently).
pub(crate) async fn pilots_quorum(list: &etcd::MemberList) -> Vec<PilotQuorum> {
    let Ok(peers) = PeerApi::new(std::time::Duration::from_secs(2)) else {
        return Vec::new();
    };
    let mut asks = tokio::task::JoinSet::new();
    for member in &list.members {
        let Some(host) = member
            .client_urls
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
        else {
            continue;
        };
        let peers = peers.clone();
        asks.spawn(async move {
            let admin = format!("http://{host}:{}", crate::config::ADMIN_PORT);
            let status = peers.status(&admin).await?;
            let mut view = *status.quorum?;
            view.manual = status.reseed_order;
            Some(PilotQuorum {
                pilot: status.name.unwrap_or(host),
                view,
            })
        });
    }
    let mut views: Vec<PilotQuorum> = asks.join_all().await.into_iter().flatten().collect();
    views.sort_by(|a, b| a.pilot.cmp(&b.pilot));
    views
}

/// Why `plan` (a plan record) no longer says what the coordinator does, if so: its writer
/// does not answer healthy, or no longer holds the coordinator role.
fn stale(plan: &PlanRecord, healthy: &[String], coordinator: Option<&str>) -> Option<String> {
    let by = plan.by.as_str();
    if !healthy.iter().any(|h| h == by) {
        return Some(format!(
            "written by {by}, which does not answer; the next coordinator plans again"
        ));
    }
    (coordinator != Some(by)).then(|| {
        format!(
            "written by {by}, which no longer holds the coordinator role; the next coordinator \
             writes its own"
        )
    })
}

/// A plan record written before the change it names was made: the change is done, so the
/// next step is whatever the coordinator plans next, not that change again.
fn already_done(plan: &mut Option<PlanRecord>, last: Option<&Intent>) {
    let (Some(plan), Some(last)) = (plan.as_mut(), last) else {
        return;
    };
    // RFC 3339 times of one format compare as text.
    if last.state == IntentState::Done && last.kind == plan.next && last.at >= plan.at {
        plan.next = "re-planning".to_owned();
        plan.reason = format!(
            "the last change ({} {}) is done; the coordinator plans again within a second",
            last.kind, last.member
        );
    }
}

/// What the pilots beside `endpoints` (their admin API on the same host, default port) say
/// they are doing and why: with no etcd answering, that is the plan (waiting for peers,
/// restoring a backup, refusing to create an empty cluster).
async fn pilot_reasons(endpoints: &[String]) -> String {
    let Ok(peers) = PeerApi::new(std::time::Duration::from_secs(2)) else {
        return String::new();
    };
    let mut out = String::new();
    for endpoint in endpoints {
        let Some(host) = url::Url::parse(endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        else {
            continue;
        };
        let admin = format!("http://{host}:{}", crate::config::ADMIN_PORT);
        if let Some(status) = peers.status(&admin).await {
            out.push_str(&format!(
                "\n  pilot {} ({host}): {}: {}",
                status.name.as_deref().unwrap_or("?"),
                status.phase.as_deref().unwrap_or("?"),
                status.reason.as_deref().unwrap_or("?")
            ));
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("\nthe pilots say:{out}")
    }
}

/// The plan for people.
pub(crate) fn plan_text(view: &PlanView) -> String {
    let plan = |f: fn(&PlanRecord) -> String| view.plan.as_ref().map_or_else(|| "-".to_owned(), f);
    let mut out = String::new();
    match &view.coordinator {
        Some(name) if view.coordinator_answers == Some(false) => out.push_str(&format!(
            "coordinator:  unknown: {name} holds the role but does not answer{}\n",
            view.coordinator_lease.map_or_else(String::new, |(left, _)| format!(
                " (its lease expires in {left} s; then the pilot next to the leader takes over)"
            ))
        )),
        Some(name) => out.push_str(&format!(
            "coordinator:  {name} (fencing token {}{})\n",
            plan(|p| p.fencing_token.to_string()),
            view.coordinator_lease.map_or_else(String::new, |(left, granted)| format!(
                ", lease renewed {} s ago",
                (granted - left).max(0)
            ))
        )),
        None if view.records_error.is_some() => {
            out.push_str("coordinator:  unknown (its records cannot be read, see below)\n")
        }
        None => out.push_str("coordinator:  none (the pilot next to the leader takes the role within a few seconds)\n"),
    }
    if let Some(tolerance) = &view.fault_tolerance {
        out.push_str(&format!("tolerance:    {}\n", tolerance.describe()));
    }
    for line in &view.shown.degraded {
        out.push_str(&format!("degraded:     {line}\n"));
    }
    if !view.shown.degraded.is_empty() {
        out.push_str(&format!(
            "              (from {})\n",
            view.shown.conditions_from
        ));
    }
    if let Some(err) = &view.records_error {
        out.push_str(&format!(
            "records:      the coordinator's records cannot be read: {err}\n"
        ));
    }
    for pilot in &view.quorum {
        let q = &pilot.view;
        out.push_str(&format!(
            "quorum:       {} says: {}\n",
            pilot.pilot, q.verdict
        ));
        let survivors: Vec<String> = q
            .survivors
            .iter()
            .map(|s| format!("{} (raft index {})", s.name, s.raft_index))
            .collect();
        out.push_str(&format!(
            "              survivors: {}; lost for {} s\n",
            if survivors.is_empty() {
                "none".to_owned()
            } else {
                survivors.join(", ")
            },
            q.lost_for_secs
        ));
        if let (Some(seed), Some(behind)) = (&q.seed, q.seed_behind) {
            out.push_str(&format!(
                "              seed: {} (raft index {}, {behind} entries behind the highest seen, {})\n",
                seed.name, seed.raft_index, q.highest_seen
            ));
        }
        if let Some(manual) = &q.manual {
            out.push_str(&format!("              operator: {manual}\n"));
        }
    }
    out.push_str(&format!(
        "next:         {}{}\n",
        plan(|p| p.next.clone()),
        if view.plan_stale.is_some() {
            " (stale record, see below)"
        } else {
            ""
        }
    ));
    out.push_str(&format!("why:          {}\n", plan(|p| p.reason.clone())));
    out.push_str(&format!("planned at:   {}\n", plan(|p| p.at.clone())));
    if let Some(stale) = &view.plan_stale {
        out.push_str(&format!("stale:        {stale}\n"));
    }
    if let Some(upgrade) = view.plan.as_ref().and_then(|p| p.upgrade.as_ref()) {
        out.push_str(&upgrade_text(upgrade, "upgrade:      ", "              "));
    }
    if let Some(m) = view.plan.as_ref().and_then(|p| p.maintenance.as_ref()) {
        out.push_str(&format!("maintenance:  {}: {}\n", m.next, m.reason));
    }
    if let Some(last) = &view.last_change {
        out.push_str(&format!(
            "last change:  {} {} ({}, {})\n",
            last.kind,
            last.member,
            last.state.as_str(),
            last.at
        ));
    }
    for line in &view.release_warnings {
        out.push_str(&format!("warning:      {line}\n"));
    }
    out
}

/// What `etcd-pilot status` shows: the members, what the cluster can lose, and what keeps it
/// from full strength.
#[derive(Debug, Serialize)]
pub(crate) struct StatusView {
    pub(crate) members: Vec<MemberRow>,
    pub(crate) fault_tolerance: etcd_pilot_core::FaultTolerance,
    /// The flags of the releases the members run (core `upgrade::FLAGGED`), one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) release_warnings: Vec<String>,
    /// A rolling upgrade of etcd, from the coordinator's record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) upgrade: Option<UpgradeSummary>,
    /// The next maintenance step (defragmentation, a space alarm), from the coordinator's
    /// record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maintenance: Option<crate::records::MaintenanceSummary>,
    #[serde(flatten)]
    pub(crate) shown: Shown,
}

pub(crate) async fn status(endpoints: &[String]) -> anyhow::Result<StatusView> {
    let (members, list, probes) = gather(endpoints).await?;
    let live = live_observed(&list, &probes);
    let answering = answering(&list, &probes);
    let fault_tolerance = condition::fault_tolerance(&live.members);
    // Without a quorum the records cannot be read (each read would time out).
    let (record, coordinator) = if fault_tolerance.can_lose.is_some() {
        records(&answering, &options())
            .await
            .ok()
            .map_or((None, None), |r| (r.plan, r.coordinator))
    } else {
        (None, None)
    };
    Ok(StatusView {
        release_warnings: release_warnings(
            members
                .iter()
                .filter_map(|r| Some((r.name.as_str(), r.version.as_deref()?))),
        ),
        members,
        fault_tolerance,
        upgrade: record.as_ref().and_then(|r| r.upgrade.clone()),
        maintenance: record.as_ref().and_then(|r| r.maintenance.clone()),
        shown: shown(
            &live,
            record.as_ref(),
            coordinator.as_deref(),
            SystemTime::now(),
        ),
    })
}

pub(crate) async fn collect(endpoints: &[String]) -> anyhow::Result<Vec<MemberRow>> {
    Ok(gather(endpoints).await?.0)
}

type Gathered = (
    Vec<MemberRow>,
    etcd::MemberList,
    Vec<etcd::Result<etcd::EndpointStatus>>,
);

/// The member list most `endpoints` agree on, and each member's status (its probe).
pub(crate) async fn probed_members(
    pool: &etcd::Pool,
    endpoints: &[String],
) -> anyhow::Result<(etcd::MemberList, Vec<etcd::Result<etcd::EndpointStatus>>)> {
    let list = pool.agreed_member_list(endpoints).await.with_context(|| {
        format!(
            "no member answered at {}; is the cluster running?",
            endpoints.join(",")
        )
    })?;
    let probes = pool.probe_members(&list).await;
    Ok((list, probes))
}

async fn gather(endpoints: &[String]) -> anyhow::Result<Gathered> {
    let pool = etcd::Pool::new(options());
    let (list, probes) = probed_members(&pool, endpoints).await?;
    let leader = probes.iter().flatten().find_map(|status| status.leader);
    // Endpoints that are not members and answer as another cluster: shown as such, never as
    // the cluster. (The members' own URLs were probed above.)
    let members_urls: Vec<&String> = list.members.iter().flat_map(|m| &m.client_urls).collect();
    let strangers: Vec<String> = endpoints
        .iter()
        .filter(|endpoint| !members_urls.contains(endpoint))
        .cloned()
        .collect();
    let foreign: Vec<(String, etcd_pilot_core::ClusterId)> = pool
        .cluster_ids(&strangers)
        .await
        .into_iter()
        .filter(|(_, id)| *id != list.cluster_id)
        .collect();
    let mut rows: Vec<MemberRow> = list
        .members
        .iter()
        .zip(&probes)
        .map(|(member, probe)| {
            let role = if !member.is_started() {
                "unstarted"
            } else if member.is_learner {
                "learner"
            } else if Some(member.id) == leader {
                "leader"
            } else {
                "follower"
            };
            let (health, status, error) = match probe {
                Ok(status) => (
                    format!("{:?}", status.health()).to_lowercase(),
                    Some(status),
                    None,
                ),
                Err(err @ etcd::Error::WrongIdentity { .. }) => {
                    ("foreign".to_owned(), None, Some(err.to_string()))
                }
                Err(err) => (
                    "unknown".to_owned(),
                    None,
                    Some(crate::error::error_chain(err)),
                ),
            };
            MemberRow {
                name: member
                    .name
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
                id: member.id.to_string(),
                role: role.to_owned(),
                health,
                raft_index: status.as_ref().map(|s| s.raft_index),
                revision: status.as_ref().map(|s| s.revision),
                db_size: status.as_ref().map(|s| s.db_size),
                db_size_in_use: status.as_ref().map(|s| s.db_size_in_use),
                alarms: status
                    .as_ref()
                    .map(|s| s.errors.clone())
                    .unwrap_or_default(),
                version: status.as_ref().map(|s| s.version.clone()),
                client_url: member.client_urls.first().cloned(),
                error,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.extend(foreign.into_iter().map(|(endpoint, cluster_id)| MemberRow {
        name: "-".to_owned(),
        id: "-".to_owned(),
        role: "not-a-member".to_owned(),
        health: "foreign".to_owned(),
        raft_index: None,
        revision: None,
        db_size: None,
        db_size_in_use: None,
        alarms: Vec::new(),
        version: None,
        error: Some(format!(
            "{endpoint} answers as cluster {cluster_id}, not as the cluster's {}",
            list.cluster_id
        )),
        client_url: Some(endpoint),
    }));
    Ok((rows, list, probes))
}

/// The cluster's client URLs in `format` (`etcdctl`, `patroni` or `json`): members that
/// have started, healthy voters first, then other voters, then learners; never an endpoint of
/// another cluster.
pub(crate) fn endpoints_text(rows: &[MemberRow], format: &str) -> anyhow::Result<String> {
    let rank = |r: &MemberRow| {
        let voter = r.role == "leader" || r.role == "follower";
        match (voter, r.health == "healthy") {
            (true, true) => 0,
            (true, false) => 1,
            _ => 2,
        }
    };
    let mut members: Vec<&MemberRow> = rows
        .iter()
        .filter(|r| r.role != "not-a-member" && r.role != "unstarted" && r.health != "foreign")
        .filter(|r| r.client_url.is_some())
        .collect();
    members.sort_by_key(|r| (rank(r), r.name.clone()));
    let urls: Vec<&str> = members
        .iter()
        .filter_map(|r| r.client_url.as_deref())
        .collect();
    Ok(match format {
        "patroni" => {
            let hosts: Vec<&str> = urls
                .iter()
                .map(|u| {
                    u.trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches('/')
                })
                .collect();
            let protocol = if urls.iter().any(|u| u.starts_with("https://")) {
                "https"
            } else {
                "http"
            };
            format!(
                "etcd3:\n  hosts: {}\n  protocol: {protocol}\n",
                hosts.join(",")
            )
        }
        "json" => serde_json::to_string_pretty(
            &members
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "name": r.name,
                        "client_url": r.client_url,
                        "role": r.role,
                        "health": r.health,
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        _ => urls.join(","),
    })
}

/// `status` for people: the table, what the cluster can lose, what keeps it from full
/// strength, and each member's error.
pub(crate) fn status_text(view: &StatusView) -> String {
    let mut out = table(&view.members);
    out.push_str(&format!(
        "fault tolerance: {}\n",
        view.fault_tolerance.describe()
    ));
    for line in &view.shown.degraded {
        out.push_str(&format!("degraded: {line}\n"));
    }
    if !view.shown.degraded.is_empty() {
        out.push_str(&format!("(from {})\n", view.shown.conditions_from));
    }
    for row in &view.members {
        if let Some(error) = &row.error {
            out.push_str(&format!("{}: {error}\n", row.name));
        }
    }
    if let Some(upgrade) = &view.upgrade {
        out.push_str(&upgrade_text(upgrade, "upgrade: ", "         "));
    }
    if let Some(m) = &view.maintenance {
        out.push_str(&format!("maintenance: {}: {}\n", m.next, m.reason));
    }
    for line in &view.release_warnings {
        out.push_str(&format!("warning: {line}\n"));
    }
    out
}

/// A rolling upgrade for people: the step and why, the target and cluster version, each
/// member; every line after the first indented by `indent`.
pub(crate) fn upgrade_text(upgrade: &UpgradeSummary, first: &str, indent: &str) -> String {
    let mut out = format!("{first}{}: {}\n", upgrade.next, upgrade.reason);
    out.push_str(&format!(
        "{indent}target etcd {}, cluster version {}, lock held by {}\n",
        upgrade.target.as_deref().unwrap_or("?"),
        upgrade.cluster_version.as_deref().unwrap_or("unknown"),
        upgrade.holder.as_deref().unwrap_or("nobody")
    ));
    for member in &upgrade.members {
        out.push_str(&format!("{indent}{member}\n"));
    }
    out
}

/// One line per flag of each release the members run: the release, who runs it, why, and
/// where etcd says so.
pub(crate) fn release_warnings<'a>(
    members: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let mut by_release: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    for (name, version) in members {
        by_release.entry(version).or_default().push(name);
    }
    let mut lines = Vec::new();
    for (release, mut names) in by_release {
        names.sort_unstable();
        let Ok(version) = release.parse::<etcd_pilot_core::upgrade::Version>() else {
            continue;
        };
        for flag in etcd_pilot_core::upgrade::warnings(version) {
            lines.push(format!(
                "etcd {release} ({}): {} [{}]",
                names.join(", "),
                flag.reason,
                flag.source
            ));
        }
    }
    lines
}

/// A fixed-width table, one member per line.
fn table(rows: &[MemberRow]) -> String {
    let dash = || "-".to_owned();
    let mut lines = vec![
        [
            "NAME",
            "ID",
            "ROLE",
            "HEALTH",
            "RAFT-INDEX",
            "REVISION",
            "DB-SIZE",
            "IN-USE",
            "ALARMS",
            "VERSION",
            "CLIENT-URL",
        ]
        .map(str::to_owned),
    ];
    for row in rows {
        lines.push([
            row.name.clone(),
            row.id.clone(),
            row.role.clone(),
            row.health.clone(),
            row.raft_index.map_or_else(dash, |v| v.to_string()),
            row.revision.map_or_else(dash, |v| v.to_string()),
            row.db_size.map_or_else(dash, human_bytes),
            row.db_size_in_use.map_or_else(dash, human_bytes),
            if row.alarms.is_empty() {
                dash()
            } else {
                row.alarms.join(",")
            },
            row.version.clone().unwrap_or_else(dash),
            row.client_url.clone().unwrap_or_else(dash),
        ]);
    }
    let widths: Vec<usize> = (0..11)
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn human_bytes(bytes: i64) -> String {
    let value = bytes as f64;
    if value >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", value / (1024.0 * 1024.0 * 1024.0))
    } else if value >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", value / (1024.0 * 1024.0))
    } else if value >= 1024.0 {
        format!("{:.0} KiB", value / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(by: &str, at: &str, next: &str) -> PlanRecord {
        PlanRecord {
            by: by.to_owned(),
            fencing_token: 3,
            next: next.to_owned(),
            reason: "m4 caught up".to_owned(),
            at: at.to_owned(),
            conditions: None,
            upgrade: None,
            maintenance: None,
        }
    }

    fn intent(state: IntentState, at: &str) -> Intent {
        Intent {
            kind: "promote_learner".to_owned(),
            member: "m4".to_owned(),
            member_id: "a0".to_owned(),
            reason: "caught up".to_owned(),
            by: "m1".to_owned(),
            fencing_token: 3,
            state,
            at: at.to_owned(),
        }
    }

    /// m1 healthy, m2 healthy, m3 does not answer (as a live probe sees them).
    fn live() -> plan::Observed {
        let member = |id: u64, healthy: bool| plan::ObservedMember {
            member: etcd_pilot_core::Member {
                id: etcd_pilot_core::MemberId(id),
                name: Some(etcd_pilot_core::MemberName::new(format!("m{id}")).unwrap()),
                peer_urls: vec![format!("http://m{id}:2380")],
                client_urls: vec![format!("http://m{id}:2379")],
                is_learner: false,
            },
            health: if healthy {
                etcd_pilot_core::Health::Healthy
            } else {
                etcd_pilot_core::Health::Unknown
            },
            raft_index: healthy.then_some(10),
            unlisted_for: None,
            pending_for: None,
            down_for: None,
            data_unusable: false,
            terminating: false,
            problem: (!healthy).then(|| "does not answer: refused".to_owned()),
        };
        plan::Observed {
            members: vec![member(1, true), member(2, true), member(3, false)],
            leader: Some(etcd_pilot_core::MemberId(1)),
            discovery: plan::Discovery::Failed {
                error: "not asked".to_owned(),
            },
        }
    }

    #[test]
    fn a_plan_record_is_stale_when_its_writer_is_silent_or_no_longer_coordinates() {
        let healthy = ["m1".to_owned(), "m2".to_owned()];
        let record = |by: &str, at: &str| record(by, at, "converged");
        // Old but its writer still coordinates: it is rewritten on change only.
        assert_eq!(
            stale(&record("m1", "2026-11-30T04:00:25Z"), &healthy, Some("m1")),
            None
        );
        assert!(
            stale(&record("m3", "2026-11-30T05:00:25Z"), &healthy, Some("m3"))
                .unwrap()
                .starts_with("written by m3, which does not answer")
        );
        assert!(
            stale(&record("m1", "2026-11-30T05:00:05Z"), &healthy, Some("m2"))
                .unwrap()
                .starts_with("written by m1, which no longer holds the coordinator role")
        );
        assert!(stale(&record("m1", "2026-11-30T05:00:05Z"), &healthy, None).is_some());
    }

    #[test]
    fn a_fresh_record_of_a_live_coordinator_is_shown_aged_otherwise_the_live_probe() {
        let now = humantime::parse_rfc3339("2026-11-30T05:00:10Z").unwrap();
        let record = |by: &str, at: &str| PlanRecord {
            conditions: Some(vec![Condition::VoterDown {
                member: "m3".to_owned(),
                cause: "does not answer".to_owned(),
                for_secs: Some(40),
                listed: Some(true),
            }]),
            ..record(by, at, "wait")
        };
        let fresh = shown(
            &live(),
            Some(&record("m1", "2026-11-30T05:00:04Z")),
            Some("m1"),
            now,
        );
        assert_eq!(
            fresh.degraded,
            ["m3: voter does not answer for 46 s; kept, because discovery lists it"]
        );
        assert!(
            fresh.conditions_from.contains("m1, written 6 s ago"),
            "{fresh:?}"
        );
        // An old record of the coordinator still says what it sees, aged.
        let old = shown(
            &live(),
            Some(&record("m1", "2026-11-30T04:59:00Z")),
            Some("m1"),
            now,
        );
        assert_eq!(
            old.degraded,
            ["m3: voter does not answer for 110 s; kept, because discovery lists it"]
        );
        // Written by a pilot that no longer coordinates, by a member that does not answer,
        // or from the future: the live probe (no ages, nothing said of discovery).
        for (record, coordinator) in [
            (record("m1", "2026-11-30T05:00:04Z"), Some("m2")),
            (record("m1", "2026-11-30T05:00:04Z"), None),
            (record("m3", "2026-11-30T05:00:04Z"), Some("m3")),
            (record("m1", "2026-11-30T05:01:00Z"), Some("m1")),
        ] {
            let said = shown(&live(), Some(&record), coordinator, now);
            assert_eq!(
                said.degraded,
                ["m3: voter does not answer: refused"],
                "{record:?}"
            );
            assert!(said.conditions_from.starts_with("a live probe"));
        }
    }

    #[test]
    fn a_plan_record_older_than_its_finished_change_is_not_shown_as_next() {
        let plan = |next: &str, at: &str| Some(record("m1", at, next));
        let done = intent(IntentState::Done, "2026-11-30T02:00:05Z");
        let mut stale = plan("promote_learner", "2026-11-30T02:00:04Z");
        already_done(&mut stale, Some(&done));
        let stale = stale.unwrap();
        assert_eq!(stale.next, "re-planning");
        assert!(stale.reason.contains("promote_learner m4"), "{stale:?}");
        // A newer record, another kind, or a change still running: shown as written.
        for (mut record, last) in [
            (
                plan("promote_learner", "2026-11-30T02:00:06Z"),
                done.clone(),
            ),
            (plan("wait", "2026-11-30T02:00:04Z"), done.clone()),
            (
                plan("promote_learner", "2026-11-30T02:00:04Z"),
                intent(IntentState::Started, "2026-11-30T02:00:05Z"),
            ),
        ] {
            let before = record.clone();
            already_done(&mut record, Some(&last));
            assert_eq!(record, before);
        }
    }
}
