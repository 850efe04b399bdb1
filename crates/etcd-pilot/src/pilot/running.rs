//! While etcd runs: watch the member (its identity against the marker, the formed markers,
//! the published status and crash verdicts), watch for quorum loss (`quorum.rs`) and run the
//! reconcile step each interval, and the liveness probe that restarts an etcd that stopped
//! answering.

use super::*;

impl Pilot {
    /// Watches the local member until `cancel` or its removal: publishes its status, checks
    /// and records its identity, marks the cluster formed, and runs a reconcile step each
    /// interval. (Liveness runs beside it, in [`liveness`].)
    pub(super) async fn watch_member(
        &self,
        mut child: watch::Receiver<ChildStatus>,
        reconciler: &mut Reconciler,
        quorum: &mut QuorumWatch,
        forced: bool,
        cancel: &CancellationToken,
    ) -> Outcome {
        // After a reseed, the record to write into etcd once it runs normally. The marker is
        // taken off the disk first: a pilot that dies before writing the record loses only the
        // record, never starts etcd forced again.
        let mut reseed_done = if forced {
            None
        } else {
            self.take_reseed().await
        };
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
            let answered = self.pool.status(&local).await;
            match &answered {
                Ok(status) => {
                    self.metrics.etcd_up.set(1);
                    // Only our own child's answer says anything about our data: while it is not
                    // running, whatever answers on the port is someone else.
                    let checked = if matches!(child_status, ChildStatus::Running { .. }) {
                        self.check_identity(status).await
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
                        match self.mark_formed(&local, status).await {
                            Ok(()) => formed_in_cluster = true,
                            Err(err) => tracing::warn!(
                                "cannot record that the cluster formed, will retry: {err:#}"
                            ),
                        }
                    }
                    self.publish_member(status);
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
            if let Some(outcome) = self
                .reseed_step(&answered, &local, quorum, forced, &mut reseed_done)
                .await
            {
                return outcome;
            }
            if forced {
                // A forced etcd makes no membership change: it restarts normally first.
                tokio::select! {
                    () = tokio::time::sleep(self.config.timers.observe_interval) => {}
                    () = cancel.cancelled() => return Outcome::Continue,
                }
                continue;
            }
            if let Some(outcome) = self.upgrade_step(&answered, &local).await {
                return outcome;
            }
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
                        .map(|observed| decision::decide(&observed, &self.config.cluster_name))
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
                Outcome::Quarantine { .. }
                | Outcome::Reseed(_)
                | Outcome::Reseeded
                | Outcome::Upgrade => {
                    return outcome;
                }
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
    /// after `crash::UNUSABLE_AFTER_FAILURES` crashes in a row that etcd blamed on its data;
    /// anything else is "cannot run".
    pub(super) fn publish_child(&self, child_status: &ChildStatus) {
        let (unusable, cannot_run) = match child_status {
            ChildStatus::BackingOff {
                failures,
                last_exit,
                crash,
                damaged_in_a_row,
            } => {
                // A new release that crash-loops during its upgrade step is the binary's
                // fault, never the data's: the step rolls it back.
                let attempting = self
                    .data
                    .release()
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.upgrading.is_some());
                if !attempting
                    && crash::verdict(crash, *damaged_in_a_row) == crash::Verdict::DataUnusable
                {
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

    pub(super) fn publish_member(&self, status: &EndpointStatus) {
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
            if s.release.running.as_deref() != Some(status.version.as_str()) {
                s.release.flags = crate::state::ReleaseStatus::flags_of(&status.version);
                s.release.running = Some(status.version.clone());
            }
            self.metrics
                .set_release(&status.version, s.release.flags.len());
        });
        self.metrics.etcd_cannot_run.set(0);
        self.metrics.db_size.set(status.db_size);
        self.metrics.db_size_in_use.set(status.db_size_in_use);
        for kind in ["NOSPACE", "CORRUPT"] {
            let raised = status.errors.iter().any(|e| e.contains(kind));
            let gauge = self
                .metrics
                .alarms
                .get_or_create(&crate::metrics::KindLabel {
                    kind: kind.to_owned(),
                });
            if raised && gauge.get() == 0 {
                if kind == "CORRUPT" {
                    tracing::error!(
                        "etcd raised the CORRUPT alarm: this member's data differs from the others'; \
                         it is never disarmed automatically: compare the members' hashes \
                         (etcdctl endpoint hashkv) and replace the odd one out"
                    );
                } else {
                    tracing::warn!(
                        "etcd raised the NOSPACE alarm: the database hit its quota and takes no \
                         writes until space is freed (compact, defragment, disarm)"
                    );
                }
            }
            gauge.set(i64::from(raised));
        }
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
    pub(super) async fn check_identity(
        &self,
        status: &EndpointStatus,
    ) -> anyhow::Result<Option<String>> {
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
    pub(super) async fn record_restored_cluster(&self) {
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
    pub(super) fn record(&self, status: &EndpointStatus) -> anyhow::Result<()> {
        let identity = Identity {
            name: self.config.name.clone(),
            cluster_id: Some(status.cluster_id),
            member_id: Some(status.member_id),
        };
        tracing::info!(member_id = %status.member_id, cluster_id = %status.cluster_id, "recorded identity");
        self.data.write_identity(&identity)?;
        self.data.clear_restored()
    }

    pub(super) async fn mark_formed(
        &self,
        local: &str,
        status: &EndpointStatus,
    ) -> anyhow::Result<()> {
        if !self.data.formed()? {
            self.data
                .mark_formed(status.cluster_id, SystemTime::now())?;
            tracing::info!(cluster_id = %status.cluster_id, "cluster formed; marker written");
        }
        let client = Etcd::connect_one(local, &self.options).await?;
        if client.get(FORMED_KEY).await?.is_none() {
            let formed = records::Formed {
                cluster_id: status.cluster_id.to_string(),
                by: self.config.name.to_string(),
                at: records::now_rfc3339(),
            };
            client.put(FORMED_KEY, &records::encode(&formed)).await?;
        }
        Ok(())
    }
}

/// Restarts an etcd that answered in its current run and then stays silent for `timeout`.
///
/// It asks etcd's status every second (each call under the etcd call timeout), beside the
/// reconcile step and independently of how long a step takes, so the silence is measured,
/// not guessed from two samples far apart. An etcd that has not answered yet in its run (a
/// member waiting for its quorum, or replaying a long WAL) is left alone: a restart would not
/// help it. The request names the process, so a request about an earlier run is ignored.
pub(super) async fn liveness(
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

impl Pilot {
    /// The quorum watch's turn, and the reseed's: a forced etcd that leads alone restarts
    /// normally (`Reseeded`); a done reseed is recorded once etcd is healthy; a verdict that
    /// names this member the seed, confirmed by every other survivor, or an operator's order
    /// the watch accepts, starts one (`Reseed`) once the store's claim (with a store) is
    /// this pilot's and the seed's data is in the store.
    async fn reseed_step(
        &self,
        answered: &Result<EndpointStatus, etcd::Error>,
        local: &str,
        quorum: &mut QuorumWatch,
        forced: bool,
        reseed_done: &mut Option<records::Reseed>,
    ) -> Option<Outcome> {
        if let Ok(status) = answered {
            if forced && status.leader == Some(status.member_id) {
                // Crash test: the pilot dies while its forced etcd leads alone.
                fail::fail_point!("reseed-forced", |_| std::process::abort());
                // Alone and leading: restart without --force-new-cluster, so that no later
                // restart forces again.
                return Some(Outcome::Reseeded);
            }
            if let Some(record) = reseed_done.as_mut()
                && status.health() == Health::Healthy
            {
                match self.record_reseed(local, status, record).await {
                    Ok(()) => {
                        *reseed_done = None;
                        self.status.send_modify(|s| s.reseed = None);
                    }
                    Err(err) => tracing::warn!("cannot record the reseed yet: {err:#}"),
                }
            }
        }
        let verdict = quorum
            .observe(answered.as_ref().ok(), local, &self.discovery)
            .await;
        if forced {
            return None;
        }
        // An operator's order first: an automatic decision must not hide it.
        let go = match quorum.ordered().await {
            Some(go) => go,
            None => match verdict {
                Some(Verdict::Reseed {
                    seed,
                    survivors,
                    unreachable,
                }) if seed.name == self.config.name && quorum.confirmed(&seed).await => {
                    quorum::Go {
                        seed,
                        survivors: survivors.into_iter().map(|(n, _)| n).collect(),
                        unreachable,
                        ordered_by: "automatic".to_owned(),
                        take_over: false,
                    }
                }
                _ => return None,
            },
        };
        let status = answered.as_ref().ok()?;
        let mut record = records::Reseed {
            by: self.config.name.to_string(),
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            raft_index: go.seed.raft_index,
            behind: go.seed.behind,
            survivors: go
                .survivors
                .iter()
                .filter(|s| **s != self.config.name)
                .map(ToString::to_string)
                .collect(),
            unreachable: go.unreachable.iter().map(ToString::to_string).collect(),
            copy: String::new(),
            members: quorum.voter_urls(),
            forced: false,
            ordered_by: go.ordered_by.clone(),
            claim: None,
            snapshot: String::new(),
            restarted: false,
            written: false,
        };
        // The claim first: a pilot that waits for another's claim takes no snapshot. (A
        // crash between the claim and `reseed.json` leaves this node's claim open: it holds
        // it again when it decides again; another node waits for an operator.)
        self.reseed_progress(&record, "claim", "the backup store's reseed claim");
        let Some(claim) = self.claim_reseed(status, &go, quorum).await else {
            self.status.send_modify(|s| s.reseed = None);
            return None;
        };
        record.claim = claim;
        self.reseed_progress(&record, "snapshot", "the seed's data into the backup store");
        record.snapshot = self.snapshot_before_reseed(local).await;
        // The store's round trips and the snapshot took time: the decision stands only if
        // the local etcd still sees no leader.
        let still_lost = matches!(self.pool.status(local).await, Ok(now) if now.leader.is_none());
        if !still_lost {
            let why = "the local etcd sees a leader again, or stopped answering, after the claim \
                       and the snapshot";
            tracing::warn!("not reseeding: {why}");
            quorum.refused(&go, why);
            self.drop_reseed_snapshot(&record.snapshot).await;
            if let Some(generation) = claim {
                self.end_reseed_claim(status.cluster_id, generation, false)
                    .await;
            }
            self.status.send_modify(|s| s.reseed = None);
            return None;
        }
        self.reseed_progress(&record, "stopping", "stopping etcd");
        Some(Outcome::Reseed(Box::new(record)))
    }

    /// With a backup store, the store's reseed claim: `Some(Some(generation))` when this
    /// pilot holds it, `None` (no reseed now) when another node does or the store does not
    /// answer. Without one, `Some(None)`: the survivors' confirmations are the only fence.
    async fn claim_reseed(
        &self,
        status: &EndpointStatus,
        go: &quorum::Go,
        quorum: &mut QuorumWatch,
    ) -> Option<Option<u64>> {
        let Some(backups) = &self.backups else {
            return Some(None);
        };
        let what = format!(
            "reseed from {} at raft index {}, ordered by {}",
            go.seed.name, go.seed.raft_index, go.ordered_by
        );
        let claimed = backup::claim::claim_reseed(
            &backups.store,
            &self.peers,
            status.cluster_id,
            self.config.name.as_str(),
            &backup::claim::admin_url(&self.config),
            &what,
            go.take_over,
        )
        .await;
        let why = match claimed {
            Ok(Ok(generation)) => {
                tracing::warn!(generation, "took the store's reseed claim");
                return Some(Some(generation));
            }
            Ok(Err(why)) => why,
            Err(err) => format!(
                "the backup store does not answer ({err:#}), so the reseed claim cannot be taken"
            ),
        };
        tracing::warn!("not reseeding now: {why}");
        self.status.send_modify(|s| {
            if let Some(q) = s.quorum.as_mut() {
                q.verdict = format!("{}; not reseeded: {why}", q.verdict);
            }
        });
        quorum.refused(go, &why);
        None
    }

    /// A reseed dropped after its snapshot was taken: the snapshot goes (it would otherwise be
    /// the store's newest backup, of a member that lagged, and delay the next scheduled one).
    async fn drop_reseed_snapshot(&self, snapshot: &str) {
        let Some(backups) = &self.backups else {
            return;
        };
        if snapshot.is_empty() || snapshot.starts_with("no") {
            return;
        }
        if let Err(err) = backups.store.delete(snapshot).await {
            tracing::warn!("cannot delete the dropped reseed's snapshot {snapshot}: {err:#}");
        }
    }

    /// With a backup store, the seed's data into it, marked as a reseed snapshot (served by
    /// the member alone): the backup id, or why there is none. A failure is reported, not
    /// fatal: the copy beside the data is the one that is always made.
    async fn snapshot_before_reseed(&self, local: &str) -> String {
        let Some(backups) = &self.backups else {
            return "no backup store configured".to_owned();
        };
        let taken = match Etcd::connect_one(local, &self.options).await {
            Ok(etcd) => {
                backups
                    .take_for_reseed(&etcd, self.config.name.as_str())
                    .await
            }
            Err(err) => Err(err.into()),
        };
        match taken {
            Ok(manifest) => {
                tracing::warn!(backup = %manifest.id, "the seed's data is in the backup store");
                manifest.id
            }
            Err(err) => {
                tracing::error!("cannot put the seed's data into the backup store: {err:#}");
                format!("none: {err:#}")
            }
        }
    }

    /// The reseed marker, taken off the disk: the record to write when the reseed was done
    /// (etcd started forced); a marker of a reseed that never got that far is dropped.
    async fn take_reseed(&self) -> Option<records::Reseed> {
        let record = match self.data.reseed() {
            Ok(record) => record?,
            Err(err) => {
                tracing::error!("cannot read the reseed record beside the data: {err:#}");
                return None;
            }
        };
        if let Err(err) = std::fs::remove_file(self.data.reseed_marker()) {
            tracing::error!(
                "cannot remove {}: {err}",
                self.data.reseed_marker().display()
            );
            return None;
        }
        if !record.forced {
            tracing::warn!("a reseed was decided but never carried out; dropping its record");
            self.release_reseed_claim(&record).await;
            self.status.send_modify(|s| s.reseed = None);
            return None;
        }
        self.reseed_progress(&record, "recording", "the reseed record into etcd");
        Some(record)
    }

    /// Ends the store's reseed claim of a reseed dropped before etcd started alone, so that
    /// the next quorum loss starts a new one (a failure is logged: that one would then wait
    /// for an operator's forced order).
    pub(super) async fn release_reseed_claim(&self, record: &records::Reseed) {
        let Some(generation) = record.claim else {
            return;
        };
        match self.data.identity() {
            Ok(Some(Identity {
                cluster_id: Some(cluster),
                ..
            })) => {
                self.end_reseed_claim(cluster, generation, false).await;
            }
            other => tracing::warn!(
                "cannot end the store's reseed claim {generation}: no cluster id beside the data \
                 ({other:?})"
            ),
        }
    }

    /// Ends reseed claim `generation` of `cluster` in the store (`done`: the reseed is
    /// recorded; otherwise it was dropped); `false` when the store did not take it (logged).
    pub(super) async fn end_reseed_claim(
        &self,
        cluster: etcd_pilot_core::ClusterId,
        generation: u64,
        done: bool,
    ) -> bool {
        let Some(backups) = &self.backups else {
            return true;
        };
        match backup::claim::end_reseed_claim(
            &backups.store,
            cluster,
            generation,
            done,
            self.config.name.as_str(),
        )
        .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!("cannot end the store's reseed claim {generation}: {err:#}");
                false
            }
        }
    }

    /// The step a reseed under way is at, in `/v1/status` `reseed`.
    pub(super) fn reseed_progress(
        &self,
        record: &records::Reseed,
        step: &'static str,
        detail: &str,
    ) {
        let progress = crate::state::ReseedProgress {
            step,
            detail: detail.to_owned(),
            raft_index: record.raft_index,
            ordered_by: record.ordered_by.clone(),
            since: record.at.clone(),
        };
        self.status.send_modify(|s| s.reseed = Some(progress));
    }

    /// After a reseed, once etcd runs normally: the reseed record into etcd (once), counted,
    /// and the store's reseed claim ended; called again each step until both are done.
    async fn record_reseed(
        &self,
        local: &str,
        status: &EndpointStatus,
        record: &mut records::Reseed,
    ) -> anyhow::Result<()> {
        if !record.written {
            self.pool
                .client(local)
                .await?
                .put(records::RESEED_KEY, &records::encode(record))
                .await?;
            self.metrics.reseeds.inc();
            record.written = true;
        }
        if let Some(generation) = record.claim
            && !self
                .end_reseed_claim(status.cluster_id, generation, true)
                .await
        {
            anyhow::bail!("the store's reseed claim {generation} is not ended yet");
        }
        tracing::warn!(
            raft_index = record.raft_index,
            behind = record.behind,
            copy = %record.copy,
            "reseed complete: this member leads a cluster of its own data; the others join it"
        );
        Ok(())
    }
}
