//! The restore claim's lease: after total loss, one pilot restores, and the others wait for
//! its cluster; a holder that dies is replaced once its heartbeat stood still for
//! `restore.claim_timeout`, and a finished restore ends the claim so that the next incident
//! starts a new one.
//!
//! The store keeps the claims (`store.rs`: conditional creates, one object per generation);
//! the core decides the step (`backup::claim_step`). This module times the holder's heartbeat
//! on the observer's own clock, keeps the heartbeat going while this pilot restores, and
//! confirms the claim is still its own before the restored data goes into place.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use etcd_pilot_core::ClusterId;
use etcd_pilot_core::backup::{self as choice, ClaimStep, ClaimView};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::{ClaimState, LatestClaim, RestoreClaim, Store};

/// One pilot's side of the restore claims of its store.
pub(crate) struct Claims {
    pub(crate) store: Store,
    /// This pilot's name and admin URL, written into its claims.
    pub(crate) me: String,
    pub(crate) admin_url: String,
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
    /// Another pilot holds it.
    Waiting {
        holder: String,
        backup: String,
        /// How long its heartbeat has stood still, as this pilot saw it.
        still_for: Duration,
    },
}

impl Claims {
    pub(crate) fn new(store: Store, me: String, admin_url: String, timeout: Duration) -> Self {
        Self {
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
        let latest = self.store.latest_claim(lost).await?;
        let view = latest.as_ref().map(|l| ClaimView {
            generation: l.generation,
            holder: l.claim.holder.clone(),
            finished: l.state.finished.is_some(),
            unchanged_for: self.still_for(lost, l),
        });
        let generation = match choice::claim_step(view.as_ref(), &self.me, self.timeout) {
            ClaimStep::Wait { holder } => {
                let (backup, still_for) = latest.map_or_else(
                    || (String::new(), Duration::ZERO),
                    |l| {
                        let still = self.still_for(lost, &l);
                        (l.claim.backup, still)
                    },
                );
                return Ok(Acquired::Waiting {
                    holder,
                    backup,
                    still_for,
                });
            }
            ClaimStep::Held => latest.map_or(1, |l| l.generation),
            ClaimStep::Create { generation } => {
                if let Some(previous) = &latest
                    && previous.state.finished.is_none()
                {
                    tracing::warn!(
                        holder = %previous.claim.holder,
                        generation = previous.generation,
                        "the restore claim's heartbeat stood still for {:?}: taking it over",
                        self.timeout
                    );
                }
                // Test: pilots that read the same newest claim create the next one at once.
                fail::fail_point!("claim-before-create");
                let claim = RestoreClaim {
                    holder: self.me.clone(),
                    admin_url: self.admin_url.clone(),
                    backup: backup.to_owned(),
                    at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                };
                if !self.store.create_claim(lost, generation, &claim).await? {
                    // Another pilot created it first: it holds the claim.
                    return Ok(Acquired::Waiting {
                        holder: "another pilot".to_owned(),
                        backup: backup.to_owned(),
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
            self.me.clone(),
            (self.timeout / 6).max(Duration::from_secs(1)),
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

/// A claim this pilot holds: its heartbeat runs until [`Lease::finish`] or drop.
pub(crate) struct Lease {
    store: Store,
    lost: Option<ClusterId>,
    pub(crate) generation: u64,
    holder: String,
    stop: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<u64>>,
}

impl Lease {
    async fn start(
        store: Store,
        lost: Option<ClusterId>,
        generation: u64,
        holder: String,
        every: Duration,
    ) -> anyhow::Result<Self> {
        let first = heartbeat_state(1);
        store.put_claim_state(lost, generation, &first).await?;
        let stop = CancellationToken::new();
        let task = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut beat = 1;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(every) => {}
                        () = stop.cancelled() => return beat,
                    }
                    beat += 1;
                    if let Err(err) = store
                        .put_claim_state(lost, generation, &heartbeat_state(beat))
                        .await
                    {
                        tracing::warn!("cannot refresh the restore claim: {err:#}");
                    }
                }
            })
        };
        Ok(Self {
            store,
            lost,
            generation,
            holder,
            stop,
            heartbeat: Some(task),
        })
    }

    /// Checks that the claim is still this pilot's (no newer generation, not released):
    /// called right before the restored data goes into place.
    pub(crate) async fn confirm(&self) -> anyhow::Result<()> {
        let latest = self
            .store
            .latest_claim(self.lost)
            .await?
            .context("the restore claim vanished from the store")?;
        if latest.generation != self.generation || latest.claim.holder != self.holder {
            anyhow::bail!(
                "pilot {} took the restore claim over (generation {}): this pilot's restore is \
                 abandoned",
                latest.claim.holder,
                latest.generation
            );
        }
        if let Some(finished) = &latest.state.finished {
            anyhow::bail!("the restore claim was ended ({finished}): this restore is abandoned");
        }
        Ok(())
    }

    /// Ends the claim: the data is in place on this node (`how` says so).
    pub(crate) async fn finish(mut self, how: &str) -> anyhow::Result<()> {
        self.stop.cancel();
        let beat = match self.heartbeat.take() {
            Some(task) => task.await.unwrap_or(0),
            None => 0,
        };
        let mut state = heartbeat_state(beat + 1);
        state.finished = Some(how.to_owned());
        self.store
            .put_claim_state(self.lost, self.generation, &state)
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
        finished: None,
    }
}

/// `restore --release-claim`: ends the newest claim after `lost` was lost, once its holder
/// does not answer on its admin URL. Returns what was done.
pub(crate) async fn release(
    store: &Store,
    lost: Option<ClusterId>,
    by: &str,
) -> anyhow::Result<String> {
    let lost_text = lost.map_or_else(|| "none".to_owned(), |id| id.to_string());
    let Some(latest) = store.latest_claim(lost).await? else {
        return Ok(format!(
            "no restore claim for the loss of cluster {lost_text}: nothing to release"
        ));
    };
    if let Some(finished) = &latest.state.finished {
        return Ok(format!(
            "restore claim {} of {} is already over ({finished}): nothing to release",
            latest.generation, latest.claim.holder
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let health = format!("{}/healthz", latest.claim.admin_url.trim_end_matches('/'));
    if http.get(&health).send().await.is_ok() {
        anyhow::bail!(
            "the holder of the restore claim, pilot {}, answers at {}: it is alive and may be \
             restoring. Stop it first (or wait for it), then release the claim",
            latest.claim.holder,
            latest.claim.admin_url
        );
    }
    let state = ClaimState {
        heartbeat: latest.state.heartbeat + 1,
        heartbeat_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        finished: Some(format!("released by {by}")),
    };
    store
        .put_claim_state(lost, latest.generation, &state)
        .await?;
    Ok(format!(
        "released restore claim {} of pilot {} (backup {}; its pilot does not answer at {}): \
         the next pilot to find the cluster lost claims the restore anew",
        latest.generation, latest.claim.holder, latest.claim.backup, latest.claim.admin_url
    ))
}
