//! The claims a backup store keeps. The restore claim's lease: after total loss, one pilot
//! restores, and the others wait for its cluster; a holder that dies is replaced once its
//! heartbeat stood still for `restore.claim_timeout`, and a finished restore ends the claim so
//! that the next incident starts a new one. The reseed claim ([`claim_reseed`]): after quorum
//! loss, the seed takes it before it stops etcd, so that of two pilots deciding at once only
//! one reseeds; it has no heartbeat and no timeout (core `reseed::claim_step`).
//!
//! The store keeps the claims (`store.rs`: conditional creates, one object per generation);
//! the core decides the step (`backup::claim_step`). This module times the holder's heartbeat
//! on the observer's own clock, keeps the heartbeat going while this pilot restores, and
//! confirms the claim is still its own before the restored data goes into place.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use etcd_pilot_core::ClusterId;
use etcd_pilot_core::backup::{self as choice, ClaimOutcome, ClaimStep, ClaimView};
use etcd_pilot_core::reseed::ClaimStep as ReseedStep;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::{ClaimKind, ClaimState, Ended, LatestClaim, RestoreClaim, Store};
use crate::peer_api::{Answer, PeerApi};

/// One pilot's side of the restore claims of its store.
pub(crate) struct Claims {
    pub(crate) store: Store,
    /// This pilot's name and admin URL, written into its claims.
    pub(crate) me: String,
    pub(crate) admin_url: String,
    /// This process as a holder: the name and a nonce.
    holder_id: String,
    /// A claim whose heartbeat stands still this long is taken over.
    pub(crate) timeout: Duration,
    /// The newest claim's heartbeat as last seen, and since when (this pilot's clock).
    seen: Mutex<Option<Seen>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    lost: Option<ClusterId>,
    generation: u64,
    heartbeat: u64,
    since: Instant,
}

/// What [`Claims::acquire`] got.
pub(crate) enum Acquired {
    /// This pilot holds the claim: restore, then [`Lease::finish`].
    Held(Lease),
    /// Another holder restores (or restored: `restored`).
    Waiting {
        holder: String,
        backup: String,
        restored: bool,
        /// How long its heartbeat has stood still, as this pilot saw it.
        still_for: Duration,
    },
}

impl Claims {
    pub(crate) fn new(store: Store, me: String, admin_url: String, timeout: Duration) -> Self {
        Self {
            holder_id: format!("{me}#{:08x}", rand::random::<u32>()),
            store,
            me,
            admin_url,
            timeout,
            seen: Mutex::new(None),
        }
    }

    /// Takes the claim of the restore after `lost` was lost (with `backup`), or says who
    /// holds it.
    pub(crate) async fn acquire(
        &self,
        lost: Option<ClusterId>,
        backup: &str,
    ) -> anyhow::Result<Acquired> {
        let latest = self.store.latest_claim(ClaimKind::Restore, lost).await?;
        let view = latest.as_ref().map(|l| ClaimView {
            generation: l.generation,
            holder: l.claim.holder_id.clone(),
            outcome: match l.state.ended {
                None => ClaimOutcome::Open,
                Some(Ended::Restored | Ended::Reseeded) => ClaimOutcome::Restored,
                Some(Ended::Released) => ClaimOutcome::Released,
            },
            unchanged_for: self.still_for(lost, l),
        });
        // A holder that beats slowly (a longer timeout in its config) is given that long.
        let timeout = latest.as_ref().map_or(self.timeout, |l| {
            self.timeout
                .max(Duration::from_millis(l.claim.heartbeat_every_ms).saturating_mul(4))
        });
        let every = heartbeat_every(self.timeout);
        let generation = match choice::claim_step(view.as_ref(), &self.holder_id, timeout) {
            ClaimStep::Wait { restored, .. } => {
                let (holder, backup, still_for) = latest.map_or_else(
                    || (String::new(), String::new(), Duration::ZERO),
                    |l| {
                        let still = self.still_for(lost, &l);
                        (l.claim.holder, l.claim.backup, still)
                    },
                );
                return Ok(Acquired::Waiting {
                    holder,
                    backup,
                    restored,
                    still_for,
                });
            }
            ClaimStep::Held => latest.map_or(1, |l| l.generation),
            ClaimStep::Create { generation } => {
                if let Some(previous) = &latest
                    && previous.state.ended.is_none()
                {
                    tracing::warn!(
                        holder = %previous.claim.holder,
                        generation = previous.generation,
                        "the restore claim's heartbeat stood still for {timeout:?}: taking it over"
                    );
                }
                // Test: pilots that read the same newest claim create the next one at once.
                fail::fail_point!("claim-before-create");
                let claim = RestoreClaim {
                    holder: self.me.clone(),
                    holder_id: self.holder_id.clone(),
                    admin_url: self.admin_url.clone(),
                    backup: backup.to_owned(),
                    at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    heartbeat_every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                };
                if !self
                    .store
                    .create_claim(ClaimKind::Restore, lost, generation, &claim)
                    .await?
                {
                    // Another holder created it first.
                    return Ok(Acquired::Waiting {
                        holder: "another pilot".to_owned(),
                        backup: backup.to_owned(),
                        restored: false,
                        still_for: Duration::ZERO,
                    });
                }
                generation
            }
        };
        let lease = Lease::start(
            self.store.clone(),
            lost,
            generation,
            self.holder_id.clone(),
            every,
            self.timeout,
        )
        .await?;
        Ok(Acquired::Held(lease))
    }

    /// How long the heartbeat of `latest` has stood still, as seen from here.
    fn still_for(&self, lost: Option<ClusterId>, latest: &LatestClaim) -> Duration {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = seen.as_ref().is_some_and(|s| {
            s.lost == lost
                && s.generation == latest.generation
                && s.heartbeat == latest.state.heartbeat
        });
        if !same {
            *seen = Some(Seen {
                lost,
                generation: latest.generation,
                heartbeat: latest.state.heartbeat,
                since: Instant::now(),
            });
        }
        seen.as_ref().map_or(Duration::ZERO, |s| s.since.elapsed())
    }
}

/// How often a holder with claim timeout `timeout` heartbeats: six times per timeout.
fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 6).max(Duration::from_secs(1))
}

/// A claim this pilot holds: its heartbeat runs until [`Lease::finish`] or drop.
pub(crate) struct Lease {
    store: Store,
    lost: Option<ClusterId>,
    pub(crate) generation: u64,
    holder_id: String,
    timeout: Duration,
    /// When a heartbeat was last written (this pilot's clock).
    last_ack: std::sync::Arc<Mutex<Instant>>,
    stop: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<u64>>,
}

impl Lease {
    async fn start(
        store: Store,
        lost: Option<ClusterId>,
        generation: u64,
        holder_id: String,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let first = heartbeat_state(1);
        store
            .put_claim_state(ClaimKind::Restore, lost, generation, &first)
            .await?;
        let last_ack = std::sync::Arc::new(Mutex::new(Instant::now()));
        let stop = CancellationToken::new();
        let task = {
            let (store, stop, last_ack) = (store.clone(), stop.clone(), last_ack.clone());
            tokio::spawn(async move {
                let mut beat = 1;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = stop.cancelled() => return beat,
                    }
                    // A claim an operator ended stays ended: never beat over it.
                    match store.latest_claim(ClaimKind::Restore, lost).await {
                        Ok(Some(latest))
                            if latest.generation == generation && latest.state.ended.is_none() => {}
                        Ok(_) => return beat,
                        Err(err) => {
                            tracing::warn!("cannot read the restore claim: {err:#}");
                            continue;
                        }
                    }
                    beat += 1;
                    match store
                        .put_claim_state(
                            ClaimKind::Restore,
                            lost,
                            generation,
                            &heartbeat_state(beat),
                        )
                        .await
                    {
                        Ok(()) => {
                            *last_ack
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Instant::now();
                        }
                        Err(err) => tracing::warn!("cannot refresh the restore claim: {err:#}"),
                    }
                }
            })
        };
        Ok(Self {
            store,
            lost,
            generation,
            holder_id,
            timeout,
            last_ack,
            stop,
            heartbeat: Some(task),
        })
    }

    /// Checks that the claim is still this holder's (no newer generation, not ended) and that
    /// its heartbeat reached the store recently (a holder whose writes fail may have been
    /// taken over without seeing it yet): called right before the restored data goes into
    /// place.
    pub(crate) async fn confirm(&self) -> anyhow::Result<()> {
        let since_ack = self
            .last_ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed();
        if since_ack > self.timeout / 2 {
            anyhow::bail!(
                "the restore claim's heartbeat last reached the store {}s ago (the claim timeout \
                 is {}s): another pilot may take it over, so this restore is abandoned",
                since_ack.as_secs(),
                self.timeout.as_secs()
            );
        }
        let latest = self
            .store
            .latest_claim(ClaimKind::Restore, self.lost)
            .await?
            .context("the restore claim vanished from the store")?;
        if latest.generation != self.generation || latest.claim.holder_id != self.holder_id {
            anyhow::bail!(
                "pilot {} took the restore claim over (generation {}): this pilot's restore is \
                 abandoned",
                latest.claim.holder,
                latest.generation
            );
        }
        if let Some(ended) = latest.state.ended {
            anyhow::bail!(
                "the restore claim was ended ({ended:?} by {}): this restore is abandoned",
                latest.state.ended_by.as_deref().unwrap_or("someone")
            );
        }
        Ok(())
    }

    /// Ends the claim: the data is in place on this node (`by` says who put it there).
    pub(crate) async fn finish(mut self, by: &str) -> anyhow::Result<()> {
        self.stop.cancel();
        let beat = match self.heartbeat.take() {
            Some(task) => task.await.unwrap_or(0),
            None => 0,
        };
        let mut state = heartbeat_state(beat + 1);
        state.ended = Some(Ended::Restored);
        state.ended_by = Some(by.to_owned());
        self.store
            .put_claim_state(ClaimKind::Restore, self.lost, self.generation, &state)
            .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The admin URL other nodes reach this pilot at: `admin.listen`, with the peer URL's host
/// when it listens on every address.
pub(crate) fn admin_url(config: &crate::config::Config) -> String {
    let listen = config.admin.listen;
    if listen.ip().is_unspecified() {
        let host = config.etcd.peer_url.host_str().unwrap_or("127.0.0.1");
        format!("http://{host}:{}", listen.port())
    } else {
        format!("http://{listen}")
    }
}

fn heartbeat_state(beat: u64) -> ClaimState {
    ClaimState {
        heartbeat: beat,
        heartbeat_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        ended: None,
        ended_by: None,
    }
}

/// `restore --release-claim`: ends the newest claim after `lost` was lost (open, or restored
/// on a node that is gone too), once its holder's pilot does not answer as itself and its
/// heartbeat stands still for two of its periods. Returns what was done.
pub(crate) async fn release(
    store: &Store,
    lost: Option<ClusterId>,
    by: &str,
) -> anyhow::Result<String> {
    let lost_text = lost.map_or_else(|| "none".to_owned(), |id| id.to_string());
    let Some(latest) = store.latest_claim(ClaimKind::Restore, lost).await? else {
        return Ok(format!(
            "no restore claim for the loss of cluster {lost_text}: nothing to release"
        ));
    };
    let holder = &latest.claim.holder;
    if latest.state.ended == Some(Ended::Released) {
        return Ok(format!(
            "restore claim {} of {holder} is released already: nothing to do",
            latest.generation
        ));
    }
    if !latest.claim.admin_url.is_empty() {
        let peers = PeerApi::new(Duration::from_secs(5))?;
        if let Answer::Answered(status) = peers.probe(&latest.claim.admin_url).await {
            // The holder itself, or something that is not a pilot we can read: alive.
            let alive = status.is_none_or(|s| s.name.as_deref() == Some(holder.as_str()));
            if alive {
                anyhow::bail!(
                    "the holder of restore claim {}, pilot {holder}, answers at {}: it is alive \
                     (restoring, or running the restored cluster). Stop it first, or wait",
                    latest.generation,
                    latest.claim.admin_url
                );
            }
        }
    }
    if latest.state.ended.is_none() {
        // A live holder beats every period: watch two of them.
        let period = Duration::from_millis(latest.claim.heartbeat_every_ms.max(1000));
        tokio::time::sleep(period.saturating_mul(2) + Duration::from_secs(1)).await;
        let now = store
            .latest_claim(ClaimKind::Restore, lost)
            .await?
            .context("the restore claim vanished from the store")?;
        if now.generation != latest.generation || now.state.heartbeat != latest.state.heartbeat {
            anyhow::bail!(
                "restore claim {} changed while watching it (its holder {} heartbeats, or \
                 another pilot took it over): not releasing it",
                latest.generation,
                now.claim.holder
            );
        }
    }
    let state = ClaimState {
        heartbeat: latest.state.heartbeat + 1,
        heartbeat_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        ended: Some(Ended::Released),
        ended_by: Some(by.to_owned()),
    };
    store
        .put_claim_state(ClaimKind::Restore, lost, latest.generation, &state)
        .await?;
    Ok(format!(
        "released restore claim {} of pilot {holder} (backup {}; its pilot does not answer at {} \
         and its heartbeat stands still): the next pilot to find the cluster lost claims the \
         restore anew",
        latest.generation, latest.claim.backup, latest.claim.admin_url
    ))
}

/// Takes the reseed claim of `cluster` for `me` (`what`: the seed and its raft index, for
/// people reading the store): `Ok(generation)` when this node holds it, `Err(why)` when
/// another node does (or won the create). `take_over`: an operator's forced order, which
/// takes an open claim of another node over, unless that node's pilot answers that it is
/// reseeding right now.
pub(crate) async fn claim_reseed(
    store: &Store,
    peers: &PeerApi,
    cluster: ClusterId,
    me: &str,
    admin_url: &str,
    what: &str,
    take_over: bool,
) -> anyhow::Result<Result<u64, String>> {
    let latest = store.latest_claim(ClaimKind::Reseed, Some(cluster)).await?;
    let view = latest.as_ref().map(|l| etcd_pilot_core::reseed::ClaimView {
        generation: l.generation,
        holder: l.claim.holder.clone(),
        ended: l.state.ended.is_some(),
    });
    let generation = match etcd_pilot_core::reseed::claim_step(view.as_ref(), me, take_over) {
        ReseedStep::Held { generation } => return Ok(Ok(generation)),
        ReseedStep::Wait { holder, generation } => {
            let at = latest.map(|l| l.claim.at).unwrap_or_default();
            return Ok(Err(format!(
                "{holder} holds the store's reseed claim {generation} (since {at}): it reseeds, \
                 or died reseeding; `etcd-pilot reseed --from NAME --force` takes it over"
            )));
        }
        ReseedStep::Create { generation } => generation,
    };
    if let Some(previous) = latest.filter(|l| l.state.ended.is_none()) {
        // Taken over only from a holder that is not reseeding right now.
        if !previous.claim.admin_url.is_empty()
            && let Some(status) = peers.status(&previous.claim.admin_url).await
            && status.name.as_deref() == Some(previous.claim.holder.as_str())
            && let Some(reseed) = status.reseed
        {
            return Ok(Err(format!(
                "{} holds the store's reseed claim {} and is reseeding right now ({}: {}): not \
                 taken over",
                previous.claim.holder, previous.generation, reseed.step, reseed.detail
            )));
        }
        tracing::warn!(
            holder = %previous.claim.holder,
            generation = previous.generation,
            "an operator's forced reseed takes the open reseed claim over"
        );
    }
    let claim = RestoreClaim {
        holder: me.to_owned(),
        holder_id: me.to_owned(),
        admin_url: admin_url.to_owned(),
        backup: what.to_owned(),
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        heartbeat_every_ms: 0,
    };
    if store
        .create_claim(ClaimKind::Reseed, Some(cluster), generation, &claim)
        .await?
    {
        Ok(Ok(generation))
    } else {
        Ok(Err(format!(
            "another pilot created reseed claim {generation} first: it reseeds"
        )))
    }
}

/// Ends reseed claim `generation` of `cluster`: the reseed is recorded (`done`), or was
/// dropped before etcd started alone.
pub(crate) async fn end_reseed_claim(
    store: &Store,
    cluster: ClusterId,
    generation: u64,
    done: bool,
    by: &str,
) -> anyhow::Result<()> {
    let mut state = heartbeat_state(1);
    state.ended = Some(if done {
        Ended::Reseeded
    } else {
        Ended::Released
    });
    state.ended_by = Some(by.to_owned());
    store
        .put_claim_state(ClaimKind::Reseed, Some(cluster), generation, &state)
        .await
}

/// Whether reseed claim `generation` of `cluster` is still the newest, open and `me`'s: a
/// pilot resuming a reseed after a restart checks it before it goes on (an operator's forced
/// order may have taken it over meanwhile).
pub(crate) async fn holds_reseed_claim(
    store: &Store,
    cluster: ClusterId,
    generation: u64,
    me: &str,
) -> anyhow::Result<bool> {
    let latest = store.latest_claim(ClaimKind::Reseed, Some(cluster)).await?;
    Ok(latest.is_some_and(|l| {
        l.generation == generation && l.claim.holder == me && l.state.ended.is_none()
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code.

    use super::*;
    use crate::config::{StoreConfig, StoreUrl};

    fn folder_store(dir: &std::path::Path) -> Store {
        let options = StoreConfig {
            url: StoreUrl::File {
                url: url::Url::from_directory_path(dir).unwrap(),
                dir: dir.to_owned(),
            },
            s3_endpoint: None,
            s3_region: None,
            timeout: Duration::from_secs(5),
        };
        Store::open(&options, "test").unwrap()
    }

    /// Against a real folder store: of two pilots claiming the same reseed at once exactly
    /// one wins; the winner holds it again, the other waits; once ended, the next reseed is
    /// a new generation; an open claim is taken over only by a forced order, after which its
    /// old holder no longer holds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_pilots_claiming_one_reseed_at_once_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = folder_store(dir.path());
        // Nothing listens on this port: a holder's pilot never answers here.
        let peers = PeerApi::new(Duration::from_millis(200)).unwrap();
        let cluster = ClusterId(0xc1);
        let claim = |me: &'static str, take_over: bool| {
            let (store, peers) = (store.clone(), peers.clone());
            async move {
                claim_reseed(
                    &store,
                    &peers,
                    cluster,
                    me,
                    "http://127.0.0.1:9",
                    "reseed from it",
                    take_over,
                )
                .await
                .unwrap()
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(claim("m1", false)),
            tokio::spawn(claim("m2", false))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_ok() != b.is_ok(), "exactly one wins: {a:?} {b:?}");
        let (winner, loser) = if a.is_ok() {
            ("m1", "m2")
        } else {
            ("m2", "m1")
        };
        assert_eq!(a.clone().or(b.clone()), Ok(1));
        assert_eq!(
            claim(winner, false).await,
            Ok(1),
            "the winner holds it again"
        );
        assert!(claim(loser, false).await.unwrap_err().contains(winner));
        assert!(
            holds_reseed_claim(&store, cluster, 1, winner)
                .await
                .unwrap()
        );

        end_reseed_claim(&store, cluster, 1, true, winner)
            .await
            .unwrap();
        assert_eq!(
            claim(loser, false).await,
            Ok(2),
            "a new reseed after an ended one"
        );
        assert_eq!(
            claim(winner, true).await,
            Ok(3),
            "taken over by a forced order"
        );
        assert!(!holds_reseed_claim(&store, cluster, 2, loser).await.unwrap());
        assert!(
            holds_reseed_claim(&store, cluster, 3, winner)
                .await
                .unwrap()
        );
    }
}
