//! The `static` provider: peers from the config, or from a peers file re-read when it changes.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use etcd_pilot_core::Peer;

use super::{Discovery, Error, Result};
use crate::config;

/// A fixed peer list, or a file of peers that is re-read whenever its modification time moves.
pub(crate) struct StaticList {
    file: Option<PathBuf>,
    admin_port: u16,
    /// The last list read and the file's modification time then. The lock is never held
    /// across an await.
    cache: Mutex<(Vec<Peer>, Option<SystemTime>)>,
}

impl StaticList {
    pub(crate) fn new(peers: Vec<Peer>, file: Option<PathBuf>, admin_port: u16) -> Self {
        Self {
            file,
            admin_port,
            cache: Mutex::new((peers, None)),
        }
    }

    fn cached(&self) -> (Vec<Peer>, Option<SystemTime>) {
        match self.cache.lock() {
            Ok(cache) => cache.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Discovery for StaticList {
    async fn peers(&self) -> Result<Vec<Peer>> {
        let Some(file) = &self.file else {
            return Ok(self.cached().0);
        };
        let modified = tokio::fs::metadata(file)
            .await
            .and_then(|m| m.modified())
            .ok();
        let (cached, cached_at) = self.cached();
        if modified.is_some() && modified == cached_at {
            return Ok(cached);
        }
        let (file, port) = (file.clone(), self.admin_port);
        let peers = tokio::task::spawn_blocking(move || config::read_peers_file(&file, port))
            .await
            .map_err(|join| {
                Error::PeersFile(config::Error {
                    key: "discovery.peers_file".into(),
                    problem: format!("reading task failed: {join}"),
                    fix: "retry".into(),
                })
            })?
            .map_err(Error::PeersFile)?;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = (peers.clone(), modified);
        }
        Ok(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, names: &[&str]) {
        let body: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "[[peers]]\nname = \"{n}\"\npeer_url = \"http://127.0.0.{}:2380\"\nclient_url = \"http://127.0.0.{}:2379\"\n",
                    i + 1,
                    i + 1
                )
            })
            .collect();
        std::fs::write(path, body).unwrap();
    }

    #[tokio::test]
    async fn peers_file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        write(&path, &["a", "b"]);
        let list = StaticList::new(vec![], Some(path.clone()), 2378);
        let names = |peers: Vec<Peer>| {
            peers
                .into_iter()
                .map(|p| p.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(list.peers().await.unwrap()), ["a", "b"]);
        write(&path, &["a", "b", "c"]);
        // Make the change visible even on file systems with coarse timestamps.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(names(list.peers().await.unwrap()), ["a", "b", "c"]);
        assert_eq!(
            list.peers().await.unwrap()[2].admin_url,
            "http://127.0.0.3:2378"
        );
    }

    #[tokio::test]
    async fn a_broken_peers_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        std::fs::write(&path, "peers = [ {").unwrap();
        let list = StaticList::new(vec![], Some(path), 2378);
        assert!(matches!(list.peers().await, Err(Error::PeersFile(_))));
    }
}
