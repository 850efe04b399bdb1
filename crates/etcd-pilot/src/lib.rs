//! etcd-pilot: runs beside etcd on every node and keeps the cluster formed, joined and running.
//!
//! The wiring root, and only that: `main` hands the command line to `cli`, which runs the
//! daemon through `run_agent`: it builds the admin API, the etcd client options and pool, the
//! peer-pilot client, the discovery provider, the coordinator role channel and seat, the
//! reconciler with its DNS records, the quorum-loss watch, the backup store, claims and schedule, the lifecycle
//! consumer and the pilot, hands each its parts, and shuts them down in order. No module
//! imports this one.

mod admin;
mod aws;
mod backup;
mod cli;
mod cluster_status;
mod config;
mod coordinator;
mod datadir;
mod deploy;
mod discovery;
mod dns;
mod error;
mod etcd;
mod lifecycle;
mod local;
mod maintenance;
mod maintenance_request;
mod manual_reseed;
mod metrics;
mod output;
mod peer_api;
mod pilot;
mod process;
mod quorum;
mod reconcile;
mod records;
mod rolling;
mod signals;
mod state;
mod supervisor;
mod upgrade;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::{Phase, PilotStatus};

/// Entry point of the binary: the command line, with the daemon wired here.
pub fn main() -> std::process::ExitCode {
    cli::main(|config, cancel| Box::pin(run_agent(config, cancel)))
}

/// Runs the daemon until `cancel`: admin API first, then the pilot; on cancel the pilot stops
/// etcd (after moving leadership away) and the admin API stops last, so `/healthz` reports
/// draining meanwhile.
async fn run_agent(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(
        name = %config.name,
        data_dir = %config.data_dir.display(),
        etcd = %config.etcd.bin.display(),
        peer_url = %config::url_string(&config.etcd.peer_url),
        client_url = %config::url_string(&config.etcd.client_url),
        "configuration loaded"
    );
    let metrics = Metrics::new();
    // One set of etcd client options, the peer-pilot client and this
    // member's client URL for every task.
    let options = etcd::ClientOptions {
        timeout: config.timers.etcd_call_timeout,
        credentials: config.etcd.credentials.clone(),
    };
    let peers = peer_api::PeerApi::new(config.timers.pilot_call_timeout)?;
    let client_url = config::url_string(&config.etcd.client_url);
    let (status_tx, status_rx) = watch::channel(PilotStatus::new(
        config.name.as_str(),
        etcd_pilot_core::start::PilotReport::Unknown,
    ));
    // Operators' reseed orders: from the admin API to the quorum watch.
    let orders = quorum::Orders::default();
    let admin = Admin::start(&config, status_rx, metrics.clone(), orders.clone()).await?;

    // The coordinator role: the pilot's reconciler holds it; backups and the lifecycle hook
    // act only while it does.
    let (role_tx, role_rx) = watch::channel(coordinator::Role::Member);
    let backups = backup::Backups::open(&config).context("open the backup store (backup.url)")?;
    let claims = backups.as_ref().map(|b| {
        backup::claim::Claims::new(
            b.store.clone(),
            config.name.to_string(),
            backup::claim::admin_url(&config),
            config.restore.claim_timeout,
        )
    });
    let schedule = backups.clone().map(|backups| {
        let schedule = backup::Schedule {
            backups,
            member: config.name.to_string(),
            client_url: client_url.clone(),
            options: options.clone(),
            scratch: datadir::DataDir::new(&config.data_dir).drill_scratch(),
            status: status_tx.clone(),
            metrics: metrics.clone(),
            role: role_rx.clone(),
        };
        tokio::spawn(schedule.run(cancel.clone()))
    });
    // The instances the lifecycle hook holds, for the reconcile step (none without a hook).
    let (terminating_tx, terminating) = watch::channel(std::collections::BTreeSet::new());
    let lifecycle = config.lifecycle.clone().map(|lifecycle| {
        let consumer = lifecycle::Consumer {
            config: lifecycle,
            client_url: client_url.clone(),
            options: options.clone(),
            status: status_tx.clone(),
            terminating: terminating_tx,
            role: role_rx.clone(),
        };
        tokio::spawn(consumer.run(cancel.clone()))
    });
    let reconciler = reconcile::Reconciler::new(
        config.me(),
        options.clone(),
        peers.clone(),
        config.timers.plan_policy(),
        coordinator::Seat::new(
            config.name.clone(),
            options.clone(),
            config.timers.coordinator_lease,
            metrics.clone(),
            role_tx,
        ),
        status_tx.clone(),
        metrics.clone(),
    )
    .with_terminating(terminating)
    .with_maintenance(maintenance::Maintenance::new(
        config.maintenance.clone(),
        backups.clone(),
        status_tx.clone(),
        metrics.clone(),
        config.name.clone(),
        options.clone(),
    ))
    .with_rolling(rolling::Rolling::new(
        config.name.clone(),
        peers.clone(),
        backups.clone(),
        config.upgrade.max_backup_age,
        metrics.clone(),
    ))
    .with_dns(
        config
            .dns
            .clone()
            .map(|dns| dns::Records::new(dns, status_tx.clone())),
    );
    let parts = pilot::Parts {
        discovery: discovery::Provider::from_config(&config, status_tx.clone()),
        pool: etcd::Pool::new(options.clone()),
        options,
        peers,
        backups,
        claims,
        status: status_tx.clone(),
        metrics: metrics.clone(),
    };
    let quorum = quorum::QuorumWatch::new(
        config.name.clone(),
        parts.pool.clone(),
        parts.peers.clone(),
        config.timers.reseed_policy(config.reseed_auto),
        status_tx.clone(),
        metrics.clone(),
        orders,
    );
    let result = pilot::Pilot::new(config, parts)
        .run(reconciler, quorum, cancel.clone())
        .await;
    cancel.cancel();
    if let Some(schedule) = schedule
        && let Err(err) = schedule.await
    {
        tracing::warn!("backup schedule task failed: {err:#}");
    }
    if let Some(lifecycle) = lifecycle
        && let Err(err) = lifecycle.await
    {
        tracing::warn!("lifecycle hook task failed: {err:#}");
    }
    status_tx.send_modify(|s| s.phase = Phase::Stopping);
    admin.stop().await;
    tracing::info!("shutdown complete");
    result
}

/// The admin API's task and the pilot's pid file, which live longer than everything else.
struct Admin {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    cancel: CancellationToken,
    pid_file: std::path::PathBuf,
}

impl Admin {
    /// Binds `admin.listen`, serves the API, and records the pilot's pid.
    async fn start(
        config: &Config,
        status: watch::Receiver<PilotStatus>,
        metrics: Metrics,
        orders: quorum::Orders,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("bind admin API on {} (admin.listen)", config.admin.listen))?;
        tracing::info!(listen = %config.admin.listen, "admin API listening");
        // Its own pid beside its data, for whoever must stop it (`local up` stops every pilot
        // of its dir, whoever started it). Written after the admin port is ours: a second
        // pilot on the same config fails above and never overwrites it.
        let data = datadir::DataDir::new(&config.data_dir);
        let pid_file = data.pilot_pid_file();
        if let Err(err) = data.create().and_then(|()| {
            std::fs::write(&pid_file, format!("{}\n", std::process::id()))
                .with_context(|| format!("write {}", pid_file.display()))
        }) {
            tracing::warn!("cannot record the pilot's pid: {err:#}");
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(admin::serve(
            listener,
            admin::AppState {
                status,
                metrics,
                orders,
            },
            cancel.clone(),
        ));
        Ok(Self {
            task,
            cancel,
            pid_file,
        })
    }

    /// Stops the API and removes the pid file if it is still this process's.
    async fn stop(self) {
        tracing::info!("shutdown: stopping admin API");
        self.cancel.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("admin API ended with an error: {err:#}"),
            Err(err) => tracing::warn!("admin API task failed: {err:#}"),
        }
        if std::fs::read_to_string(&self.pid_file)
            .is_ok_and(|text| text.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}
