//! This pilot's part in a rolling upgrade of etcd: which binary etcd starts on (the one
//! recorded beside the data, until the coordinator grants the upgrade lock), following the
//! operator's `etcd.bin` while the pilot runs, and the holder's step: restart on the new
//! release, wait until the member is healthy and caught up with the leader, or roll back
//! after `upgrade.member_timeout` while the core (`upgrade::after_timeout`) allows it.
//!
//! The coordinator's side (who gets the lock, when) is `crate::rolling`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_pilot_core::upgrade::{self as policy, AfterTimeout, Version};

use super::*;
use crate::records::{FailedUpgrade, RunningRelease, UPGRADE_KEY, UpgradeAttempt, UpgradeLock};

/// The release this pilot's config asks for (`etcd.bin`, with `etcd.versions` beside it),
/// as last read.
#[derive(Clone, Debug)]
pub(super) struct Desired {
    pub(super) bin: PathBuf,
    pub(super) versions: Vec<PathBuf>,
    pub(super) version: Option<Version>,
    /// The config file's and `etcd.bin`'s size and modification time when last read.
    stamp: String,
}

impl Desired {
    pub(super) fn from_config(config: &Config) -> Self {
        Self {
            bin: config.etcd.bin.clone(),
            versions: config.etcd.versions.clone(),
            version: None,
            stamp: String::new(),
        }
    }
}

/// A file's size and modification time, or `missing`: a replaced file stamps differently.
pub(super) fn file_stamp(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{modified}", meta.len())
        }
        Err(_) => "missing".to_owned(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pilot {
    /// Reads `etcd.bin` and `etcd.versions` from the config file again when it (or the
    /// binary) changed, and publishes the releases found. A file that no longer reads keeps
    /// what the pilot had, with a warning.
    pub(super) async fn refresh_desired(&self) {
        let (old, old_stamp) = {
            let d = self.desired.lock().unwrap_or_else(|e| e.into_inner());
            (d.clone(), d.stamp.clone())
        };
        let file = self
            .config
            .reload
            .as_ref()
            .and_then(|r| r.file().map(Path::to_owned));
        let stamp_of = |bin: &Path| {
            format!(
                "{} {}",
                file.as_deref().map_or_else(String::new, file_stamp),
                file_stamp(bin)
            )
        };
        if stamp_of(&old.bin) == old_stamp {
            return;
        }
        let (bin, versions) = match self.config.reload.as_ref().map(|r| r.etcd_releases()) {
            Some(Ok(found)) => found,
            Some(Err(err)) => {
                tracing::warn!(
                    "the config file no longer reads, keeping etcd.bin {}: {err}",
                    old.bin.display()
                );
                (old.bin.clone(), old.versions.clone())
            }
            None => (old.bin.clone(), old.versions.clone()),
        };
        // Stamped before it is asked: a binary still being written is asked again.
        let stamp = stamp_of(&bin);
        let version =
            crate::supervisor::publish_releases(&bin, &versions, &self.status, &self.metrics).await;
        if !old_stamp.is_empty() && (bin != old.bin || version != old.version) {
            tracing::info!(
                bin = %bin.display(),
                release = ?version.map(|v| v.to_string()),
                "etcd.bin changed: this member moves to it when the coordinator grants the upgrade lock"
            );
        }
        *self.desired.lock().unwrap_or_else(|e| e.into_inner()) = Desired {
            // A binary that named no release is asked again next time.
            stamp: if version.is_some() {
                stamp
            } else {
                String::new()
            },
            bin,
            versions,
            version,
        };
    }

    /// A pilot that finds its etcd still running (its previous life was killed) restarts
    /// it; while another member holds the upgrade lock (its etcd restarting), that would take
    /// a second member down, so it waits for the lock's release first, at most
    /// `upgrade.member_timeout`.
    pub(super) async fn wait_for_upgrade_holder(&self, cancel: &CancellationToken) {
        if crate::supervisor::leftover_pid(&self.data.pid_file()).is_none() {
            return;
        }
        let local = url_string(&self.config.etcd.client_url);
        let deadline = tokio::time::Instant::now() + self.config.upgrade.member_timeout;
        let mut said = false;
        loop {
            // The etcd left running may die on its own (its output went to the pilot that
            // died): then there is nothing left to spare.
            if crate::supervisor::leftover_pid(&self.data.pid_file()).is_none() {
                return;
            }
            // A lock that cannot be read (yet) may be held: asked again until the deadline.
            match self
                .read_lock(&local)
                .await
                .map(|l| l.and_then(|l| l.holder))
            {
                Err(err) => {
                    if !said {
                        tracing::info!(
                            "cannot read the upgrade lock yet, asking again before restarting the etcd left running: {err}"
                        );
                        said = true;
                    }
                }
                Ok(Some(holder)) if holder != self.config.name.as_str() => {
                    if !said {
                        tracing::info!(
                            %holder,
                            "another member holds the lock (an upgrade or a defragmentation): waiting for its release before restarting the etcd left running"
                        );
                        said = true;
                    }
                }
                Ok(_) => return,
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("the upgrade lock was not released in time; restarting etcd");
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Publishes the step recorded beside the data before etcd runs: a pilot restarted
    /// mid-step says `stepping` (and a failure says `failed`) before its member answers,
    /// so the coordinator never takes a member back on the new release for a finished step.
    pub(super) fn publish_recorded_upgrade(&self) {
        match self.data.release() {
            Ok(Some(record)) => self.publish_upgrade(&record, None),
            Ok(None) => {}
            Err(err) => tracing::error!("cannot read the release record beside the data: {err:#}"),
        }
    }

    fn desired(&self) -> Desired {
        self.desired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The binary etcd starts on in `mode`: on fresh data the one `etcd.bin` names; on data
    /// etcd ran before, the one recorded beside it (the new release while an upgrade step is
    /// under way), unless `etcd.bin` is the same release or the recorded binary is gone.
    pub(super) fn bin_for(&self, mode: &StartMode) -> PathBuf {
        let desired = self.desired();
        if matches!(mode, StartMode::New { .. } | StartMode::Existing { .. }) {
            // The data is new: a release recorded for data that is gone says nothing.
            if let Err(err) = std::fs::remove_file(self.data.release_marker())
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!("cannot remove the release record of the old data: {err}");
            }
            return desired.bin;
        }
        let mut record = match self.data.release() {
            Ok(Some(record)) => record,
            Ok(None) => {
                // Data from before this pilot recorded releases: the binary its etcd ran last
                // (the pid file names it), until the lock says otherwise. Not for a restored
                // backup that has not run yet: the pid file names the binary of the data it
                // replaced, and `etcd.bin` decides.
                let restored = self.data.restored().unwrap_or(true);
                let Some(last) = crate::supervisor::pid_file_bin(&self.data.pid_file())
                    .filter(|b| !restored && b.is_file() && *b != desired.bin)
                else {
                    return desired.bin;
                };
                tracing::info!(
                    bin = %last.display(),
                    "starting etcd on the binary it ran last; etcd.bin follows under the upgrade lock"
                );
                return last;
            }
            Err(err) => {
                tracing::error!("cannot read the release record beside the data: {err:#}");
                return desired.bin;
            }
        };
        // An attempt's time runs from each start on its binary, not from the grant: a pilot
        // that was down meanwhile does not roll back on an etcd it has not seen yet.
        if let Some(attempt) = &mut record.upgrading {
            attempt.deadline = unix_now() + self.config.upgrade.member_timeout.as_secs();
            self.save_release(&record);
        }
        let (bin, version) = match &record.upgrading {
            Some(attempt) => (attempt.bin.clone(), attempt.version.clone()),
            None => (record.bin.clone(), record.version.clone()),
        };
        if desired.version.map(|v| v.to_string()).as_deref() == Some(version.as_str()) {
            return desired.bin;
        }
        if !bin.is_file() {
            tracing::warn!(
                recorded = %bin.display(),
                bin = %desired.bin.display(),
                "the binary etcd ran on this data is gone: starting etcd.bin without waiting for the upgrade lock"
            );
            return desired.bin;
        }
        if bin != desired.bin {
            tracing::info!(
                bin = %bin.display(),
                release = %version,
                "starting etcd on the release it ran on this data; etcd.bin follows under the upgrade lock"
            );
        }
        bin
    }

    /// One look at this member's upgrade, each interval while etcd runs (or keeps failing):
    /// records the release it runs; while an upgrade step is under way, finishes it once the
    /// member is healthy and caught up, or rolls it back after `upgrade.member_timeout`;
    /// otherwise, when `etcd.bin` is another release and the coordinator granted this
    /// member the lock for it, starts the step. `Some(Outcome::Upgrade)`: restart etcd on
    /// the binary now recorded.
    pub(super) async fn upgrade_step(
        &self,
        answered: &etcd::Result<EndpointStatus>,
        local: &str,
    ) -> Option<Outcome> {
        self.refresh_desired().await;
        let desired = self.desired();
        let run_bin = self
            .run_bin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = answered.as_ref().ok();
        let healthy = status.is_some_and(|s| s.health() == Health::Healthy && !s.is_learner);
        let mut record = match self.data.release() {
            Ok(Some(record)) => record,
            Ok(None) => {
                // First run under a pilot that records it: what runs now.
                let status = status.filter(|_| healthy)?;
                let record = RunningRelease {
                    bin: run_bin,
                    version: status.version.clone(),
                    upgrading: None,
                    failed: None,
                };
                self.save_release(&record);
                self.publish_upgrade(&record, None);
                return None;
            }
            Err(err) => {
                tracing::error!("cannot read the release record beside the data: {err:#}");
                return None;
            }
        };
        if let Some(attempt) = record.upgrading.clone() {
            return self
                .finish_attempt(record, attempt, status, healthy, local)
                .await;
        }
        // The member runs another release than recorded (its binary replaced in place, or
        // started on etcd.bin): record what runs.
        if let Some(status) = status.filter(|_| healthy)
            && (status.version != record.version || record.bin != run_bin)
        {
            record.bin = run_bin;
            record.version = status.version.clone();
            self.save_release(&record);
        }
        let Some(want) = desired.version else {
            self.publish_upgrade(&record, None);
            return None;
        };
        if want.to_string() == record.version {
            if record.failed.take().is_some() {
                self.save_release(&record);
            }
            self.publish_upgrade(&record, None);
            return None;
        }
        // An attempt at this very binary failed: not again until it changes.
        if let Some(failed) = &record.failed {
            if failed.bin == desired.bin
                && failed.version == want.to_string()
                && failed.stamp == file_stamp(&desired.bin)
            {
                self.publish_upgrade(&record, None);
                return None;
            }
            record.failed = None;
            self.save_release(&record);
        }
        let waiting = format!(
            "runs {}; etcd.bin is {}: waiting for the coordinator's upgrade lock",
            record.version, want
        );
        if !healthy {
            self.publish_upgrade(&record, Some(waiting));
            return None;
        }
        let lock = match self.pool.get(local, UPGRADE_KEY).await {
            Ok(Some(text)) => records::decode::<UpgradeLock>(UPGRADE_KEY, &text).ok(),
            _ => None,
        };
        let granted = lock.as_ref().is_some_and(|l| {
            l.holder.as_deref() == Some(self.config.name.as_str())
                && l.kind == records::LOCK_UPGRADE
                && l.target == want.to_string()
        });
        if !granted {
            self.publish_upgrade(&record, Some(waiting));
            return None;
        }
        // Granted while the cluster was healthy; check it still is before going down.
        if let Some(why) = self.others_unhealthy(local).await {
            self.publish_upgrade(
                &record,
                Some(format!("holds the upgrade lock, waits: {why}")),
            );
            return None;
        }
        let timeout = self.config.upgrade.member_timeout;
        record.upgrading = Some(UpgradeAttempt {
            bin: desired.bin.clone(),
            version: want.to_string(),
            since: records::now_rfc3339(),
            deadline: unix_now() + timeout.as_secs(),
            rollback: false,
        });
        if !self.save_release(&record) {
            return None;
        }
        tracing::warn!(
            from = %record.version,
            to = %want,
            bin = %desired.bin.display(),
            "the coordinator granted the upgrade lock: restarting etcd on the new release"
        );
        self.publish_upgrade(
            &record,
            Some(format!("restarting on {want} (from {})", record.version)),
        );
        Some(Outcome::Upgrade)
    }

    /// The step under way: done once the member runs the attempt's release, healthy and
    /// caught up; at its deadline, a move up is rolled back (with the lock, while the others
    /// are healthy, and only where the core allows), or kept with the reason; a member kept
    /// on a failed release follows a changed `etcd.bin` of the same minor.
    async fn finish_attempt(
        &self,
        mut record: RunningRelease,
        attempt: UpgradeAttempt,
        status: Option<&EndpointStatus>,
        healthy: bool,
        local: &str,
    ) -> Option<Outcome> {
        // Crash test: the pilot dies while its etcd runs the new release, before it is done.
        fail::fail_point!(
            "upgrade-waiting",
            status.is_some(),
            |_| std::process::abort()
        );
        if let Some(outcome) = self.retry_kept(&mut record, &attempt, local).await {
            return Some(outcome);
        }
        if let Some(status) = status.filter(|_| healthy)
            && status.version == attempt.version
            && self.caught_up(local).await
        {
            let failed = if attempt.rollback {
                record.failed.take()
            } else {
                None
            };
            tracing::info!(
                from = %record.version,
                to = %attempt.version,
                rollback = attempt.rollback,
                "the member is healthy and caught up on its release: the step is done"
            );
            record = RunningRelease {
                bin: attempt.bin,
                version: attempt.version,
                upgrading: None,
                failed,
            };
            self.save_release(&record);
            self.publish_upgrade(&record, None);
            return None;
        }
        let now = unix_now();
        if now < attempt.deadline {
            self.publish_upgrade(
                &record,
                Some(format!(
                    "restarted on {} at {}: waiting until it is healthy and caught up ({} s left)",
                    attempt.version,
                    attempt.since,
                    attempt.deadline - now
                )),
            );
            return None;
        }
        if attempt.rollback {
            self.publish_upgrade(
                &record,
                Some(format!(
                    "back on {} since {}, and still not healthy and caught up: see its etcd's \
                     log lines in the pilot's log",
                    attempt.version, attempt.since
                )),
            );
            return None;
        }
        if record.failed.is_some() {
            // Kept on the new release already (going back is not allowed).
            self.publish_upgrade(
                &record,
                Some(format!(
                    "kept on {}: it cannot go back; point etcd.bin at a working {} binary",
                    attempt.version, attempt.version
                )),
            );
            return None;
        }
        let why =
            match status {
                None => format!(
                    "etcd {} did not answer within upgrade.member_timeout ({})",
                    attempt.version,
                    self.status.borrow().cannot_run.clone().unwrap_or_else(|| {
                        "see the pilot's log for etcd's last lines".to_owned()
                    })
                ),
                Some(_) => format!(
                    "etcd {} was not healthy and caught up within upgrade.member_timeout",
                    attempt.version
                ),
            };
        let (from, to) = match (
            record.version.parse::<Version>(),
            attempt.version.parse::<Version>(),
        ) {
            (Ok(from), Ok(to)) => (from, to),
            _ => return None,
        };
        let (others, cluster) = self.cluster_releases(local).await;
        let old_there = crate::supervisor::release_of(&record.bin).await.ok() == Some(from);
        let verdict = match policy::after_timeout(from, to, &others, cluster) {
            AfterTimeout::RollBack if old_there => AfterTimeout::RollBack,
            AfterTimeout::RollBack => AfterTimeout::Stay {
                reason: format!("{} is no longer etcd {from}", record.bin.display()),
            },
            stay => stay,
        };
        let failed = FailedUpgrade {
            bin: attempt.bin.clone(),
            version: attempt.version.clone(),
            stamp: file_stamp(&attempt.bin),
            reason: why.clone(),
            at: records::now_rfc3339(),
        };
        match verdict {
            AfterTimeout::RollBack => {
                // Going back takes the member down again: only under its own lock, and only
                // while every other voter is healthy.
                let wait = match self.read_lock(local).await {
                    Ok(Some(lock))
                        if lock.holder.as_deref() == Some(self.config.name.as_str())
                            && lock.kind == records::LOCK_UPGRADE =>
                    {
                        self.others_unhealthy(local).await
                    }
                    Ok(_) => Some("the upgrade lock no longer names this member".to_owned()),
                    Err(err) => Some(format!("cannot read the upgrade lock: {err}")),
                };
                if let Some(wait) = wait {
                    self.publish_upgrade(
                        &record,
                        Some(format!("{why}; going back to {from} waits: {wait}")),
                    );
                    return None;
                }
                tracing::error!(
                    from = %to,
                    to = %from,
                    "{why}: going back to the release it ran before; the upgrade stops"
                );
                record.failed = Some(FailedUpgrade {
                    reason: format!("{why}; rolled back to {from}"),
                    ..failed
                });
                record.upgrading = Some(UpgradeAttempt {
                    bin: record.bin.clone(),
                    version: record.version.clone(),
                    since: records::now_rfc3339(),
                    deadline: unix_now() + self.config.upgrade.member_timeout.as_secs(),
                    rollback: true,
                });
                if !self.save_release(&record) {
                    return None;
                }
                self.publish_upgrade(&record, Some(format!("going back to {from}")));
                Some(Outcome::Upgrade)
            }
            AfterTimeout::Stay { reason } => {
                tracing::error!("{why}, and it cannot go back: {reason}");
                record.failed = Some(FailedUpgrade {
                    reason: format!("{why}; kept on {to}, it cannot go back: {reason}"),
                    ..failed
                });
                self.save_release(&record);
                self.publish_upgrade(&record, Some(format!("kept on {to}: {reason}")));
                None
            }
        }
    }

    /// A member kept on a release that failed (it could not go back): when `etcd.bin` now
    /// names another binary of the same minor (or the same path was replaced), restart on
    /// it, while every other voter is healthy.
    async fn retry_kept(
        &self,
        record: &mut RunningRelease,
        attempt: &UpgradeAttempt,
        local: &str,
    ) -> Option<Outcome> {
        let failed = record.failed.as_ref().filter(|_| !attempt.rollback)?;
        let desired = self.desired();
        let want = desired.version?;
        let same_minor = attempt
            .version
            .parse::<Version>()
            .is_ok_and(|v| v.line() == want.line());
        let changed = desired.bin != failed.bin || file_stamp(&desired.bin) != failed.stamp;
        if !same_minor || !changed || self.others_unhealthy(local).await.is_some() {
            return None;
        }
        tracing::warn!(
            bin = %desired.bin.display(),
            release = %want,
            "etcd.bin changed while this member is kept on a failed release: restarting on it"
        );
        record.failed = None;
        record.upgrading = Some(UpgradeAttempt {
            bin: desired.bin.clone(),
            version: want.to_string(),
            since: records::now_rfc3339(),
            deadline: unix_now() + self.config.upgrade.member_timeout.as_secs(),
            rollback: false,
        });
        if !self.save_release(record) {
            return None;
        }
        Some(Outcome::Upgrade)
    }

    /// The upgrade lock, read through the local etcd or, when it does not answer, a listed
    /// peer's.
    async fn read_lock(&self, local: &str) -> Result<Option<UpgradeLock>, String> {
        let mut last = String::from("no member answered");
        for url in self.client_urls(local).await {
            match self.pool.get(&url, UPGRADE_KEY).await {
                Ok(Some(text)) => {
                    return records::decode::<UpgradeLock>(UPGRADE_KEY, &text)
                        .map(Some)
                        .map_err(|err| format!("{err:#}"));
                }
                Ok(None) => return Ok(None),
                Err(err) => last = err.to_string(),
            }
        }
        Err(last)
    }

    /// The local client URL, then the listed peers'.
    async fn client_urls(&self, local: &str) -> Vec<String> {
        let mut urls = vec![local.to_owned()];
        if let Ok(peers) = self.discovery.peers().await {
            urls.extend(
                peers
                    .into_iter()
                    .filter(|p| p.name != self.config.name)
                    .map(|p| p.client_url),
            );
        }
        urls
    }

    /// Whether the local member's raft index reached the leader's (read first).
    async fn caught_up(&self, local: &str) -> bool {
        let Some((list, probes)) = self.pool.leader_member_list(&[local.to_owned()]).await else {
            return false;
        };
        let leader = probes.iter().flatten().find_map(|s| s.leader);
        let leader_index = list
            .members
            .iter()
            .zip(&probes)
            .find(|(m, _)| Some(m.id) == leader)
            .and_then(|(_, p)| p.as_ref().ok())
            .map(|s| s.raft_index);
        match (leader_index, self.pool.status(local).await) {
            (Some(leader), Ok(me)) => policy::caught_up(me.raft_index, leader),
            _ => false,
        }
    }

    /// Why the cluster could not lose this member now: another voter not healthy, or a
    /// learner catching up. `None`: it can.
    async fn others_unhealthy(&self, local: &str) -> Option<String> {
        let urls = self.client_urls(local).await;
        let Some((list, probes)) = self.pool.leader_member_list(&urls).await else {
            return Some("no leader in sight".to_owned());
        };
        let unwell: Vec<String> = list
            .members
            .iter()
            .zip(&probes)
            .filter(|(m, _)| m.name.as_ref() != Some(&self.config.name))
            .filter(|(m, p)| {
                m.is_learner || !p.as_ref().is_ok_and(|s| s.health() == Health::Healthy)
            })
            .map(|(m, _)| {
                m.name
                    .as_ref()
                    .map_or_else(|| m.id.to_string(), ToString::to_string)
            })
            .collect();
        (!unwell.is_empty()).then(|| format!("not healthy or a learner: {}", unwell.join(", ")))
    }

    /// What the other members run (their etcd's status, through the leader's member list)
    /// and the cluster version, asked of the local etcd and the listed peers'.
    async fn cluster_releases(
        &self,
        local: &str,
    ) -> (Vec<Version>, Option<etcd_pilot_core::upgrade::Minor>) {
        let urls = self.client_urls(local).await;
        let others = match self.pool.leader_member_list(&urls).await {
            Some((list, probes)) => list
                .members
                .iter()
                .zip(&probes)
                .filter(|(m, _)| m.name.as_ref() != Some(&self.config.name))
                .filter_map(|(_, p)| p.as_ref().ok()?.version.parse().ok())
                .collect(),
            None => Vec::new(),
        };
        (others, crate::upgrade::cluster_version(&urls).await)
    }

    /// Writes the release record; `false` (logged) when it cannot.
    fn save_release(&self, record: &RunningRelease) -> bool {
        match self.data.write_release(record) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!("cannot record the release beside the data: {err:#}");
                false
            }
        }
    }

    fn publish_upgrade(&self, record: &RunningRelease, step: Option<String>) {
        let failed = record.failed.as_ref().map(|f| {
            format!(
                "etcd {} ({}) at {}: {}",
                f.version,
                f.bin.display(),
                f.at,
                f.reason
            )
        });
        let stepping = record.upgrading.is_some();
        self.status.send_modify(|s| {
            s.upgrade.running_bin = Some(record.bin.display().to_string());
            s.upgrade.step = step;
            s.upgrade.failed = failed;
            s.upgrade.stepping = stepping;
        });
    }
}
