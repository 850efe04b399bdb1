//! Configuration: defaults < TOML file < `ETCD_PILOT_*` environment < flags, validated into a
//! typed [`Config`] before anything binds a port or starts etcd.
//!
//! `keys.rs` lists every key once (name, help, default, secret); `validate.rs` turns the
//! merged values into [`Config`]; `aws.rs` holds the AWS provider's, DNS's and the lifecycle
//! hook's parts. The sources are passed in ([`Sources`]) rather than read from the process,
//! so tests never mutate the environment. The reference of every key is `docs/config.md`.
//! This module does not own what the values do; each subsystem reads its part of `Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_pilot_core::plan::Policy;
use etcd_pilot_core::supervise::RestartPolicy;
use etcd_pilot_core::{MemberName, Peer};
use url::Url;

mod aws;
mod keys;
mod validate;

pub(crate) use aws::{AddressKind, AwsDiscovery, DnsConfig, LifecycleConfig};
use keys::Raw;
pub(crate) use keys::{KEYS, env_var, flag};
pub(crate) use validate::{etcd_bin, read_peers_file, search_path};

/// Environment variables with our prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "ETCD_PILOT_LOG",
    "ETCD_PILOT_LOG_FORMAT",
    "ETCD_PILOT_TARGET_DIR",
];

/// Where configuration comes from. Built by `main` from the process; by tests from literals.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    /// The config file, if any: its path and contents.
    pub(crate) file: Option<(PathBuf, String)>,
    /// Environment variables: those starting with `ETCD_PILOT_`, and the variables of
    /// other tools that a key falls back to (`AWS_ENDPOINT_URL`).
    pub(crate) env: BTreeMap<String, String>,
    /// Flags given on the command line, by key name.
    pub(crate) flags: BTreeMap<String, String>,
    /// Values found rather than given (this instance's identity from its metadata), by key
    /// name: below every source the operator writes.
    pub(crate) found: BTreeMap<String, String>,
}

impl Sources {
    /// Reads the config file at `path` (if any) and takes the environment from `env`.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: BTreeMap<String, String>,
    ) -> Result<Self, Error> {
        let file = match path {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| Error {
                    key: "--config".into(),
                    problem: format!("cannot read {}: {err}", path.display()),
                    fix: "pass the path of a readable TOML file".into(),
                })?;
                Some((path.to_owned(), text))
            }
        };
        let env = env
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("ETCD_PILOT_") || KEYS.iter().any(|key| key.fallback_env == Some(k))
            })
            .collect();
        Ok(Self {
            file,
            env,
            flags,
            found: BTreeMap::new(),
        })
    }

    /// The value of `key` as the sources give it (flag, then env, then file), before
    /// validation; `None` when unset or the file does not parse (validation reports that).
    pub(crate) fn peek(&self, key: &str) -> Option<String> {
        if let Some(value) = self.flags.get(key) {
            return Some(value.clone());
        }
        if let Some(value) = self.env.get(&env_var(key)) {
            return Some(value.clone());
        }
        let (path, text) = self.file.as_ref()?;
        Raw::parse(path, text).ok()?.scalars.remove(key)
    }
}

/// Where a value came from, for `config show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Default,
    /// Found on this machine (the instance metadata).
    Found,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Found => f.write_str("instance metadata"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => write!(f, "flag --{flag}"),
        }
    }
}

/// A configuration problem: which key, what is wrong, and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}\n  fix: {fix}")]
pub(crate) struct Error {
    /// The key (or source) at fault.
    pub(crate) key: String,
    /// What is wrong with it.
    pub(crate) problem: String,
    /// What the operator should do.
    pub(crate) fix: String,
}

fn error(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> Error {
    Error {
        key: key.to_owned(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// The validated configuration. The only constructor is [`Config::load`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: MemberName,
    pub(crate) cluster_name: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) etcd: EtcdConfig,
    pub(crate) admin: AdminConfig,
    pub(crate) discovery: DiscoveryConfig,
    pub(crate) timers: Timers,
    pub(crate) backup: BackupConfig,
    pub(crate) restore: RestoreConfig,
    /// DNS records of the healthy voters, if published.
    pub(crate) dns: Option<DnsConfig>,
    /// The termination lifecycle hook's queue, if any.
    pub(crate) lifecycle: Option<LifecycleConfig>,
    pub(crate) quarantine: QuarantineConfig,
    /// After quorum loss: whether the pilots reseed on their own (`reseed.auto`).
    pub(crate) reseed_auto: bool,
    pub(crate) upgrade: UpgradeConfig,
    pub(crate) maintenance: MaintenanceConfig,
    /// The sources this config was read from, to read `etcd.bin` and `etcd.versions` again
    /// while the pilot runs (`None` in commands that read the config once).
    pub(crate) reload: Option<Reload>,
    /// Where each scalar value came from.
    origins: BTreeMap<&'static str, Origin>,
    /// Each scalar value as given (secrets included; never printed unredacted).
    values: BTreeMap<&'static str, String>,
}

/// Day-2 maintenance (`maintenance.*`).
#[derive(Clone, Debug)]
pub(crate) struct MaintenanceConfig {
    /// Whether the coordinator compacts (off when etcd compacts on its own).
    pub(crate) compaction: bool,
    pub(crate) compact_interval: Duration,
    pub(crate) keep_revisions: i64,
    pub(crate) keep_for: Duration,
    /// Threshold defragmentation is on.
    pub(crate) defrag: bool,
    pub(crate) defrag_threshold: etcd_pilot_core::maintenance::DefragThreshold,
    /// Minutes of the UTC day `start..end` when threshold defragmentation may run (`None`:
    /// any time).
    pub(crate) defrag_window: Option<(u32, u32)>,
    pub(crate) defrag_timeout: Duration,
    /// etcd's `--quota-backend-bytes` (from `etcd.extra_args`, else etcd's 2 GiB).
    pub(crate) quota: u64,
}

impl MaintenanceConfig {
    /// The core's compaction policy.
    pub(crate) fn compaction_policy(&self) -> etcd_pilot_core::maintenance::CompactionPolicy {
        etcd_pilot_core::maintenance::CompactionPolicy {
            keep_revisions: self.keep_revisions,
            keep_for_secs: self.keep_for.as_secs(),
        }
    }
}

/// Rolling upgrades of etcd (`upgrade.*`).
#[derive(Clone, Debug)]
pub(crate) struct UpgradeConfig {
    /// A member not healthy and caught up on its new release within this is rolled back.
    pub(crate) member_timeout: Duration,
    /// With a store, a backup at most this old must exist before a member upgrades.
    pub(crate) max_backup_age: Duration,
}

/// The sources a running pilot's config came from: the config file is read again to follow
/// the operator's `etcd.bin` and `etcd.versions` (the desired etcd release) without a
/// restart; every other key takes effect at the next start.
#[derive(Clone)]
pub(crate) struct Reload(std::sync::Arc<Sources>);

impl fmt::Debug for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment may hold secrets: only the file is named.
        let file = self
            .0
            .file
            .as_ref()
            .map(|(path, _)| path.display().to_string());
        f.debug_tuple("Reload").field(&file).finish()
    }
}

impl Reload {
    pub(crate) fn new(sources: Sources) -> Self {
        Self(std::sync::Arc::new(sources))
    }

    /// The config file's path, if any.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.0.file.as_ref().map(|(path, _)| path.as_path())
    }

    /// `etcd.bin` and `etcd.versions` as the config file says now (the environment and
    /// flags as they were at start). A file that no longer reads, or no longer validates, is
    /// an error: the caller keeps what it had.
    pub(crate) fn etcd_releases(&self) -> Result<(PathBuf, Vec<PathBuf>), Error> {
        let mut sources = (*self.0).clone();
        if let Some((path, text)) = &mut sources.file {
            *text = std::fs::read_to_string(&*path).map_err(|err| Error {
                key: "--config".into(),
                problem: format!("cannot read {}: {err}", path.display()),
                fix: "pass the path of a readable TOML file".into(),
            })?;
        }
        let config = Config::load(&sources)?;
        Ok((config.etcd.bin, config.etcd.versions))
    }
}

/// How many quarantined copies of etcd data are kept.
#[derive(Clone, Debug)]
pub(crate) struct QuarantineConfig {
    pub(crate) keep: usize,
    /// `None`: twice the data's size, at least 8 GiB.
    pub(crate) max_bytes: Option<u64>,
}

#[derive(Clone)]
pub(crate) struct EtcdConfig {
    pub(crate) bin: PathBuf,
    pub(crate) peer_url: Url,
    pub(crate) client_url: Url,
    pub(crate) listen_peer_url: Url,
    pub(crate) listen_client_url: Url,
    /// User and password for etcd auth, if any.
    pub(crate) credentials: Option<(String, String)>,
    /// Extra flags passed to etcd as they are (tuning such as `--quota-backend-bytes`).
    pub(crate) extra_args: Vec<String>,
    /// More binaries for upgrades (`etcd.versions`): paths, `*` within one folder name.
    pub(crate) versions: Vec<PathBuf>,
}

#[derive(Clone, Debug)]
pub(crate) struct AdminConfig {
    pub(crate) listen: SocketAddr,
}

#[derive(Clone, Debug)]
pub(crate) enum DiscoveryConfig {
    /// A fixed list, from the config or from a peers file re-read when it changes.
    Static {
        peers: Vec<Peer>,
        peers_file: Option<PathBuf>,
    },
    /// The running instances of autoscaling groups.
    Aws(AwsDiscovery),
}

#[derive(Clone, Debug)]
pub(crate) struct Timers {
    pub(crate) etcd_call_timeout: Duration,
    pub(crate) pilot_call_timeout: Duration,
    pub(crate) observe_interval: Duration,
    pub(crate) stop_grace: Duration,
    /// An etcd process that answered once in this run and then stays silent this long is
    /// restarted by its pilot.
    pub(crate) liveness_timeout: Duration,
    pub(crate) restart_initial_backoff: Duration,
    pub(crate) restart_max_backoff: Duration,
    pub(crate) restart_stable_after: Duration,
    pub(crate) remove_after: Duration,
    pub(crate) learner_timeout: Duration,
    pub(crate) coordinator_lease: Duration,
    /// No leader and fewer than a quorum of voters answering this long is quorum loss.
    pub(crate) quorum_lost_after: Duration,
}

/// Backups: where, how often, how they are checked and kept.
#[derive(Clone, Debug)]
pub(crate) struct BackupConfig {
    /// `None`: no backup store, no backups, no automatic restore.
    pub(crate) store: Option<StoreConfig>,
    pub(crate) interval: Duration,
    pub(crate) drill: bool,
    /// First wait before drilling again after a drill failed for a reason outside the backup.
    pub(crate) drill_retry: Duration,
    pub(crate) compression_level: i32,
    pub(crate) retention: etcd_pilot_core::retention::RetentionPolicy,
}

/// Restores after total loss.
#[derive(Clone, Debug)]
pub(crate) struct RestoreConfig {
    pub(crate) allow_empty_cluster: bool,
    pub(crate) bump_revision: u64,
    /// A restore claim whose heartbeat stood still this long is taken over.
    pub(crate) claim_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Redacted: only `show`'s view, which hides secrets.
        f.write_str(&self.show())
    }
}

/// The default admin port; `local up` and the peer list defaults assume it.
pub(crate) const ADMIN_PORT: u16 = 2378;

impl Config {
    /// Merges the sources and validates the result.
    pub(crate) fn load(sources: &Sources) -> Result<Self, Error> {
        let mut raw = Raw::default();
        let mut origins: BTreeMap<&'static str, Origin> = BTreeMap::new();
        if let Some((path, text)) = &sources.file {
            raw = Raw::parse(path, text)?;
            for name in raw.scalars.keys() {
                origins.insert(name, Origin::File(path.clone()));
            }
        }
        for (var, value) in &sources.env {
            if NON_CONFIG_ENV.contains(&var.as_str()) || !var.starts_with("ETCD_PILOT_") {
                continue;
            }
            let Some(key) = KEYS.iter().find(|k| env_var(k.name) == *var) else {
                return Err(error(
                    var,
                    "unknown environment variable",
                    format!(
                        "unset it, or use one of: {}",
                        KEYS.iter()
                            .map(|k| env_var(k.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            raw.scalars.insert(key.name, value.clone());
            origins.insert(key.name, Origin::Env(var.clone()));
        }
        for (name, value) in &sources.flags {
            let Some(key) = keys::find(name) else {
                return Err(error(name, "unknown flag", "see etcd-pilot agent --help"));
            };
            raw.scalars.insert(key.name, value.clone());
            origins.insert(key.name, Origin::Flag(flag(key.name)));
        }
        // Below everything the operator writes for us: the tools' own variables, then what
        // was found on this machine.
        for key in KEYS {
            let fallback = key
                .fallback_env
                .and_then(|var| Some((var, sources.env.get(var)?)));
            if let Some((var, value)) = fallback
                && !raw.scalars.contains_key(key.name)
            {
                raw.scalars.insert(key.name, value.clone());
                origins.insert(key.name, Origin::Env(var.to_owned()));
            }
            if let Some(value) = sources.found.get(key.name)
                && !raw.scalars.contains_key(key.name)
            {
                raw.scalars.insert(key.name, value.clone());
                origins.insert(key.name, Origin::Found);
            }
        }
        let mut config = validate::validate(raw)?;
        for key in KEYS {
            origins.entry(key.name).or_insert(Origin::Default);
        }
        config.origins = origins;
        Ok(config)
    }

    /// The effective configuration, one key per line with its origin; secrets redacted.
    pub(crate) fn show(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let origin = self.origins.get(key.name).unwrap_or(&Origin::Default);
            let value = match self
                .values
                .get(key.name)
                .map(String::as_str)
                .or(key.default)
            {
                None => "(unset)".to_owned(),
                Some(_) if key.secret => "\"<redacted>\"".to_owned(),
                Some(value) => format!("{value:?}"),
            };
            out.push_str(&format!("{} = {value}  # {origin}\n", key.name));
        }
        let peers = match &self.discovery {
            DiscoveryConfig::Static { peers, .. } => peers.as_slice(),
            DiscoveryConfig::Aws(_) => &[],
        };
        for peer in peers {
            out.push_str(&format!(
                "discovery.peers += {{ name = {:?}, peer_url = {:?}, client_url = {:?}, admin_url = {:?} }}\n",
                peer.name.as_str(),
                peer.peer_url,
                peer.client_url,
                peer.admin_url
            ));
        }
        for arg in &self.etcd.extra_args {
            out.push_str(&format!("etcd.extra_args += {arg:?}\n"));
        }
        for path in &self.etcd.versions {
            out.push_str(&format!(
                "etcd.versions += {:?}\n",
                path.display().to_string()
            ));
        }
        out
    }

    /// This node as a peer.
    pub(crate) fn me(&self) -> Peer {
        Peer {
            name: self.name.clone(),
            peer_url: url_string(&self.etcd.peer_url),
            client_url: url_string(&self.etcd.client_url),
            admin_url: format!("http://{}", self.admin.listen),
        }
    }
}

/// Where the backup store is and how to reach it (`backup.*`).
#[derive(Clone, Debug)]
pub(crate) struct StoreConfig {
    pub(crate) url: StoreUrl,
    /// Endpoint of an S3-compatible service (`backup.s3_endpoint`, else `AWS_ENDPOINT_URL`).
    pub(crate) s3_endpoint: Option<String>,
    pub(crate) s3_region: Option<String>,
    /// Timeout of every request.
    pub(crate) timeout: Duration,
}

/// `backup.url`, parsed once: one variant per kind of store the pilot opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    /// A local (or mounted) folder: `file:///path`.
    File { url: Url, dir: PathBuf },
    /// An S3 bucket or S3-compatible service: `s3://bucket/prefix`.
    S3(Url),
    /// A Google Cloud Storage bucket: `gs://bucket/prefix`.
    Gcs(Url),
    /// An Azure Blob Storage container: `az://container/prefix`.
    Azure(Url),
}

impl StoreUrl {
    pub(crate) fn url(&self) -> &Url {
        match self {
            StoreUrl::File { url, .. } | StoreUrl::S3(url) | StoreUrl::Gcs(url) => url,
            StoreUrl::Azure(url) => url,
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.url(), f)
    }
}

impl Timers {
    /// The core's membership policy: its timers are these keys.
    pub(crate) fn plan_policy(&self) -> Policy {
        Policy {
            remove_after: self.remove_after,
            learner_timeout: self.learner_timeout,
            learner_catch_up: etcd_pilot_core::plan::LEARNER_CATCH_UP,
        }
    }

    /// The core's quorum-loss policy; `auto` is `reseed.auto`.
    pub(crate) fn reseed_policy(&self, auto: bool) -> etcd_pilot_core::reseed::ReseedPolicy {
        etcd_pilot_core::reseed::ReseedPolicy {
            quorum_lost_after: self.quorum_lost_after,
            remove_after: self.remove_after,
            auto,
        }
    }

    /// The core's restart policy for the supervised etcd.
    pub(crate) fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy {
            initial_backoff: self.restart_initial_backoff,
            max_backoff: self.restart_max_backoff,
            stable_after: self.restart_stable_after,
            jitter: etcd_pilot_core::supervise::RESTART_JITTER,
        }
    }
}

/// A URL as etcd prints it: no trailing slash.
pub(crate) fn url_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests;
