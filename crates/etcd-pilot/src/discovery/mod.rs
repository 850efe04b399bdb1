//! Discovery: who should be a member.
//!
//! A provider answers one question, "which peers should be in the cluster?", and nothing
//! else: it never connects to etcd and never changes anything. Deciding what to do with the
//! answer is the start decision's and the reconcile loop's job.
//! Providers are selected at runtime by [`Discovery`], an enum built from the config.

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

/// The configured provider.
pub(crate) enum Discovery {
    Static(StaticList),
}

impl Discovery {
    pub(crate) fn from_config(config: &Config) -> Self {
        match &config.discovery {
            DiscoveryConfig::Static { peers, peers_file } => Discovery::Static(StaticList::new(
                peers.clone(),
                peers_file.clone(),
                config.admin.listen.port(),
            )),
        }
    }

    /// Returns the full current set of peers. Idempotent and free of side effects.
    pub(crate) async fn peers(&self) -> Result<Vec<Peer>> {
        match self {
            Discovery::Static(list) => list.peers().await,
        }
    }
}
