//! The pilot's Prometheus metrics, all prefixed `etcd_pilot_`.
//!
//! One registry is built in `run` and passed down; there are no global statics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabel {
    pub(crate) version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HealthLabel {
    pub(crate) health: String,
}

/// Handles to every metric. Cloning is cheap; all clones update the same series.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) registry: Arc<Registry>,
    pub(crate) etcd_restarts: Counter,
    /// Reseeds this pilot's member seeded after quorum loss.
    pub(crate) reseeds: Counter,
    pub(crate) etcd_up: Gauge,
    /// 1 while the quorum is lost, as this pilot sees it.
    pub(crate) quorum_lost: Gauge,
    /// etcd crashes by verdict: `unusable_data`, `cannot_run`, `unresponsive`.
    pub(crate) etcd_crashes: Family<KindLabel, Counter>,
    /// 1 while etcd cannot run for a reason that is not its data's fault (see `/v1/status`).
    pub(crate) etcd_cannot_run: Gauge,
    /// 1 for the pilot's current state, 0 for the others.
    pub(crate) state: Family<StateLabel, Gauge>,
    /// Membership changes this pilot made as coordinator, by kind.
    pub(crate) membership_changes: Family<KindLabel, Counter>,
    /// Members by observed health (healthy, unhealthy, unknown).
    pub(crate) members: Family<HealthLabel, Gauge>,
    /// 1 while this pilot is the coordinator.
    pub(crate) coordinator: Gauge,
    /// Unix time of the newest backup this pilot took.
    pub(crate) backup_last_success: Gauge,
    /// Unix time of the newest backup that passed a restore drill.
    pub(crate) backup_last_verified: Gauge,
    pub(crate) backup_db_size: Gauge,
    pub(crate) backup_compressed_size: Gauge,
    pub(crate) backup_duration_ms: Gauge,
    pub(crate) drill_duration_ms: Gauge,
    /// Failed backup, drill or retention steps.
    pub(crate) backup_failures: Counter,
    /// Restore drills that did not pass, by what they said about the backup: `corrupt`,
    /// `restore_rejected`, `content_differs` (the backup is marked failed) or `environment`
    /// (it stays unverified and is drilled again).
    pub(crate) drill_errors: Family<KindLabel, Counter>,
    /// Healthy voters the cluster can lose and keep its quorum, as this pilot sees it; -1:
    /// the quorum is lost.
    pub(crate) fault_tolerance: Gauge,
    /// Quarantined copies of etcd data kept, and their bytes.
    pub(crate) quarantine_copies: Gauge,
    pub(crate) quarantine_bytes: Gauge,
    /// 1 for the release the local etcd runs (the label), 0 for releases it ran before.
    pub(crate) member_version: Family<VersionLabel, Gauge>,
    /// How many flags the release the local etcd runs carries (core `upgrade::FLAGGED`).
    pub(crate) release_flags: Gauge,
    /// 1 while a rolling upgrade of etcd is under way (on the coordinator: a member runs
    /// another release than its pilot asks for, or the lock is held; on any pilot: its own
    /// member is restarting on a new release).
    pub(crate) upgrade_in_progress: Gauge,
    /// Unix time of the last compaction this pilot made (as coordinator).
    pub(crate) last_compaction: Gauge,
    /// Unix time of the last defragmentation this pilot made (as coordinator).
    pub(crate) last_defrag: Gauge,
    /// The local member's database file, and the part of it holding live data.
    pub(crate) db_size: Gauge,
    pub(crate) db_size_in_use: Gauge,
    /// The alarms the local member reports, by kind (`NOSPACE`, `CORRUPT`): 1 while raised.
    pub(crate) alarms: Family<KindLabel, Gauge>,
    last_version: Arc<std::sync::Mutex<Option<String>>>,
}

/// Every pilot state, so the state gauge always has all series.
pub(crate) const STATES: &[&str] = &[
    "starting",
    "waiting",
    "joining",
    "bootstrapping",
    "restoring",
    "running",
    "stopping",
];

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("etcd_pilot");
        let reseeds = Counter::default();
        registry.register(
            "reseeds",
            "Times this member seeded a new cluster after quorum loss (etcd --force-new-cluster on the best survivor)",
            reseeds.clone(),
        );
        let etcd_restarts = Counter::default();
        registry.register(
            "etcd_restarts",
            "Times the supervisor restarted a crashed etcd",
            etcd_restarts.clone(),
        );
        let etcd_up = Gauge::default();
        registry.register(
            "etcd_up",
            "1 when the local etcd answers its status API",
            etcd_up.clone(),
        );
        let etcd_crashes = Family::<KindLabel, Counter>::default();
        registry.register(
            "etcd_crashes",
            "etcd crashes by verdict: unusable_data (the member may be removed), cannot_run or unresponsive (never removed)",
            etcd_crashes.clone(),
        );
        let etcd_cannot_run = Gauge::default();
        registry.register(
            "etcd_cannot_run",
            "1 while etcd keeps failing for a reason that is not its data (bad flags, binary, port, disk full)",
            etcd_cannot_run.clone(),
        );
        let state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "state",
            "The pilot's state: 1 for the current one",
            state.clone(),
        );
        let membership_changes = Family::<KindLabel, Counter>::default();
        registry.register(
            "membership_changes",
            "Membership changes made by this pilot as coordinator, by kind",
            membership_changes.clone(),
        );
        let members = Family::<HealthLabel, Gauge>::default();
        registry.register(
            "members",
            "Members of the cluster by observed health",
            members.clone(),
        );
        let coordinator = Gauge::default();
        registry.register(
            "coordinator",
            "1 while this pilot is the coordinator",
            coordinator.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let backup_last_success = gauge(
            &mut registry,
            "backup_last_success_timestamp_seconds",
            "Unix time of the newest backup this pilot took",
        );
        let backup_last_verified = gauge(
            &mut registry,
            "backup_last_verified_timestamp_seconds",
            "Unix time of the newest backup that passed a restore drill",
        );
        let backup_db_size = gauge(
            &mut registry,
            "backup_db_size_bytes",
            "Size of the newest backup's snapshot",
        );
        let backup_compressed_size = gauge(
            &mut registry,
            "backup_compressed_size_bytes",
            "Size of the newest backup in the store",
        );
        let backup_duration_ms = gauge(
            &mut registry,
            "backup_duration_milliseconds",
            "How long the newest backup took",
        );
        let drill_duration_ms = gauge(
            &mut registry,
            "drill_duration_milliseconds",
            "How long the newest restore drill took",
        );
        let backup_failures = Counter::default();
        registry.register(
            "backup_failures",
            "Failed backup, drill or retention steps",
            backup_failures.clone(),
        );
        let drill_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "drill_errors",
            "Restore drills that did not pass, by kind (only environment leaves the backup unverified)",
            drill_errors.clone(),
        );
        let quarantine_copies = gauge(
            &mut registry,
            "quarantine_copies",
            "Quarantined copies of etcd data kept (quarantine.keep and quarantine.max_bytes bound them)",
        );
        let quarantine_bytes = gauge(
            &mut registry,
            "quarantine_bytes",
            "Bytes the quarantined copies of etcd data take",
        );
        let quorum_lost = gauge(
            &mut registry,
            "quorum_lost",
            "1 while this pilot sees no leader and fewer than a quorum of voters answering for timers.quorum_lost_after",
        );
        let fault_tolerance = gauge(
            &mut registry,
            "fault_tolerance",
            "Healthy voters the cluster can lose and keep its quorum (-1: quorum lost, or no leader seen from this pilot)",
        );
        let member_version = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "member_version_info",
            "1 for the etcd release the local member runs (label version)",
            member_version.clone(),
        );
        let release_flags = gauge(
            &mut registry,
            "release_flags",
            "Flags of the etcd release the local member runs: not for production, out of support, below its minor's security floor (/v1/status release.flags says which)",
        );
        let upgrade_in_progress = gauge(
            &mut registry,
            "upgrade_in_progress",
            "1 while a rolling upgrade of etcd is under way: seen by the coordinator, or this pilot's own member restarting on a new release",
        );
        let last_compaction = gauge(
            &mut registry,
            "last_compaction_timestamp_seconds",
            "Unix time of the last compaction this pilot made as coordinator (take max() across pilots)",
        );
        let last_defrag = gauge(
            &mut registry,
            "last_defrag_timestamp_seconds",
            "Unix time of the last defragmentation of a member this pilot made as coordinator (take max() across pilots)",
        );
        let db_size = gauge(
            &mut registry,
            "db_size_bytes",
            "Size of the local member's database file",
        );
        let db_size_in_use = gauge(
            &mut registry,
            "db_size_in_use_bytes",
            "The part of the local member's database file holding live data (the rest is what a defrag gives back)",
        );
        let alarms = Family::<KindLabel, Gauge>::default();
        registry.register(
            "alarms",
            "Alarms the local member reports, by kind: 1 while raised (NOSPACE: the database hit its quota and etcd takes no writes; CORRUPT: its data differs from the others')",
            alarms.clone(),
        );
        for kind in ["NOSPACE", "CORRUPT"] {
            alarms
                .get_or_create(&KindLabel {
                    kind: kind.to_owned(),
                })
                .set(0);
        }
        let metrics = Self {
            alarms,
            last_compaction,
            last_defrag,
            db_size,
            db_size_in_use,
            upgrade_in_progress,
            member_version,
            release_flags,
            last_version: Arc::default(),
            reseeds,
            quorum_lost,
            fault_tolerance,
            quarantine_copies,
            quarantine_bytes,
            drill_errors,
            backup_last_success,
            backup_last_verified,
            backup_db_size,
            backup_compressed_size,
            backup_duration_ms,
            drill_duration_ms,
            backup_failures,
            registry: Arc::new(registry),
            etcd_restarts,
            etcd_up,
            etcd_crashes,
            etcd_cannot_run,
            state,
            membership_changes,
            members,
            coordinator,
        };
        metrics.set_state("starting");
        metrics
    }

    /// The release the local etcd runs, and how many flags it carries.
    pub(crate) fn set_release(&self, version: &str, flags: usize) {
        let mut last = self
            .last_version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_deref() != Some(version) {
            // A new release: the one it ran before drops to 0.
            if let Some(old) = last.take() {
                self.member_version
                    .get_or_create(&VersionLabel { version: old })
                    .set(0);
            }
            self.member_version
                .get_or_create(&VersionLabel {
                    version: version.to_owned(),
                })
                .set(1);
            *last = Some(version.to_owned());
        }
        self.release_flags
            .set(i64::try_from(flags).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_state(&self, current: &str) {
        for state in STATES {
            self.state
                .get_or_create(&StateLabel {
                    state: (*state).to_owned(),
                })
                .set(i64::from(*state == current));
        }
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("cannot encode metrics: {err:#}");
        }
        out
    }
}
