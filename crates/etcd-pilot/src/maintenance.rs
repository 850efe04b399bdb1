//! Day-2 maintenance, on the reconcile step: every pilot samples the cluster's revision
//! (so a new coordinator can date the history at once), and the coordinator compacts every
//! `maintenance.compact_interval` to the core's `maintenance::compaction_target` (keeping
//! `keep_revisions` or `keep_for`, whichever keeps more), never while a backup is being
//! taken through this pilot. Off with `maintenance.compaction = false`, or when etcd's own
//! `--auto-compaction-*` flags are set. What it did goes into `/v1/status` `maintenance`
//! and the metrics. This module decides nothing itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_pilot_core::maintenance::{self as policy, RevisionSample};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backup::Backups;
use crate::config::MaintenanceConfig;
use crate::etcd::{self, Etcd};
use crate::metrics::Metrics;
use crate::state::PilotStatus;

pub(crate) struct Maintenance {
    config: MaintenanceConfig,
    /// The origin of the monotonic seconds the samples are dated with.
    started: Instant,
    samples: Vec<RevisionSample>,
    last_sample: Option<Instant>,
    /// When the coordinator last looked at compaction, and the revision it compacted to
    /// (0: not known to this pilot).
    last_run: Option<Instant>,
    compacted: i64,
    backups: Option<Backups>,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
}

impl Maintenance {
    pub(crate) fn new(
        config: MaintenanceConfig,
        backups: Option<Backups>,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
    ) -> Self {
        status.send_modify(|s| s.maintenance.compaction = config.compaction);
        Self {
            config,
            started: Instant::now(),
            samples: Vec::new(),
            last_sample: None,
            last_run: None,
            compacted: 0,
            backups,
            status,
            metrics,
        }
    }

    /// Samples the revision (at most every `SAMPLE_EVERY_SECS`) through the local member.
    pub(crate) async fn sample(&mut self, pool: &etcd::Pool, local: &str) {
        if !self.config.compaction
            || self
                .last_sample
                .is_some_and(|t| t.elapsed() < Duration::from_secs(policy::SAMPLE_EVERY_SECS))
        {
            return;
        }
        let Ok(status) = pool.status(local).await else {
            return;
        };
        self.last_sample = Some(Instant::now());
        policy::remember(
            &mut self.samples,
            RevisionSample {
                at_secs: self.started.elapsed().as_secs(),
                revision: status.revision,
            },
            self.config.keep_for.as_secs(),
        );
    }

    /// As coordinator: compacts when due, through `client` (the local member, which leads).
    pub(crate) async fn compact(&mut self, client: &Etcd) {
        if !self.config.compaction
            || self
                .last_run
                .is_some_and(|t| t.elapsed() < self.config.compact_interval)
        {
            return;
        }
        self.last_run = Some(Instant::now());
        if self.backups.as_ref().is_some_and(Backups::busy) {
            self.publish(None, Some("waits: a backup is being taken".to_owned()));
            return;
        }
        let current = match client.status().await {
            Ok(status) => status.revision,
            Err(err) => {
                self.publish(None, Some(format!("cannot read the revision: {err}")));
                return;
            }
        };
        let now = self.started.elapsed().as_secs();
        let Some(target) = policy::compaction_target(
            self.config.compaction_policy(),
            now,
            current,
            &self.samples,
            self.compacted,
            None,
        ) else {
            self.publish(
                None,
                Some(format!(
                    "nothing to compact at revision {current} (keeping {} revisions or {} of history)",
                    self.config.keep_revisions,
                    humantime::format_duration(self.config.keep_for)
                )),
            );
            return;
        };
        match client.compact(target).await {
            Ok(done) => {
                if done {
                    tracing::info!(revision = target, current, "compacted etcd's history");
                }
                self.compacted = target;
                let at = SystemTime::now();
                self.metrics.last_compaction.set(
                    at.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                );
                self.publish(
                    Some(format!(
                        "revision {target} at {} (current {current})",
                        humantime::format_rfc3339_seconds(at)
                    )),
                    None,
                );
            }
            Err(err) => {
                tracing::warn!("cannot compact to revision {target}, will retry: {err}");
                self.publish(None, Some(format!("cannot compact to {target}: {err}")));
            }
        }
    }

    fn publish(&self, last: Option<String>, note: Option<String>) {
        self.status.send_modify(|s| {
            if let Some(last) = last {
                s.maintenance.last_compaction = Some(last);
            }
            s.maintenance.note = note;
        });
    }
}
