//! The coordinator's part in a rolling upgrade of etcd: what each member runs and what its
//! pilot asks for (`/v1/status` `release` and `upgrade`), the lock at
//! [`records::UPGRADE_KEY`], the cluster version and the newest backup go into the core's
//! `upgrade::next_step`; the step it returns is shown in the plan and, on the coordinator,
//! carried out: grant or release the lock (fenced writes), move leadership away from the
//! last member, take a backup first.
//!
//! What a holder's pilot does with the lock is `pilot/upgrade.rs`. This module decides
//! nothing itself.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use etcd_pilot_core::plan::{self, Plan};
use etcd_pilot_core::upgrade::{
    self as policy, BackupState, Lock, Minor, UpgradeMember, UpgradeStep, UpgradeView, UpgradeWait,
    Version,
};
use etcd_pilot_core::{Health, MemberId, MemberName};
use tokio::time::Instant;

use crate::backup::{Backups, Progress};
use crate::coordinator::{Fenced, Seat};
use crate::etcd::{self, Etcd};
use crate::metrics::Metrics;
use crate::peer_api::PeerApi;
use crate::quorum::names;
use crate::records::{self, UPGRADE_KEY, UpgradeLock, UpgradeSummary};
use crate::state::PilotStatus;

/// What a member's pilot says: the release its member runs, the one it asks for, why its
/// last attempt was rolled back, and whether a step is under way.
type PilotView = (Option<Version>, Option<Version>, Option<String>, bool);

/// How long the store's newest backup time is trusted before it is listed again.
const BACKUP_LIST_EVERY: Duration = Duration::from_secs(30);

/// The coordinator's upgrade step: its inputs, kept between steps.
pub(crate) struct Rolling {
    name: MemberName,
    peers: PeerApi,
    backups: Option<Backups>,
    max_backup_age: Duration,
    metrics: Metrics,
    /// When the store was last listed, and the newest backup's time then.
    newest: Option<(Instant, Option<SystemTime>)>,
    /// The backup taken for the upgrade, while it runs (never inside the reconcile step:
    /// a long one would outlive the coordinator's lease), and why the last one failed.
    backup_task: Option<tokio::task::JoinHandle<anyhow::Result<String>>>,
    backup_error: Option<String>,
}

impl Seen {
    /// The lock as read this step, for maintenance (`None`: it could not be read).
    pub(crate) fn lock_read(&self) -> Option<crate::maintenance::LockRead<'_>> {
        self.step.as_ref()?;
        Some(crate::maintenance::LockRead {
            lock: self.lock.as_ref(),
            revision: self.lock_revision,
        })
    }

    /// The upgrade has a member to move (or one moving): maintenance waits for it.
    pub(crate) fn moving(&self) -> bool {
        matches!(
            self.step,
            Some(
                UpgradeStep::Grant { .. }
                    | UpgradeStep::Hold { .. }
                    | UpgradeStep::Release { .. }
                    | UpgradeStep::MoveLeader { .. }
                    | UpgradeStep::TakeBackup
            )
        )
    }
}

/// One look at the upgrade.
pub(crate) struct Seen {
    /// `None` when the lock could not be read: nothing is done.
    step: Option<UpgradeStep>,
    /// The lock as stored, to release it, and its mod revision (0: absent): a grant or a
    /// release is written only if it is unchanged.
    lock: Option<UpgradeLock>,
    lock_revision: i64,
    target: Option<Version>,
    ids: HashMap<MemberName, MemberId>,
    pub(crate) summary: Option<UpgradeSummary>,
}

impl Rolling {
    pub(crate) fn new(
        name: MemberName,
        peers: PeerApi,
        backups: Option<Backups>,
        max_backup_age: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            name,
            peers,
            backups,
            max_backup_age,
            metrics,
            newest: None,
            backup_task: None,
            backup_error: None,
        }
    }

    /// The upgrade as the pilot next to the leader sees it. `own` is this pilot's status;
    /// the others' pilots are asked.
    pub(crate) async fn observe(
        &mut self,
        observed: &plan::Observed,
        plan: &Plan,
        pool: &etcd::Pool,
        local: &str,
        own: &PilotStatus,
    ) -> Seen {
        let admin_urls: HashMap<MemberName, String> = match &observed.discovery {
            plan::Discovery::Listed(peers) => peers
                .iter()
                .map(|p| (p.name.clone(), p.admin_url.clone()))
                .collect(),
            plan::Discovery::Failed { .. } => HashMap::new(),
        };
        let mut asked = tokio::task::JoinSet::new();
        for m in &observed.members {
            let Some(name) = m.member.name.clone() else {
                continue;
            };
            if name == self.name {
                continue;
            }
            let Some(url) = admin_urls.get(&name).cloned() else {
                continue;
            };
            let api = self.peers.clone();
            asked.spawn(async move { (name, api.status(&url).await) });
        }
        let mut views: HashMap<MemberName, PilotView> = asked
            .join_all()
            .await
            .into_iter()
            .filter_map(|(name, status)| {
                let status = status?;
                let release = status.release.unwrap_or_default();
                let upgrade = status.upgrade.unwrap_or_default();
                let parse = |v: Option<String>| v.and_then(|v| v.parse::<Version>().ok());
                Some((
                    name,
                    (
                        parse(release.running),
                        parse(release.bin_version),
                        upgrade.failed,
                        upgrade.stepping,
                    ),
                ))
            })
            .collect();
        let parse = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<Version>().ok());
        views.insert(
            self.name.clone(),
            (
                parse(&own.release.running),
                parse(&own.release.bin_version),
                own.upgrade.failed.clone(),
                own.upgrade.stepping,
            ),
        );
        let mut ids = HashMap::new();
        let members: Vec<UpgradeMember> = observed
            .members
            .iter()
            .filter_map(|m| {
                let name = m.member.name.clone()?;
                ids.insert(name.clone(), m.member.id);
                let (running, desired, failed, stepping) =
                    views.get(&name).cloned().unwrap_or_default();
                Some(UpgradeMember {
                    running,
                    desired,
                    failed,
                    stepping,
                    healthy: m.health == Health::Healthy && m.problem.is_none(),
                    leader: observed.leader == Some(m.member.id),
                    learner: m.member.is_learner,
                    name,
                })
            })
            .collect();
        // A lock that cannot be read is not a free lock: nothing is done this step.
        let read = match pool.client(local).await {
            Ok(client) => client
                .get_versioned(UPGRADE_KEY)
                .await
                .map_err(anyhow::Error::from),
            Err(err) => Err(anyhow::Error::from(err)),
        }
        .and_then(|(text, revision)| {
            let lock = text
                .map(|t| records::decode::<UpgradeLock>(UPGRADE_KEY, &t))
                .transpose()?;
            Ok((lock, revision))
        });
        let (stored, lock_revision) = match read {
            Ok(found) => found,
            Err(err) => {
                let summary = UpgradeSummary {
                    next: "wait".to_owned(),
                    reason: format!("cannot read the upgrade lock: {err:#}"),
                    target: None,
                    cluster_version: None,
                    holder: None,
                    members: Vec::new(),
                };
                return Seen {
                    step: None,
                    lock: None,
                    lock_revision: 0,
                    target: None,
                    ids,
                    summary: Some(summary),
                };
            }
        };
        let lock = stored
            .as_ref()
            .filter(|l| l.kind != records::LOCK_DEFRAG)
            .and_then(|l| {
                Some(Lock {
                    holder: MemberName::new(l.holder.clone()?).ok()?,
                    target: l.target.parse().ok()?,
                })
            });
        // Held for a defragmentation: no member is granted an upgrade until it is released.
        let maintenance = stored
            .as_ref()
            .filter(|l| l.kind == records::LOCK_DEFRAG)
            .and_then(|l| MemberName::new(l.holder.clone()?).ok());
        // The cluster version matters only to a path between releases: asked when a member
        // is behind or holds the lock, not on every step of an idle cluster.
        let moving = lock.is_some()
            || members
                .iter()
                .any(|m| m.running.is_some() && m.desired.is_some() && m.running != m.desired);
        let cluster = if moving {
            crate::upgrade::cluster_version(&[local.to_owned()]).await
        } else {
            None
        };
        let mut view = UpgradeView {
            members,
            cluster,
            lock,
            maintenance,
            change_in_flight: !matches!(plan, Plan::Converged),
            backup: if self.backups.is_some() {
                BackupState::Fresh
            } else {
                BackupState::NoStore
            },
            // The pilots do not run `etcdutl check v2store` yet: a 3.5 -> 3.6 upgrade waits.
            v2store_checked: false,
        };
        self.backup_done().await;
        let mut step = policy::next_step(&view);
        // The store is listed only when a member is about to go down for the upgrade.
        if matches!(step, UpgradeStep::Grant { .. }) && !self.backup_fresh().await {
            view.backup = BackupState::Stale;
            step = policy::next_step(&view);
        }
        let target = view
            .members
            .iter()
            .find_map(|m| m.desired)
            .filter(|t| view.members.iter().all(|m| m.desired == Some(*t)));
        let mut summary = summarize(&view, &step, target, plan);
        if let (UpgradeStep::TakeBackup, Some(summary)) = (&step, summary.as_mut()) {
            if self.backup_task.is_some() {
                summary.reason = "taking a backup before the next member upgrades".to_owned();
            } else if let Some(err) = &self.backup_error {
                summary.reason = format!("{}; the last attempt failed: {err}", summary.reason);
            }
        }
        self.metrics
            .upgrade_in_progress
            .set(i64::from(summary.is_some()));
        Seen {
            step: Some(step),
            lock: stored,
            lock_revision,
            target,
            ids,
            summary,
        }
    }

    /// Carries out `seen`'s step as the coordinator (`token`'s holder): grant or release the
    /// lock, move leadership, take a backup.
    pub(crate) async fn act(&mut self, seen: &Seen, seat: &mut Seat, client: &Etcd, token: i64) {
        let lock = |holder: Option<&MemberName>, target: String, last: Option<String>| {
            records::encode(&UpgradeLock {
                holder: holder.map(ToString::to_string),
                kind: records::LOCK_UPGRADE.to_owned(),
                target,
                by: self.name.to_string(),
                fencing_token: token,
                at: records::now_rfc3339(),
                last,
            })
        };
        let Some(step) = &seen.step else {
            return;
        };
        match step {
            UpgradeStep::Grant { member } => {
                let Some(target) = seen.target else {
                    return;
                };
                tracing::info!(%member, %target, "granting the upgrade lock");
                let text = lock(Some(member), target.to_string(), None);
                report(
                    seat.put_fenced_unchanged(UPGRADE_KEY, seen.lock_revision, &text)
                        .await,
                    "grant the upgrade lock",
                );
            }
            UpgradeStep::Release { holder } => {
                let target = seen
                    .lock
                    .as_ref()
                    .map(|l| l.target.clone())
                    .unwrap_or_default();
                tracing::info!(%holder, "releasing the upgrade lock");
                let text = lock(None, target, Some(holder.to_string()));
                report(
                    seat.put_fenced_unchanged(UPGRADE_KEY, seen.lock_revision, &text)
                        .await,
                    "release the upgrade lock",
                );
            }
            UpgradeStep::MoveLeader { from, to } => {
                let Some(id) = seen.ids.get(to) else {
                    return;
                };
                tracing::info!(%from, %to, "moving leadership away before the leader upgrades");
                if let Err(err) = client.move_leader(*id).await {
                    tracing::warn!("cannot move leadership for the upgrade, will retry: {err:#}");
                }
            }
            UpgradeStep::TakeBackup => {
                let Some(backups) = self.backups.clone() else {
                    return;
                };
                if self.backup_task.is_some() {
                    return;
                }
                tracing::info!("taking a backup before the next member upgrades");
                let (client, name) = (client.clone(), self.name.to_string());
                self.backup_task = Some(tokio::spawn(async move {
                    let manifest = backups.take(&client, &name, &Progress::hidden()).await?;
                    Ok(manifest.id)
                }));
            }
            _ => {}
        }
    }

    /// Collects the upgrade's backup once it has finished.
    async fn backup_done(&mut self) {
        if !self.backup_task.as_ref().is_some_and(|t| t.is_finished()) {
            return;
        }
        let Some(task) = self.backup_task.take() else {
            return;
        };
        match task.await {
            Ok(Ok(id)) => {
                tracing::info!(backup = %id, "backup taken for the upgrade");
                self.backup_error = None;
                self.newest = Some((Instant::now(), Some(SystemTime::now())));
            }
            Ok(Err(err)) => {
                tracing::warn!("cannot take the backup the upgrade needs: {err:#}");
                self.backup_error = Some(format!("{err:#}"));
            }
            Err(err) => self.backup_error = Some(format!("the backup task failed: {err}")),
        }
    }

    /// Not the coordinator's pilot (any more): the gauge says so.
    pub(crate) fn idle(&self) {
        self.metrics.upgrade_in_progress.set(0);
    }

    /// Whether the store holds a backup at most `upgrade.max_backup_age` old (listed at
    /// most every [`BACKUP_LIST_EVERY`]). An unreadable store counts as stale.
    async fn backup_fresh(&mut self) -> bool {
        let Some(backups) = &self.backups else {
            return true;
        };
        let listed = self
            .newest
            .filter(|(at, _)| at.elapsed() < BACKUP_LIST_EVERY)
            .map(|(_, newest)| newest);
        let newest = match listed {
            Some(newest) => newest,
            None => {
                let newest = match backups.list().await {
                    Ok(manifests) => manifests
                        .iter()
                        .filter_map(|m| humantime::parse_rfc3339(&m.created).ok())
                        .max(),
                    Err(err) => {
                        tracing::warn!("cannot list the backup store for the upgrade: {err:#}");
                        None
                    }
                };
                self.newest = Some((Instant::now(), newest));
                newest
            }
        };
        newest.is_some_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .map_or(true, |age| age <= self.max_backup_age)
        })
    }
}

/// Logs the outcome of a fenced write of the lock.
pub(crate) fn report(written: Result<bool, Fenced>, what: &str) {
    match written {
        Ok(true) | Err(Fenced::Written) => {}
        Ok(false) => {
            tracing::info!("cannot {what}: the lock changed since it was read; looking again");
        }
        Err(Fenced::Deposed) => tracing::warn!("cannot {what}: no longer the coordinator"),
        Err(Fenced::Failed(err)) => tracing::warn!("cannot {what}, will retry: {err:#}"),
    }
}

/// The step for people; `None` when no upgrade is asked for and nobody holds the lock.
fn summarize(
    view: &UpgradeView,
    step: &UpgradeStep,
    target: Option<Version>,
    plan: &Plan,
) -> Option<UpgradeSummary> {
    let to = target
        .or(view.lock.as_ref().map(|l| l.target))
        .map_or_else(|| "?".to_owned(), |t| t.to_string());
    let (next, reason) = match step {
        UpgradeStep::Done => return None,
        UpgradeStep::Hold { holder } => match view.members.iter().find(|m| &m.name == holder) {
            Some(m) if m.failed.is_some() => (
                "stopped",
                format!(
                    "the upgrade stopped: {holder}: {}. Point etcd.bin at a working binary (or \
                     replace the one it names) and the upgrade goes on",
                    m.failed.clone().unwrap_or_default()
                ),
            ),
            found => (
                "hold",
                match found {
                    Some(m) if m.running.is_none() || m.desired.is_none() => format!(
                        "{holder} holds the upgrade lock for etcd {to}, and its pilot does not answer: \
                     the lock stays until it does"
                    ),
                    _ => format!(
                        "{holder} holds the upgrade lock: it restarts on etcd {to} (or back) and \
                     catches up"
                    ),
                },
            ),
        },
        UpgradeStep::Release { holder } => (
            "release",
            format!("{holder} is done (or rolled back): releasing the lock"),
        ),
        UpgradeStep::Grant { member } => (
            "grant",
            format!(
                "granting {member} the upgrade lock to etcd {to} (followers first, the leader last)"
            ),
        ),
        UpgradeStep::MoveLeader { from, to: next } => (
            "move_leader",
            format!(
                "{from} is the last on the old release and leads: moving leadership to {next} first"
            ),
        ),
        UpgradeStep::TakeBackup => (
            "backup",
            "no backup within upgrade.max_backup_age: taking one before the next member upgrades"
                .to_owned(),
        ),
        UpgradeStep::Stopped { member, reason } => (
            "stopped",
            format!(
                "the upgrade stopped: {member}: {reason}. Point etcd.bin at a working binary (or \
                 replace the one it names) and the upgrade goes on"
            ),
        ),
        UpgradeStep::Refused(refusal) => ("refused", refusal.describe()),
        UpgradeStep::Wait(wait) => (
            "wait",
            match wait {
                UpgradeWait::UnknownVersions { names: n } => {
                    format!(
                        "waits: the pilots of {} do not say what they run and want",
                        names(n)
                    )
                }
                UpgradeWait::DesiredDiffers { desired } => format!(
                    "waits: the pilots ask for different releases ({}); set etcd.bin to one release on every node",
                    desired
                        .iter()
                        .map(|(n, v)| format!("{n} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                UpgradeWait::Unhealthy { names: n } => {
                    format!("waits: not healthy: {}", names(n))
                }
                UpgradeWait::ChangeInFlight => match plan {
                    Plan::Converged => "waits: a learner catches up".to_owned(),
                    Plan::Wait { reason } | Plan::Act { reason, .. } => {
                        format!("waits for the membership plan: {reason}")
                    }
                },
                UpgradeWait::MaintenanceHolds { holder } => {
                    format!("waits: {holder} holds the lock for a defragmentation")
                }
                UpgradeWait::LeaderUnknown => {
                    "waits: no single leader is known, so the leader cannot be kept for last"
                        .to_owned()
                }
                UpgradeWait::V2StoreCheck => "waits: this minor upgrade needs `etcdutl check \
                     v2store` to pass on every member's data first, which the pilots do not run \
                     yet: run it on each node, then upgrade by hand"
                    .to_owned(),
            },
        ),
    };
    let mut members: Vec<String> = view
        .members
        .iter()
        .map(|m| {
            let show = |v: Option<Version>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
            format!(
                "{} runs {}, wants {}{}{}",
                m.name,
                show(m.running),
                show(m.desired),
                if m.leader { " (leader)" } else { "" },
                m.failed
                    .as_ref()
                    .map(|f| format!(" (rolled back: {f})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    members.sort();
    Some(UpgradeSummary {
        next: next.to_owned(),
        reason,
        target: target
            .or(view.lock.as_ref().map(|l| l.target))
            .map(|t| t.to_string()),
        cluster_version: view.cluster.map(|c: Minor| c.to_string()),
        holder: view.lock.as_ref().map(|l| l.holder.to_string()),
        members,
    })
}
