//! Backups that provably restore: streamed snapshots in an object store (`store.rs`, `take.rs`),
//! restore drills (`drill.rs`), restores (`restore.rs`), and the coordinator's schedule with
//! retention (`schedule.rs`).
//!
//! [`Backups`] is the one entry point the pilot and the CLI use. The choices (which backup to
//! restore or verify, when one is due, what retention deletes) are the core's (`backup`,
//! `retention`); this module observes the store and executes them.

pub(crate) mod claim;
pub(crate) mod commands;
mod drill;
mod restore;
mod schedule;
mod store;
mod take;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use etcd_pilot_core::backup::{self as choice, DrillFault, Verification};
use etcd_pilot_core::start::{RestoreSource, StoreView};
use etcd_pilot_core::{ClusterId, Identity, MemberName};

use restore::RestoreTarget;
pub(crate) use restore::RestoreTool;
pub(crate) use schedule::Schedule;
pub(crate) use store::{ClusterRecord, Manifest, Store};

use crate::config::{BackupConfig, Config};
use crate::datadir::{DataDir, Scratch};
use crate::etcd::Etcd;
use crate::records::{LINEAGE_KEY, format_lineage, parse_lineage};

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
    /// The cluster's etcd credentials: a restored snapshot keeps its auth settings, so the
    /// drill's etcd wants them too.
    pub(crate) credentials: Option<(String, String)>,
    /// Backups being taken or drilled through this pilot (any clone): compaction waits
    /// meanwhile, so it never passes the revision a backup reads, and defragmentation too.
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a backup in flight while it lives.
struct InFlight(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(counter: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Backups {
    /// Whether a backup is being taken or drilled through this pilot now.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// `None` when no store is configured.
    pub(crate) fn open(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(options) = &config.backup.store else {
            return Ok(None);
        };
        Ok(Some(Self {
            store: Store::open(options, &config.cluster_name)?,
            config: config.backup.clone(),
            cluster_name: config.cluster_name.clone(),
            etcd_bin: config.etcd.bin.clone(),
            credentials: config.etcd.credentials.clone(),
            in_flight: std::sync::Arc::default(),
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
        let _in_flight = InFlight::new(&self.in_flight);
        self.record_lineage(etcd).await?;
        take::take(
            etcd,
            &self.store,
            &self.cluster_name,
            member,
            self.config.compression_level,
            progress,
            None,
        )
        .await
    }

    /// The seed's data into the store right before a reseed after quorum loss, marked as such:
    /// taken from the member alone (no quorum), so the lineage is not recorded (the reseed
    /// keeps the cluster id, and the lineage with it).
    pub(crate) async fn take_for_reseed(
        &self,
        etcd: &Etcd,
        member: &str,
    ) -> anyhow::Result<Manifest> {
        take::take(
            etcd,
            &self.store,
            &self.cluster_name,
            member,
            self.config.compression_level,
            &Progress::hidden(),
            Some("reseed"),
        )
        .await
    }

    /// Records this cluster's lineage in etcd and in the store; refuses a store that holds
    /// another cluster's backups.
    pub(crate) async fn record_lineage(&self, etcd: &Etcd) -> anyhow::Result<()> {
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
    /// the updated manifest. A drill that found the backup bad (core
    /// `drill_fault_fails_the_backup`) is recorded as failed; any other error records nothing
    /// and leaves the backup unverified. Both are returned as errors ([`fault_of`] tells them
    /// apart).
    pub(crate) async fn verify(
        &self,
        id: &str,
        scratch_root: &Path,
        progress: &Progress,
    ) -> anyhow::Result<(Manifest, drill::DrillReport)> {
        // A drill's throwaway etcd competes for the disk: maintenance waits meanwhile.
        let _in_flight = InFlight::new(&self.in_flight);
        let manifest = self.store.manifest(id).await?;
        let tool = RestoreTool::find(&self.etcd_bin).await?;
        let result = drill::drill(
            &self.store,
            &manifest,
            &drill::DrillEtcd {
                bin: &self.etcd_bin,
                credentials: self.credentials.clone(),
            },
            &tool,
            scratch_root,
            progress,
        )
        .await;
        match result {
            Ok(report) => Ok((
                self.record_verdict(&manifest, Verification::Passed).await?,
                report,
            )),
            Err(err) if choice::drill_fault_fails_the_backup(fault_of(&err)) => {
                let verdict = Verification::Failed {
                    error: format!("{err:#}"),
                };
                self.record_verdict(&manifest, verdict).await?;
                Err(err.context(format!("backup {id} failed verification")))
            }
            Err(err) => Err(err.context(format!(
                "backup {id} could not be drilled (not its fault: it stays unverified and is \
                 drilled again later)"
            ))),
        }
    }

    /// Records what a drill (or a failed restore) found in the backup's manifest.
    async fn record_verdict(
        &self,
        manifest: &Manifest,
        verdict: Verification,
    ) -> anyhow::Result<Manifest> {
        let mut manifest = manifest.clone();
        manifest.verification = verdict;
        manifest.verified_at =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        self.store.put_manifest(&manifest).await?;
        Ok(manifest)
    }

    /// What the store says, for the start decision, and the manifests it read. Manifests in
    /// `known` (an earlier answer) are not read again: a waiting pilot asks every interval.
    pub(crate) async fn view(&self, known: &[Manifest]) -> (StoreView, Vec<Manifest>) {
        match self.view_inner(known).await {
            Ok(answer) => answer,
            Err(err) => (StoreView::Unreadable(format!("{err:#}")), Vec::new()),
        }
    }

    async fn view_inner(&self, known: &[Manifest]) -> anyhow::Result<(StoreView, Vec<Manifest>)> {
        let record = self.store.cluster_record().await?;
        let manifests = self.store.list_reusing(known).await?;
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
        Ok((StoreView::Read { cluster, candidate }, manifests))
    }

    /// Downloads backup `manifest` and restores it in `data`'s scratch folder as a one-member
    /// cluster of `member`; nothing is in place yet ([`Backups::install_restore`] does it,
    /// once the restore claim is confirmed). A backup that fails its checksums is marked
    /// failed, so no one restores it again. The pilot after total loss and the operator's
    /// `restore` both come here.
    pub(crate) async fn prepare_restore(
        &self,
        manifest: &Manifest,
        data: &DataDir,
        member: &Member,
        progress: &Progress,
    ) -> anyhow::Result<PreparedRestore> {
        let tool = RestoreTool::find(&self.etcd_bin).await?;
        let scratch = Scratch::fresh(&data.restore_scratch(), crate::datadir::legacy_restore)?;
        let snapshot = scratch.child("snapshot.db")?;
        if let Err(err) = restore::download(&self.store, manifest, &snapshot, progress).await {
            if fault_of(&err) == DrillFault::Corrupt {
                let verdict = Verification::Failed {
                    error: format!("{err:#}"),
                };
                if let Err(mark) = self.record_verdict(manifest, verdict).await {
                    tracing::warn!("cannot mark backup {} as failed: {mark:#}", manifest.id);
                }
            }
            return Err(err);
        }
        let target = RestoreTarget {
            name: member.name.to_string(),
            peer_url: member.peer_url.clone(),
            initial_cluster: member.initial_cluster.clone(),
            token: member.token.clone(),
            data_dir: scratch.child("etcd")?,
            bump_revision: member.bump_revision,
            idle: false,
        };
        restore::run_restore(&tool, &snapshot, &target).await?;
        tokio::fs::remove_file(&snapshot).await.ok();
        Ok(PreparedRestore {
            scratch,
            restored: target.data_dir,
            name: member.name.clone(),
            tool,
        })
    }

    /// Moves a prepared restore into place as this node's data.
    pub(crate) fn install_restore(
        prepared: PreparedRestore,
        data: &DataDir,
    ) -> anyhow::Result<RestoreTool> {
        data.install_restored(
            &prepared.scratch,
            &prepared.restored,
            &Identity {
                name: prepared.name,
                cluster_id: None,
                member_id: None,
            },
            SystemTime::now(),
        )?;
        Ok(prepared.tool)
    }
}

/// A restored data dir waiting in the scratch folder.
pub(crate) struct PreparedRestore {
    scratch: Scratch,
    restored: PathBuf,
    name: MemberName,
    tool: RestoreTool,
}

/// The one-member cluster a restore creates.
pub(crate) struct Member {
    pub(crate) name: MemberName,
    pub(crate) peer_url: String,
    /// `--initial-cluster`: this member alone.
    pub(crate) initial_cluster: String,
    /// A fresh `--initial-cluster-token`, so the cluster gets a new id.
    pub(crate) token: String,
    /// Revisions to add when the restore tool supports it.
    pub(crate) bump_revision: u64,
}

/// An error that says what it means for the backup (see core `DrillFault`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Faulted {
    pub(crate) fault: DrillFault,
    pub(crate) message: String,
}

impl Faulted {
    pub(crate) fn error(fault: DrillFault, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            fault,
            message: message.into(),
        })
    }
}

/// What `err` says about the backup: the fault it carries, else `Environment` (the store,
/// the disk, the drill's etcd: nothing about the backup).
pub(crate) fn fault_of(err: &anyhow::Error) -> DrillFault {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Faulted>().map(|f| f.fault))
        .unwrap_or(DrillFault::Environment)
}
