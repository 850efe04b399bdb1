//! One pilot's life: observe, decide how to start (core `start::decide`), take that step,
//! repeat until etcd runs; then keep watching the local member (identity and formed markers,
//! published status) and run the reconcile step (`reconcile.rs`) each interval, until
//! shutdown, when leadership is moved away before etcd is stopped, or until the member is
//! removed, when the pilot stops etcd and starts over.
//!
//! Every step re-observes: joining is a series of small idempotent steps, so a pilot killed
//! between any two of them resumes correctly. This module executes decisions; it does not
//! make them (the core does) and it does not speak the etcd API itself (`etcd.rs` does).

mod running;
mod start;
mod upgrade;

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use etcd_pilot_core::crash;
use etcd_pilot_core::plan;
use etcd_pilot_core::reseed::Verdict;
use etcd_pilot_core::start::{
    self as decision, ClusterView, Decision, JoinStep, LiveCluster, LocalData, ObservedMember,
    PeerReport, PilotReport, RestoreSource, StoreView,
};
use etcd_pilot_core::{Health, Identity, Peer, model};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backup::claim::Acquired;
use crate::backup::{self, Backups, Manifest, Progress};
use crate::config::{Config, url_string};
use crate::datadir::DataDir;
use crate::discovery::{Discovery as _, Provider};
use crate::etcd::{self, ClientOptions, EndpointStatus, Etcd};
use crate::metrics::Metrics;
use crate::peer_api::PeerApi;
use crate::quorum::{self, QuorumWatch};
use crate::reconcile::{Outcome, Reconciler};
use crate::records::{self, FORMED_KEY};
use crate::state::{MemberState, Phase, PilotStatus};
use crate::supervisor::{ChildStatus, EtcdCommand, StartMode, Supervisor, etcd_args};

/// What follows a run of etcd.
enum After {
    /// Shutdown: etcd has stopped.
    Stop,
    /// Take the start decision again.
    Decide,
    /// Start etcd in this mode next (a reseed).
    Start(StartMode),
}

pub(crate) struct Pilot {
    config: Config,
    data: DataDir,
    discovery: Provider,
    options: ClientOptions,
    /// Connections to the peers' etcd, kept between observations.
    pool: etcd::Pool,
    /// For calls to peer pilots; every request times out after `timers.pilot_call_timeout`.
    peers: PeerApi,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
    /// The backup store, if configured: what it says decides restores after total loss.
    backups: Option<Backups>,
    /// The store's last answer, when it came, and the manifests it read: the start loop
    /// polls fast, the store is asked at most once per observe interval, and a manifest
    /// already read is not read again.
    store_view: std::sync::Mutex<Option<(tokio::time::Instant, StoreView, Vec<Manifest>)>>,
    /// The restore claims of the backup store.
    claims: Option<backup::claim::Claims>,
    /// The release `etcd.bin` asks for, followed while the pilot runs.
    desired: std::sync::Mutex<upgrade::Desired>,
    /// The binary the current run of etcd started on.
    run_bin: std::sync::Mutex<std::path::PathBuf>,
}

/// What the wiring root (`lib.rs`) hands a pilot: everything it talks to, built once.
pub(crate) struct Parts {
    pub(crate) discovery: Provider,
    pub(crate) options: ClientOptions,
    pub(crate) pool: etcd::Pool,
    pub(crate) peers: PeerApi,
    pub(crate) backups: Option<Backups>,
    pub(crate) claims: Option<backup::claim::Claims>,
    pub(crate) status: watch::Sender<PilotStatus>,
    pub(crate) metrics: Metrics,
}

impl Pilot {
    pub(crate) fn new(config: Config, parts: Parts) -> Self {
        let Parts {
            discovery,
            options,
            pool,
            peers,
            backups,
            claims,
            status,
            metrics,
        } = parts;
        Self {
            data: DataDir::new(&config.data_dir),
            desired: std::sync::Mutex::new(upgrade::Desired::from_config(&config)),
            run_bin: std::sync::Mutex::new(config.etcd.bin.clone()),
            config,
            discovery,
            options,
            pool,
            peers,
            status,
            metrics,
            backups,
            store_view: std::sync::Mutex::new(None),
            claims,
        }
    }

    /// Runs until `cancel`; returns once etcd has stopped. If the cluster removes this
    /// node's member while it runs, stops etcd and starts over (quarantine, then rejoin when
    /// discovery lists the node). `reconciler` (the coordinator's step) and `quorum` (the
    /// quorum-loss watch) run each interval while etcd runs.
    pub(crate) async fn run(
        self,
        mut reconciler: Reconciler,
        mut quorum: QuorumWatch,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        self.data.create()?;
        self.prune_quarantine();
        // The releases this node has, before etcd runs (the admin API answers meanwhile).
        self.refresh_desired().await;
        self.publish_recorded_upgrade();
        self.wait_for_upgrade_holder(&cancel).await;
        let mut next = self.resume_reseed(&cancel).await;
        loop {
            let mode = match next.take() {
                Some(mode) => mode,
                None => match self.decide_start(&cancel).await? {
                    Some(mode) => mode,
                    None => {
                        self.set_phase(Phase::Stopping, "shutting down before etcd started");
                        return Ok(());
                    }
                },
            };
            match self
                .run_etcd(mode, &mut reconciler, &mut quorum, &cancel)
                .await?
            {
                After::Stop => return Ok(()),
                After::Decide => {}
                After::Start(mode) => next = Some(mode),
            }
        }
    }

    /// Starts etcd in `mode` and watches it until `cancel` (`Stop`), until the start decision
    /// must be made again (`Decide`: the member was removed, or the data belongs to another
    /// cluster, or a reseeded etcd leads alone), or until a reseed from this member
    /// (`Start(ForceNewCluster)`); stops etcd in every case.
    async fn run_etcd(
        &self,
        mode: StartMode,
        reconciler: &mut Reconciler,
        quorum: &mut QuorumWatch,
        cancel: &CancellationToken,
    ) -> anyhow::Result<After> {
        let forced = matches!(mode, StartMode::ForceNewCluster { .. });
        // A restart for an upgrade keeps the member list etcd started with (it ignores it on
        // existing data).
        let mode_cluster = match &mode {
            StartMode::Restart { initial_cluster }
            | StartMode::New {
                initial_cluster, ..
            }
            | StartMode::Existing { initial_cluster }
            | StartMode::ForceNewCluster { initial_cluster } => initial_cluster.clone(),
        };
        if let StartMode::New {
            initial_cluster,
            token,
        } = &mode
        {
            self.status.send_modify(|s| {
                s.report = PilotReport::Bootstrapping {
                    initial_cluster: initial_cluster.clone(),
                    token: token.clone(),
                }
            });
        }
        // A forced start keeps the data's cluster and member ids: its marker stays.
        if !matches!(
            mode,
            StartMode::Restart { .. } | StartMode::ForceNewCluster { .. }
        ) {
            // Claim the data dir before etcd writes into it, so a crash right after start
            // leaves data we recognise as ours.
            self.data.write_identity(&Identity {
                name: self.config.name.clone(),
                cluster_id: None,
                member_id: None,
            })?;
        }

        self.refresh_desired().await;
        let bin = self.bin_for(&mode);
        *self.run_bin.lock().unwrap_or_else(|e| e.into_inner()) = bin.clone();
        let (child_tx, child_rx) = watch::channel(ChildStatus::NotStarted);
        let (unresponsive_tx, unresponsive_rx) = tokio::sync::mpsc::channel(1);
        let supervisor = Supervisor {
            command: EtcdCommand {
                bin,
                args: etcd_args(&self.config, &self.data, &mode),
                member: self.config.name.to_string(),
                pid_file: self.data.pid_file(),
            },
            policy: self.config.timers.restart_policy(),
            stop_grace: self.config.timers.stop_grace,
            status: child_tx,
            metrics: self.metrics.clone(),
            unresponsive: unresponsive_rx,
        };
        let supervisor_cancel = CancellationToken::new();
        let supervisor_task = tokio::spawn(supervisor.run(supervisor_cancel.clone()));
        let liveness_task = tokio::spawn(running::liveness(
            self.pool.clone(),
            url_string(&self.config.etcd.client_url),
            child_rx.clone(),
            unresponsive_tx,
            self.config.timers.liveness_timeout,
            supervisor_cancel.clone(),
        ));
        self.set_phase(Phase::Running, "etcd started; waiting for it to answer");

        let outcome = self
            .watch_member(child_rx, reconciler, quorum, forced, cancel)
            .await;
        let start_over = !matches!(outcome, Outcome::Continue);

        reconciler.resign().await;
        if let Outcome::Reseed(record) = &outcome {
            // The decision is recorded before etcd stops: a survivor's etcd restarted
            // without a quorum serves no client requests, so after a crash from here on
            // only this record lets the pilot finish (`resume_reseed`). Should it fail, etcd
            // is still stopped in order below, and the reseed then stops for want of it.
            let recorded = self.data.write_reseed(record);
            if let Err(err) = recorded {
                tracing::error!("cannot record the reseed beside the data: {err:#}");
            }
            tracing::warn!(
                raft_index = record.raft_index,
                behind = record.behind,
                ordered_by = %record.ordered_by,
                "the quorum is lost for good and this member is the seed: stopping etcd to reseed"
            );
            self.set_phase(
                Phase::Starting,
                "reseeding after quorum loss: stopping etcd, copying its data aside",
            );
        } else if matches!(outcome, Outcome::Reseeded) {
            tracing::info!("the reseeded member leads alone; restarting it normally");
            if let Ok(Some(record)) = self.data.reseed() {
                self.reseed_progress(
                    &record,
                    "restarting",
                    "leads alone; restarting etcd normally",
                );
            }
            self.set_phase(Phase::Starting, "reseeded; restarting etcd normally");
        } else if matches!(outcome, Outcome::Upgrade) {
            self.set_phase(
                Phase::Starting,
                "rolling upgrade: restarting etcd on another release",
            );
            if let Err(err) = self.hand_over_leadership().await {
                tracing::warn!(
                    "cannot move leadership before the restart, etcd will hand it over itself: {err:#}"
                );
            }
        } else if start_over {
            tracing::warn!("stopping etcd and starting over");
            self.set_phase(
                Phase::Starting,
                "this member was removed, or its data belongs to another cluster; starting over",
            );
        } else {
            self.set_phase(Phase::Stopping, "shutting down");
            tracing::info!("shutdown: moving leadership away if this member leads");
            if let Err(err) = self.hand_over_leadership().await {
                tracing::warn!(
                    "cannot move leadership before stopping, etcd will hand it over itself: {err:#}"
                );
            }
            tracing::info!("shutdown: stopping etcd");
        }
        supervisor_cancel.cancel();
        supervisor_task.await.context("join supervisor")??;
        liveness_task.await.context("join liveness")?;
        self.metrics.etcd_up.set(0);
        tracing::info!("etcd stopped");
        match outcome {
            Outcome::Quarantine { reason } => {
                // Once: the data goes aside, and the start decision sees an empty disk and
                // joins.
                let folder = self.data.quarantine(&reason, SystemTime::now())?;
                self.prune_quarantine();
                tracing::warn!(folder = %folder.display(), "quarantined local data: {reason}");
                Ok(After::Decide)
            }
            Outcome::Reseed(_) => self.copy_before_reseed().map(After::Start),
            Outcome::Recheck => Ok(After::Decide),
            Outcome::Reseeded => Ok(self.mark_reseed_restarted()),
            Outcome::Upgrade => Ok(After::Start(StartMode::Restart {
                initial_cluster: mode_cluster,
            })),
            Outcome::Continue => Ok(After::Stop),
        }
    }

    /// A reseed this pilot decided before it stopped (`reseed.json` is there). etcd started
    /// forced again completes it whether or not the forced start happened (on a member that
    /// already stands alone it changes nothing); a survivor's etcd restarted without a quorum
    /// serves no client requests, so the quorum watch could not decide again. The decision is
    /// abandoned (and its record dropped), unless etcd may already have started forced, when
    /// the data is no longer usable, when discovery
    /// lists a voter it found gone, or when any etcd among the voters of the decision and the
    /// listed peers answers with a leader: a quorum lives after all.
    async fn resume_reseed(&self, cancel: &CancellationToken) -> Option<StartMode> {
        let record = match self.data.reseed() {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(err) => {
                tracing::error!("cannot read the reseed record beside the data: {err:#}");
                return None;
            }
        };
        if record.restarted {
            // Done: the forced etcd led alone and restarts normally since. The marker stays
            // for the normal run to record the reseed (`take_reseed`); never forced again.
            return None;
        }
        if record.forced {
            // etcd may already have started forced: the data no longer belongs to the old
            // cluster, and abandoning now would run it as a second cluster with the same id.
            // Finishing is the only way on (forcing again changes nothing).
            crate::supervisor::stop_leftover_at(
                &self.data.pid_file(),
                self.config.timers.stop_grace,
            )
            .await;
            tracing::warn!(
                raft_index = record.raft_index,
                "completing the reseed whose forced start may have happened before this pilot stopped"
            );
            return match self.copy_before_reseed() {
                Ok(mode) => Some(mode),
                Err(err) => {
                    tracing::error!("cannot complete the reseed: {err:#}");
                    None
                }
            };
        }
        if !matches!(self.data.local_data(), Ok(LocalData::Data { .. })) {
            self.abandon_reseed(&record, "the data beside it is gone or unusable")
                .await;
            return None;
        }
        if let Some(why) = self.reseed_claim_lost(&record).await {
            self.abandon_reseed(&record, &why).await;
            return None;
        }
        self.reseed_progress(&record, "resuming", "checking that no quorum came back");
        // An etcd an earlier life left running is stopped first: the copy is of stopped data.
        crate::supervisor::stop_leftover_at(&self.data.pid_file(), self.config.timers.stop_grace)
            .await;
        let census = loop {
            match self.discovery.census().await {
                Ok(census) => break census,
                Err(err) => {
                    tracing::warn!("a reseed is under way; waiting for discovery: {err}");
                    tokio::select! {
                        () = tokio::time::sleep(self.config.timers.observe_interval) => {}
                        () = cancel.cancelled() => return None,
                    }
                }
            }
        };
        let present = census.peers.iter().chain(&census.leaving);
        let back: Vec<&str> = present
            .clone()
            .filter(|p| record.unreachable.iter().any(|u| u == p.name.as_str()))
            .map(|p| p.name.as_str())
            .collect();
        if !back.is_empty() {
            self.abandon_reseed(
                &record,
                &format!("discovery lists {} again", back.join(", ")),
            )
            .await;
            return None;
        }
        // Another listed pilot reseeding, or naming another seed (an operator's order, say,
        // taken while this pilot was down): two seeds would split the cluster.
        for peer in present.clone().filter(|p| p.name != self.config.name) {
            let Some(status) = self.peers.status(&peer.admin_url).await else {
                continue;
            };
            let other_seed = status
                .quorum
                .as_ref()
                .and_then(|q| q.seed.as_ref())
                .is_some_and(|seed| seed.name != self.config.name.as_str());
            if status.reseed.is_some() || other_seed {
                self.abandon_reseed(
                    &record,
                    &format!("the pilot of {} reseeds, or names another seed", peer.name),
                )
                .await;
                return None;
            }
        }
        let own = url_string(&self.config.etcd.client_url);
        let mut urls: Vec<String> = record
            .members
            .iter()
            .cloned()
            .chain(present.map(|p| p.client_url.clone()))
            .filter(|u| *u != own)
            .collect();
        urls.sort();
        urls.dedup();
        for url in &urls {
            if let Ok(status) = self.pool.status(url).await
                && status.leader.is_some()
            {
                self.abandon_reseed(&record, &format!("the etcd at {url} answers with a leader"))
                    .await;
                return None;
            }
        }
        tracing::warn!(
            raft_index = record.raft_index,
            "completing the reseed decided before this pilot stopped"
        );
        match self.copy_before_reseed() {
            Ok(mode) => Some(mode),
            Err(err) => {
                tracing::error!("cannot complete the reseed: {err:#}");
                None
            }
        }
    }

    /// The forced etcd led alone: before it restarts normally, the reseed record says so, so
    /// that no later start forces again even if the normal run cannot take the record off
    /// the disk. If that cannot be written, etcd starts forced again (harmless on a member
    /// that stands alone) and the next round tries again.
    fn mark_reseed_restarted(&self) -> After {
        let marked = self.data.reseed().and_then(|record| {
            let mut record = record.context("the reseed record beside the data is gone")?;
            record.restarted = true;
            self.data.write_reseed(&record)
        });
        match marked {
            Ok(()) => After::Decide,
            Err(err) => {
                tracing::error!(
                    "cannot mark the reseed done beside the data ({err:#}): starting etcd forced \
                     again rather than normally"
                );
                After::Start(self.force_new_cluster())
            }
        }
    }

    /// Why a reseed decided before this pilot stopped no longer holds the store's claim, if
    /// so (with a store; a store that does not answer counts: the claim cannot be checked).
    async fn reseed_claim_lost(&self, record: &records::Reseed) -> Option<String> {
        let (Some(backups), Some(generation)) = (&self.backups, record.claim) else {
            return None;
        };
        let Ok(Some(Identity {
            cluster_id: Some(cluster),
            ..
        })) = self.data.identity()
        else {
            return Some("no cluster id beside the data to check the store's reseed claim".into());
        };
        match backup::claim::holds_reseed_claim(
            &backups.store,
            cluster,
            generation,
            self.config.name.as_str(),
        )
        .await
        {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "the store's reseed claim {generation} is no longer this node's (an operator took \
                 it over, or it ended)"
            )),
            Err(err) => Some(format!(
                "the backup store does not answer ({err:#}), so the reseed claim cannot be checked"
            )),
        }
    }

    /// Drops a reseed decided before this pilot stopped, before etcd started alone: its
    /// record beside the data, and its claim in the store.
    async fn abandon_reseed(&self, record: &records::Reseed, why: &str) {
        tracing::warn!("a reseed was under way, but {why}: abandoning it");
        self.status.send_modify(|s| s.reseed = None);
        if let Err(err) = std::fs::remove_file(self.data.reseed_marker()) {
            tracing::error!("cannot remove the abandoned reseed record: {err}");
        }
        self.release_reseed_claim(record).await;
    }

    fn force_new_cluster(&self) -> StartMode {
        StartMode::ForceNewCluster {
            initial_cluster: format!(
                "{}={}",
                self.config.name,
                url_string(&self.config.etcd.peer_url)
            ),
        }
    }

    /// Before etcd restarts alone (etcd stopped, the reseed recorded beside the data): the
    /// data copied aside once, never deleted by the pilot, and the copy's folder recorded.
    fn copy_before_reseed(&self) -> anyhow::Result<StartMode> {
        let Some(mut record) = self.data.reseed()? else {
            anyhow::bail!("the reseed record beside the data is gone");
        };
        // Copied once, before the first forced start: after it the data is no longer what it
        // was, and is not copied as if it were.
        if !record.forced
            && (record.copy.is_empty() || !std::path::Path::new(&record.copy).is_dir())
        {
            let reason = format!(
                "reseed after quorum loss: this copy is the seed's data before etcd restarted \
                 alone (raft index {}; {} unreachable)",
                record.raft_index,
                record.unreachable.join(", ")
            );
            self.reseed_progress(&record, "copying", "copying the data aside");
            let copy = self.data.copy_aside(&reason, SystemTime::now())?;
            record.copy = copy.display().to_string();
            self.data.write_reseed(&record)?;
            self.prune_quarantine();
            tracing::warn!(copy = %copy.display(), "data copied aside");
        }
        // Crash test: the pilot dies with the data copied and the reseed recorded, before
        // etcd restarts alone.
        fail::fail_point!("reseed-before-force", |_| std::process::abort());
        record.forced = true;
        self.data.write_reseed(&record)?;
        self.reseed_progress(
            &record,
            "forced",
            "etcd restarts alone (--force-new-cluster) until it leads",
        );
        tracing::warn!("restarting etcd alone with --force-new-cluster");
        self.set_phase(
            Phase::Starting,
            "reseeding after quorum loss: etcd restarts alone (--force-new-cluster)",
        );
        Ok(self.force_new_cluster())
    }

    /// If the local member leads, moves leadership to a healthy voter.
    async fn hand_over_leadership(&self) -> anyhow::Result<()> {
        let local = url_string(&self.config.etcd.client_url);
        let status = etcd::probe(&local, &self.options).await?;
        if status.leader != Some(status.member_id) {
            return Ok(());
        }
        // A transfer takes an election round or two: allow more than a plain call.
        let handover = ClientOptions {
            timeout: self.options.timeout.max(Duration::from_secs(5)),
            ..self.options.clone()
        };
        let client = Etcd::connect_one(&local, &handover).await?;
        let list = client.member_list().await?;
        let probes = self.pool.probe_members(&list).await;
        let members: Vec<plan::ObservedMember> = list
            .members
            .iter()
            .zip(&probes)
            .map(|(member, probe)| {
                plan::ObservedMember::probed(
                    member.clone(),
                    probe.as_ref().ok().map(|s| (s.health(), s.raft_index)),
                )
            })
            .collect();
        let Some(successor) = plan::successor(&members, status.member_id, |_| true) else {
            anyhow::bail!("no other healthy voter to take over");
        };
        client.move_leader(successor.member.id).await?;
        tracing::info!(to = %successor.member.id, "moved leadership");
        Ok(())
    }

    /// Quarantine retention, after each quarantine and at start: shown in `/v1/status` and the
    /// metrics. A failure is logged; it never stops the pilot.
    fn prune_quarantine(&self) {
        let q = &self.config.quarantine;
        match self.data.prune_quarantine(q.keep, q.max_bytes) {
            Ok(report) => {
                for name in &report.deleted {
                    tracing::warn!(
                        copy = %name,
                        keep = q.keep,
                        max_bytes = report.max_bytes,
                        "deleted an old quarantined copy of etcd data (quarantine retention)"
                    );
                }
                self.metrics
                    .quarantine_copies
                    .set(i64::try_from(report.kept.len()).unwrap_or(i64::MAX));
                self.metrics
                    .quarantine_bytes
                    .set(i64::try_from(report.bytes).unwrap_or(i64::MAX));
                self.status.send_modify(|s| s.quarantine = report);
            }
            Err(err) => tracing::warn!("quarantine retention failed: {err:#}"),
        }
    }

    fn set_phase(&self, phase: Phase, reason: &str) {
        self.metrics.set_state(phase.as_str());
        self.status.send_modify(|s| {
            s.phase = phase;
            s.reason = reason.to_owned();
        });
    }
}
