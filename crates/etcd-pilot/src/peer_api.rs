//! The typed client of another pilot's admin API (`admin.rs` serves it): what a starting
//! pilot asks its peers (`/v1/bootstrap`), what the coordinator asks the pilot of a member that
//! is not healthy, what `plan` asks when no etcd answers, and whether the holder of a restore
//! claim is alive (`/v1/status`), and the operator's reseed order (`POST /v1/reseed`). Every
//! place that asks another pilot goes through it, and every request has the client's timeout.

use std::time::Duration;

use anyhow::Context as _;
use etcd_pilot_core::start::PilotReport;
use serde::Deserialize;

/// The part of a peer's `/v1/status` other pilots and the CLI read. Unknown fields are
/// ignored and missing ones are `None` (it is a view, and the peer may run another version).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PeerStatus {
    pub(crate) name: Option<String>,
    pub(crate) phase: Option<String>,
    pub(crate) reason: Option<String>,
    /// Set when etcd cannot run on its data (`PilotStatus::data_unusable`).
    pub(crate) data_unusable: Option<String>,
    /// Set while etcd keeps failing for a reason that is not its data's
    /// (`PilotStatus::cannot_run`).
    pub(crate) cannot_run: Option<String>,
    /// Set while the peer's etcd sees no leader (`PilotStatus::quorum`).
    pub(crate) quorum: Option<Box<PeerQuorum>>,
    /// Set while the peer reseeds from its member (`PilotStatus::reseed`): its step.
    pub(crate) reseed: Option<PeerReseed>,
    /// What became of the last operator's reseed order the peer took.
    pub(crate) reseed_order: Option<String>,
    /// The etcd releases the peer's node has (`PilotStatus::release`).
    pub(crate) release: Option<PeerRelease>,
    /// The peer's member in a rolling upgrade (`PilotStatus::upgrade`).
    pub(crate) upgrade: Option<PeerUpgrade>,
}

/// A peer's member in a rolling upgrade.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PeerUpgrade {
    /// A step is under way on the peer's member (restarted, not caught up yet, or going
    /// back).
    #[serde(default)]
    pub(crate) stepping: bool,
    pub(crate) failed: Option<String>,
}

/// The etcd releases a peer's node has.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PeerRelease {
    /// `3.5.16 /path/of/etcd`, one per release.
    #[serde(default)]
    pub(crate) available: Vec<String>,
    /// The release its `etcd.bin` is: the one it asks for.
    pub(crate) bin_version: Option<String>,
    /// The release its member runs.
    pub(crate) running: Option<String>,
}

/// The admin URL of the pilot beside the etcd at `client_url`, on the default admin port
/// (what `plan`, `reseed` and `upgrade check` ask when they know only the members).
pub(crate) fn default_admin_url(client_url: &str) -> Option<String> {
    let url = url::Url::parse(client_url).ok()?;
    Some(format!(
        "http://{}:{}",
        url.host_str()?,
        crate::config::ADMIN_PORT
    ))
}

/// A peer's reseed under way.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PeerReseed {
    #[serde(default)]
    pub(crate) step: String,
    #[serde(default)]
    pub(crate) detail: String,
}

/// A peer's view of a lost quorum (`state::QuorumStatus`), as `plan` shows it.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub(crate) struct PeerQuorum {
    #[serde(default)]
    pub(crate) lost: bool,
    #[serde(default)]
    pub(crate) lost_for_secs: u64,
    #[serde(default)]
    pub(crate) survivors: Vec<PeerSurvivor>,
    #[serde(default)]
    pub(crate) unreachable: Vec<String>,
    pub(crate) seed: Option<PeerSurvivor>,
    #[serde(default)]
    pub(crate) verdict: String,
    /// What became of the last operator's reseed order (from the pilot's `reseed_order`).
    #[serde(default)]
    pub(crate) manual: Option<String>,
    #[serde(default)]
    pub(crate) highest_seen: u64,
    /// Raft entries the seed lacks against `highest_seen`.
    #[serde(default)]
    pub(crate) seed_behind: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, serde::Serialize)]
pub(crate) struct PeerSurvivor {
    pub(crate) name: String,
    pub(crate) raft_index: u64,
}

/// What answered at a peer's admin address.
pub(crate) enum Answer {
    /// Nothing (refused, timed out).
    Silent,
    /// Something answered HTTP: its status, if it is a pilot's.
    Answered(Option<Box<PeerStatus>>),
}

/// A client of peer pilots.
#[derive(Clone)]
pub(crate) struct PeerApi {
    http: reqwest::Client,
}

impl PeerApi {
    /// Each request (connect included) gives up after `timeout`.
    pub(crate) fn new(timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .context("build the HTTP client for peer pilots")?;
        Ok(Self { http })
    }

    /// `/v1/bootstrap`: what the peer says it holds; `Unknown` when it does not answer.
    pub(crate) async fn report(&self, admin_url: &str) -> PilotReport {
        let url = format!("{}/v1/bootstrap", admin_url.trim_end_matches('/'));
        match self.http.get(url).send().await {
            Ok(response) if response.status().is_success() => {
                response.json().await.unwrap_or(PilotReport::Unknown)
            }
            _ => PilotReport::Unknown,
        }
    }

    /// `/v1/status`, when a pilot answers it.
    pub(crate) async fn status(&self, admin_url: &str) -> Option<PeerStatus> {
        match self.probe(admin_url).await {
            Answer::Answered(status) => status.map(|s| *s),
            Answer::Silent => None,
        }
    }

    /// `POST /v1/reseed`: leaves an operator's order with the seed's pilot. `Ok(Ok(text))`
    /// when accepted, `Ok(Err(why))` when the pilot refused it.
    pub(crate) async fn order_reseed(
        &self,
        admin_url: &str,
        order: &crate::quorum::ReseedOrder,
    ) -> anyhow::Result<Result<String, String>> {
        let url = format!("{}/v1/reseed", admin_url.trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .json(order)
            .send()
            .await
            .with_context(|| format!("send the reseed order to {url}"))?;
        let accepted = response.status().is_success();
        let text = response.text().await.unwrap_or_default().trim().to_owned();
        Ok(if accepted { Ok(text) } else { Err(text) })
    }

    /// Whether anything answers `/v1/status` at `admin_url`, and what.
    pub(crate) async fn probe(&self, admin_url: &str) -> Answer {
        let url = format!("{}/v1/status", admin_url.trim_end_matches('/'));
        match self.http.get(url).send().await {
            Ok(response) => Answer::Answered(response.json().await.ok().map(Box::new)),
            Err(_) => Answer::Silent,
        }
    }
}
