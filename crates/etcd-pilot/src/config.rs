//! Configuration: defaults < TOML file < `ETCD_PILOT_*` environment < flags, validated into a
//! typed [`Config`] before anything binds a port or starts etcd.
//!
//! Every scalar key is listed once in [`KEYS`]; its environment variable and flag are derived
//! from its name (`etcd.peer_url` -> `ETCD_PILOT_ETCD_PEER_URL`, `--etcd-peer-url`).
//! The sources are passed in ([`Sources`]) rather than read from the process, so tests never
//! mutate the environment. The reference of every key is `docs/config.md`.
//! This module does not own what the values do; each subsystem reads its part of `Config`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_pilot_core::{MemberName, Peer};
use serde::Deserialize;
use url::Url;

/// A scalar configuration key: its dotted name and a one-line description.
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) secret: bool,
}

const fn key(name: &'static str, help: &'static str) -> Key {
    Key {
        name,
        help,
        secret: false,
    }
}

/// Every scalar key, in the order `config show` prints them.
pub(crate) const KEYS: &[Key] = &[
    key("name", "this node's member name"),
    key(
        "cluster_name",
        "the cluster's name; the bootstrap token is derived from it",
    ),
    key(
        "data_dir",
        "where the pilot keeps etcd's data and its markers",
    ),
    key("etcd.bin", "path of the etcd binary"),
    key("etcd.peer_url", "URL other members reach this etcd on"),
    key("etcd.client_url", "URL clients reach this etcd on"),
    key(
        "etcd.listen_peer_url",
        "URL etcd listens on for peers (default: etcd.peer_url)",
    ),
    key(
        "etcd.listen_client_url",
        "URL etcd listens on for clients (default: etcd.client_url)",
    ),
    key(
        "etcd.username",
        "etcd user the pilot authenticates as, when etcd auth is on",
    ),
    Key {
        name: "etcd.password",
        help: "password of etcd.username (prefer etcd.password_file)",
        secret: true,
    },
    key(
        "etcd.password_file",
        "file holding the password of etcd.username",
    ),
    key("admin.listen", "address of the pilot's admin HTTP API"),
    key(
        "discovery.provider",
        "who should be a member: static, or aws (autoscaling groups)",
    ),
    key(
        "discovery.peers_file",
        "TOML file with `peers = [...]`, re-read when it changes",
    ),
    key(
        "discovery.aws_groups",
        "aws: the autoscaling group names, comma-separated",
    ),
    key(
        "discovery.aws_regions",
        "aws: the regions to look in, comma-separated (default: this instance's)",
    ),
    key(
        "discovery.aws_address",
        "aws: which address peers are reached on: private_ip, public_ip or private_dns",
    ),
    key(
        "discovery.aws_timeout",
        "aws: timeout of every AWS API call",
    ),
    key(
        "dns.provider",
        "publish DNS records of the healthy voters: none or route53",
    ),
    key("dns.zone_id", "route53: the hosted zone's id"),
    key(
        "dns.domain",
        "the domain the records are published under (etcd.example.com)",
    ),
    key("dns.ttl", "TTL of the published records, in seconds"),
    key(
        "dns.legacy_srv",
        "also publish _etcd._tcp.<domain> (true/false)",
    ),
    key(
        "lifecycle.queue_url",
        "SQS queue of the autoscaling group's termination lifecycle hook (unset: none)",
    ),
    key(
        "lifecycle.region",
        "region of the queue and group (default: the first of discovery.aws_regions)",
    ),
    key(
        "lifecycle.heartbeat_interval",
        "how often a pending termination's hook gets a heartbeat",
    ),
    key("timers.etcd_call_timeout", "timeout of every etcd API call"),
    key(
        "timers.pilot_call_timeout",
        "timeout of every call to a peer pilot",
    ),
    key(
        "timers.observe_interval",
        "how often the pilot observes the cluster",
    ),
    key(
        "timers.stop_grace",
        "how long etcd may take to stop before SIGKILL",
    ),
    key(
        "timers.liveness_timeout",
        "an etcd that answered once and then stays silent this long is restarted (never removed)",
    ),
    key(
        "timers.restart_initial_backoff",
        "delay before the first restart of a crashed etcd",
    ),
    key(
        "timers.restart_max_backoff",
        "longest delay between restarts",
    ),
    key(
        "timers.restart_stable_after",
        "a run this long resets the restart backoff",
    ),
    key(
        "timers.remove_after",
        "how long a member must be gone from discovery before it is removed",
    ),
    key(
        "timers.learner_timeout",
        "a learner not promoted within this is removed so its pilot retries",
    ),
    key(
        "timers.coordinator_lease",
        "TTL of the coordinator's lease; a coordinator that stops is replaced after it",
    ),
    key(
        "backup.url",
        "backup store: file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix (unset: no backups)",
    ),
    key(
        "backup.interval",
        "how often the coordinator takes a backup",
    ),
    key(
        "backup.drill",
        "restore-drill each new backup in a throwaway etcd (true/false)",
    ),
    key(
        "backup.drill_retry",
        "first wait before drilling a backup again after a drill failed for a reason outside it (doubles, at most 30m)",
    ),
    key(
        "backup.compression_level",
        "zstd level of backups (1-19; higher is smaller and slower)",
    ),
    key(
        "backup.timeout",
        "timeout of every request to the backup store",
    ),
    key(
        "backup.s3_endpoint",
        "endpoint of an S3-compatible service (default: AWS, or AWS_ENDPOINT_URL)",
    ),
    key("backup.s3_region", "S3 region (default: AWS_REGION)"),
    key("backup.keep_all", "keep every backup younger than this"),
    key(
        "backup.keep_hourly",
        "keep the newest backup of each hour younger than this",
    ),
    key(
        "backup.keep_daily",
        "keep the newest backup of each day younger than this",
    ),
    key(
        "backup.keep_weekly",
        "keep the newest backup of each week younger than this",
    ),
    key(
        "restore.allow_empty_cluster",
        "create an empty cluster even though the store says one existed and no backup restores (true/false)",
    ),
    key(
        "restore.bump_revision",
        "revisions added on restore when the restore tool supports --bump-revision (0: never)",
    ),
    key(
        "restore.claim_timeout",
        "a restore claim whose holder's heartbeat stood still this long is taken over by another pilot",
    ),
    key(
        "quarantine.keep",
        "quarantined copies of etcd data kept (the oldest beyond go; the newest is always kept)",
    ),
    key(
        "quarantine.max_bytes",
        "bytes the quarantined copies may take together (default: twice the data's size, at least 8 GiB)",
    ),
];

/// The environment variable that sets `key`.
pub(crate) fn env_var(key: &str) -> String {
    format!("ETCD_PILOT_{}", key.replace('.', "_").to_uppercase())
}

/// The command-line flag that sets `key`, without the leading `--`.
pub(crate) fn flag(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

/// Environment variables with our prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["ETCD_PILOT_LOG", "ETCD_PILOT_TARGET_DIR"];

/// Where configuration comes from. Built by `main` from the process; by tests from literals.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    /// The config file, if any: its path and contents.
    pub(crate) file: Option<(PathBuf, String)>,
    /// Environment variables (only those starting with `ETCD_PILOT_` are looked at).
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
            .filter(|(k, _)| k.starts_with("ETCD_PILOT_"))
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
        let (_, text) = self.file.as_ref()?;
        let mut raw: RawConfig = toml::from_str(text).ok()?;
        raw.slot(key).and_then(|slot| slot.clone())
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

/// The configuration as written: every field optional, unknown keys refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    cluster_name: Option<String>,
    data_dir: Option<String>,
    #[serde(default)]
    etcd: RawEtcd,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    discovery: RawDiscovery,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    backup: RawBackup,
    #[serde(default)]
    restore: RawRestore,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    quarantine: RawQuarantine,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    #[serde(default, deserialize_with = "scalar")]
    keep: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    max_bytes: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    provider: Option<String>,
    zone_id: Option<String>,
    domain: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    ttl: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    legacy_srv: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    queue_url: Option<String>,
    region: Option<String>,
    heartbeat_interval: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    url: Option<String>,
    interval: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    drill: Option<String>,
    drill_retry: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    compression_level: Option<String>,
    timeout: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    keep_all: Option<String>,
    keep_hourly: Option<String>,
    keep_daily: Option<String>,
    keep_weekly: Option<String>,
}

/// A TOML string, boolean or integer, kept as text: one parser for file, env and flags.
fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Bool(bool),
        Int(i64),
    }
    Ok(Some(match Scalar::deserialize(d)? {
        Scalar::Text(text) => text,
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
    }))
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestore {
    #[serde(default, deserialize_with = "scalar")]
    allow_empty_cluster: Option<String>,
    #[serde(default, deserialize_with = "scalar")]
    bump_revision: Option<String>,
    claim_timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    bin: Option<String>,
    peer_url: Option<String>,
    client_url: Option<String>,
    listen_peer_url: Option<String>,
    listen_client_url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    #[serde(default)]
    extra_args: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    provider: Option<String>,
    peers: Option<Vec<RawPeer>>,
    peers_file: Option<String>,
    aws_groups: Option<String>,
    aws_regions: Option<String>,
    aws_address: Option<String>,
    aws_timeout: Option<String>,
}

/// One entry of a static peer list (in the config or a peers file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    name: String,
    peer_url: String,
    client_url: String,
    admin_url: Option<String>,
}

/// A peers file: `peers = [{ name = ..., peer_url = ..., client_url = ... }, ...]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeersFile {
    pub(crate) peers: Vec<RawPeer>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    etcd_call_timeout: Option<String>,
    pilot_call_timeout: Option<String>,
    observe_interval: Option<String>,
    stop_grace: Option<String>,
    liveness_timeout: Option<String>,
    restart_initial_backoff: Option<String>,
    restart_max_backoff: Option<String>,
    restart_stable_after: Option<String>,
    remove_after: Option<String>,
    learner_timeout: Option<String>,
    coordinator_lease: Option<String>,
}

impl RawConfig {
    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "name" => &mut self.name,
            "cluster_name" => &mut self.cluster_name,
            "data_dir" => &mut self.data_dir,
            "etcd.bin" => &mut self.etcd.bin,
            "etcd.peer_url" => &mut self.etcd.peer_url,
            "etcd.client_url" => &mut self.etcd.client_url,
            "etcd.listen_peer_url" => &mut self.etcd.listen_peer_url,
            "etcd.listen_client_url" => &mut self.etcd.listen_client_url,
            "etcd.username" => &mut self.etcd.username,
            "etcd.password" => &mut self.etcd.password,
            "etcd.password_file" => &mut self.etcd.password_file,
            "admin.listen" => &mut self.admin.listen,
            "discovery.provider" => &mut self.discovery.provider,
            "discovery.peers_file" => &mut self.discovery.peers_file,
            "discovery.aws_groups" => &mut self.discovery.aws_groups,
            "discovery.aws_regions" => &mut self.discovery.aws_regions,
            "discovery.aws_address" => &mut self.discovery.aws_address,
            "discovery.aws_timeout" => &mut self.discovery.aws_timeout,
            "dns.provider" => &mut self.dns.provider,
            "dns.zone_id" => &mut self.dns.zone_id,
            "dns.domain" => &mut self.dns.domain,
            "dns.ttl" => &mut self.dns.ttl,
            "dns.legacy_srv" => &mut self.dns.legacy_srv,
            "lifecycle.queue_url" => &mut self.lifecycle.queue_url,
            "lifecycle.region" => &mut self.lifecycle.region,
            "lifecycle.heartbeat_interval" => &mut self.lifecycle.heartbeat_interval,
            "timers.etcd_call_timeout" => &mut self.timers.etcd_call_timeout,
            "timers.pilot_call_timeout" => &mut self.timers.pilot_call_timeout,
            "timers.observe_interval" => &mut self.timers.observe_interval,
            "timers.stop_grace" => &mut self.timers.stop_grace,
            "timers.liveness_timeout" => &mut self.timers.liveness_timeout,
            "timers.restart_initial_backoff" => &mut self.timers.restart_initial_backoff,
            "timers.restart_max_backoff" => &mut self.timers.restart_max_backoff,
            "timers.restart_stable_after" => &mut self.timers.restart_stable_after,
            "timers.remove_after" => &mut self.timers.remove_after,
            "timers.learner_timeout" => &mut self.timers.learner_timeout,
            "timers.coordinator_lease" => &mut self.timers.coordinator_lease,
            "backup.url" => &mut self.backup.url,
            "backup.interval" => &mut self.backup.interval,
            "backup.drill" => &mut self.backup.drill,
            "backup.drill_retry" => &mut self.backup.drill_retry,
            "backup.compression_level" => &mut self.backup.compression_level,
            "backup.timeout" => &mut self.backup.timeout,
            "backup.s3_endpoint" => &mut self.backup.s3_endpoint,
            "backup.s3_region" => &mut self.backup.s3_region,
            "backup.keep_all" => &mut self.backup.keep_all,
            "backup.keep_hourly" => &mut self.backup.keep_hourly,
            "backup.keep_daily" => &mut self.backup.keep_daily,
            "backup.keep_weekly" => &mut self.backup.keep_weekly,
            "restore.allow_empty_cluster" => &mut self.restore.allow_empty_cluster,
            "restore.bump_revision" => &mut self.restore.bump_revision,
            "restore.claim_timeout" => &mut self.restore.claim_timeout,
            "quarantine.keep" => &mut self.quarantine.keep,
            "quarantine.max_bytes" => &mut self.quarantine.max_bytes,
            _ => return None,
        })
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
    /// Where each scalar value came from.
    origins: BTreeMap<&'static str, Origin>,
    /// Each scalar value as given (secrets included; never printed unredacted).
    values: BTreeMap<&'static str, String>,
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
    Aws(aws::AwsDiscovery),
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
}

/// Backups: where, how often, how they are checked and kept.
#[derive(Clone, Debug)]
pub(crate) struct BackupConfig {
    /// `None`: no backup store, no backups, no automatic restore.
    pub(crate) store: Option<crate::backup::StoreOptions>,
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
        let mut raw = RawConfig::default();
        let mut origins: BTreeMap<&'static str, Origin> = BTreeMap::new();
        let mut found = BTreeMap::new();
        for (name, value) in &sources.found {
            if let Some(key) = KEYS.iter().find(|k| k.name == name) {
                found.insert(key.name, value.clone());
            }
        }
        if let Some((path, text)) = &sources.file {
            raw = toml::from_str(text).map_err(|err| {
                error(
                    &format!("file {}", path.display()),
                    err.to_string().trim_end().to_owned(),
                    "correct the file; docs/config.md lists every key",
                )
            })?;
            for key in KEYS {
                if raw.slot(key.name).is_some_and(|slot| slot.is_some()) {
                    origins.insert(key.name, Origin::File(path.clone()));
                }
            }
        }
        for (var, value) in &sources.env {
            if NON_CONFIG_ENV.contains(&var.as_str()) {
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
            if let Some(slot) = raw.slot(key.name) {
                *slot = Some(value.clone());
            }
            origins.insert(key.name, Origin::Env(var.clone()));
        }
        for (name, value) in &sources.flags {
            let Some(key) = KEYS.iter().find(|k| k.name == name) else {
                return Err(error(name, "unknown flag", "see etcd-pilot agent --help"));
            };
            if let Some(slot) = raw.slot(key.name) {
                *slot = Some(value.clone());
            }
            origins.insert(key.name, Origin::Flag(flag(key.name)));
        }
        for (name, value) in found {
            if let Some(slot) = raw.slot(name)
                && slot.is_none()
            {
                *slot = Some(value);
                origins.insert(name, Origin::Found);
            }
        }
        let mut config = validate(raw)?;
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
            let value = match self.values.get(key.name) {
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

/// A URL as etcd prints it: no trailing slash.
pub(crate) fn url_string(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

fn validate(raw: RawConfig) -> Result<Config, Error> {
    let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut raw = raw;
    for key in KEYS {
        if let Some(Some(value)) = raw.slot(key.name).map(|slot| slot.clone()) {
            values.insert(key.name, value);
        }
    }

    let name = match &raw.name {
        None => {
            return Err(error(
                "name",
                "missing",
                "set `name = \"...\"` in the config file, ETCD_PILOT_NAME or --name",
            ));
        }
        Some(name) => MemberName::new(name.clone()).map_err(|err| {
            error(
                "name",
                err.to_string(),
                "choose a name such as \"m1\" or the host name",
            )
        })?,
    };
    let cluster_name = raw
        .cluster_name
        .clone()
        .unwrap_or_else(|| "etcd".to_owned());
    // It names a folder of the backup store.
    if cluster_name.is_empty()
        || cluster_name.starts_with('.')
        || !cluster_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(error(
            "cluster_name",
            format!(
                "{cluster_name:?} is empty, starts with a dot or has characters other than \
                 letters, digits, '-', '_' and '.'"
            ),
            "use a short name such as \"prod-etcd\"",
        ));
    }
    let data_dir = PathBuf::from(
        raw.data_dir
            .clone()
            .unwrap_or_else(|| "/var/lib/etcd-pilot".to_owned()),
    );
    check_data_dir(&data_dir)?;
    values.insert("data_dir", data_dir.display().to_string());

    let bin = etcd_bin(raw.etcd.bin.as_deref())?;
    values.insert("etcd.bin", bin.display().to_string());
    let peer_url = parse_url("etcd.peer_url", raw.etcd.peer_url.as_deref())?;
    let client_url = parse_url("etcd.client_url", raw.etcd.client_url.as_deref())?;
    let listen_peer_url = match &raw.etcd.listen_peer_url {
        Some(url) => parse_url("etcd.listen_peer_url", Some(url))?,
        None => peer_url.clone(),
    };
    let listen_client_url = match &raw.etcd.listen_client_url {
        Some(url) => parse_url("etcd.listen_client_url", Some(url))?,
        None => client_url.clone(),
    };
    values.insert("etcd.listen_peer_url", url_string(&listen_peer_url));
    values.insert("etcd.listen_client_url", url_string(&listen_client_url));
    let credentials = credentials(&raw.etcd)?;

    let admin_listen = match &raw.admin.listen {
        Some(listen) => listen.parse::<SocketAddr>().map_err(|err| {
            error(
                "admin.listen",
                format!("{listen:?} is not an address: {err}"),
                "use IP:PORT, for example \"127.0.0.1:2378\"",
            )
        })?,
        None => match client_url.host_str().and_then(|h| h.parse::<IpAddr>().ok()) {
            Some(ip) => SocketAddr::new(ip, ADMIN_PORT),
            None => {
                return Err(error(
                    "admin.listen",
                    "missing, and etcd.client_url's host is not an IP address to default to",
                    "set admin.listen to IP:PORT",
                ));
            }
        },
    };
    values.insert("admin.listen", admin_listen.to_string());

    let provider = raw
        .discovery
        .provider
        .clone()
        .unwrap_or_else(|| "static".to_owned());
    values.insert("discovery.provider", provider.clone());
    let discovery = match provider.as_str() {
        "static" => {
            let peers_file = raw.discovery.peers_file.as_ref().map(PathBuf::from);
            let peers = match (&raw.discovery.peers, &peers_file) {
                (Some(_), Some(_)) => {
                    return Err(error(
                        "discovery.peers",
                        "both discovery.peers and discovery.peers_file are set",
                        "keep one of them",
                    ));
                }
                (Some(peers), None) => parse_peers("discovery.peers", peers, admin_listen.port())?,
                (None, Some(file)) => read_peers_file(file, admin_listen.port())?,
                (None, None) => {
                    return Err(error(
                        "discovery.peers",
                        "missing: the static provider needs a peer list",
                        "set discovery.peers = [{ name = ..., peer_url = ..., client_url = ... }] \
                         or discovery.peers_file",
                    ));
                }
            };
            let me_key = if peers_file.is_some() {
                "discovery.peers_file"
            } else {
                "discovery.peers"
            };
            check_self_listed(me_key, &peers, &name, &peer_url)?;
            DiscoveryConfig::Static { peers, peers_file }
        }
        "aws" => DiscoveryConfig::Aws(aws::discovery(
            &raw.discovery,
            [
                peer_url.port_or_known_default(),
                client_url.port_or_known_default(),
            ],
            admin_listen.port(),
            &mut values,
        )?),
        other => {
            return Err(error(
                "discovery.provider",
                format!("unknown provider {other:?}"),
                "use \"static\" or \"aws\"",
            ));
        }
    };
    let dns = aws::dns(&raw.dns, &mut values)?;
    let lifecycle = aws::lifecycle(&raw.lifecycle, &discovery, &mut values)?;

    let timers = Timers {
        etcd_call_timeout: duration(
            &raw.timers.etcd_call_timeout,
            "timers.etcd_call_timeout",
            "2s",
            &mut values,
        )?,
        pilot_call_timeout: duration(
            &raw.timers.pilot_call_timeout,
            "timers.pilot_call_timeout",
            "1s",
            &mut values,
        )?,
        observe_interval: duration(
            &raw.timers.observe_interval,
            "timers.observe_interval",
            "1s",
            &mut values,
        )?,
        stop_grace: duration(
            &raw.timers.stop_grace,
            "timers.stop_grace",
            "10s",
            &mut values,
        )?,
        liveness_timeout: duration(
            &raw.timers.liveness_timeout,
            "timers.liveness_timeout",
            "30s",
            &mut values,
        )?,
        restart_initial_backoff: duration(
            &raw.timers.restart_initial_backoff,
            "timers.restart_initial_backoff",
            "100ms",
            &mut values,
        )?,
        restart_max_backoff: duration(
            &raw.timers.restart_max_backoff,
            "timers.restart_max_backoff",
            "30s",
            &mut values,
        )?,
        restart_stable_after: duration(
            &raw.timers.restart_stable_after,
            "timers.restart_stable_after",
            "60s",
            &mut values,
        )?,
        remove_after: duration(
            &raw.timers.remove_after,
            "timers.remove_after",
            "30s",
            &mut values,
        )?,
        learner_timeout: duration(
            &raw.timers.learner_timeout,
            "timers.learner_timeout",
            "5m",
            &mut values,
        )?,
        coordinator_lease: duration(
            &raw.timers.coordinator_lease,
            "timers.coordinator_lease",
            "5s",
            &mut values,
        )?,
    };

    let (backup, restore) = backup_config(&raw, &mut values)?;
    // Flags the pilot sets itself: where the data and its WAL live decide what counts as
    // data (`datadir.rs` looks for the WAL under `etcd/member/wal`), and the bootstrap flags
    // are the start decision's alone.
    for arg in &raw.etcd.extra_args {
        let flag = arg
            .split('=')
            .next()
            .unwrap_or_default()
            .trim_start_matches('-');
        if [
            "name",
            "data-dir",
            "wal-dir",
            "initial-cluster",
            "initial-cluster-state",
            "initial-cluster-token",
            "force-new-cluster",
        ]
        .contains(&flag)
        {
            return Err(error(
                "etcd.extra_args",
                format!("{arg:?} is set by the pilot itself"),
                "remove it from etcd.extra_args (the data and WAL live under data_dir/etcd; the \
                 start decision chooses the cluster flags)",
            ));
        }
    }

    Ok(Config {
        name,
        cluster_name: cluster_name.clone(),
        data_dir,
        etcd: EtcdConfig {
            bin,
            peer_url,
            client_url,
            listen_peer_url,
            listen_client_url,
            credentials,
            extra_args: raw.etcd.extra_args.clone(),
        },
        admin: AdminConfig {
            listen: admin_listen,
        },
        discovery,
        timers,
        backup,
        restore,
        dns,
        lifecycle,
        quarantine: quarantine_config(&raw.quarantine, &mut values)?,
        origins: BTreeMap::new(),
        values: {
            values.insert("cluster_name", cluster_name);
            values
        },
    })
}

fn quarantine_config(
    raw: &RawQuarantine,
    values: &mut BTreeMap<&'static str, String>,
) -> Result<QuarantineConfig, Error> {
    let keep_text = raw.keep.clone().unwrap_or_else(|| "3".to_owned());
    values.insert("quarantine.keep", keep_text.clone());
    let keep = keep_text.parse::<usize>().map_err(|_| {
        error(
            "quarantine.keep",
            format!("{keep_text:?} is not a whole number"),
            "use e.g. 3 (the newest copy is always kept)",
        )
    })?;
    let max_bytes = match &raw.max_bytes {
        None => None,
        Some(text) => {
            values.insert("quarantine.max_bytes", text.clone());
            Some(text.parse::<u64>().map_err(|_| {
                error(
                    "quarantine.max_bytes",
                    format!("{text:?} is not a number of bytes"),
                    "use e.g. 17179869184 (16 GiB), or leave it unset",
                )
            })?)
        }
    };
    Ok(QuarantineConfig { keep, max_bytes })
}

mod aws;
pub(crate) use aws::{AddressKind, AwsDiscovery, DnsConfig, LifecycleConfig};

fn backup_config(
    raw: &RawConfig,
    values: &mut BTreeMap<&'static str, String>,
) -> Result<(BackupConfig, RestoreConfig), Error> {
    let b = &raw.backup;
    let timeout = duration(&b.timeout, "backup.timeout", "30s", values)?;
    let store = match &b.url {
        None => None,
        Some(text) => {
            let fix = "write it as file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix \
                       or az://container/prefix";
            let url = Url::parse(text)
                .map_err(|err| error("backup.url", format!("{text:?} is not a URL: {err}"), fix))?;
            if !["file", "s3", "gs", "az"].contains(&url.scheme()) {
                return Err(error(
                    "backup.url",
                    format!("{text:?} uses scheme {:?}", url.scheme()),
                    fix,
                ));
            }
            if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
                return Err(error(
                    "backup.url",
                    format!("{text:?} names no bucket"),
                    fix,
                ));
            }
            if url.scheme() == "file" && url.to_file_path().is_err() {
                return Err(error(
                    "backup.url",
                    format!("{text:?} is not an absolute local path"),
                    fix,
                ));
            }
            Some(crate::backup::StoreOptions {
                url,
                s3_endpoint: b.s3_endpoint.clone(),
                s3_region: b.s3_region.clone(),
                timeout,
            })
        }
    };
    let interval = duration(&b.interval, "backup.interval", "30m", values)?;
    let drill = boolean(&b.drill, "backup.drill", true, values)?;
    let drill_retry = duration(&b.drill_retry, "backup.drill_retry", "1m", values)?;
    let level_text = b
        .compression_level
        .clone()
        .unwrap_or_else(|| "3".to_owned());
    values.insert("backup.compression_level", level_text.clone());
    let compression_level = level_text
        .parse::<i32>()
        .ok()
        .filter(|l| (1..=19).contains(l))
        .ok_or_else(|| {
            error(
                "backup.compression_level",
                format!("{level_text:?} is not a level from 1 to 19"),
                "use 3 (the default), or 1 for the fastest",
            )
        })?;
    let retention = etcd_pilot_core::retention::RetentionPolicy {
        keep_all: duration(&b.keep_all, "backup.keep_all", "1h", values)?,
        hourly: duration(&b.keep_hourly, "backup.keep_hourly", "1day", values)?,
        daily: duration(&b.keep_daily, "backup.keep_daily", "7days", values)?,
        weekly: duration(&b.keep_weekly, "backup.keep_weekly", "31days", values)?,
    };
    let r = &raw.restore;
    let allow_empty_cluster = boolean(
        &r.allow_empty_cluster,
        "restore.allow_empty_cluster",
        false,
        values,
    )?;
    let bump_text = r
        .bump_revision
        .clone()
        .unwrap_or_else(|| "1000000000".to_owned());
    values.insert("restore.bump_revision", bump_text.clone());
    let bump_revision = bump_text.parse::<u64>().map_err(|_| {
        error(
            "restore.bump_revision",
            format!("{bump_text:?} is not a whole number"),
            "use e.g. 1000000000, more than the writes the cluster takes between backups",
        )
    })?;
    Ok((
        BackupConfig {
            store,
            interval,
            drill,
            drill_retry,
            compression_level,
            retention,
        },
        RestoreConfig {
            allow_empty_cluster,
            bump_revision,
            claim_timeout: duration(&r.claim_timeout, "restore.claim_timeout", "2m", values)?,
        },
    ))
}

fn boolean(
    value: &Option<String>,
    key: &'static str,
    default: bool,
    values: &mut BTreeMap<&'static str, String>,
) -> Result<bool, Error> {
    let text = value.clone().unwrap_or_else(|| default.to_string());
    values.insert(key, text.clone());
    match text.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(error(
            key,
            format!("{text:?} is not true or false"),
            "write true or false",
        )),
    }
}

fn duration(
    value: &Option<String>,
    key: &'static str,
    default: &str,
    values: &mut BTreeMap<&'static str, String>,
) -> Result<Duration, Error> {
    let text = value.as_deref().unwrap_or(default);
    values.insert(key, text.to_owned());
    let parsed = humantime::parse_duration(text).map_err(|err| {
        error(
            key,
            format!("{text:?} is not a duration: {err}"),
            "write a duration such as \"500ms\", \"2s\" or \"1m\"",
        )
    })?;
    if parsed.is_zero() {
        return Err(error(
            key,
            "must be greater than zero",
            format!("use e.g. {default:?}"),
        ));
    }
    Ok(parsed)
}

/// The etcd binary: `configured`, else `etcd` on PATH; it must be an executable file.
pub(crate) fn etcd_bin(configured: Option<&str>) -> Result<PathBuf, Error> {
    let fix = "install etcd, or set etcd.bin (ETCD_PILOT_ETCD_BIN, --etcd-bin) to the path of an etcd binary";
    let path = match configured {
        Some(path) => PathBuf::from(path),
        None => search_path("etcd")
            .ok_or_else(|| error("etcd.bin", "missing, and no `etcd` on PATH", fix))?,
    };
    let metadata = std::fs::metadata(&path)
        .map_err(|err| error("etcd.bin", format!("{}: {err}", path.display()), fix))?;
    if metadata.is_dir() {
        return Err(error(
            "etcd.bin",
            format!("{} is a directory", path.display()),
            fix,
        ));
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err(error(
            "etcd.bin",
            format!("{} is not executable", path.display()),
            format!(
                "chmod +x {}, or point etcd.bin at an executable etcd",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// The first executable called `program` on `PATH`.
pub(crate) fn search_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn parse_url(key: &str, value: Option<&str>) -> Result<Url, Error> {
    let example = "http://127.0.0.1:2380";
    let Some(value) = value else {
        return Err(error(
            key,
            "missing",
            format!("set {key} to a URL such as {example:?}"),
        ));
    };
    let url = Url::parse(value).map_err(|err| {
        error(
            key,
            format!("{value:?} is not a URL: {err}"),
            format!("write it as scheme://host:port, e.g. {example:?}"),
        )
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(error(
            key,
            format!("{value:?} uses scheme {:?}", url.scheme()),
            "use http:// or https://",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(error(
            key,
            format!("{value:?} needs a host and an explicit port"),
            format!("write it as scheme://host:port, e.g. {example:?}"),
        ));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(error(
            key,
            format!("{value:?} has a path or query, which etcd does not accept"),
            "remove everything after host:port",
        ));
    }
    Ok(url)
}

/// `data_dir` holds etcd's data and scratch folders the pilot clears: an absolute path of
/// its own, never `/` or a system directory.
fn check_data_dir(dir: &Path) -> Result<(), Error> {
    const SYSTEM: &[&str] = &[
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/sbin",
        "/var",
        "/var/lib",
        "/var/tmp",
        "/var/log",
        "/var/run",
    ];
    if !dir.is_absolute() {
        return Err(error(
            "data_dir",
            format!("{} is not an absolute path", dir.display()),
            "use an absolute path of its own, such as /var/lib/etcd-pilot",
        ));
    }
    let normal: PathBuf = dir.components().collect();
    if dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || SYSTEM.iter().any(|system| normal == Path::new(system))
    {
        return Err(error(
            "data_dir",
            format!(
                "{} is a system directory (or climbs out with ..): the pilot keeps etcd's data \
                 and scratch folders there",
                dir.display()
            ),
            "use a folder of its own, such as /var/lib/etcd-pilot",
        ));
    }
    Ok(())
}

fn credentials(raw: &RawEtcd) -> Result<Option<(String, String)>, Error> {
    let password = match (&raw.password, &raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(error(
                "etcd.password",
                "both etcd.password and etcd.password_file are set",
                "keep one of them (etcd.password_file keeps the secret out of the config)",
            ));
        }
        (Some(password), None) => Some(password.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|err| {
                    error(
                        "etcd.password_file",
                        format!("cannot read {file}: {err}"),
                        "point it at a readable file holding the password",
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, None) => None,
    };
    match (&raw.username, password) {
        (Some(user), Some(password)) => Ok(Some((user.clone(), password))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(error(
            "etcd.password",
            "etcd.username is set without a password",
            "set etcd.password_file (or etcd.password)",
        )),
        (None, Some(_)) => Err(error(
            "etcd.username",
            "a password is set without etcd.username",
            "set etcd.username",
        )),
    }
}

/// Validates a peer list; `key` names where it came from.
pub(crate) fn parse_peers(key: &str, raw: &[RawPeer], admin_port: u16) -> Result<Vec<Peer>, Error> {
    let mut peers: Vec<Peer> = Vec::new();
    for (index, entry) in raw.iter().enumerate() {
        let at = format!("{key}[{index}]");
        let name = MemberName::new(entry.name.clone()).map_err(|err| {
            error(
                &format!("{at}.name"),
                err.to_string(),
                "fix the peer's name",
            )
        })?;
        let peer_url = parse_url(&format!("{at}.peer_url"), Some(&entry.peer_url))?;
        let client_url = parse_url(&format!("{at}.client_url"), Some(&entry.client_url))?;
        let admin_url = match &entry.admin_url {
            Some(url) => url_string(&parse_url(&format!("{at}.admin_url"), Some(url))?),
            None => format!(
                "http://{}:{admin_port}",
                peer_url.host_str().unwrap_or_default()
            ),
        };
        let peer = Peer {
            name,
            peer_url: url_string(&peer_url),
            client_url: url_string(&client_url),
            admin_url,
        };
        if let Some(twin) = peers
            .iter()
            .find(|p| p.name == peer.name || p.peer_url == peer.peer_url)
        {
            return Err(error(
                &at,
                format!(
                    "peer {} ({}) repeats the name or peer URL of peer {} ({})",
                    peer.name, peer.peer_url, twin.name, twin.peer_url
                ),
                "give every peer its own name and peer URL",
            ));
        }
        peers.push(peer);
    }
    if peers.is_empty() {
        return Err(error(
            key,
            "the peer list is empty",
            "list every member, this node included",
        ));
    }
    Ok(peers)
}

/// Reads and validates a peers file.
pub(crate) fn read_peers_file(path: &Path, admin_port: u16) -> Result<Vec<Peer>, Error> {
    let key = "discovery.peers_file";
    let text = std::fs::read_to_string(path).map_err(|err| {
        error(
            key,
            format!("cannot read {}: {err}", path.display()),
            "point it at a readable TOML file with `peers = [...]`",
        )
    })?;
    let file: PeersFile = toml::from_str(&text).map_err(|err| {
        error(
            key,
            format!("{}: {}", path.display(), err.to_string().trim_end()),
            "correct the peers file",
        )
    })?;
    parse_peers(key, &file.peers, admin_port)
}

fn check_self_listed(
    key: &str,
    peers: &[Peer],
    name: &MemberName,
    peer_url: &Url,
) -> Result<(), Error> {
    let Some(me) = peers.iter().find(|p| &p.name == name) else {
        return Err(error(
            key,
            format!(
                "this node ({name}) is not in the peer list ({})",
                peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "add this node to the peers, or fix `name`",
        ));
    };
    if me.peer_url != url_string(peer_url) {
        return Err(error(
            key,
            format!(
                "this node's entry has peer_url {}, but etcd.peer_url is {}",
                me.peer_url,
                url_string(peer_url)
            ),
            "make them the same",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
