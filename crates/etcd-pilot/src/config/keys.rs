//! The key table: every configuration key once, with its help, default and whether it is a
//! secret; and the raw values of a config file, checked against it.
//!
//! A key's environment variable and flag are derived from its name
//! (`etcd.peer_url` -> `ETCD_PILOT_ETCD_PEER_URL`, `--etcd-peer-url`). `docs/config.md` names
//! every key of [`KEYS`] and [`LISTS`] and no other (a tidy test checks it).

use std::collections::BTreeMap;
use std::path::Path;

use super::validate::RawPeer;
use super::{Error, error};

/// A configuration key.
#[derive(Debug)]
pub(crate) struct Key {
    /// Its dotted name, as in the file.
    pub(crate) name: &'static str,
    /// One line for `--help`.
    pub(crate) help: &'static str,
    /// The value when no source sets it; `None` when it is required, optional, or derived
    /// from other keys (the help says from what).
    pub(crate) default: Option<&'static str>,
    /// Redacted wherever values are printed.
    pub(crate) secret: bool,
    /// A variable outside the `ETCD_PILOT_` prefix that sets the key when no flag, variable
    /// of ours or file does (the convention of the tools around it).
    pub(crate) fallback_env: Option<&'static str>,
}

const fn key(name: &'static str, help: &'static str) -> Key {
    Key {
        name,
        help,
        default: None,
        secret: false,
        fallback_env: None,
    }
}

impl Key {
    const fn default(self, value: &'static str) -> Self {
        Self {
            default: Some(value),
            ..self
        }
    }

    const fn secret(self) -> Self {
        Self {
            secret: true,
            ..self
        }
    }

    const fn fallback_env(self, var: &'static str) -> Self {
        Self {
            fallback_env: Some(var),
            ..self
        }
    }
}

/// Every scalar key, in the order `config show` prints them.
#[rustfmt::skip]
pub(crate) const KEYS: &[Key] = &[
    key("name", "this node's member name"),
    key("cluster_name", "the cluster's name; the bootstrap token is derived from it").default("etcd"),
    key("data_dir", "where the pilot keeps etcd's data and its markers").default("/var/lib/etcd-pilot"),
    key("etcd.bin", "path of the etcd binary"),
    key("etcd.peer_url", "URL other members reach this etcd on"),
    key("etcd.client_url", "URL clients reach this etcd on"),
    key("etcd.listen_peer_url", "URL etcd listens on for peers (default: etcd.peer_url)"),
    key("etcd.listen_client_url", "URL etcd listens on for clients (default: etcd.client_url)"),
    key("etcd.username", "etcd user the pilot authenticates as, when etcd auth is on"),
    key("etcd.password", "password of etcd.username (prefer etcd.password_file)").secret(),
    key("etcd.password_file", "file holding the password of etcd.username"),
    key("admin.listen", "address of the pilot's admin HTTP API"),
    key("discovery.provider", "who should be a member: static, or aws (autoscaling groups)").default("static"),
    key("discovery.peers_file", "TOML file with `peers = [...]`, re-read when it changes"),
    key("discovery.aws_groups", "aws: the autoscaling group names, comma-separated"),
    key("discovery.aws_regions", "aws: the regions to look in, comma-separated (default: this instance's)"),
    key("discovery.aws_address", "aws: which address peers are reached on: private_ip, public_ip or private_dns").default("private_ip"),
    key("discovery.aws_timeout", "aws: timeout of every AWS API call").default("5s"),
    key("dns.provider", "publish DNS records of the healthy voters: none or route53").default("none"),
    key("dns.zone_id", "route53: the hosted zone's id"),
    key("dns.domain", "the domain the records are published under (etcd.example.com)"),
    key("dns.ttl", "TTL of the published records, in seconds").default("60"),
    key("dns.legacy_srv", "also publish _etcd._tcp.<domain> (true/false)").default("false"),
    key("lifecycle.queue_url", "SQS queue of the autoscaling group's termination lifecycle hook (unset: none)"),
    key("lifecycle.region", "region of the queue and group (default: the first of discovery.aws_regions)"),
    key("lifecycle.heartbeat_interval", "how often a pending termination's hook gets a heartbeat").default("30s"),
    key("timers.etcd_call_timeout", "timeout of every etcd API call").default("2s"),
    key("timers.pilot_call_timeout", "timeout of every call to a peer pilot").default("1s"),
    key("timers.observe_interval", "how often the pilot observes the cluster").default("1s"),
    key("timers.stop_grace", "how long etcd may take to stop before SIGKILL").default("10s"),
    key("timers.liveness_timeout", "an etcd that answered once and then stays silent this long is restarted (never removed)").default("30s"),
    key("timers.restart_initial_backoff", "delay before the first restart of a crashed etcd").default("100ms"),
    key("timers.restart_max_backoff", "longest delay between restarts").default("30s"),
    key("timers.restart_stable_after", "a run this long resets the restart backoff").default("60s"),
    key("timers.remove_after", "how long a member must be gone from discovery before it is removed").default("30s"),
    key("timers.learner_timeout", "a learner not promoted within this is removed so its pilot retries").default("5m"),
    key("timers.quorum_lost_after", "how long no leader and fewer than a quorum of voters answering counts as quorum lost").default("30s"),
    key("reseed.auto", "after quorum loss, reseed from the best survivor on its own once the lost voters are gone from discovery (false: only `etcd-pilot reseed` does)").default("true"),
    key("upgrade.member_timeout", "a member restarted on a new etcd release that is not healthy and caught up within this is restarted on its old release, and the upgrade stops").default("2m"),
    key("upgrade.max_backup_age", "with a backup store, the coordinator upgrades a member only while a backup at most this old exists (it takes one first otherwise)").default("10m"),
    key("maintenance.compaction", "the coordinator compacts etcd's history (false: it never does; also off when etcd.extra_args sets --auto-compaction-*)").default("true"),
    key("maintenance.compact_interval", "how often the coordinator compacts").default("5m"),
    key("maintenance.keep_revisions", "compaction keeps at least this many of the newest revisions").default("10000"),
    key("maintenance.keep_for", "compaction keeps every revision written within this (whichever of this and keep_revisions keeps more)").default("1h"),
    key("maintenance.defrag", "the coordinator defragments members, one at a time, whose file is much larger than their data (false: only `etcd-pilot maintenance defrag` and a space alarm do)").default("true"),
    key("maintenance.defrag_threshold", "a member is defragmented when this share of its file is free space (and at least defrag_min_free)").default("25%"),
    key("maintenance.defrag_min_free", "a member is defragmented only when at least this much of its file is free space").default("64MiB"),
    key("maintenance.defrag_window", "when threshold defragmentation may run, a daily UTC range such as \"01:00-05:00\" (empty: any time; a space alarm and `etcd-pilot maintenance defrag` do not wait for it)").default(""),
    key("maintenance.defrag_timeout", "how long one member's defragmentation may take").default("10m"),
    key("timers.coordinator_lease", "TTL of the coordinator's lease; a coordinator that stops is replaced after it").default("5s"),
    key("backup.url", "backup store: file:///path, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix (unset: no backups)"),
    key("backup.interval", "how often the coordinator takes a backup").default("30m"),
    key("backup.drill", "restore-drill each new backup in a throwaway etcd (true/false)").default("true"),
    key("backup.drill_retry", "first wait before drilling a backup again after a drill failed for a reason outside it (doubles, at most 30m)").default("1m"),
    key("backup.compression_level", "zstd level of backups (1-19; higher is smaller and slower)").default("3"),
    key("backup.timeout", "timeout of every request to the backup store").default("30s"),
    key("backup.s3_endpoint", "endpoint of an S3-compatible service (default: AWS, or AWS_ENDPOINT_URL)").fallback_env("AWS_ENDPOINT_URL"),
    key("backup.s3_region", "S3 region (default: AWS_REGION)"),
    key("backup.keep_all", "keep every backup younger than this").default("1h"),
    key("backup.keep_hourly", "keep the newest backup of each hour younger than this").default("1day"),
    key("backup.keep_daily", "keep the newest backup of each day younger than this").default("7days"),
    key("backup.keep_weekly", "keep the newest backup of each week younger than this").default("31days"),
    key("restore.allow_empty_cluster", "create an empty cluster even though the store says one existed and no backup restores (true/false)").default("false"),
    key("restore.bump_revision", "revisions added on restore when the restore tool supports --bump-revision (0: never)").default("1000000000"),
    key("restore.claim_timeout", "a restore claim whose holder's heartbeat stood still this long is taken over by another pilot").default("2m"),
    key("quarantine.keep", "quarantined copies of etcd data kept (the oldest beyond go; the newest is always kept)").default("3"),
    key("quarantine.max_bytes", "bytes the quarantined copies may take together (default: twice the data's size, at least 8 GiB)"),
];

/// The keys whose values are lists, set in the file only.
pub(crate) const LISTS: &[Key] = &[
    key(
        "discovery.peers",
        "static: every member, as { name, peer_url, client_url, admin_url }",
    ),
    key("etcd.extra_args", "flags passed to etcd as they are"),
    key(
        "etcd.versions",
        "more etcd binaries this node has, for upgrades: paths, `*` matching within one folder name",
    ),
];

/// The scalar key called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// The scalar key called `name`, which the code names: a name missing from [`KEYS`] is a
/// bug, found by the first test that loads a config reaching it.
pub(super) fn known(name: &str) -> &'static Key {
    find(name).unwrap_or_else(|| panic!("configuration key {name:?} is not in KEYS"))
}

/// The environment variable that sets `key`.
pub(crate) fn env_var(key: &str) -> String {
    format!("ETCD_PILOT_{}", key.replace('.', "_").to_uppercase())
}

/// The command-line flag that sets `key`, without the leading `--`.
pub(crate) fn flag(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

/// A config file's values, checked against the key table: scalars as text (one parser for
/// file, environment and flags), the two lists typed.
#[derive(Clone, Debug, Default)]
pub(super) struct Raw {
    pub(super) scalars: BTreeMap<&'static str, String>,
    pub(super) peers: Option<Vec<RawPeer>>,
    pub(super) extra_args: Vec<String>,
    pub(super) versions: Vec<String>,
}

impl Raw {
    /// Reads a config file's text; unknown keys and values of the wrong shape are refused.
    pub(super) fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        let at = format!("file {}", path.display());
        let table: toml::Table = toml::from_str(text).map_err(|err| {
            error(
                &at,
                err.to_string().trim_end().to_owned(),
                "correct the file; docs/config.md lists every key",
            )
        })?;
        let mut raw = Self::default();
        for (name, value) in table {
            match value {
                // A section of its own, empty or not, must be one the table knows.
                toml::Value::Table(section)
                    if section.is_empty()
                        && !KEYS
                            .iter()
                            .chain(LISTS)
                            .any(|k| k.name.split_once('.').is_some_and(|(s, _)| s == name)) =>
                {
                    raw.set(&at, text, [name.as_str(), ""], toml::Value::Table(section))?;
                }
                toml::Value::Table(section) => {
                    for (inner, value) in section {
                        raw.set(&at, text, [name.as_str(), inner.as_str()], value)?;
                    }
                }
                value => raw.set(&at, text, [name.as_str(), ""], value)?,
            }
        }
        Ok(raw)
    }

    fn set(
        &mut self,
        at: &str,
        text: &str,
        path: [&str; 2],
        value: toml::Value,
    ) -> Result<(), Error> {
        let name = match path {
            [top, ""] => top.to_owned(),
            [section, inner] => format!("{section}.{inner}"),
        };
        // `"etcd.bin" = ...` is one key with a dot in its name, not etcd.bin.
        let quoted_dots = path.iter().any(|part| part.contains('.'));
        match name.as_str() {
            _ if quoted_dots => {}
            "discovery.peers" => {
                self.peers = Some(value.try_into().map_err(|err: toml::de::Error| {
                    error(
                        "discovery.peers",
                        err.message().to_owned(),
                        "list each peer as { name = ..., peer_url = ..., client_url = ... } \
                         (admin_url optional)",
                    )
                })?);
                return Ok(());
            }
            "etcd.versions" => {
                self.versions = value.try_into().map_err(|err: toml::de::Error| {
                    error(
                        "etcd.versions",
                        err.message().to_owned(),
                        "write a list of paths, e.g. [\"/opt/etcd/*/etcd\"]",
                    )
                })?;
                return Ok(());
            }
            "etcd.extra_args" => {
                self.extra_args = value.try_into().map_err(|err: toml::de::Error| {
                    error(
                        "etcd.extra_args",
                        err.message().to_owned(),
                        "write a list of strings, e.g. [\"--quota-backend-bytes=8589934592\"]",
                    )
                })?;
                return Ok(());
            }
            _ => {}
        }
        let Some(key) = find(&name).filter(|_| !quoted_dots) else {
            let line = line_of(text, path)
                .map(|line| format!(" (line {line})"))
                .unwrap_or_default();
            let hint = closest(&name)
                .map(|k| format!(" (did you mean `{}`?)", k.name))
                .unwrap_or_default();
            return Err(error(
                at,
                format!("unknown field `{name}`{line}"),
                format!("correct the file{hint}; docs/config.md lists every key"),
            ));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                let kind = other.type_str();
                let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                return Err(error(
                    key.name,
                    format!("{article} {kind} where a string, number or boolean belongs"),
                    "write a single value, such as \"2s\", 3 or true",
                ));
            }
        };
        self.scalars.insert(key.name, text);
        Ok(())
    }
}

/// The line of the file where the key at `path` is written.
fn line_of(text: &str, path: [&str; 2]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let (outer, value) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == path[0])?;
    let span = if path[1].is_empty() {
        outer.span()
    } else {
        value
            .get_ref()
            .as_table()?
            .iter()
            .find(|(k, _)| k.get_ref().as_ref() == path[1])?
            .0
            .span()
    };
    Some(text[..span.start].matches('\n').count() + 1)
}

/// The key a misspelt name most likely meant: at most two edits away.
fn closest(name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .chain(LISTS)
        .map(|k| (edits(k.name, name), k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
