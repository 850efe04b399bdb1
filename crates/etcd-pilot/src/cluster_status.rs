//! `etcd-pilot status` (a table of the cluster's members) and `etcd-pilot plan` (the
//! coordinator's next step and why), read through etcd's API.

use anyhow::Context as _;
use serde::Serialize;

use crate::etcd::{self, ClientOptions};

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
    pub(crate) version: Option<String>,
    pub(crate) client_url: Option<String>,
    pub(crate) error: Option<String>,
}

fn options() -> ClientOptions {
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
    pub(crate) plan: Option<serde_json::Value>,
    /// The last membership change it recorded, and its state.
    pub(crate) last_change: Option<serde_json::Value>,
    /// What the cluster can lose now, from the members' own answers (not the record).
    pub(crate) fault_tolerance: Option<etcd_pilot_core::FaultTolerance>,
    /// Every member that is not a healthy voter, and why.
    pub(crate) degraded: Vec<String>,
}

pub(crate) async fn plan(endpoints: &[String]) -> anyhow::Result<PlanView> {
    let options = options();
    let mut last_err = None;
    // Read the records from members of the cluster most endpoints answer for, never from an
    // etcd that answers as a cluster of its own.
    // (A member URL answering as another cluster fails its probe and is skipped.)
    let pool = etcd::Pool::new(options.clone());
    let mut members = Vec::new();
    let mut fault_tolerance = None;
    let mut degraded = Vec::new();
    let mut healthy_names = Vec::new();
    if let Some(list) = pool.agreed_member_list(endpoints).await {
        let probes = pool.probe_members(&list).await;
        healthy_names = list
            .members
            .iter()
            .zip(&probes)
            .filter(|(_, p)| {
                p.as_ref()
                    .is_ok_and(|s| s.health() == etcd_pilot_core::Health::Healthy)
            })
            .filter_map(|(m, _)| m.name.as_ref().map(ToString::to_string))
            .collect::<Vec<_>>();
        let (tolerance, said) = tolerance(&list, &probes);
        fault_tolerance = Some(tolerance);
        degraded = said;
        members = list
            .members
            .iter()
            .zip(probes)
            .filter(|(_, probe)| probe.is_ok())
            .filter_map(|(m, _)| m.client_urls.first().cloned())
            .collect();
    }
    for endpoint in &members {
        let result = async {
            let client = crate::etcd::Etcd::connect_one(endpoint, &options).await?;
            let coordinator = client.get(crate::reconcile::COORDINATOR_KEY).await?;
            let plan = client.get(crate::reconcile::PLAN_KEY).await?;
            let intent = client.get(crate::reconcile::INTENT_KEY).await?;
            let lease = client
                .key_lease(crate::reconcile::COORDINATOR_KEY)
                .await
                .unwrap_or(None);
            Ok::<_, crate::etcd::Error>((coordinator, plan, intent, lease))
        }
        .await;
        match result {
            Ok((coordinator, plan, intent, lease)) => {
                let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
                let mut plan: Option<serde_json::Value> = parse(plan);
                let last_change: Option<serde_json::Value> = parse(intent);
                already_done(&mut plan, last_change.as_ref());
                let coordinator_answers = coordinator
                    .as_ref()
                    .map(|name| healthy_names.iter().any(|h| h == name));
                return Ok(PlanView {
                    coordinator,
                    coordinator_lease: lease,
                    coordinator_answers,
                    plan,
                    last_change,
                    fault_tolerance,
                    degraded,
                });
            }
            Err(err) => last_err = Some(err),
        }
    }
    let pilots = pilot_reasons(endpoints).await;
    Err(anyhow::anyhow!(
        "no member answered at {}; is the cluster running? ({}){pilots}",
        endpoints.join(","),
        last_err.map_or_else(String::new, |e| format!("{:#}", anyhow::Error::from(e)))
    ))
}

/// A plan record written before the change it names was made: the change is done, so the
/// next step is whatever the coordinator plans next, not that change again.
fn already_done(plan: &mut Option<serde_json::Value>, last: Option<&serde_json::Value>) {
    let (Some(plan), Some(last)) = (plan.as_mut(), last) else {
        return;
    };
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    // RFC 3339 times of one format compare as text.
    if text(last, "state") == "done"
        && text(last, "kind") == text(plan, "next")
        && text(last, "at") >= text(plan, "at")
    {
        plan["next"] = serde_json::Value::String("re-planning".to_owned());
        plan["reason"] = serde_json::Value::String(format!(
            "the last change ({} {}) is done; the coordinator plans again within a second",
            text(last, "kind"),
            text(last, "member")
        ));
    }
}

/// The fault tolerance of `list` from its members' probes, and every member that is not a
/// healthy voter, in words.
fn tolerance(
    list: &etcd::MemberList,
    probes: &[etcd::Result<etcd::EndpointStatus>],
) -> (etcd_pilot_core::FaultTolerance, Vec<String>) {
    let mut voters = 0;
    let mut healthy = 0;
    let mut degraded = Vec::new();
    for (member, probe) in list.members.iter().zip(probes) {
        let name = member
            .name
            .as_ref()
            .map_or_else(|| member.id.to_string(), ToString::to_string);
        let ok = probe
            .as_ref()
            .is_ok_and(|s| s.health() == etcd_pilot_core::Health::Healthy);
        if !member.is_started() {
            degraded.push(format!("{name}: added, not started yet"));
            continue;
        }
        if member.is_learner {
            degraded.push(format!(
                "{name}: a learner catching up (the coordinator promotes it)"
            ));
            continue;
        }
        voters += 1;
        if ok {
            healthy += 1;
        } else {
            let why = match probe {
                Ok(status) => format!(
                    "answers but is not healthy (leader {:?}, errors {:?})",
                    status.leader.map(|l| l.to_string()),
                    status.errors
                ),
                Err(err) => format!("does not answer: {err}"),
            };
            degraded.push(format!("{name}: voter {why}"));
        }
    }
    (
        etcd_pilot_core::FaultTolerance::of(voters, healthy),
        degraded,
    )
}

/// What the pilots beside `endpoints` (their admin API on the same host, default port) say
/// they are doing and why: with no etcd answering, that is the plan (waiting for peers,
/// restoring a backup, refusing to create an empty cluster).
async fn pilot_reasons(endpoints: &[String]) -> String {
    let Ok(http) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    else {
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
        let admin = format!("http://{host}:{}/v1/status", crate::config::ADMIN_PORT);
        let Ok(response) = http.get(&admin).send().await else {
            continue;
        };
        if let Ok(status) = response.json::<serde_json::Value>().await {
            out.push_str(&format!(
                "\n  pilot {} ({host}): {}: {}",
                status["name"].as_str().unwrap_or("?"),
                status["phase"].as_str().unwrap_or("?"),
                status["reason"].as_str().unwrap_or("?")
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
    let field = |value: &Option<serde_json::Value>, key: &str| {
        value.as_ref().and_then(|v| v.get(key)).map_or_else(
            || "-".to_owned(),
            |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        )
    };
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
            field(&view.plan, "fencing_token"),
            view.coordinator_lease.map_or_else(String::new, |(left, granted)| format!(
                ", lease renewed {} s ago",
                (granted - left).max(0)
            ))
        )),
        None => out.push_str("coordinator:  none (the pilot next to the leader takes the role within a few seconds)\n"),
    }
    if let Some(tolerance) = &view.fault_tolerance {
        out.push_str(&format!("tolerance:    {}\n", tolerance.describe()));
    }
    for line in &view.degraded {
        out.push_str(&format!("degraded:     {line}\n"));
    }
    out.push_str(&format!("next:         {}\n", field(&view.plan, "next")));
    out.push_str(&format!("why:          {}\n", field(&view.plan, "reason")));
    out.push_str(&format!("planned at:   {}\n", field(&view.plan, "at")));
    if view.last_change.is_some() {
        out.push_str(&format!(
            "last change:  {} {} ({}, {})\n",
            field(&view.last_change, "kind"),
            field(&view.last_change, "member"),
            field(&view.last_change, "state"),
            field(&view.last_change, "at")
        ));
    }
    out
}

pub(crate) async fn collect(endpoints: &[String]) -> anyhow::Result<Vec<MemberRow>> {
    let options = options();
    let pool = etcd::Pool::new(options);
    let list = pool.agreed_member_list(endpoints).await.with_context(|| {
        format!(
            "no member answered at {}; is the cluster running?",
            endpoints.join(",")
        )
    })?;
    let probes = pool.probe_members(&list).await;
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
        .zip(probes)
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
                    Some(format!("{:#}", anyhow::Error::from(err))),
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
        version: None,
        error: Some(format!(
            "{endpoint} answers as cluster {cluster_id}, not as the cluster's {}",
            list.cluster_id
        )),
        client_url: Some(endpoint),
    }));
    Ok(rows)
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

/// A fixed-width table, one member per line.
pub(crate) fn table(rows: &[MemberRow]) -> String {
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
            row.version.clone().unwrap_or_else(dash),
            row.client_url.clone().unwrap_or_else(dash),
        ]);
    }
    let widths: Vec<usize> = (0..9)
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
    let voters: Vec<&MemberRow> = rows
        .iter()
        .filter(|r| r.role == "leader" || r.role == "follower")
        .collect();
    let tolerance = etcd_pilot_core::FaultTolerance::of(
        voters.len(),
        voters.iter().filter(|r| r.health == "healthy").count(),
    );
    out.push_str(&format!("fault tolerance: {}\n", tolerance.describe()));
    for row in rows {
        if let Some(error) = &row.error {
            out.push_str(&format!("{}: {error}\n", row.name));
        }
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

    #[test]
    fn a_plan_record_older_than_its_finished_change_is_not_shown_as_next() {
        let plan = |next: &str, at: &str| {
            Some(serde_json::json!({"next": next, "reason": "m4 caught up", "at": at}))
        };
        let done = serde_json::json!({"kind": "promote_learner", "member": "m4", "state": "done", "at": "2026-11-30T02:00:05Z"});
        let mut stale = plan("promote_learner", "2026-11-30T02:00:04Z");
        already_done(&mut stale, Some(&done));
        assert_eq!(stale.as_ref().unwrap()["next"], "re-planning");
        assert!(
            stale.unwrap()["reason"]
                .as_str()
                .unwrap()
                .contains("promote_learner m4")
        );
        // A newer record, another kind, or a change still running: shown as written.
        for (mut record, last) in [
            (
                plan("promote_learner", "2026-11-30T02:00:06Z"),
                done.clone(),
            ),
            (plan("wait", "2026-11-30T02:00:04Z"), done.clone()),
            (
                plan("promote_learner", "2026-11-30T02:00:04Z"),
                serde_json::json!({"kind": "promote_learner", "state": "started", "at": "2026-11-30T02:00:05Z"}),
            ),
        ] {
            let before = record.clone();
            already_done(&mut record, Some(&last));
            assert_eq!(record, before);
        }
    }
}
