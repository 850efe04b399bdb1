//! Day-2 maintenance, on the reconcile step: every pilot samples the cluster's revision
//! (so a new coordinator can date the history at once), and the coordinator compacts every
//! `maintenance.compact_interval` to the core's `maintenance::compaction_target` (keeping
//! `keep_revisions` or `keep_for`, whichever keeps more), never while a backup is being
//! taken through this pilot. Off with `maintenance.compaction = false`, or when etcd's own
//! `--auto-compaction-*` flags are set.
//!
//! The pilot next to the leader also takes the core's `maintenance::next_step` for
//! defragmentation and space alarms: it grants and releases the lock upgrades use (fenced
//! writes, as coordinator), defragments the holder's member in a task of its own (never
//! inside the reconcile step), moves leadership away from the last member, and in a NOSPACE
//! alarm's round (when etcd takes no writes, so neither the lock nor the coordinator role
//! can be written) compacts, defragments each member in turn and disarms. An operator's
//! `etcd-pilot maintenance compact|defrag` is a request record it carries out the same way.
//! What it did goes into `/v1/status` `maintenance`, the plan and the metrics. This module
//! decides nothing itself.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_pilot_core::maintenance::{
    self as policy, AlarmRound, MaintenanceStep, MaintenanceView, MaintenanceWait, RevisionSample,
    SpaceMember,
};
use etcd_pilot_core::plan::{self, Plan};
use etcd_pilot_core::{MemberId, MemberName};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backup::Backups;
use crate::config::MaintenanceConfig;
use crate::coordinator::{Fenced, Seat};
use crate::etcd::{self, ClientOptions, EndpointStatus, Etcd};
use crate::metrics::Metrics;
use crate::quorum::names;
use crate::records::{
    self, LOCK_DEFRAG, MAINTENANCE_DONE_KEY, MAINTENANCE_REQUEST_KEY, MaintenanceDone,
    MaintenanceRequest, MaintenanceSummary, UPGRADE_KEY, UpgradeLock,
};
use crate::state::PilotStatus;

/// After a failed defragmentation, the next one waits this long.
const DEFRAG_RETRY: Duration = Duration::from_secs(60);

/// What one defragmentation did.
struct Defragged {
    before: Option<i64>,
    after: Option<i64>,
    took: Duration,
}

/// Why a defragmentation did not finish, and whether etcd may still be at it.
struct Unfinished {
    /// The call reached the member: etcd goes on defragmenting when the client gives up,
    /// so the lock stays with it until a later call returns.
    reached: bool,
    error: anyhow::Error,
}

/// The lock as read this step (`None`: it could not be read, and nothing is granted).
pub(crate) struct LockRead<'a> {
    pub(crate) lock: Option<&'a UpgradeLock>,
    pub(crate) revision: i64,
}

/// What the reconcile step hands to [`Maintenance::step`].
pub(crate) struct StepInput<'a> {
    pub(crate) observed: &'a plan::Observed,
    /// Each member's status, in `observed.members`' order (`None`: it did not answer).
    pub(crate) statuses: &'a [Option<EndpointStatus>],
    pub(crate) plan: &'a Plan,
    pub(crate) lock: Option<LockRead<'a>>,
    /// The upgrade has a member to move.
    pub(crate) upgrade_moving: bool,
    /// The local member leads.
    pub(crate) leads: bool,
    /// This pilot held the coordinator role before this step.
    pub(crate) held_before: bool,
    pub(crate) local: &'a str,
}

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
    name: MemberName,
    options: ClientOptions,
    /// This coordinator's defragmentation, while it runs.
    task: Option<(
        MemberName,
        tokio::task::JoinHandle<Result<Defragged, Unfinished>>,
    )>,
    /// The member whose defragmentation finished, until its lock is released.
    finished: Option<MemberName>,
    /// When a defragmentation last failed.
    failed_at: Option<Instant>,
    /// The space alarm's round, and the revision when it gave up.
    alarm: AlarmRound,
    gave_up_at: Option<i64>,
    /// The operator's request being carried out, the members it still waits for, and what
    /// was done for it.
    request: Option<MaintenanceRequest>,
    requested: Vec<MemberName>,
    request_done: Vec<String>,
    /// The members defragmented for it, and how many lines of `request_done` are recorded.
    request_members: Vec<String>,
    progress_written: usize,
    /// The requested members that could not be defragmented, and why.
    request_failed: Vec<String>,
    /// The id of the last request known to be answered (its record is not read again).
    answered: Option<String>,
    /// The last step's words, to log each change once.
    said: String,
}

impl Maintenance {
    pub(crate) fn new(
        config: MaintenanceConfig,
        backups: Option<Backups>,
        status: watch::Sender<PilotStatus>,
        metrics: Metrics,
        name: MemberName,
        options: ClientOptions,
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
            name,
            options,
            task: None,
            finished: None,
            failed_at: None,
            alarm: AlarmRound::default(),
            gave_up_at: None,
            request: None,
            requested: Vec::new(),
            request_done: Vec::new(),
            request_members: Vec::new(),
            progress_written: 0,
            request_failed: Vec::new(),
            answered: None,
            said: String::new(),
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

    /// As coordinator: compacts when due (or `now`: an operator asked), through `client`
    /// (the local member, which leads). What it did, in words, when it compacted.
    pub(crate) async fn compact(&mut self, client: &Etcd, now: bool) -> Option<String> {
        if !now
            && (!self.config.compaction
                || self
                    .last_run
                    .is_some_and(|t| t.elapsed() < self.config.compact_interval))
        {
            return None;
        }
        self.last_run = Some(Instant::now());
        if self.backups.as_ref().is_some_and(Backups::busy) {
            self.publish(
                None,
                Some("waits: a backup is being taken or drilled".to_owned()),
            );
            return None;
        }
        let current = match client.status().await {
            Ok(status) => status.revision,
            Err(err) => {
                self.publish(None, Some(format!("cannot read the revision: {err}")));
                return None;
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
            return None;
        };
        self.compact_to(client, target, current).await
    }

    /// Compacts to `target` (the revision is `current`); what it did, in words.
    async fn compact_to(&mut self, client: &Etcd, target: i64, current: i64) -> Option<String> {
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
                let said = format!(
                    "revision {target} at {} (current {current})",
                    humantime::format_rfc3339_seconds(at)
                );
                self.publish(Some(said.clone()), None);
                Some(format!(
                    "compacted to revision {target} (current {current})"
                ))
            }
            Err(err) => {
                tracing::warn!("cannot compact to revision {target}, will retry: {err}");
                self.publish(None, Some(format!("cannot compact to {target}: {err}")));
                None
            }
        }
    }

    /// The defragmentation and space-alarm step, on the pilot next to the leader: the
    /// core's next step is taken (as coordinator; or in a space alarm's round, where the
    /// role cannot be written) and returned for the plan. `seat` is the coordinator's.
    pub(crate) async fn step(
        &mut self,
        input: &StepInput<'_>,
        seat: &mut Seat,
        pool: &etcd::Pool,
    ) -> Option<MaintenanceSummary> {
        let collected = self.collect().await;
        if seat.held().is_none() {
            // What a coordinator remembers is its own: a later one goes on from the lock and
            // the recorded progress, not from this pilot's memory of an earlier turn.
            self.finished = None;
            self.request = None;
            self.requested.clear();
        }
        if !input.leads {
            self.status.send_modify(|s| s.maintenance.defrag = None);
            return None;
        }
        let client = match seat.held() {
            Some((_, client)) => client,
            None => match pool.client(input.local).await {
                Ok(client) => client,
                Err(_) => return None,
            },
        };
        let coordinator = seat.held().is_some();
        let (members, ids, urls) = self.members(input);
        // A requested member removed meanwhile is not waited for.
        self.requested
            .retain(|r| members.iter().any(|m| &m.name == r));
        if coordinator {
            let all: Vec<MemberName> = members.iter().map(|m| m.name.clone()).collect();
            self.read_request(&client, &all).await;
        }
        let alarmed = members.iter().any(|m| m.nospace);
        if !alarmed {
            self.alarm = AlarmRound::default();
            self.gave_up_at = None;
        } else if self.alarm.gave_up {
            // Keys deleted since it gave up: try again.
            let revision = input
                .statuses
                .iter()
                .flatten()
                .map(|s| s.revision)
                .max()
                .unwrap_or(0);
            if self.gave_up_at.is_some_and(|at| revision > at) {
                tracing::info!(
                    "keys were deleted since the space alarm's round gave up: trying again"
                );
                self.alarm = AlarmRound::default();
                self.gave_up_at = None;
            }
        }
        let Some(lock) = &input.lock else {
            return Some(summary("wait", "cannot read the lock".to_owned()));
        };
        let minute = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs() / 60 % 1440).unwrap_or(0));
        let mut threshold = self.config.defrag_threshold;
        if !self.config.defrag {
            threshold.min_bytes = u64::MAX;
        }
        let view = MaintenanceView {
            members,
            lock: lock.lock.and_then(UpgradeLock::held),
            defragging: self.task.as_ref().map(|(m, _)| m.clone()),
            finished: self.finished.clone(),
            upgrade_moving: input.upgrade_moving,
            change_in_flight: !matches!(input.plan, Plan::Converged),
            backup_busy: self.backups.as_ref().is_some_and(Backups::busy),
            window_open: policy::in_window(self.config.defrag_window, minute),
            threshold,
            quota: self.config.quota,
            alarm: self.alarm.clone(),
            requested: self.requested.clone(),
        };
        let step = policy::next_step(&view);
        let retrying = self.failed_at.is_some_and(|t| t.elapsed() < DEFRAG_RETRY);
        if retrying
            && matches!(
                step,
                MaintenanceStep::Grant { .. } | MaintenanceStep::Defrag { .. }
            )
        {
            let shown = summary(
                "wait",
                "the last defragmentation failed: the next waits a minute".to_owned(),
            );
            self.show(&shown);
            return Some(shown);
        }
        let shown = self.describe(&step, &view);
        if let Some(shown) = &shown {
            self.show(shown);
        } else {
            self.status.send_modify(|s| s.maintenance.defrag = None);
        }
        // Writes of the lock need the role; a space alarm's steps need none. A defragmentation
        // that just finished made this step's sizes out of date, and a coordinator acts from
        // its second step in the role (what it read before may predate its predecessor's
        // last write), as the upgrade does.
        if (!coordinator && !alarmed) || collected || (!alarmed && !input.held_before) {
            return shown;
        }
        match step {
            MaintenanceStep::Compact => {
                let current = match client.status().await {
                    Ok(status) => status.revision,
                    Err(err) => {
                        tracing::warn!("cannot read the revision for the space alarm: {err}");
                        return shown;
                    }
                };
                // The cluster takes no writes: keep_revisions alone is kept.
                let target = current.saturating_sub(self.config.keep_revisions.max(1));
                if target > 1 {
                    tracing::warn!(
                        revision = target,
                        current,
                        "space alarm: compacting, keeping only maintenance.keep_revisions"
                    );
                    if self.compact_to(&client, target, current).await.is_none() {
                        return shown;
                    }
                }
                self.alarm.compacted = true;
            }
            MaintenanceStep::Grant { member } => {
                let text = lock_text(Some(&member), None, &self.name, seat);
                let written = seat
                    .put_fenced_unchanged(UPGRADE_KEY, lock.revision, &text)
                    .await;
                if matches!(written, Ok(true)) {
                    tracing::info!(%member, "granted the lock for a defragmentation");
                }
                crate::rolling::report(written, "take the lock for a defragmentation");
            }
            MaintenanceStep::Defrag { member, locked } => {
                let (Some(url), Some(id)) = (urls.get(&member).cloned(), ids.get(&member)) else {
                    return shown;
                };
                let before = input
                    .observed
                    .members
                    .iter()
                    .zip(input.statuses)
                    .find(|(m, _)| m.member.id == *id)
                    .and_then(|(_, s)| s.as_ref().map(|s| s.db_size));
                tracing::info!(%member, locked, "defragmenting");
                let (options, timeout) = (self.options.clone(), self.config.defrag_timeout);
                self.finished = None;
                self.task = Some((
                    member,
                    tokio::spawn(async move {
                        let started = Instant::now();
                        // A member that does not take connections is not defragmenting.
                        let client =
                            Etcd::connect_one(&url, &options)
                                .await
                                .map_err(|err| Unfinished {
                                    reached: false,
                                    error: err.into(),
                                })?;
                        // The connection's own request timeout must outlast the call.
                        let long = ClientOptions {
                            timeout,
                            ..options.clone()
                        };
                        let result = match Etcd::connect(std::slice::from_ref(&url), &long).await {
                            Ok(long) => long.defragment(timeout).await,
                            Err(err) => Err(err),
                        };
                        result.map_err(|err| Unfinished {
                            reached: true,
                            error: err.into(),
                        })?;
                        let after = client.status().await.ok().map(|s| s.db_size);
                        Ok::<_, Unfinished>(Defragged {
                            before,
                            after,
                            took: started.elapsed(),
                        })
                    }),
                ));
            }
            MaintenanceStep::Release { member } => {
                let text = lock_text(None, Some(&member), &self.name, seat);
                let written = seat
                    .put_fenced_unchanged(UPGRADE_KEY, lock.revision, &text)
                    .await;
                if matches!(written, Ok(true)) {
                    tracing::info!(%member, "released the lock after its defragmentation");
                    self.finished = None;
                }
                crate::rolling::report(written, "release the lock after a defragmentation");
            }
            MaintenanceStep::MoveLeader { from, to } => {
                if let Some(id) = ids.get(&to) {
                    tracing::info!(%from, %to, "moving leadership away before defragmenting the leader");
                    if let Err(err) = client.move_leader(*id).await {
                        tracing::warn!(
                            "cannot move leadership for the defragmentation, will retry: {err:#}"
                        );
                    }
                }
            }
            MaintenanceStep::Disarm => match client.alarms().await {
                Ok(alarms) => {
                    let mut failed = false;
                    for (member, kind) in alarms.iter().filter(|(_, k)| k == "NOSPACE") {
                        if let Err(err) = client.disarm_nospace(*member).await {
                            tracing::warn!(%member, "cannot disarm the NOSPACE alarm: {err}");
                            failed = true;
                        } else {
                            tracing::info!(%member, kind, "space is back under the quota: disarmed the NOSPACE alarm");
                        }
                    }
                    if !failed {
                        self.alarm = AlarmRound::default();
                    }
                }
                Err(err) => tracing::warn!("cannot list the alarms to disarm: {err}"),
            },
            MaintenanceStep::TooLarge { largest, quota } => {
                if !self.alarm.gave_up {
                    tracing::error!(
                        largest,
                        quota,
                        "the space alarm stays: compacting to maintenance.keep_revisions and defragmenting every member left a file of {largest} bytes against a quota of {quota}: raise --quota-backend-bytes in etcd.extra_args, delete keys, or lower maintenance.keep_revisions"
                    );
                }
                self.alarm.gave_up = true;
                self.gave_up_at = input.statuses.iter().flatten().map(|s| s.revision).max();
            }
            MaintenanceStep::Idle | MaintenanceStep::Wait(_) | MaintenanceStep::Hold { .. } => {}
        }
        if coordinator {
            self.finish_request(seat).await;
        }
        shown
    }

    /// Collects a finished defragmentation; `true` when one finished (the statuses read
    /// before are then out of date).
    async fn collect(&mut self) -> bool {
        if !self.task.as_ref().is_some_and(|(_, t)| t.is_finished()) {
            return false;
        }
        let Some((member, task)) = self.task.take() else {
            return false;
        };
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(err) => Err(Unfinished {
                reached: true,
                error: anyhow::anyhow!("the defragmentation task failed: {err}"),
            }),
        };
        // A call that reached the member and failed (a timeout, a cancelled call) may have
        // left etcd defragmenting: the lock stays, and the member is defragmented again
        // after a minute (that call waits for the running one inside etcd).
        if !matches!(&outcome, Err(Unfinished { reached: true, .. })) {
            self.finished = Some(member.clone());
        }
        match outcome {
            Ok(done) => {
                self.failed_at = None;
                let size = |b: Option<i64>| {
                    b.and_then(|b| u64::try_from(b).ok())
                        .map_or_else(|| "?".to_owned(), human_size)
                };
                let line = format!(
                    "{member}: {} -> {} in {:.1} s",
                    size(done.before),
                    size(done.after),
                    done.took.as_secs_f64()
                );
                tracing::info!(%member, took_ms = done.took.as_millis() as u64, "defragmented: {line}");
                // In a space alarm's round (which starts by compacting).
                if self.alarm.compacted {
                    self.alarm.defragged.push(member.clone());
                }
                if self.requested.contains(&member) {
                    self.requested.retain(|m| *m != member);
                    self.request_done.push(line.clone());
                    self.request_members.push(member.to_string());
                }
                let at = SystemTime::now();
                self.metrics.last_defrag.set(
                    at.duration_since(UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                );
                self.status.send_modify(|s| {
                    s.maintenance.last_defrag = Some(format!(
                        "{line} at {}",
                        humantime::format_rfc3339_seconds(at)
                    ));
                });
            }
            Err(Unfinished { reached, error }) => {
                tracing::warn!(
                    %member,
                    reached,
                    "cannot defragment, will try again in a minute{}: {error:#}",
                    if reached {
                        " (the lock stays: etcd may still be defragmenting)"
                    } else {
                        ""
                    }
                );
                self.failed_at = Some(Instant::now());
                if !reached && self.requested.contains(&member) {
                    self.request_done
                        .push(format!("{member}: failed: {error:#}"));
                    self.request_failed.push(format!("{member}: {error:#}"));
                    self.requested.retain(|m| *m != member);
                }
            }
        }
        true
    }

    /// Every member as maintenance sees it, with ids and client URLs by name.
    fn members(
        &self,
        input: &StepInput<'_>,
    ) -> (
        Vec<SpaceMember>,
        HashMap<MemberName, MemberId>,
        HashMap<MemberName, String>,
    ) {
        let (mut ids, mut urls) = (HashMap::new(), HashMap::new());
        let members = input
            .observed
            .members
            .iter()
            .zip(input.statuses)
            .filter_map(|(m, status)| {
                let name = m.member.name.clone()?;
                ids.insert(name.clone(), m.member.id);
                if let Some(url) = m.member.client_urls.first() {
                    urls.insert(name.clone(), url.clone());
                }
                // etcd lists every raised alarm on every member, as `memberID:<id> alarm:<kind>`
                // (the id in decimal). NOSPACE stops writes everywhere, whoever raised it;
                // CORRUPT names the member whose data differs.
                let nospace = status
                    .as_ref()
                    .is_some_and(|s| s.errors.iter().any(|e| e.contains("NOSPACE")));
                let id = m.member.id.0;
                let corrupt = input.statuses.iter().flatten().any(|s| {
                    s.errors.iter().any(|e| {
                        e.contains("CORRUPT")
                            && (e.contains(&format!("memberID:{id} "))
                                || e.contains(&format!("{id:x}")))
                    })
                });
                Some(SpaceMember {
                    healthy: status.as_ref().is_some_and(|s| {
                        s.leader.is_some() && s.errors.iter().all(|e| e.contains("NOSPACE"))
                    }) && m.problem.is_none(),
                    leader: input.observed.leader == Some(m.member.id),
                    learner: m.member.is_learner,
                    db_size: status.as_ref().and_then(|s| u64::try_from(s.db_size).ok()),
                    in_use: status
                        .as_ref()
                        .and_then(|s| u64::try_from(s.db_size_in_use).ok()),
                    nospace,
                    corrupt,
                    name,
                })
            })
            .collect();
        (members, ids, urls)
    }

    /// Picks up an operator's new request.
    async fn read_request(&mut self, client: &Etcd, all: &[MemberName]) {
        if self.request.is_some() {
            return;
        }
        let Ok(Some(text)) = client.get(MAINTENANCE_REQUEST_KEY).await else {
            return;
        };
        let Ok(request) = records::decode::<MaintenanceRequest>(MAINTENANCE_REQUEST_KEY, &text)
        else {
            return;
        };
        if self.answered.as_deref() == Some(request.id.as_str()) {
            return;
        }
        // The progress a predecessor recorded, if any.
        let progress = match client.get(MAINTENANCE_DONE_KEY).await {
            Ok(Some(text)) => records::decode::<MaintenanceDone>(MAINTENANCE_DONE_KEY, &text)
                .ok()
                .filter(|d| d.id == request.id),
            Ok(None) => None,
            Err(_) => return,
        };
        if progress.as_ref().is_some_and(|p| p.finished) {
            self.answered = Some(request.id);
            return;
        }
        tracing::info!(id = %request.id, kind = %request.kind, "an operator asked for maintenance");
        self.request_done = progress
            .as_ref()
            .map(|p| p.done.clone())
            .unwrap_or_default();
        self.request_members = progress.map(|p| p.members).unwrap_or_default();
        self.request_failed.clear();
        self.progress_written = self.request_done.len();
        if request.kind == "compact" {
            self.requested.clear();
            match self.compact(client, true).await {
                Some(line) => self.request_done.push(line),
                None => self.request_done.push(
                    self.status
                        .borrow()
                        .maintenance
                        .note
                        .clone()
                        .unwrap_or_else(|| "nothing to compact".to_owned()),
                ),
            }
        } else {
            let asked: Vec<MemberName> = if request.members.is_empty() {
                all.to_vec()
            } else {
                request
                    .members
                    .iter()
                    .filter_map(|m| MemberName::new(m.clone()).ok())
                    .filter(|m| all.contains(m))
                    .collect()
            };
            self.requested = asked
                .into_iter()
                .filter(|m| !self.request_members.contains(&m.to_string()))
                .collect();
        }
        self.request = Some(request);
    }

    /// Records the progress on the operator's request after each member (so a new
    /// coordinator goes on with the others: a request that moved leadership would otherwise
    /// start again on the next leader's pilot), and answers it once nothing is left.
    async fn finish_request(&mut self, seat: &mut Seat) {
        let Some(request) = &self.request else {
            return;
        };
        let finished = self.requested.is_empty();
        if !finished && self.request_done.len() == self.progress_written {
            return;
        }
        let done = MaintenanceDone {
            id: request.id.clone(),
            kind: request.kind.clone(),
            done: self.request_done.clone(),
            members: self.request_members.clone(),
            finished,
            error: (!self.request_failed.is_empty()).then(|| self.request_failed.join("; ")),
            by: self.name.to_string(),
            at: records::now_rfc3339(),
        };
        match seat
            .put_fenced(MAINTENANCE_DONE_KEY, &records::encode(&done))
            .await
        {
            Fenced::Written => {
                self.progress_written = self.request_done.len();
                if finished {
                    tracing::info!(id = %done.id, "the operator's maintenance request is done");
                    self.answered = Some(done.id);
                    self.request = None;
                }
            }
            Fenced::Deposed => {
                self.request = None;
                self.requested.clear();
            }
            Fenced::Failed(err) => {
                tracing::warn!("cannot record the maintenance request's progress: {err}")
            }
        }
    }

    fn show(&mut self, shown: &MaintenanceSummary) {
        let line = format!("{}: {}", shown.next, shown.reason);
        if line != self.said {
            if shown.next != "hold" {
                tracing::info!("maintenance: {line}");
            }
            self.said = line.clone();
        }
        self.status
            .send_modify(|s| s.maintenance.defrag = Some(line));
    }

    /// The step in words (`None`: nothing to do).
    fn describe(
        &self,
        step: &MaintenanceStep,
        view: &MaintenanceView,
    ) -> Option<MaintenanceSummary> {
        let mib = human_size;
        let why = |m: &MemberName| {
            view.members
                .iter()
                .find(|x| &x.name == m)
                .and_then(|x| Some((x.db_size?, x.in_use?)))
                .map(|(size, used)| format!(" (file {}, data {})", mib(size), mib(used)))
                .unwrap_or_default()
        };
        let alarmed = view.members.iter().any(|m| m.nospace);
        let context = if alarmed {
            "space alarm (NOSPACE): "
        } else if !self.requested.is_empty() {
            "asked by an operator: "
        } else {
            ""
        };
        let (next, reason) = match step {
            MaintenanceStep::Idle => return None,
            MaintenanceStep::Compact => (
                "compact",
                format!(
                    "compact to keep only the newest {} revisions",
                    self.config.keep_revisions
                ),
            ),
            MaintenanceStep::Grant { member } => (
                "grant",
                format!("take the lock to defragment {member}{}", why(member)),
            ),
            MaintenanceStep::Defrag { member, .. } => {
                ("defrag", format!("defragment {member}{}", why(member)))
            }
            MaintenanceStep::Hold { member } => ("hold", format!("{member} is being defragmented")),
            MaintenanceStep::Release { member } => (
                "release",
                format!("{member} is defragmented: release the lock"),
            ),
            MaintenanceStep::MoveLeader { from, to } => (
                "move_leader",
                format!("move leadership from {from} to {to} before defragmenting {from}"),
            ),
            MaintenanceStep::Disarm => (
                "disarm",
                "every member is back under the quota: disarm the NOSPACE alarm".to_owned(),
            ),
            MaintenanceStep::TooLarge { largest, quota } => (
                "too_large",
                format!(
                    "compacting and defragmenting left a file of {} against a quota of {}: the \
                     alarm stays; raise --quota-backend-bytes in etcd.extra_args, delete keys, or \
                     lower maintenance.keep_revisions",
                    mib(*largest),
                    mib(*quota)
                ),
            ),
            MaintenanceStep::Wait(wait) => (
                "wait",
                match wait {
                    MaintenanceWait::Corrupt { names: n } => format!(
                        "CORRUPT alarm raised for {}: nothing is done automatically; compare the \
                         members' hashes (etcdctl endpoint hashkv) and replace the odd one out, \
                         then disarm it by hand",
                        names(n)
                    ),
                    MaintenanceWait::UpgradeHolds { holder } => {
                        format!("{holder} holds the lock for an upgrade")
                    }
                    MaintenanceWait::Upgrading => "an upgrade goes first".to_owned(),
                    MaintenanceWait::Unhealthy { names: n } => {
                        format!("not healthy: {}", names(n))
                    }
                    MaintenanceWait::ChangeInFlight => "a membership change goes first".to_owned(),
                    MaintenanceWait::BackupBusy => "a backup is being taken or drilled".to_owned(),
                    MaintenanceWait::OutsideWindow { names: n } => format!(
                        "{} would be defragmented, outside maintenance.defrag_window",
                        names(n)
                    ),
                    MaintenanceWait::LeaderUnknown => "no single leader is known".to_owned(),
                },
            ),
        };
        Some(summary(next, format!("{context}{reason}")))
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

fn summary(next: &str, reason: String) -> MaintenanceSummary {
    MaintenanceSummary {
        next: next.to_owned(),
        reason,
    }
}

/// The lock held for a defragmentation of `holder`, or released after `last`'s.
fn lock_text(
    holder: Option<&MemberName>,
    last: Option<&MemberName>,
    by: &MemberName,
    seat: &Seat,
) -> String {
    records::encode(&UpgradeLock {
        holder: holder.map(ToString::to_string),
        kind: LOCK_DEFRAG.to_owned(),
        target: String::new(),
        by: by.to_string(),
        fencing_token: seat.held().map_or(0, |(token, _)| token),
        at: records::now_rfc3339(),
        last: last.map(ToString::to_string),
    })
}

/// `2.6 MiB`, `1.1 GiB`, `96 KiB`.
fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", b / f64::from(1u32 << 30))
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / f64::from(1u32 << 20))
    } else {
        format!("{} KiB", bytes >> 10)
    }
}
