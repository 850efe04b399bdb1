//! Discovery: who should be a member.
//!
//! A provider answers one question, "which peers should be in the cluster?", and nothing
//! else: it never connects to etcd and never changes anything. Deciding what to do with the
//! answer is the start decision's and the reconcile loop's job.
//! Each provider implements [`Discovery`]; the configured one is selected at runtime by
//! [`Provider`], an enum built from the config that delegates to it (static dispatch), and
//! that publishes each answer's outcome in the pilot's status (`discovery`: stale or not).

mod aws;
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

/// Who should be a member.
pub(crate) trait Discovery {
    /// Returns the full current set of peers, this node included. Idempotent and free of side
    /// effects. An error means "no answer": the caller keeps what it knew, and never reads it
    /// as "nobody should be a member".
    async fn peers(&self) -> Result<Vec<Peer>>;
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

impl Discovery for Provider {
    async fn peers(&self) -> Result<Vec<Peer>> {
        let answer = match &self.kind {
            Kind::Static(list) => list.peers().await,
            Kind::Aws(groups) => groups.peers().await,
        };
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.status.send_if_modified(|s| {
            let d = &mut s.discovery;
            let before = (d.peers, d.error.clone());
            match &answer {
                Ok(peers) => {
                    d.peers = Some(peers.len());
                    d.error = None;
                    d.stale = false;
                    d.last_success = Some(now.clone());
                }
                Err(err) => {
                    let message = crate::error_chain(err);
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
        answer
    }
}
