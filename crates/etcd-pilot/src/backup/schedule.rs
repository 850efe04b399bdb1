//! The coordinator's backup schedule: every few seconds, if this pilot is the coordinator and
//! its member runs, take a backup when one is due (streamed from a healthy follower when one
//! exists) (core `backup::backup_due`, from the newest
//! backup in the store, so a new coordinator keeps the pace), drill the newest unverified one,
//! and delete what retention lets go.
//!
//! A failure is logged, counted and shown in `/v1/status`; it never touches etcd, and the next
//! step tries again.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_pilot_core::backup as choice;
use etcd_pilot_core::retention::{self, BackupMeta};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Backups, Progress};
use crate::coordinator::Role;
use crate::etcd::{ClientOptions, Etcd};
use crate::metrics::{KindLabel, Metrics};
use crate::state::{DrillRetry, LastBackup, PilotStatus};

/// Drills of one backup that failed for reasons outside it, kept in memory (a new
/// coordinator starts over: one more drill, sooner).
struct Retry {
    backup: String,
    attempts: u32,
    next: Instant,
}

/// The coordinator's backup schedule on one pilot.
pub(crate) struct Schedule {
    pub(crate) backups: Backups,
    /// This node's member name, recorded in manifests.
    pub(crate) member: String,
    /// This node's etcd, which is snapshotted.
    pub(crate) client_url: String,
    pub(crate) options: ClientOptions,
    /// Scratch space of drills.
    pub(crate) scratch: PathBuf,
    pub(crate) status: watch::Sender<PilotStatus>,
    pub(crate) metrics: Metrics,
    /// Backups are taken, drilled and pruned only while this pilot coordinates.
    pub(crate) role: watch::Receiver<Role>,
}

impl Schedule {
    /// Runs until `cancel`.
    pub(crate) async fn run(self, cancel: CancellationToken) {
        let Self {
            backups,
            status,
            metrics,
            ..
        } = &self;
        status.send_modify(|s| s.backup.store = backups.store.url().to_owned());
        let tick = backups.config.interval.min(Duration::from_secs(5));
        // Each step lists the store (one request) and reads only new manifests; all of them
        // are read again every `refresh`, after a failure, or after losing the role (someone
        // may have verified a backup meanwhile). This pilot's own writes update the copy.
        let refresh = Duration::from_secs(600);
        let mut listing: Option<(Instant, Vec<super::Manifest>)> = None;
        let mut retry: Option<Retry> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = cancel.cancelled() => return,
            }
            let acting = self.role.borrow().is_coordinator();
            if !acting {
                listing = None;
                continue;
            }
            if listing
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() >= refresh)
            {
                listing = None;
            }
            // Cancel-safe enough: a step dropped mid-upload leaves no manifest, so no backup.
            let step = self.step(&mut listing, &mut retry);
            tokio::select! {
                result = step => {
                    if let Err(err) = result {
                        listing = None;
                        let message = format!("{err:#}");
                        tracing::warn!("backup step failed (etcd is not affected): {message}");
                        metrics.backup_failures.inc();
                        status.send_modify(|s| {
                            s.backup.last_error = Some(message);
                            s.backup.last_error_at = Some(now_text());
                        });
                    }
                }
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// The member a scheduled backup streams from, and its name: a healthy follower when one
/// exists (the coordinator's own member leads, and serves every write: the snapshot's disk
/// reads and network stream would compete with them), else this node's member.
async fn backup_source(
    local_url: &str,
    local_name: &str,
    options: &ClientOptions,
) -> anyhow::Result<(Etcd, String)> {
    let local = Etcd::connect_one(local_url, options).await?;
    let status = local.status().await?;
    // A follower that has fallen this far behind the leader's log would give an older backup
    // than its time says.
    const LAG: u64 = 1000;
    let list = local.member_list().await?;
    let mut followers: Vec<_> = list
        .members
        .iter()
        .filter(|m| {
            m.is_started() && !m.is_learner && Some(m.id) != status.leader && m.name.is_some()
        })
        .collect();
    followers.sort_by(|a, b| a.name.cmp(&b.name));
    for member in followers {
        let Some(url) = member.client_urls.first() else {
            continue;
        };
        let Ok(etcd) = Etcd::connect_one(url, options).await else {
            continue;
        };
        match etcd.status().await {
            Ok(s)
                if s.member_id == member.id
                    && s.cluster_id == list.cluster_id
                    && s.health() == etcd_pilot_core::Health::Healthy
                    && s.raft_applied_index + LAG >= status.raft_index =>
            {
                let name = member
                    .name
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Ok((etcd, name));
            }
            _ => {}
        }
    }
    Ok((local, local_name.to_owned()))
}

fn fault_label(fault: choice::DrillFault) -> &'static str {
    match fault {
        choice::DrillFault::Corrupt => "corrupt",
        choice::DrillFault::RestoreRejected => "restore_rejected",
        choice::DrillFault::ContentDiffers => "content_differs",
        choice::DrillFault::Environment => "environment",
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Schedule {
    /// One step on `listing` (listed afresh when `None`; kept up to date with this step's
    /// own backups, drills and deletions).
    async fn step(
        &self,
        listing: &mut Option<(Instant, Vec<super::Manifest>)>,
        retry: &mut Option<Retry>,
    ) -> anyhow::Result<()> {
        let Self {
            backups, metrics, ..
        } = self;
        match listing.as_mut() {
            None => *listing = Some((Instant::now(), backups.list().await?)),
            Some((_, known)) => *known = backups.store.list_reusing(known).await?,
        }
        let Some((_, manifests)) = listing.as_mut() else {
            return Ok(());
        };
        let newest = manifests.last().map(super::Manifest::created_at);
        if let Some(verified) = manifests
            .iter()
            .rev()
            .find(|m| m.verification == choice::Verification::Passed)
        {
            metrics
                .backup_last_verified
                .set(unix_secs(verified.created_at()));
        }
        if choice::backup_due(newest, backups.config.interval, SystemTime::now()) {
            let manifest = self.take_backup().await?;
            manifests.push(manifest);
        }
        if backups.config.drill {
            self.drill_next(manifests, retry).await?;
        }
        self.apply_retention(manifests).await
    }

    /// Takes a backup now, from the best source, and reports it.
    async fn take_backup(&self) -> anyhow::Result<super::Manifest> {
        let Self {
            backups,
            member,
            client_url,
            options,
            status,
            metrics,
            ..
        } = self;
        let started = Instant::now();
        let manifest = async {
            let (etcd, source) = backup_source(client_url, member, options).await?;
            backups.take(&etcd, &source, &Progress::hidden()).await
        }
        .instrument(tracing::info_span!("backup"))
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            id = %manifest.id,
            revision = manifest.revision,
            db_size = manifest.db_size,
            compressed_size = manifest.compressed_size,
            seconds,
            "backup taken"
        );
        metrics
            .backup_last_success
            .set(unix_secs(manifest.created_at()));
        metrics
            .backup_db_size
            .set(i64::try_from(manifest.db_size).unwrap_or(i64::MAX));
        metrics
            .backup_compressed_size
            .set(i64::try_from(manifest.compressed_size).unwrap_or(i64::MAX));
        metrics
            .backup_duration_ms
            .set(i64::try_from(manifest.duration_ms).unwrap_or(i64::MAX));
        status.send_modify(|s| {
            s.backup.last_backup = Some(LastBackup {
                id: manifest.id.clone(),
                created: manifest.created.clone(),
                db_size: manifest.db_size,
                compressed_size: manifest.compressed_size,
                duration_ms: manifest.duration_ms,
            });
            s.backup.last_error = None;
        });
        Ok(manifest)
    }

    /// Drills the newest undrilled backup, unless it waits out a retry.
    async fn drill_next(
        &self,
        manifests: &mut [super::Manifest],
        retry: &mut Option<Retry>,
    ) -> anyhow::Result<()> {
        let Self {
            backups,
            scratch,
            status,
            metrics,
            ..
        } = self;
        let summaries: Vec<_> = manifests.iter().map(super::Manifest::summary).collect();
        let target = choice::drill_target(&summaries).map(|t| t.id.clone());
        let waiting = retry
            .as_ref()
            .is_some_and(|r| Some(&r.backup) == target.as_ref() && Instant::now() < r.next);
        if let Some(id) = target
            && !waiting
        {
            let progress = Progress::hidden();
            let drill = backups
                .verify(&id, scratch, &progress)
                .instrument(tracing::info_span!("drill", backup = %id));
            match drill.await {
                Ok((manifest, report)) => {
                    tracing::info!(id = %id, keys = report.key_count, seconds = report.duration.as_secs_f64(), "restore drill passed");
                    metrics
                        .backup_last_verified
                        .set(unix_secs(manifest.created_at()));
                    metrics
                        .drill_duration_ms
                        .set(i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX));
                    *retry = None;
                    status.send_modify(|s| {
                        s.backup.last_verified = Some(id.clone());
                        s.backup.last_error = None;
                        s.backup.drill_retry = None;
                    });
                    if let Some(m) = manifests.iter_mut().find(|m| m.id == id) {
                        *m = manifest;
                    }
                }
                Err(err) => {
                    let fault = super::fault_of(&err);
                    metrics
                        .drill_errors
                        .get_or_create(&KindLabel {
                            kind: fault_label(fault).to_owned(),
                        })
                        .inc();
                    if choice::drill_fault_fails_the_backup(fault) {
                        *retry = None;
                        status.send_modify(|s| s.backup.drill_retry = None);
                        // Recorded in the manifest: read it again next step.
                        return Err(err);
                    }
                    let attempts = match retry.as_ref() {
                        Some(r) if r.backup == id => r.attempts + 1,
                        _ => 1,
                    };
                    let wait = choice::drill_retry_after(attempts, backups.config.drill_retry);
                    let message = format!("{err:#}");
                    tracing::warn!(attempts, retry_in = ?wait, "{message}");
                    *retry = Some(Retry {
                        backup: id.clone(),
                        attempts,
                        next: Instant::now() + wait,
                    });
                    metrics.backup_failures.inc();
                    status.send_modify(|s| {
                        s.backup.drill_retry = Some(DrillRetry {
                            backup: id.clone(),
                            attempts,
                            error: message.clone(),
                            next_attempt: humantime::format_rfc3339_seconds(
                                SystemTime::now() + wait,
                            )
                            .to_string(),
                        });
                        s.backup.last_error = Some(message);
                        s.backup.last_error_at = Some(now_text());
                    });
                }
            }
        }
        Ok(())
    }

    /// Deletes what retention lets go.
    async fn apply_retention(&self, manifests: &mut Vec<super::Manifest>) -> anyhow::Result<()> {
        let backups = &self.backups;
        let metas: Vec<BackupMeta> = manifests
            .iter()
            .map(|m| BackupMeta {
                key: m.id.clone(),
                created: m.created_at(),
                verified: m.verification == choice::Verification::Passed,
            })
            .collect();
        for id in retention::expired(&metas, &backups.config.retention, SystemTime::now()) {
            backups.store.delete(&id).await?;
            manifests.retain(|m| m.id != id);
            tracing::info!(id = %id, "backup deleted by retention");
        }
        Ok(())
    }
}
