//! Discovery: who should be a member.
//!
//! A provider answers one question, "which peers should be in the cluster?", and nothing
//! else: it never connects to etcd and never changes anything. Deciding what to do with the
//! answer is the start decision's and the reconcile loop's job.
//! Each provider implements [`Discovery`]; the configured one is selected at runtime by
//! [`Provider`], an enum built from the config that delegates to it (static dispatch).

mod static_list;

use etcd_pilot_core::Peer;

use crate::config::{self, Config, DiscoveryConfig};
pub(crate) use static_list::StaticList;

/// Why discovery could not answer. The caller keeps its previous view.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The peers file could not be read or is invalid; retry after the operator fixes it.
    #[error("peers file is unusable")]
    PeersFile(#[source] config::Error),
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Who should be a member.
pub(crate) trait Discovery {
    /// Returns the full current set of peers, this node included. Idempotent and free of side
    /// effects. An error means "no answer": the caller keeps what it knew, and never reads it
    /// as "nobody should be a member".
    async fn peers(&self) -> Result<Vec<Peer>>;
}

/// The configured provider.
pub(crate) enum Provider {
    Static(StaticList),
}

impl Provider {
    pub(crate) fn from_config(config: &Config) -> Self {
        match &config.discovery {
            DiscoveryConfig::Static { peers, peers_file } => Provider::Static(StaticList::new(
                peers.clone(),
                peers_file.clone(),
                config.admin.listen.port(),
            )),
        }
    }
}

impl Discovery for Provider {
    async fn peers(&self) -> Result<Vec<Peer>> {
        match self {
            Provider::Static(list) => list.peers().await,
        }
    }
}
