//! Discovery: who should be a member.
//!
//! A provider answers one question, "which peers should be in the cluster?", and nothing
//! else: it never connects to etcd and never changes anything. Deciding what to do with the
//! answer is the start decision's and the reconcile loop's job.
//! Each provider implements [`Discovery`]; the configured one is selected at runtime by
//! [`Provider`], an enum built from the config that delegates to it (static dispatch), and
//! that publishes each answer's outcome in the pilot's status (`discovery`: stale or not).

pub(crate) mod aws;
mod static_list;

use std::time::SystemTime;

use etcd_pilot_core::Peer;
use tokio::sync::watch;

use crate::config::{self, Config, DiscoveryConfig};
use crate::state::PilotStatus;
pub(crate) use aws::AutoscalingGroups;
pub(crate) use static_list::StaticList;

/// Why discovery could not answer. The caller keeps its previous view.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The peers file could not be read or is invalid; retry after the operator fixes it.
    #[error("peers file is unusable")]
    PeersFile(#[source] config::Error),
    /// An AWS API call failed or timed out.
    #[error("AWS discovery failed in {region}: {message}")]
    Aws { region: String, message: String },
    /// The provider answered, but with nobody: read as a fault, never as "everyone left".
    #[error("no running instance found in {0}; keeping the previous view")]
    Empty(String),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// What a starting node needs to know beyond the peers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Census {
    /// The peers that should be members, this node included.
    pub(crate) peers: Vec<Peer>,
    /// Nodes on their way out that still run, with their etcd and data (an autoscaling
    /// group's `Terminating:Wait` instances, held by a lifecycle hook).
    pub(crate) leaving: Vec<Peer>,
    /// How many nodes the fleet should have (the groups' desired capacity), when the provider
    /// knows; otherwise the number of peers.
    pub(crate) size: usize,
}

/// Who should be a member.
pub(crate) trait Discovery {
    /// Returns the full current set of peers, this node included. Idempotent and free of side
    /// effects. An error means "no answer": the caller keeps what it knew, and never reads it
    /// as "nobody should be a member".
    async fn peers(&self) -> Result<Vec<Peer>>;

    /// The peers, the nodes leaving but still running, and the fleet's intended size: what a
    /// starting node asks before it bootstraps or restores. Same contract as [`Self::peers`].
    async fn census(&self) -> Result<Census> {
        let peers = self.peers().await?;
        Ok(Census {
            size: peers.len(),
            peers,
            leaving: Vec::new(),
        })
    }
}

enum Kind {
    Static(StaticList),
    Aws(AutoscalingGroups),
}

/// The configured provider.
pub(crate) struct Provider {
    kind: Kind,
    status: watch::Sender<PilotStatus>,
}

impl Provider {
    pub(crate) fn from_config(config: &Config, status: watch::Sender<PilotStatus>) -> Self {
        let kind = match &config.discovery {
            DiscoveryConfig::Static { peers, peers_file } => Kind::Static(StaticList::new(
                peers.clone(),
                peers_file.clone(),
                config.admin.listen.port(),
            )),
            DiscoveryConfig::Aws(aws) => Kind::Aws(AutoscalingGroups::new(aws.clone())),
        };
        status.send_modify(|s| {
            s.discovery.provider = match kind {
                Kind::Static(_) => "static",
                Kind::Aws(_) => "aws",
            }
        });
        Self { kind, status }
    }
}

impl Provider {
    /// Records the outcome of one answer in the pilot's status.
    fn record<T>(&self, answer: &Result<T>, n_peers: impl Fn(&T) -> usize) {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.status.send_if_modified(|s| {
            let d = &mut s.discovery;
            let before = (d.peers, d.error.clone());
            match answer {
                Ok(found) => {
                    d.peers = Some(n_peers(found));
                    d.error = None;
                    d.stale = false;
                    d.last_success = Some(now.clone());
                }
                Err(err) => {
                    let message = crate::error::error_chain(err);
                    if d.error.as_ref() != Some(&message) {
                        tracing::warn!("discovery failed, keeping the previous view: {message}");
                    }
                    d.error = Some(message);
                    d.stale = true;
                }
            }
            // Only a change is a notification; the timestamp alone is not.
            before != (d.peers, d.error.clone())
        });
    }
}

impl Discovery for Provider {
    async fn peers(&self) -> Result<Vec<Peer>> {
        let answer = match &self.kind {
            Kind::Static(list) => list.peers().await,
            Kind::Aws(groups) => groups.peers().await,
        };
        self.record(&answer, Vec::len);
        answer
    }

    async fn census(&self) -> Result<Census> {
        let answer = match &self.kind {
            Kind::Static(list) => list.census().await,
            Kind::Aws(groups) => groups.census().await,
        };
        self.record(&answer, |census| census.peers.len());
        answer
    }
}
