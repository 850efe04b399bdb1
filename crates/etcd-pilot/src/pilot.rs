//! One pilot's life: observe, decide how to start (core `start::decide`), take that step,
//! repeat until etcd runs; then keep watching the local member (identity and formed markers,
//! published status) and run the reconcile step (`reconcile.rs`) each interval, until
//! shutdown, when leadership is moved away before etcd is stopped, or until the member is
//! removed, when the pilot stops etcd and starts over.
//!
//! Every step re-observes: joining is a series of small idempotent steps, so a pilot killed
//! between any two of them resumes correctly. This module executes decisions; it does not
//! make them (the core does) and it does not speak the etcd API itself (`etcd.rs` does).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use etcd_pilot_core::plan::Policy;
use etcd_pilot_core::start::{
    self, ClusterView, Decision, JoinStep, LiveCluster, LocalData, ObservedMember, PeerReport,
    PilotReport, RestoreSource, StoreView,
};
use etcd_pilot_core::supervise::RestartPolicy;
use etcd_pilot_core::{Health, Identity, Peer, model};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::aws::lifecycle::Terminating;
use crate::backup::claim::Acquired;
use crate::backup::{self, Backups, Manifest, Progress};
use crate::config::{Config, url_string};
use crate::datadir::DataDir;
use crate::discovery::{Discovery as _, Provider};
use crate::dns::Records;
use crate::etcd::{self, ClientOptions, EndpointStatus, Etcd};
use crate::metrics::Metrics;
use crate::reconcile::{Outcome, Reconciler};
use crate::state::{MemberState, Phase, PilotStatus};
use crate::supervisor::{ChildStatus, EtcdCommand, Supervisor};

/// etcd crashing this many times in a row, never running stably, each time with etcd's own
/// words for damaged data (`crash::classify`), makes the local data "unusable": the
/// coordinator removes the member and the pilot rejoins from an empty disk. Any other crash
/// loop is "cannot run": reported, never a reason to remove the member or touch its data.
const UNUSABLE_AFTER_FAILURES: u32 = 5;

/// The key in etcd that says the cluster has formed; written once by the first healthy pilot.
pub(crate) const FORMED_KEY: &str = "/etcd-pilot/cluster/formed";

/// How etcd is started, from the start decision.
#[derive(Clone, Debug)]
enum StartMode {
    /// On existing data (a WAL exists): etcd ignores the `--initial-*` flags, and should the
    /// WAL be gone after all, `existing` with this member list makes it fail, never bootstrap.
    Restart { initial_cluster: String },
    /// A new cluster.
    New {
        initial_cluster: String,
        token: String,
    },
    /// Joining a live cluster whose member list already has our entry.
    Existing { initial_cluster: String },
}

pub(crate) struct Pilot {
    config: Config,
    data: DataDir,
    discovery: Provider,
    options: ClientOptions,
    /// Connections to the peers' etcd, kept between observations.
    pool: etcd::Pool,
    /// For calls to peer pilots; every request times out after `timers.pilot_call_timeout`.
    http: reqwest::Client,
    status: watch::Sender<PilotStatus>,
    metrics: Metrics,
    /// The backup store, if configured: what it says decides restores after total loss.
    backups: Option<Backups>,
    /// The store's last answer, when it came, and the manifests it read: the start loop
    /// polls fast, the store is asked at most once per observe interval, and a manifest
    /// already read is not read again.
    store_view: std::sync::Mutex<Option<(tokio::time::Instant, StoreView, Vec<Manifest>)>>,
    /// Instances the lifecycle hook says are terminating.
    terminating: Terminating,
    /// The restore claims of the backup store.
    claims: Option<backup::claim::Claims>,
}

impl Pilot {
    pub(crate) fn new(
        config: Config,
        backups: Option<Backups>,
        terminating: Terminating,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let data = DataDir::new(&config.data_dir);
        let discovery = Provider::from_config(&config, status.clone());
        let options = ClientOptions {
            timeout: config.timers.etcd_call_timeout,
            credentials: config.etcd.credentials.clone(),
        };
        let http = reqwest::Client::builder()
            .timeout(config.timers.pilot_call_timeout)
            .connect_timeout(config.timers.pilot_call_timeout)
            .build()
            .context("build the HTTP client for peer pilots")?;
        let claims = backups.as_ref().map(|b| {
            backup::claim::Claims::new(
                b.store.clone(),
                config.name.to_string(),
                backup::claim::admin_url(&config),
                config.restore.claim_timeout,
            )
        });
        Ok(Self {
            claims,
            config,
            data,
            discovery,
            pool: etcd::Pool::new(options.clone()),
            options,
            http,
            status,
            metrics,
            backups,
            store_view: std::sync::Mutex::new(None),
            terminating,
        })
    }

    /// Runs until `cancel`; returns once etcd has stopped. If the cluster removes this
    /// node's member while it runs, stops etcd and starts over (quarantine, then rejoin when
    /// discovery lists the node).
    pub(crate) async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        self.data.create()?;
        self.prune_quarantine();
        let mut reconciler = Reconciler::new(
            self.config.me(),
            self.options.clone(),
            self.http.clone(),
            Policy {
                remove_after: self.config.timers.remove_after,
                learner_timeout: self.config.timers.learner_timeout,
                ..Policy::default()
            },
            self.config.timers.coordinator_lease,
            self.status.clone(),
            self.metrics.clone(),
        )
        .with_terminating(self.terminating.clone())
        .with_dns(
            self.config
                .dns
                .clone()
                .map(|dns| Records::new(dns, self.status.clone())),
        );
        loop {
            let Some(mode) = self.decide_start(&cancel).await? else {
                self.set_phase(Phase::Stopping, "shutting down before etcd started");
                return Ok(());
            };
            let start_over = self.run_etcd(mode, &mut reconciler, &cancel).await?;
            if !start_over {
                return Ok(());
            }
        }
    }

    /// Starts etcd in `mode` and watches it until `cancel` (`false`) or until the start
    /// decision must be made again (`true`: the member was removed, or the data belongs to
    /// another cluster); stops etcd either way.
    async fn run_etcd(
        &self,
        mode: StartMode,
        reconciler: &mut Reconciler,
        cancel: &CancellationToken,
    ) -> anyhow::Result<bool> {
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
        if !matches!(mode, StartMode::Restart { .. }) {
            // Claim the data dir before etcd writes into it, so a crash right after start
            // leaves data we recognise as ours.
            self.data.write_identity(&Identity {
                name: self.config.name.clone(),
                cluster_id: None,
                member_id: None,
            })?;
        }

        let (child_tx, child_rx) = watch::channel(ChildStatus::NotStarted);
        let (unresponsive_tx, unresponsive_rx) = tokio::sync::mpsc::channel(1);
        let supervisor = Supervisor {
            command: EtcdCommand {
                bin: self.config.etcd.bin.clone(),
                args: etcd_args(&self.config, &self.data, &mode),
                member: self.config.name.to_string(),
                pid_file: self.data.pid_file(),
            },
            policy: RestartPolicy {
                initial_backoff: self.config.timers.restart_initial_backoff,
                max_backoff: self.config.timers.restart_max_backoff,
                stable_after: self.config.timers.restart_stable_after,
                jitter: 0.2,
            },
            stop_grace: self.config.timers.stop_grace,
            status: child_tx,
            metrics: self.metrics.clone(),
            unresponsive: unresponsive_rx,
        };
        let supervisor_cancel = CancellationToken::new();
        let supervisor_task = tokio::spawn(supervisor.run(supervisor_cancel.clone()));
        let liveness_task = tokio::spawn(liveness(
            self.pool.clone(),
            url_string(&self.config.etcd.client_url),
            child_rx.clone(),
            unresponsive_tx,
            self.config.timers.liveness_timeout,
            supervisor_cancel.clone(),
        ));
        self.set_phase(Phase::Running, "etcd started; waiting for it to answer");

        let outcome = self.watch_member(child_rx, reconciler, cancel).await;
        let start_over = !matches!(outcome, Outcome::Continue);

        reconciler.resign().await;
        if start_over {
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
        if let Outcome::Quarantine { reason } = outcome {
            // Once: the data goes aside, and the start decision sees an empty disk and joins.
            let folder = self.data.quarantine(&reason, SystemTime::now())?;
            self.prune_quarantine();
            tracing::warn!(folder = %folder.display(), "quarantined local data: {reason}");
        }
        Ok(start_over)
    }

    /// Observes and decides until etcd can start; takes the quarantine and join steps on the
    /// way. `None` when cancelled first.
    async fn decide_start(&self, cancel: &CancellationToken) -> anyhow::Result<Option<StartMode>> {
        let mut last_reason = String::new();
        // Failed steps back off (etcd refuses a MemberAdd for a few seconds after a change).
        let mut failures: u32 = 0;
        // Waits poll fast at first (peers starting together answer within milliseconds of
        // each other), then slow down to the observe interval.
        let mut waits: u32 = 0;
        loop {
            // The live members' client URLs: a join step talks to the cluster through them
            // (they may be nodes leaving the group, which discovery does not list as peers).
            let mut members = Vec::new();
            let decision = match self.observe_start().await {
                Ok(observed) => {
                    if let ClusterView::Reachable(live) = &observed.cluster {
                        members = live
                            .members
                            .iter()
                            .filter_map(|m| m.member.client_urls.first().cloned())
                            .collect();
                    }
                    start::decide(&observed, &self.config.cluster_name)
                }
                Err(err) => Decision::Wait {
                    reason: format!("cannot observe the cluster: {err:#}"),
                },
            };
            let retry_now = match decision {
                Decision::Restart { initial_cluster } => {
                    tracing::info!(%initial_cluster, "restarting etcd on its data");
                    return Ok(Some(StartMode::Restart { initial_cluster }));
                }
                Decision::BootstrapNew {
                    initial_cluster,
                    token,
                } => {
                    tracing::info!(%initial_cluster, %token, "bootstrapping a new cluster");
                    self.set_phase(
                        Phase::Bootstrapping,
                        &format!("bootstrapping a new cluster: {initial_cluster}"),
                    );
                    return Ok(Some(StartMode::New {
                        initial_cluster,
                        token,
                    }));
                }
                Decision::Join(JoinStep::Start {
                    member_id,
                    initial_cluster,
                }) => {
                    tracing::info!(member_id = %member_id, %initial_cluster, "starting etcd to join the cluster");
                    self.set_phase(Phase::Joining, &format!("starting as member {member_id}"));
                    return Ok(Some(StartMode::Existing { initial_cluster }));
                }
                Decision::Restore {
                    source,
                    initial_cluster,
                    token,
                } => match self.restore(&source, &initial_cluster, &token).await {
                    Ok(true) => {
                        self.status.send_modify(|s| s.clear_error("restore"));
                        true
                    }
                    Ok(false) => {
                        // Another pilot holds the claim: poll at the observe interval, not
                        // fast (every poll asks the store).
                        waits = waits.max(10);
                        false
                    }
                    Err(err) => {
                        failures += 1;
                        let message =
                            format!("restoring backup {} failed, will retry: {err:#}", source.id);
                        tracing::warn!(failures, "{message}");
                        self.status.send_modify(|s| s.set_error("restore", message));
                        // Ask the store again: a corrupt backup is marked failed now.
                        *self
                            .store_view
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                        false
                    }
                },
                Decision::Quarantine { reason } => {
                    let folder = self.data.quarantine(&reason, SystemTime::now())?;
                    self.prune_quarantine();
                    tracing::warn!(folder = %folder.display(), "quarantined local data: {reason}");
                    true
                }
                Decision::Join(step) => {
                    self.set_phase(Phase::Joining, &format!("{step:?}"));
                    match self.take_join_step(&step, &members).await {
                        Ok(()) => {
                            failures = 0;
                            self.status.send_modify(|s| s.clear_error("join"));
                            true
                        }
                        Err(err) => {
                            failures += 1;
                            let message = format!("join step {step:?} failed, will retry: {err:#}");
                            if failures == 1 || failures.is_power_of_two() {
                                tracing::warn!(failures, "{message}");
                            }
                            self.status.send_modify(|s| s.set_error("join", message));
                            false
                        }
                    }
                }
                Decision::Wait { reason } => {
                    if reason == last_reason {
                        waits += 1;
                    } else {
                        // Something moved (a peer answered, a peer started bootstrapping):
                        // poll fast again, the next step is likely close.
                        tracing::info!("waiting: {reason}");
                        waits = 0;
                    }
                    self.set_phase(Phase::Waiting, &reason);
                    last_reason = reason;
                    false
                }
            };
            if retry_now {
                waits = 0;
                continue;
            }
            let delay = if failures > 0 {
                self.config.timers.observe_interval * 2u32.pow(failures.min(4))
            } else {
                (Duration::from_millis(10) * 2u32.pow(waits.min(10)))
                    .min(self.config.timers.observe_interval)
            };
            // Cancel-safe: only a sleep is dropped.
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => return Ok(None),
            }
        }
    }

    /// Takes one join step through `members`, the live members' client URLs.
    async fn take_join_step(&self, step: &JoinStep, members: &[String]) -> anyhow::Result<()> {
        let local = url_string(&self.config.etcd.client_url);
        let endpoints: Vec<String> = members.iter().filter(|u| **u != local).cloned().collect();
        // The first member that accepts a connection (a client over several endpoints may
        // send the call to one that is down).
        let mut cluster = None;
        let mut last_error = None;
        for endpoint in &endpoints {
            match Etcd::connect_one(endpoint, &self.options).await {
                Ok(client) => {
                    cluster = Some(client);
                    break;
                }
                Err(err) => last_error = Some(err),
            }
        }
        let Some(cluster) = cluster else {
            return Err(match last_error {
                Some(err) => anyhow::Error::from(err).context("connect to a live member"),
                None => anyhow::anyhow!("no live member to ask"),
            });
        };
        match step {
            JoinStep::RemoveStale { member_id } => {
                tracing::info!(member_id = %member_id, "removing the stale member of this node's earlier life");
                cluster.remove_member(*member_id).await?;
                tracing::info!(member_id = %member_id, "removed stale member");
            }
            JoinStep::AddLearner => {
                let peer_url = url_string(&self.config.etcd.peer_url);
                tracing::info!(%peer_url, "adding this node as a learner");
                let id = cluster.add_learner(&peer_url).await?;
                tracing::info!(member_id = %id, "added learner");
                // Crash test: the pilot dies between MemberAdd and starting etcd.
                fail::fail_point!("after-member-add", |_| std::process::abort());
            }
            JoinStep::Start { .. } => {}
        }
        Ok(())
    }

    async fn other_peers(&self) -> anyhow::Result<Vec<Peer>> {
        let peers = self.discovery.peers().await?;
        Ok(peers
            .into_iter()
            .filter(|p| p.name != self.config.name)
            .collect())
    }

    /// Everything the start decision needs, gathered concurrently with timeouts.
    async fn observe_start(&self) -> anyhow::Result<start::Observed> {
        let local = self.data.local_data()?;
        let census = match self.discovery.census().await {
            Ok(census) => census,
            // A node with data restarts on it without discovery (as when no peer answers):
            // an outage of the discovery API must not keep a member down.
            Err(err) if matches!(local, LocalData::Data { .. }) => {
                tracing::warn!(
                    "discovery does not answer; deciding from the local data alone: {:#}",
                    anyhow::Error::from(err)
                );
                crate::discovery::Census::default()
            }
            Err(err) => return Err(err.into()),
        };
        let expected = census.peers;
        let formed_locally = self.data.formed()?;
        // Answer our peers' questions with what we hold now, before asking them ours.
        self.publish_report(&local, formed_locally, &expected);
        // Nodes leaving but still running are asked too: their etcd may be the cluster.
        let others: Vec<Peer> = expected
            .iter()
            .chain(&census.leaving)
            .filter(|p| p.name != self.config.name)
            .cloned()
            .collect();
        let peers = self.ask_pilots(&others).await;
        // Only peers that hold data (or did not answer) can be serving a cluster to join. A
        // bootstrapping peer's etcd accepts connections but answers nothing until a quorum of
        // the new cluster is up, so asking it would only cost the call timeout; and joining
        // the cluster it forms is the same as bootstrapping with it.
        let candidates: Vec<Peer> = others
            .iter()
            .filter(|peer| {
                peers.iter().any(|r| {
                    r.name == peer.name
                        && matches!(r.report, PilotReport::HasData { .. } | PilotReport::Unknown)
                })
            })
            .cloned()
            .collect();
        let cluster = self.observe_cluster(&candidates).await;
        // The store matters only to a node with nothing to start from.
        let store = if local == LocalData::Empty && matches!(cluster, ClusterView::Unreachable) {
            self.store_view().await
        } else {
            StoreView::NotConfigured
        };
        Ok(start::Observed {
            me: self.config.me(),
            expected,
            leaving: census.leaving,
            bootstrap_floor: census.size,
            local,
            formed_locally,
            peers,
            cluster,
            store,
            allow_empty: self.config.restore.allow_empty_cluster,
            nonce: rand::random(),
        })
    }

    /// What the backup store says, asked at most once per observe interval.
    async fn store_view(&self) -> StoreView {
        let Some(backups) = &self.backups else {
            return StoreView::NotConfigured;
        };
        let cached = self
            .store_view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let known = match cached {
            Some((at, view, _)) if at.elapsed() < self.config.timers.observe_interval => {
                return view;
            }
            Some((_, _, known)) => known,
            None => Vec::new(),
        };
        let (view, manifests) = backups.view(&known).await;
        *self
            .store_view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((tokio::time::Instant::now(), view.clone(), manifests));
        view
    }

    /// Restores `source` as a one-member cluster of this node, once this node holds the
    /// store's restore claim. `Ok(false)`: another pilot holds it; wait for its cluster.
    async fn restore(
        &self,
        source: &RestoreSource,
        initial_cluster: &str,
        token: &str,
    ) -> anyhow::Result<bool> {
        let backups = self
            .backups
            .as_ref()
            .context("no backup store is configured")?;
        let claims = self
            .claims
            .as_ref()
            .context("no backup store is configured")?;
        let lost = backups
            .store
            .cluster_record()
            .await?
            .and_then(|record| record.current());
        let lease = match claims.acquire(lost, &source.id).await? {
            Acquired::Held(lease) => lease,
            Acquired::Waiting {
                holder,
                backup,
                restored: true,
                ..
            } => {
                tracing::info!(
                    "waiting: pilot {holder} restored backup {backup} after this loss; joining its cluster when it answers"
                );
                self.set_phase(
                    Phase::Waiting,
                    &format!(
                        "pilot {holder} restored backup {backup} after this loss; this node joins \
                         its cluster once it answers (if that node is gone too, `etcd-pilot \
                         restore --release-claim` lets the next node restore)"
                    ),
                );
                return Ok(false);
            }
            Acquired::Waiting {
                holder,
                backup,
                still_for,
                ..
            } => {
                tracing::info!(
                    still_for_s = still_for.as_secs(),
                    "waiting: pilot {holder} holds the restore claim (backup {backup})"
                );
                self.set_phase(
                    Phase::Waiting,
                    &format!(
                        "pilot {holder} claimed the restore (backup {backup}); waiting for its \
                         cluster (its heartbeat has stood still for {}s here; after {}s it is \
                         taken over)",
                        still_for.as_secs(),
                        self.config.restore.claim_timeout.as_secs()
                    ),
                );
                return Ok(false);
            }
        };
        self.status.send_modify(|s| {
            s.report = PilotReport::Restoring {
                backup: source.id.clone(),
            };
        });
        self.set_phase(
            Phase::Restoring,
            &format!(
                "the cluster was lost; restoring backup {} (revision {}) as a one-member cluster \
                 the others join (restore claim {})",
                source.id, source.revision, lease.generation
            ),
        );
        tracing::warn!(backup = %source.id, revision = source.revision, "total loss: restoring the newest verified backup");
        let manifest = backups.store.manifest(&source.id).await?;
        let member = backup::Member {
            name: self.config.name.clone(),
            peer_url: url_string(&self.config.etcd.peer_url),
            initial_cluster: initial_cluster.to_owned(),
            token: token.to_owned(),
            bump_revision: self.config.restore.bump_revision,
        };
        let prepared = backups
            .prepare_restore(&manifest, &self.data, &member, &Progress::hidden())
            .await?;
        // Crash test: the claimant dies mid-restore, its claim held.
        fail::fail_point!("restore-before-install", |_| std::process::abort());
        // Still ours? A pilot that was paused past the claim timeout was replaced: its data
        // must not go into place (two restored clusters).
        lease.confirm().await?;
        let tool = Backups::install_restore(prepared, &self.data)?;
        if let Err(err) = lease.finish("restored").await {
            // The data is in place: this node reports it, so no one else restores.
            tracing::warn!("cannot mark the restore claim finished: {err:#}");
        }
        if !tool.bumps_revision {
            tracing::warn!(
                tool = %tool.program.display(),
                "the restore tool cannot --bump-revision: revisions restart from the backup's ({}); \
                 clients watching from a later revision must re-list",
                manifest.revision
            );
        }
        tracing::info!(backup = %source.id, "backup restored; starting etcd on it");
        Ok(true)
    }

    async fn ask_pilots(&self, others: &[Peer]) -> Vec<PeerReport> {
        let mut set = JoinSet::new();
        for peer in others {
            let (peer, client) = (peer.clone(), self.http.clone());
            set.spawn(async move {
                let report = ask_pilot(&client, &peer.admin_url).await;
                PeerReport {
                    name: peer.name,
                    report,
                }
            });
        }
        let mut reports: Vec<PeerReport> = set.join_all().await;
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        reports
    }

    /// The member list as the leader reports it (through any expected peer), or else as any
    /// member does (marked so), with every started member's health.
    async fn observe_cluster(&self, others: &[Peer]) -> ClusterView {
        let endpoints: Vec<String> = others.iter().map(|p| p.client_url.clone()).collect();
        // Prefer the leader's view: a data dir is quarantined when its member is missing from
        // the list, and a lagging member's list could miss a member that exists.
        let (list, probes, from_leader) = match self.pool.leader_member_list(&endpoints).await {
            Some((list, probes)) => (list, probes, true),
            None => {
                let Some(list) = self.pool.agreed_member_list(&endpoints).await else {
                    return ClusterView::Unreachable;
                };
                let probes = self.pool.probe_members(&list).await;
                (list, probes, false)
            }
        };
        ClusterView::Reachable(LiveCluster {
            from_leader,
            cluster_id: list.cluster_id,
            members: list
                .members
                .into_iter()
                .zip(probes)
                .map(|(member, probe)| ObservedMember {
                    member,
                    health: probe.map_or(Health::Unknown, |status| status.health()),
                })
                .collect(),
        })
    }

    /// Watches the local member until `cancel` or its removal: publishes its status, checks
    /// and records its identity, marks the cluster formed, and runs a reconcile step each
    /// interval. (Liveness runs beside it, in [`liveness`].)
    async fn watch_member(
        &self,
        mut child: watch::Receiver<ChildStatus>,
        reconciler: &mut Reconciler,
        cancel: &CancellationToken,
    ) -> Outcome {
        let local = url_string(&self.config.etcd.client_url);
        let mut formed_in_cluster = false;
        let mut child_open = true;
        loop {
            let child_status = child.borrow_and_update().clone();
            if matches!(child_status, ChildStatus::Running { .. }) {
                // Crash test: the pilot dies once its etcd runs (in a join: before promotion).
                fail::fail_point!("etcd-started", |_| std::process::abort());
            }
            self.publish_child(&child_status);
            // The pool keeps one connection to the local member while it works, so an idle
            // pilot does not reconnect every interval.
            match self.pool.status(&local).await {
                Ok(status) => {
                    self.metrics.etcd_up.set(1);
                    // Only our own child's answer says anything about our data: while it is not
                    // running, whatever answers on the port is someone else.
                    let checked = if matches!(child_status, ChildStatus::Running { .. }) {
                        self.check_identity(&status).await
                    } else {
                        Ok(None)
                    };
                    match checked {
                        Ok(None) => {}
                        Ok(Some(reason)) => {
                            tracing::error!(
                                "{reason}; stopping etcd, quarantining its data and joining afresh"
                            );
                            return Outcome::Quarantine { reason };
                        }
                        Err(err) => tracing::error!("cannot check the identity marker: {err:#}"),
                    }
                    let healthy = status.health() == Health::Healthy;
                    if healthy && !status.is_learner && !formed_in_cluster {
                        match self.mark_formed(&local, &status).await {
                            Ok(()) => formed_in_cluster = true,
                            Err(err) => tracing::warn!(
                                "cannot record that the cluster formed, will retry: {err:#}"
                            ),
                        }
                    }
                    self.publish_member(&status);
                }
                Err(err) => {
                    self.metrics.etcd_up.set(0);
                    let message = format!("local etcd does not answer: {err:#}");
                    self.status.send_modify(|s| {
                        s.member.healthy = false;
                        s.ready = false;
                        s.reason = match &s.cannot_run {
                            Some(cause) => format!("etcd cannot run: {cause}"),
                            None => message.clone(),
                        };
                        s.set_error("local_etcd", message);
                    });
                }
            }
            let identity = match self.data.identity() {
                Ok(identity) => identity,
                Err(err) => {
                    tracing::error!("cannot read the identity marker: {err:#}");
                    None
                }
            };
            // Not cancel-safe: a step may be executing a membership change, so it runs to
            // completion (every call in it has a timeout) before cancellation is looked at.
            let outcome = reconciler
                .step(identity.as_ref(), &local, &self.discovery)
                .await;
            match outcome {
                Outcome::Continue => {}
                Outcome::Recheck => {
                    // Set the data aside only if the start decision would (a stray's answer
                    // alone never makes it); otherwise keep running on it.
                    match self
                        .observe_start()
                        .await
                        .map(|observed| start::decide(&observed, &self.config.cluster_name))
                    {
                        Ok(Decision::Quarantine { reason }) => {
                            return Outcome::Quarantine { reason };
                        }
                        Ok(decision) => {
                            tracing::debug!(?decision, "keeping etcd on its data");
                        }
                        Err(err) => tracing::debug!("cannot observe the cluster: {err:#}"),
                    }
                }
                Outcome::Quarantine { .. } => return outcome,
            }
            // While the report still says "bootstrapping", look again soon: peers that restart
            // with an empty disk must learn that the cluster has formed as early as possible.
            let bootstrapping = matches!(
                self.status.borrow().report,
                PilotReport::Bootstrapping { .. }
            );
            let interval = if bootstrapping {
                Duration::from_millis(50).min(self.config.timers.observe_interval)
            } else {
                self.config.timers.observe_interval
            };
            // Cancel-safe: a sleep and a watch notification may be dropped.
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                changed = child.changed(), if child_open => child_open = changed.is_ok(),
                () = cancel.cancelled() => return Outcome::Continue,
            }
        }
    }

    /// Publishes what the etcd child does, and the verdict on its crashes: unusable data only
    /// after [`UNUSABLE_AFTER_FAILURES`] crashes in a row that etcd blamed on its data;
    /// anything else is "cannot run".
    fn publish_child(&self, child_status: &ChildStatus) {
        let (unusable, cannot_run) = match child_status {
            ChildStatus::BackingOff {
                failures,
                last_exit,
                crash,
                damaged_in_a_row,
            } => {
                if crash.is_unusable_data() && *damaged_in_a_row >= UNUSABLE_AFTER_FAILURES {
                    (
                        Some(format!(
                            "etcd exited {damaged_in_a_row} times in a row on damaged data (last: {last_exit}): {}",
                            crash.reason()
                        )),
                        None,
                    )
                } else {
                    (
                        None,
                        Some(format!(
                            "{} ({failures} failed start(s) in a row, last exit: {last_exit})",
                            crash.reason()
                        )),
                    )
                }
            }
            _ => (None, None),
        };
        if unusable.is_some() && self.status.borrow().data_unusable.is_none() {
            tracing::error!(
                "etcd cannot run on the local data; reporting it unusable so the coordinator \
                 removes this member and it rejoins with an empty disk (the data is kept in quarantine)"
            );
        }
        if let (Some(reason), ChildStatus::BackingOff { failures, .. }) =
            (&cannot_run, child_status)
            && (*failures == 1 || failures.is_power_of_two())
            && self.status.borrow().cannot_run.as_ref() != Some(reason)
        {
            tracing::error!(
                "etcd cannot run: {reason}; backing off (the member and its data are left as they are)"
            );
        }
        if cannot_run.is_some() {
            self.metrics.etcd_cannot_run.set(1);
        }
        self.status.send_modify(|s| {
            // Both are cleared only when etcd answers (publish_member), not by a brief run.
            if unusable.is_some() {
                s.data_unusable = unusable.clone();
                s.cannot_run = None;
            }
            if cannot_run.is_some() {
                s.cannot_run = cannot_run.clone();
            }
            s.etcd_process = match child_status {
                ChildStatus::NotStarted => "not_started".into(),
                ChildStatus::Running { pid } => format!("running (pid {pid})"),
                ChildStatus::BackingOff {
                    failures,
                    last_exit,
                    ..
                } => {
                    format!("backing_off (failures: {failures}, last exit: {last_exit})")
                }
                ChildStatus::Stopped => "stopped".into(),
            };
            s.etcd_restarts = self.metrics.etcd_restarts.get();
        });
    }

    fn publish_member(&self, status: &EndpointStatus) {
        let healthy = status.health() == Health::Healthy;
        let reason = if status.is_learner {
            "running as a learner; the coordinator promotes it once it has caught up".to_owned()
        } else if healthy {
            "running".to_owned()
        } else {
            format!(
                "etcd answers but is not healthy: leader {:?}, errors {:?}",
                status.leader, status.errors
            )
        };
        self.status.send_modify(|s| {
            // It answers: whatever kept it silent, and the join or restore that led here, is over.
            for source in ["local_etcd", "join", "restore"] {
                s.clear_error(source);
            }
            s.phase = Phase::Running;
            s.reason = reason;
            s.report = PilotReport::HasData {
                cluster_id: Some(status.cluster_id),
            };
            s.member = MemberState {
                member_id: Some(status.member_id.to_string()),
                cluster_id: Some(status.cluster_id.to_string()),
                leader: status.leader.map(|l| l.to_string()),
                is_leader: status.leader == Some(status.member_id),
                is_learner: status.is_learner,
                healthy,
                raft_term: status.raft_term,
                raft_index: status.raft_index,
                revision: status.revision,
                db_size: status.db_size,
                etcd_version: Some(status.version.clone()),
            };
            s.ready = healthy && !status.is_learner;
            s.data_unusable = None;
            s.cannot_run = None;
        });
        self.metrics.etcd_cannot_run.set(0);
        self.metrics.set_state(Phase::Running.as_str());
    }

    /// Checks that the local etcd runs the data the marker describes, and records its
    /// identity once it is confirmed. `Some(reason)`: the running etcd is not ours (it answers
    /// as another cluster or member than the marker, or as a cluster no answering peer
    /// shares): stop it, quarantine its data and join afresh.
    ///
    /// A cluster id is recorded only when another node's etcd answers with the same one (a
    /// peer discovery lists, or another member of the local etcd's list), when discovery lists
    /// no other peer, or when the data is a restored backup: an etcd that bootstrapped a
    /// cluster of its own must never have its id written down as ours.
    async fn check_identity(&self, status: &EndpointStatus) -> anyhow::Result<Option<String>> {
        let current = self.data.identity()?;
        if let Some(Identity {
            cluster_id: Some(cluster_id),
            member_id,
            ..
        }) = &current
        {
            if *cluster_id != status.cluster_id {
                return Ok(Some(format!(
                    "etcd answers as cluster {}, but its data's marker says cluster {cluster_id}: \
                     it runs on data that is not the cluster's (it bootstrapped a cluster of its own)",
                    status.cluster_id
                )));
            }
            match member_id {
                Some(member_id) if *member_id == status.member_id => return Ok(None),
                Some(member_id) => {
                    return Ok(Some(format!(
                        "etcd answers as member {} of cluster {cluster_id}, but its data's marker \
                         says member {member_id}",
                        status.member_id
                    )));
                }
                None => {}
            }
        }
        // Pending or missing marker: confirm the cluster with another node before recording
        // it: the peers discovery lists, and the other members the local etcd's list names
        // (nodes leaving the group, which discovery does not list, may be the only ones).
        let local = url_string(&self.config.etcd.client_url);
        let Ok(list) = self.pool.client(&local).await?.member_list().await else {
            return Ok(None);
        };
        // The answering member must be this node (name and peer URL): an etcd of someone else
        // on our port says nothing about our data.
        let me = url_string(&self.config.etcd.peer_url);
        let ours = list.members.iter().any(|m| {
            m.id == status.member_id
                && m.peer_urls.contains(&me)
                && m.name.as_ref().is_none_or(|n| *n == self.config.name)
        });
        if !ours {
            tracing::warn!(member_id = %status.member_id, "the etcd answering on our client URL is not this node's member; ignoring it");
            return Ok(None);
        }
        let others = self.other_peers().await;
        // Our own members' URLs: an answer of another cluster there is a stray on a member's
        // address, which confirms nothing and contradicts nothing.
        let members: Vec<String> = list
            .members
            .iter()
            .filter(|m| m.id != status.member_id)
            .filter_map(|m| m.client_urls.first().cloned())
            .collect();
        let mut endpoints: Vec<String> = others
            .as_ref()
            .map(|others| others.iter().map(|p| p.client_url.clone()).collect())
            .unwrap_or_default();
        endpoints.extend(members.iter().cloned());
        endpoints.retain(|e| *e != local);
        endpoints.sort();
        endpoints.dedup();
        let answers = self.pool.cluster_ids(&endpoints).await;
        if answers.iter().any(|(_, id)| *id == status.cluster_id) {
            self.record(status)?;
            return Ok(None);
        }
        // Nobody shares our cluster id. A majority of the listed peers, not our members,
        // answering as another cluster says that our etcd formed a cluster of its own (a
        // single stray answer says nothing).
        let strangers: Vec<String> = answers
            .iter()
            .filter(|(endpoint, _)| !members.contains(endpoint))
            .map(|(endpoint, id)| format!("{endpoint} as {id}"))
            .collect();
        let n_peers = others.as_ref().map_or(0, Vec::len);
        if !strangers.is_empty() && strangers.len() * 2 > n_peers {
            return Ok(Some(format!(
                "etcd answers as cluster {}, but the peers that answer are in another cluster \
                 ({}): it bootstrapped a cluster of its own",
                status.cluster_id,
                strangers.join(", ")
            )));
        }
        // Nobody contradicts it. A restored backup's first answer is the cluster it was
        // restored as (the restorer runs alone until the others join, so nobody can confirm
        // it yet); a node discovery lists alone is a one-member cluster by design.
        let alone = others.as_ref().is_ok_and(Vec::is_empty) && endpoints.is_empty();
        let restored = self.data.restored()?;
        if strangers.is_empty() && (alone || restored) {
            self.record(status)?;
            if restored {
                self.record_restored_cluster().await;
            }
            return Ok(None);
        }
        tracing::debug!(cluster_id = %status.cluster_id, "no other node confirms the cluster id yet; it is recorded once one does");
        Ok(None)
    }

    /// Records a restored cluster in the backup store's lineage as soon as it answers, not at
    /// its first backup: a loss before that is then a loss of this cluster, a new restore
    /// claim, never a second restore of the loss it came from.
    async fn record_restored_cluster(&self) {
        let Some(backups) = &self.backups else {
            return;
        };
        let local = url_string(&self.config.etcd.client_url);
        let result = match Etcd::connect_one(&local, &self.options).await {
            Ok(etcd) => backups.record_lineage(&etcd).await,
            Err(err) => Err(err.into()),
        };
        if let Err(err) = result {
            tracing::warn!(
                "cannot record the restored cluster in the backup store yet (its first backup \
                 will): {err:#}"
            );
        }
    }

    /// Writes the identity etcd answers with into the marker.
    fn record(&self, status: &EndpointStatus) -> anyhow::Result<()> {
        let identity = Identity {
            name: self.config.name.clone(),
            cluster_id: Some(status.cluster_id),
            member_id: Some(status.member_id),
        };
        tracing::info!(member_id = %status.member_id, cluster_id = %status.cluster_id, "recorded identity");
        self.data.write_identity(&identity)?;
        self.data.clear_restored()
    }

    async fn mark_formed(&self, local: &str, status: &EndpointStatus) -> anyhow::Result<()> {
        if !self.data.formed()? {
            self.data
                .mark_formed(status.cluster_id, SystemTime::now())?;
            tracing::info!(cluster_id = %status.cluster_id, "cluster formed; marker written");
        }
        let client = Etcd::connect_one(local, &self.options).await?;
        if client.get(FORMED_KEY).await?.is_none() {
            let value = serde_json::json!({
                "cluster_id": status.cluster_id.to_string(),
                "by": self.config.name.as_str(),
                "at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            });
            client.put(FORMED_KEY, &value.to_string()).await?;
        }
        Ok(())
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
        for member in list
            .members
            .iter()
            .filter(|m| m.id != status.member_id && !m.is_learner)
        {
            let Some(endpoint) = member.client_urls.first() else {
                continue;
            };
            let healthy = etcd::probe(endpoint, &self.options)
                .await
                .is_ok_and(|s| s.health() == Health::Healthy);
            if healthy {
                client.move_leader(member.id).await?;
                tracing::info!(to = %member.id, "moved leadership");
                return Ok(());
            }
        }
        anyhow::bail!("no other healthy voter to take over")
    }

    /// Tells peer pilots (`/v1/bootstrap`) what this node holds, before it decides anything.
    fn publish_report(&self, local: &LocalData, formed: bool, expected: &[Peer]) {
        let report = match local {
            LocalData::Empty => PilotReport::Empty {
                formed,
                initial_cluster: model::initial_cluster(
                    expected.iter().map(|p| (&p.name, p.peer_url.as_str())),
                ),
            },
            LocalData::Data { identity } => PilotReport::HasData {
                cluster_id: identity.as_ref().and_then(|i| i.cluster_id),
            },
            // About to be quarantined; until then it is data a peer must not bootstrap past.
            LocalData::Unusable { .. } => PilotReport::HasData { cluster_id: None },
        };
        self.status.send_modify(|s| s.report = report);
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

/// Restarts an etcd that answered in its current run and then stays silent for `timeout`.
///
/// It asks etcd's status every second (each call under the etcd call timeout), beside the
/// reconcile step and independently of how long a step takes, so the silence is measured,
/// not guessed from two samples far apart. An etcd that has not answered yet in its run (a
/// member waiting for its quorum, or replaying a long WAL) is left alone: a restart would not
/// help it. The request names the process, so a request about an earlier run is ignored.
async fn liveness(
    pool: etcd::Pool,
    local: String,
    mut child: watch::Receiver<ChildStatus>,
    unresponsive: tokio::sync::mpsc::Sender<(u32, Duration)>,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let mut run = None;
    let mut answered = false;
    let mut silent_since: Option<tokio::time::Instant> = None;
    loop {
        let status = child.borrow_and_update().clone();
        if let ChildStatus::Running { pid } = status {
            if run != Some(pid) {
                run = Some(pid);
                answered = false;
                silent_since = None;
            }
            match pool.status(&local).await {
                Ok(_) => {
                    answered = true;
                    silent_since = None;
                }
                Err(_) if answered => {
                    let since = *silent_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= timeout {
                        tracing::error!(pid, silent_for = ?since.elapsed(), "local etcd runs but has not answered for the liveness timeout; restarting it");
                        if unresponsive.try_send((pid, since.elapsed())).is_ok() {
                            answered = false;
                            silent_since = None;
                        }
                    }
                }
                Err(_) => {}
            }
        } else {
            run = None;
        }
        // Cancel-safe: only a sleep is dropped.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

async fn ask_pilot(client: &reqwest::Client, admin_url: &str) -> PilotReport {
    let response = client.get(format!("{admin_url}/v1/bootstrap")).send().await;
    match response {
        Ok(response) if response.status().is_success() => {
            response.json().await.unwrap_or(PilotReport::Unknown)
        }
        _ => PilotReport::Unknown,
    }
}

/// etcd's flags for `mode`.
fn etcd_args(config: &Config, data: &DataDir, mode: &StartMode) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", config.name),
        format!("--data-dir={}", data.etcd_dir().display()),
        format!(
            "--listen-peer-urls={}",
            url_string(&config.etcd.listen_peer_url)
        ),
        format!(
            "--initial-advertise-peer-urls={}",
            url_string(&config.etcd.peer_url)
        ),
        format!(
            "--listen-client-urls={}",
            url_string(&config.etcd.listen_client_url)
        ),
        format!(
            "--advertise-client-urls={}",
            url_string(&config.etcd.client_url)
        ),
        "--logger=zap".to_owned(),
        "--log-outputs=stderr".to_owned(),
    ];
    match mode {
        StartMode::New {
            initial_cluster,
            token,
        } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=new".to_owned());
            args.push(format!("--initial-cluster-token={token}"));
        }
        StartMode::Existing { initial_cluster } | StartMode::Restart { initial_cluster } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=existing".to_owned());
        }
    }
    args.extend(config.etcd.extra_args.iter().cloned());
    args
}
