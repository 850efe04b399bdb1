//! Before etcd runs: observe (discovery, the peers' pilots, the live cluster, the store), take
//! the core's start decision, and its steps (join as a learner, restore a backup).

use super::*;

impl Pilot {
    /// Observes and decides until etcd can start; takes the quarantine and join steps on the
    /// way. `None` when cancelled first.
    pub(super) async fn decide_start(
        &self,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Option<StartMode>> {
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
                    decision::decide(&observed, &self.config.cluster_name)
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
    pub(super) async fn take_join_step(
        &self,
        step: &JoinStep,
        members: &[String],
    ) -> anyhow::Result<()> {
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

    pub(super) async fn other_peers(&self) -> anyhow::Result<Vec<Peer>> {
        let peers = self.discovery.peers().await?;
        Ok(peers
            .into_iter()
            .filter(|p| p.name != self.config.name)
            .collect())
    }

    /// Everything the start decision needs, gathered concurrently with timeouts.
    pub(super) async fn observe_start(&self) -> anyhow::Result<decision::Observed> {
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
        Ok(decision::Observed {
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
    pub(super) async fn store_view(&self) -> StoreView {
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
    pub(super) async fn restore(
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

    pub(super) async fn ask_pilots(&self, others: &[Peer]) -> Vec<PeerReport> {
        let mut set = JoinSet::new();
        for peer in others {
            let (peer, api) = (peer.clone(), self.peers.clone());
            set.spawn(async move {
                let report = api.report(&peer.admin_url).await;
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
    pub(super) async fn observe_cluster(&self, others: &[Peer]) -> ClusterView {
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

    /// Tells peer pilots (`/v1/bootstrap`) what this node holds, before it decides anything.
    pub(super) fn publish_report(&self, local: &LocalData, formed: bool, expected: &[Peer]) {
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
}
