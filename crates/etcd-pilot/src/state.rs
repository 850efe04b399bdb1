//! The pilot's published state: what it is doing and why, and what it knows of its member.
//!
//! The pilot writes it into a `watch` channel; the admin API only reads snapshots of it.

use etcd_pilot_core::start::PilotReport;
use serde::Serialize;

/// What the pilot is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// Observing before the first decision.
    Starting,
    /// Blocked: `reason` says on what.
    Waiting,
    /// Taking the steps of joining a live cluster.
    Joining,
    /// Starting etcd in a new cluster.
    Bootstrapping,
    /// Restoring a backup after the cluster was lost.
    Restoring,
    /// etcd runs under supervision.
    Running,
    /// Shutting down.
    Stopping,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Waiting => "waiting",
            Phase::Joining => "joining",
            Phase::Bootstrapping => "bootstrapping",
            Phase::Restoring => "restoring",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
        }
    }
}

/// The local member as its etcd last reported it.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct MemberState {
    pub(crate) member_id: Option<String>,
    pub(crate) cluster_id: Option<String>,
    pub(crate) leader: Option<String>,
    pub(crate) is_leader: bool,
    pub(crate) is_learner: bool,
    pub(crate) healthy: bool,
    pub(crate) raft_term: u64,
    pub(crate) raft_index: u64,
    pub(crate) revision: i64,
    pub(crate) db_size: i64,
    pub(crate) etcd_version: Option<String>,
}

/// The last plan this pilot computed (every pilot plans; only the coordinator acts).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct PlanStatus {
    /// `converged`, `wait` or the action's kind.
    pub(crate) next: String,
    /// Why, or what blocks it.
    pub(crate) reason: String,
    /// Whether this pilot is the coordinator (and so will act on it).
    pub(crate) coordinator: bool,
    /// The coordinator's fencing token, while this pilot holds the role.
    pub(crate) fencing_token: Option<i64>,
    /// When it was computed (RFC 3339).
    pub(crate) at: String,
    /// What keeps the cluster from full strength, each with its cause and age as of `at`.
    pub(crate) conditions: Vec<etcd_pilot_core::condition::Condition>,
    /// The rolling upgrade, as the coordinator sees it (only the coordinator computes it).
    pub(crate) upgrade: Option<crate::records::UpgradeSummary>,
    /// The next maintenance step (defragmentation, a space alarm), as the coordinator sees
    /// it; `None` while there is nothing to do.
    pub(crate) maintenance: Option<crate::records::MaintenanceSummary>,
}

/// The last membership change this pilot executed as coordinator.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ActionStatus {
    pub(crate) kind: String,
    pub(crate) member: String,
    /// `ok`, or the error.
    pub(crate) outcome: String,
    pub(crate) at: String,
}

/// Discovery's last answer.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct DiscoveryStatus {
    pub(crate) provider: &'static str,
    /// How many peers the last successful answer listed.
    pub(crate) peers: Option<usize>,
    /// When discovery last answered (RFC 3339).
    pub(crate) last_success: Option<String>,
    /// Why the last call failed, while it does.
    pub(crate) error: Option<String>,
    /// The last call failed: the pilot acts on the previous answer and removes nobody.
    pub(crate) stale: bool,
}

/// DNS records, when published (the coordinator writes them).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct DnsStatus {
    /// The healthy voters last published, and when.
    pub(crate) published: Vec<String>,
    pub(crate) at: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// Terminations the lifecycle hook waits on (the coordinator handles them).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct LifecycleStatus {
    /// Instances whose member is being removed before their termination continues.
    pub(crate) pending: Vec<String>,
    /// The last instance whose termination the pilot let continue, and when.
    pub(crate) last_completed: Option<String>,
    pub(crate) last_error: Option<String>,
}

/// Everything `/v1/status` serves.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PilotStatus {
    pub(crate) name: String,
    pub(crate) pilot_version: &'static str,
    pub(crate) phase: Phase,
    /// Why the pilot is in this phase, in words an operator can act on.
    pub(crate) reason: String,
    /// What this pilot tells its peers about its data (`/v1/bootstrap`).
    pub(crate) report: PilotReport,
    /// The etcd child: not_started, running, backing_off, stopped.
    pub(crate) etcd_process: String,
    pub(crate) etcd_restarts: u64,
    pub(crate) member: MemberState,
    /// Ready: the local member is healthy and a voter.
    pub(crate) ready: bool,
    /// The last error of the pilot's own work, while its condition lasts.
    pub(crate) last_error: Option<LastError>,
    /// Set when etcd cannot run on the local data (it keeps crashing without a stable run);
    /// the coordinator then removes the member and the pilot rejoins with an empty disk.
    pub(crate) data_unusable: Option<String>,
    /// Set while etcd keeps failing for a reason that is not its data's (a bad flag, a missing
    /// binary, an address in use, a full disk, a member that stopped answering): the pilot
    /// backs off and retries; nobody removes the member or touches its data for it.
    pub(crate) cannot_run: Option<String>,
    pub(crate) plan: Option<PlanStatus>,
    /// Healthy voters the cluster can lose, as this pilot's last observation saw it.
    pub(crate) fault_tolerance: Option<etcd_pilot_core::FaultTolerance>,
    pub(crate) last_action: Option<ActionStatus>,
    /// Backups, when a store is configured.
    pub(crate) backup: BackupStatus,
    pub(crate) discovery: DiscoveryStatus,
    pub(crate) dns: DnsStatus,
    pub(crate) lifecycle: LifecycleStatus,
    /// The quarantined copies of etcd data kept, after quarantine retention.
    pub(crate) quarantine: crate::datadir::QuarantineReport,
    /// Set while this pilot's etcd sees no leader: whether the quorum is lost, the survivors
    /// and why a reseed waits (`quorum.rs`).
    pub(crate) quorum: Option<QuorumStatus>,
    /// While this pilot reseeds the cluster from its member: the step it is at.
    pub(crate) reseed: Option<ReseedProgress>,
    /// What became of the last operator's reseed order (`etcd-pilot reseed`), with its id.
    pub(crate) reseed_order: Option<String>,
    /// The etcd releases: the one `etcd.bin` is, the one the member runs, and their flags.
    pub(crate) release: ReleaseStatus,
    /// This member's part in a rolling upgrade of etcd.
    pub(crate) upgrade: UpgradeStatus,
    /// Day-2 maintenance: compaction (on the coordinator).
    pub(crate) maintenance: MaintenanceStatus,
}

/// What the coordinator's maintenance did.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct MaintenanceStatus {
    /// Whether the pilots compact (`maintenance.compaction`, off when etcd does).
    pub(crate) compaction: bool,
    /// The last compaction this pilot made: revision, time, the revision then.
    pub(crate) last_compaction: Option<String>,
    /// Why the last look compacted nothing, or what failed.
    pub(crate) note: Option<String>,
    /// The last defragmentation this pilot made: member, sizes before and after, how long.
    pub(crate) last_defrag: Option<String>,
    /// The coordinator's defragmentation and space-alarm step, and why.
    pub(crate) defrag: Option<String>,
}

/// This member's part in a rolling upgrade.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct UpgradeStatus {
    /// The binary etcd runs (or last ran) on this data, as recorded beside it.
    pub(crate) running_bin: Option<String>,
    /// Where this member stands: waiting for the lock, restarting on a release, ...
    pub(crate) step: Option<String>,
    /// A step is under way: restarted on a release (or going back), not yet healthy and
    /// caught up. The coordinator keeps the lock with this member meanwhile.
    pub(crate) stepping: bool,
    /// Set while this node's last attempt at its desired release was rolled back (or could
    /// not be): the coordinator stops the upgrade and shows it.
    pub(crate) failed: Option<String>,
}

/// The etcd releases of this node.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct ReleaseStatus {
    /// `etcd.bin`, and the release it says it is (`etcd --version`), or why that is unknown.
    pub(crate) bin: String,
    pub(crate) bin_version: Option<String>,
    /// Every release this node has (`etcd.bin` and `etcd.versions`), as `3.5.16 /path`.
    pub(crate) available: Vec<String>,
    /// Binaries that named no release (missing, not etcd, timed out).
    pub(crate) unreadable: Vec<String>,
    /// The release the member runs (its status), once it answered.
    pub(crate) running: Option<String>,
    /// The flags of the running release (of `etcd.bin`'s before it runs): why it is not
    /// for production, out of support or below its minor's security floor, with the source.
    pub(crate) flags: Vec<String>,
}

impl ReleaseStatus {
    /// The flags of `version`, one line each.
    pub(crate) fn flags_of(version: &str) -> Vec<String> {
        version
            .parse::<etcd_pilot_core::upgrade::Version>()
            .map(|v| {
                etcd_pilot_core::upgrade::warnings(v)
                    .iter()
                    .map(|f| format!("{} [{}]", f.reason, f.source))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A reseed under way on this pilot, step by step.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ReseedProgress {
    /// `snapshot`, `claim`, `stopping`, `resuming` (after a restart), `copying`, `forced`,
    /// `restarting` or `recording`.
    pub(crate) step: &'static str,
    /// What the step does, for people.
    pub(crate) detail: String,
    /// The raft index the cluster goes on from, and who ordered it.
    pub(crate) raft_index: u64,
    pub(crate) ordered_by: String,
    /// When the reseed started (RFC 3339).
    pub(crate) since: String,
}

/// What this pilot sees while its etcd has no leader.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QuorumStatus {
    /// No leader and fewer than a quorum of voters answering.
    pub(crate) lost: bool,
    /// Since when (RFC 3339), while lost.
    pub(crate) lost_since: Option<String>,
    pub(crate) lost_for_secs: u64,
    /// The voters whose etcd answers, best first, with their applied raft index.
    pub(crate) survivors: Vec<Survivor>,
    /// The voters whose etcd does not answer.
    pub(crate) unreachable: Vec<String>,
    /// The highest raft index this pilot has seen in the cluster.
    pub(crate) highest_seen: u64,
    /// The survivor a reseed would start from, and the raft entries it lacks against
    /// `highest_seen`, once nothing holds the reseed back.
    pub(crate) seed: Option<Survivor>,
    pub(crate) seed_behind: Option<u64>,
    /// One line: what is lost and what the pilot waits for.
    pub(crate) verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Survivor {
    pub(crate) name: String,
    pub(crate) raft_index: u64,
}

/// An error that has not cleared yet: what failed, and since when.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LastError {
    /// What failed: `local_etcd`, `join` or `restore`.
    pub(crate) source: &'static str,
    pub(crate) message: String,
    /// When it was last seen (RFC 3339).
    pub(crate) at: String,
}

impl PilotStatus {
    /// Records an error of `source`, with the time.
    pub(crate) fn set_error(&mut self, source: &'static str, message: String) {
        self.last_error = Some(LastError {
            source,
            message,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
    }

    /// Clears the last error if `source` made it: its condition has cleared.
    pub(crate) fn clear_error(&mut self, source: &'static str) {
        if self.last_error.as_ref().is_some_and(|e| e.source == source) {
            self.last_error = None;
        }
    }

    pub(crate) fn new(name: &str, report: PilotReport) -> Self {
        Self {
            name: name.to_owned(),
            pilot_version: env!("CARGO_PKG_VERSION"),
            phase: Phase::Starting,
            reason: "observing the cluster".to_owned(),
            report,
            etcd_process: "not_started".to_owned(),
            etcd_restarts: 0,
            member: MemberState::default(),
            ready: false,
            last_error: None,
            data_unusable: None,
            cannot_run: None,
            plan: None,
            fault_tolerance: None,
            last_action: None,
            backup: BackupStatus::default(),
            discovery: DiscoveryStatus::default(),
            dns: DnsStatus::default(),
            lifecycle: LifecycleStatus::default(),
            quarantine: crate::datadir::QuarantineReport::default(),
            quorum: None,
            reseed: None,
            reseed_order: None,
            release: ReleaseStatus::default(),
            upgrade: UpgradeStatus::default(),
            maintenance: MaintenanceStatus::default(),
        }
    }
}

/// What `/v1/status` says about backups.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct BackupStatus {
    /// The store's URL.
    pub(crate) store: String,
    /// The newest backup this pilot took: id, time, sizes.
    pub(crate) last_backup: Option<LastBackup>,
    /// The newest backup this pilot verified.
    pub(crate) last_verified: Option<String>,
    /// The last error of a backup, drill or retention step; cleared by the next success.
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_at: Option<String>,
    /// A backup whose drills failed for reasons outside it: it stays unverified and is
    /// drilled again at `next_attempt`.
    pub(crate) drill_retry: Option<DrillRetry>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct DrillRetry {
    pub(crate) backup: String,
    pub(crate) attempts: u32,
    pub(crate) error: String,
    pub(crate) next_attempt: String,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct LastBackup {
    pub(crate) id: String,
    pub(crate) created: String,
    pub(crate) db_size: u64,
    pub(crate) compressed_size: u64,
    pub(crate) duration_ms: u64,
}
