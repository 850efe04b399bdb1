//! Backups that provably restore: streamed snapshots in an object store (`store.rs`, `take.rs`),
//! restore drills (`drill.rs`), restores (`restore.rs`), and the coordinator's schedule with
//! retention (`schedule.rs`).
//!
//! [`Backups`] is the one entry point the pilot and the CLI use. The choices (which backup to
//! restore or verify, when one is due, what retention deletes) are the core's (`backup`,
//! `retention`); this module observes the store and executes them.

pub(crate) mod commands;
mod drill;
mod restore;
mod schedule;
mod store;
mod take;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use etcd_pilot_core::ClusterId;
use etcd_pilot_core::backup::{self as choice, Verification};
use etcd_pilot_core::start::{RestoreSource, StoreView};

pub(crate) use restore::{RestoreTarget, RestoreTool};
pub(crate) use schedule::{BackupStatus, Schedule};
pub(crate) use store::{ClusterRecord, Manifest, RestoreClaim, Store, StoreOptions};

use crate::config::BackupConfig;
use crate::etcd::Etcd;

/// The key in etcd holding the lineage of the data: every cluster it was restored through.
/// It travels inside snapshots, so a restored cluster knows where it came from.
pub(crate) const LINEAGE_KEY: &str = "/etcd-pilot/cluster/lineage";

/// A progress bar on stderr for the CLI; invisible in the daemon.
#[derive(Clone)]
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// No output.
    pub(crate) fn hidden() -> Self {
        Self { bar: None }
    }

    /// A bar on stderr when it is a terminal.
    pub(crate) fn stderr() -> Self {
        let visible = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            bar: visible.then(indicatif::ProgressBar::hidden),
        }
    }

    pub(crate) fn start(&self, what: &str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.reset();
            bar.set_length(total);
            bar.set_position(0);
            bar.set_message(what.to_owned());
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
    }

    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            if bar.position() + bytes > bar.length().unwrap_or(0) {
                bar.set_length(bar.position() + bytes);
            }
            bar.inc(bytes);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Backups of one cluster in one store.
#[derive(Clone)]
pub(crate) struct Backups {
    pub(crate) store: Store,
    pub(crate) config: BackupConfig,
    pub(crate) cluster_name: String,
    pub(crate) etcd_bin: PathBuf,
}

impl Backups {
    /// `None` when no store is configured.
    pub(crate) fn open(
        config: &BackupConfig,
        cluster_name: &str,
        etcd_bin: &Path,
    ) -> anyhow::Result<Option<Self>> {
        let Some(options) = &config.store else {
            return Ok(None);
        };
        Ok(Some(Self {
            store: Store::open(options, cluster_name)?,
            config: config.clone(),
            cluster_name: cluster_name.to_owned(),
            etcd_bin: etcd_bin.to_owned(),
        }))
    }

    /// Takes a backup of the member `etcd` is connected to, after checking that the store
    /// belongs to this cluster's lineage (and recording it there).
    pub(crate) async fn take(
        &self,
        etcd: &Etcd,
        member: &str,
        progress: &Progress,
    ) -> anyhow::Result<Manifest> {
        self.claim_store(etcd).await?;
        take::take(
            etcd,
            &self.store,
            &self.cluster_name,
            member,
            self.config.compression_level,
            progress,
        )
        .await
    }

    /// Records this cluster's lineage in etcd and in the store; refuses a store that holds
    /// another cluster's backups.
    async fn claim_store(&self, etcd: &Etcd) -> anyhow::Result<()> {
        let status = etcd.status().await?;
        let inherited: Vec<ClusterId> = match etcd.get(LINEAGE_KEY).await? {
            Some(text) => parse_lineage(&text)?,
            None => Vec::new(),
        };
        let lineage = choice::extend_lineage(&inherited, status.cluster_id);
        if lineage != inherited {
            etcd.put(LINEAGE_KEY, &format_lineage(&lineage)).await?;
        }
        let record = self.store.cluster_record().await?;
        if let Some(record) = &record {
            if record.lineage == lineage {
                return Ok(());
            }
            if let Some(owner) = record.current()
                && !lineage.contains(&owner)
            {
                anyhow::bail!(
                    "the backup store {} holds the backups of cluster {owner}; this cluster ({}) \
                     was not restored from it. Point backup.url at another prefix, or move the \
                     old backups away if that cluster is gone for good",
                    self.store.url(),
                    status.cluster_id
                );
            }
        }
        self.store
            .put_cluster_record(&ClusterRecord {
                lineage,
                updated: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            })
            .await
    }

    /// Every backup, oldest first.
    pub(crate) async fn list(&self) -> anyhow::Result<Vec<Manifest>> {
        self.store.list().await
    }

    /// Runs a restore drill on backup `id` and records the result in its manifest. Returns
    /// the updated manifest; a failed drill is recorded and returned as an error.
    pub(crate) async fn verify(
        &self,
        id: &str,
        scratch_root: &Path,
        progress: &Progress,
    ) -> anyhow::Result<(Manifest, drill::DrillReport)> {
        let mut manifest = self.store.manifest(id).await?;
        let tool = RestoreTool::find(&self.etcd_bin).await?;
        let result = drill::drill(
            &self.store,
            &manifest,
            &self.etcd_bin,
            &tool,
            scratch_root,
            progress,
        )
        .await;
        manifest.verified_at =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        match result {
            Ok(report) => {
                manifest.verification = Verification::Passed;
                self.store.put_manifest(&manifest).await?;
                Ok((manifest, report))
            }
            Err(err) => {
                if is_store_error(&err) {
                    // The store failed, not the backup: record nothing.
                    return Err(err);
                }
                manifest.verification = Verification::Failed {
                    error: format!("{err:#}"),
                };
                self.store.put_manifest(&manifest).await?;
                Err(err.context(format!("backup {id} failed verification")))
            }
        }
    }

    /// What the store says, for the start decision.
    pub(crate) async fn view(&self) -> StoreView {
        match self.view_inner().await {
            Ok(view) => view,
            Err(err) => StoreView::Unreadable(format!("{err:#}")),
        }
    }

    async fn view_inner(&self) -> anyhow::Result<StoreView> {
        let record = self.store.cluster_record().await?;
        let manifests = self.store.list().await?;
        let lineage = record
            .as_ref()
            .map(|r| r.lineage.clone())
            .unwrap_or_default();
        let summaries: Vec<_> = manifests.iter().map(Manifest::summary).collect();
        let candidate = choice::restore_candidate(&summaries, &lineage).map(|b| RestoreSource {
            id: b.id.clone(),
            cluster_id: b.cluster_id,
            revision: b.revision,
        });
        let cluster = record
            .as_ref()
            .and_then(ClusterRecord::current)
            .or_else(|| manifests.last().map(|m| m.cluster_id));
        Ok(StoreView::Read { cluster, candidate })
    }

    /// Downloads and restores backup `manifest` into `data_dir/etcd`, as a one-member cluster
    /// of `target`. `scratch` is a folder of the same file system that is used on the way.
    /// On a checksum failure the manifest is marked failed, so no one restores it again.
    pub(crate) async fn restore_into(
        &self,
        manifest: &Manifest,
        scratch: &Path,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> anyhow::Result<RestoreTool> {
        let tool = RestoreTool::find(&self.etcd_bin).await?;
        if scratch.exists() {
            tokio::fs::remove_dir_all(scratch)
                .await
                .with_context(|| format!("clear {}", scratch.display()))?;
        }
        tokio::fs::create_dir_all(scratch).await?;
        let snapshot = scratch.join("snapshot.db");
        if let Err(err) = restore::download(&self.store, manifest, &snapshot, progress).await {
            if !is_store_error(&err) {
                let mut failed = manifest.clone();
                failed.verification = Verification::Failed {
                    error: format!("{err:#}"),
                };
                failed.verified_at =
                    Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
                if let Err(mark) = self.store.put_manifest(&failed).await {
                    tracing::warn!("cannot mark backup {} as failed: {mark:#}", manifest.id);
                }
            }
            return Err(err);
        }
        restore::run_restore(&tool, &snapshot, target).await?;
        tokio::fs::remove_file(&snapshot).await.ok();
        Ok(tool)
    }
}

/// Whether `err` came from talking to the store (the backup itself may be fine).
fn is_store_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<object_store::Error>().is_some())
}

pub(crate) fn parse_lineage(text: &str) -> anyhow::Result<Vec<ClusterId>> {
    let ids: Vec<String> =
        serde_json::from_str(text).with_context(|| format!("parse {LINEAGE_KEY}"))?;
    ids.iter()
        .map(|id| {
            u64::from_str_radix(id, 16)
                .map(ClusterId)
                .with_context(|| format!("parse {LINEAGE_KEY}: {id:?} is not a cluster id"))
        })
        .collect()
}

fn format_lineage(lineage: &[ClusterId]) -> String {
    serde_json::to_string(&lineage.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_default()
}
