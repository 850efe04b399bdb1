//! Validation: the merged raw values become a typed [`Config`], each default taken from the
//! key table, each problem reported with its key and its fix.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use etcd_pilot_core::{MemberName, Peer};
use serde::Deserialize;
use url::Url;

use super::keys::{Raw, known};
use super::{
    ADMIN_PORT, AdminConfig, BackupConfig, Config, DiscoveryConfig, Error, EtcdConfig,
    QuarantineConfig, RestoreConfig, StoreConfig, StoreUrl, Timers, aws, error, url_string,
};

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

/// The raw values being validated, and each key's effective value as `config show` prints
/// it (given, defaulted or derived).
pub(super) struct Reader {
    raw: Raw,
    pub(super) values: BTreeMap<&'static str, String>,
}

impl Reader {
    pub(super) fn new(raw: Raw) -> Self {
        Self {
            values: raw.scalars.clone(),
            raw,
        }
    }

    /// The value a source gave for `name`, if any.
    pub(super) fn given(&self, name: &str) -> Option<&str> {
        self.raw.scalars.get(known(name).name).map(String::as_str)
    }

    /// The value given for `name`, else its default; recorded for `config show`.
    pub(super) fn text(&mut self, name: &str) -> Option<String> {
        let key = known(name);
        let value = self
            .raw
            .scalars
            .get(key.name)
            .cloned()
            .or_else(|| key.default.map(str::to_owned))?;
        self.values.insert(key.name, value.clone());
        Some(value)
    }

    /// Records a value derived from other keys, for `config show`.
    pub(super) fn derived(&mut self, name: &str, value: String) {
        self.values.insert(known(name).name, value);
    }

    /// A duration greater than zero.
    pub(super) fn duration(&mut self, name: &str) -> Result<Duration, Error> {
        let key = known(name);
        let text = self.text(name).unwrap_or_default();
        let parsed = humantime::parse_duration(&text).map_err(|err| {
            error(
                name,
                format!("{text:?} is not a duration: {err}"),
                "write a duration such as \"500ms\", \"2s\" or \"1m\"",
            )
        })?;
        if parsed.is_zero() {
            return Err(error(
                name,
                "must be greater than zero",
                format!("use e.g. {:?}", key.default.unwrap_or("1s")),
            ));
        }
        Ok(parsed)
    }

    /// `true` or `false`.
    pub(super) fn boolean(&mut self, name: &str) -> Result<bool, Error> {
        let text = self.text(name).unwrap_or_default();
        match text.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(error(
                name,
                format!("{text:?} is not true or false"),
                "write true or false",
            )),
        }
    }

    /// A number that `valid` accepts; `None` when unset and without a default. `problem`
    /// completes "<value> ...".
    pub(super) fn number<T: FromStr>(
        &mut self,
        name: &str,
        valid: impl Fn(&T) -> bool,
        problem: &str,
        fix: &str,
    ) -> Result<Option<T>, Error> {
        let Some(text) = self.text(name) else {
            return Ok(None);
        };
        match text.parse::<T>() {
            Ok(n) if valid(&n) => Ok(Some(n)),
            _ => Err(error(name, format!("{text:?} {problem}"), fix)),
        }
    }
}

/// Every check of the merged values, in the order the keys are read.
pub(super) fn validate(raw: Raw) -> Result<Config, Error> {
    let extra_args = raw.extra_args.clone();
    let versions = raw.versions.iter().map(PathBuf::from).collect::<Vec<_>>();
    let peers = raw.peers.clone();
    let mut r = Reader::new(raw);
    let name = member_name(r.given("name"))?;
    let cluster_name = cluster_name(r.text("cluster_name").unwrap_or_default())?;
    let data_dir = PathBuf::from(r.text("data_dir").unwrap_or_default());
    check_data_dir(&data_dir)?;
    r.derived("data_dir", data_dir.display().to_string());

    let etcd = etcd(&mut r, extra_args, versions)?;
    let admin = admin(&mut r, &etcd.client_url)?;
    let discovery = discovery(&mut r, peers, &name, &etcd, &admin)?;
    let dns = aws::dns(&mut r)?;
    let lifecycle = aws::lifecycle(&mut r, &discovery)?;
    let timers = timers(&mut r)?;
    let (backup, restore) = backup(&mut r)?;
    let quarantine = quarantine(&mut r)?;
    let reseed_auto = r.boolean("reseed.auto")?;
    let maintenance = maintenance(&mut r, &etcd.extra_args)?;
    let upgrade = super::UpgradeConfig {
        member_timeout: r.duration("upgrade.member_timeout")?,
        max_backup_age: r.duration("upgrade.max_backup_age")?,
    };
    Ok(Config {
        name,
        cluster_name,
        data_dir,
        etcd,
        admin,
        discovery,
        timers,
        backup,
        restore,
        dns,
        lifecycle,
        quarantine,
        reseed_auto,
        upgrade,
        maintenance,
        reload: None,
        origins: BTreeMap::new(),
        values: r.values,
    })
}

fn member_name(given: Option<&str>) -> Result<MemberName, Error> {
    let Some(name) = given else {
        return Err(error(
            "name",
            "missing",
            "set `name = \"...\"` in the config file, ETCD_PILOT_NAME or --name",
        ));
    };
    MemberName::new(name.to_owned()).map_err(|err| {
        error(
            "name",
            err.to_string(),
            "choose a name such as \"m1\" or the host name",
        )
    })
}

/// The cluster's name names a folder of the backup store.
fn cluster_name(name: String) -> Result<String, Error> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(error(
            "cluster_name",
            format!(
                "{name:?} is empty, starts with a dot or has characters other than \
                 letters, digits, '-', '_' and '.'"
            ),
            "use a short name such as \"prod-etcd\"",
        ));
    }
    Ok(name)
}

/// Flags the pilot sets itself: where the data and its WAL live decide what counts as data
/// (`datadir.rs` looks for the WAL under `etcd/member/wal`), and the bootstrap flags are the
/// start decision's alone.
const OWN_ETCD_FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "force-new-cluster",
];

fn etcd(
    r: &mut Reader,
    extra_args: Vec<String>,
    versions: Vec<PathBuf>,
) -> Result<EtcdConfig, Error> {
    if let Some(relative) = versions.iter().find(|p| p.is_relative()) {
        return Err(error(
            "etcd.versions",
            format!("{} is not an absolute path", relative.display()),
            "give each binary's full path, e.g. \"/opt/etcd/3.5.16/etcd\"",
        ));
    }
    let bin = etcd_bin(r.given("etcd.bin"))?;
    r.derived("etcd.bin", bin.display().to_string());
    let peer_url = parse_url("etcd.peer_url", r.given("etcd.peer_url"))?;
    let client_url = parse_url("etcd.client_url", r.given("etcd.client_url"))?;
    let listen_peer_url = match r.given("etcd.listen_peer_url") {
        Some(url) => parse_url("etcd.listen_peer_url", Some(url))?,
        None => peer_url.clone(),
    };
    let listen_client_url = match r.given("etcd.listen_client_url") {
        Some(url) => parse_url("etcd.listen_client_url", Some(url))?,
        None => client_url.clone(),
    };
    r.derived("etcd.listen_peer_url", url_string(&listen_peer_url));
    r.derived("etcd.listen_client_url", url_string(&listen_client_url));
    let credentials = credentials(r)?;
    for arg in &extra_args {
        let flag = arg
            .split('=')
            .next()
            .unwrap_or_default()
            .trim_start_matches('-');
        if OWN_ETCD_FLAGS.contains(&flag) {
            return Err(error(
                "etcd.extra_args",
                format!("{arg:?} is set by the pilot itself"),
                "remove it from etcd.extra_args (the data and WAL live under data_dir/etcd; the \
                 start decision chooses the cluster flags)",
            ));
        }
    }
    Ok(EtcdConfig {
        bin,
        peer_url,
        client_url,
        listen_peer_url,
        listen_client_url,
        credentials,
        extra_args,
        versions,
    })
}

fn admin(r: &mut Reader, client_url: &Url) -> Result<AdminConfig, Error> {
    let listen = match r.given("admin.listen") {
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
    r.derived("admin.listen", listen.to_string());
    Ok(AdminConfig { listen })
}

fn discovery(
    r: &mut Reader,
    peers: Option<Vec<RawPeer>>,
    name: &MemberName,
    etcd: &EtcdConfig,
    admin: &AdminConfig,
) -> Result<DiscoveryConfig, Error> {
    let admin_port = admin.listen.port();
    let peers_file = r.given("discovery.peers_file").map(PathBuf::from);
    match r.text("discovery.provider").unwrap_or_default().as_str() {
        "static" => {
            let peers = match (&peers, &peers_file) {
                (Some(_), Some(_)) => {
                    return Err(error(
                        "discovery.peers",
                        "both discovery.peers and discovery.peers_file are set",
                        "keep one of them",
                    ));
                }
                (Some(peers), None) => parse_peers("discovery.peers", peers, admin_port)?,
                (None, Some(file)) => read_peers_file(file, admin_port)?,
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
            check_self_listed(me_key, &peers, name, &etcd.peer_url)?;
            Ok(DiscoveryConfig::Static { peers, peers_file })
        }
        "aws" => {
            if peers.is_some() || peers_file.is_some() {
                return Err(error(
                    "discovery.peers",
                    "a peer list is set, but the aws provider finds the peers itself",
                    "remove discovery.peers / discovery.peers_file, or use provider = \"static\"",
                ));
            }
            Ok(DiscoveryConfig::Aws(aws::discovery(
                r,
                [
                    etcd.peer_url.port_or_known_default(),
                    etcd.client_url.port_or_known_default(),
                ],
                admin_port,
            )?))
        }
        other => Err(error(
            "discovery.provider",
            format!("unknown provider {other:?}"),
            "use \"static\" or \"aws\"",
        )),
    }
}

fn timers(r: &mut Reader) -> Result<Timers, Error> {
    Ok(Timers {
        etcd_call_timeout: r.duration("timers.etcd_call_timeout")?,
        pilot_call_timeout: r.duration("timers.pilot_call_timeout")?,
        observe_interval: r.duration("timers.observe_interval")?,
        stop_grace: r.duration("timers.stop_grace")?,
        liveness_timeout: r.duration("timers.liveness_timeout")?,
        restart_initial_backoff: r.duration("timers.restart_initial_backoff")?,
        restart_max_backoff: r.duration("timers.restart_max_backoff")?,
        restart_stable_after: r.duration("timers.restart_stable_after")?,
        remove_after: r.duration("timers.remove_after")?,
        learner_timeout: r.duration("timers.learner_timeout")?,
        coordinator_lease: r.duration("timers.coordinator_lease")?,
        quorum_lost_after: r.duration("timers.quorum_lost_after")?,
    })
}

impl Default for Timers {
    /// Every timer at its default from the key table.
    fn default() -> Self {
        timers(&mut Reader::new(Raw::default())).expect("the key table's timer defaults are valid")
    }
}

fn backup(r: &mut Reader) -> Result<(BackupConfig, RestoreConfig), Error> {
    let timeout = r.duration("backup.timeout")?;
    let store = match r.given("backup.url") {
        None => None,
        Some(text) => Some(StoreConfig {
            url: store_url(text)?,
            s3_endpoint: r.given("backup.s3_endpoint").map(str::to_owned),
            s3_region: r.given("backup.s3_region").map(str::to_owned),
            timeout,
        }),
    };
    let backup = BackupConfig {
        store,
        interval: r.duration("backup.interval")?,
        drill: r.boolean("backup.drill")?,
        drill_retry: r.duration("backup.drill_retry")?,
        compression_level: r
            .number(
                "backup.compression_level",
                |l: &i32| (1..=19).contains(l),
                "is not a level from 1 to 19",
                "use 3 (the default), or 1 for the fastest",
            )?
            .unwrap_or_default(),
        retention: etcd_pilot_core::retention::RetentionPolicy {
            keep_all: r.duration("backup.keep_all")?,
            hourly: r.duration("backup.keep_hourly")?,
            daily: r.duration("backup.keep_daily")?,
            weekly: r.duration("backup.keep_weekly")?,
        },
    };
    let restore = RestoreConfig {
        allow_empty_cluster: r.boolean("restore.allow_empty_cluster")?,
        bump_revision: r
            .number(
                "restore.bump_revision",
                |_: &u64| true,
                "is not a whole number",
                "use e.g. 1000000000, more than the writes the cluster takes between backups",
            )?
            .unwrap_or_default(),
        claim_timeout: r.duration("restore.claim_timeout")?,
    };
    Ok((backup, restore))
}

/// `backup.url`, parsed once: the only schemes the store opens.
fn store_url(text: &str) -> Result<StoreUrl, Error> {
    let fix = "write it as file:///absolute/path, s3://bucket/prefix, gs://bucket/prefix \
               or az://container/prefix";
    let url = Url::parse(text)
        .map_err(|err| error("backup.url", format!("{text:?} is not a URL: {err}"), fix))?;
    let bucket = || {
        if url.host_str().is_none_or(str::is_empty) {
            Err(error(
                "backup.url",
                format!("{text:?} names no bucket"),
                fix,
            ))
        } else {
            Ok(url.clone())
        }
    };
    match url.scheme() {
        "file" => match url.to_file_path() {
            Ok(dir) => Ok(StoreUrl::File {
                dir,
                url: url.clone(),
            }),
            Err(()) => Err(error(
                "backup.url",
                format!("{text:?} is not an absolute local path"),
                fix,
            )),
        },
        "s3" => Ok(StoreUrl::S3(bucket()?)),
        "gs" => Ok(StoreUrl::Gcs(bucket()?)),
        "az" => Ok(StoreUrl::Azure(bucket()?)),
        other => Err(error(
            "backup.url",
            format!("{text:?} uses scheme {other:?}"),
            fix,
        )),
    }
}

fn maintenance(r: &mut Reader, extra_args: &[String]) -> Result<super::MaintenanceConfig, Error> {
    let mut compaction = r.boolean("maintenance.compaction")?;
    // etcd compacts on its own: the pilot leaves it alone, and `config show` says why.
    if compaction
        && extra_args
            .iter()
            .any(|a| a.starts_with("--auto-compaction-"))
    {
        compaction = false;
        r.derived(
            "maintenance.compaction",
            "false (etcd.extra_args sets --auto-compaction-*: etcd compacts on its own)".to_owned(),
        );
    }
    Ok(super::MaintenanceConfig {
        compaction,
        compact_interval: r.duration("maintenance.compact_interval")?,
        keep_revisions: r
            .number(
                "maintenance.keep_revisions",
                |n: &i64| *n >= 1,
                "is not a whole number of at least 1",
                "use e.g. 10000",
            )?
            .unwrap_or(10_000),
        keep_for: r.duration("maintenance.keep_for")?,
        defrag: r.boolean("maintenance.defrag")?,
        defrag_threshold: etcd_pilot_core::maintenance::DefragThreshold {
            percent: r
                .number(
                    "maintenance.defrag_threshold",
                    |n: &Percent| (1..=100).contains(&n.0),
                    "is not a share from 1% to 100%",
                    "use e.g. \"25%\"",
                )?
                .map_or(25, |p| p.0),
            min_bytes: r
                .number(
                    "maintenance.defrag_min_free",
                    |_: &Bytes| true,
                    "is not a size",
                    "use e.g. \"64MiB\", \"1GiB\" or a number of bytes",
                )?
                .map_or(64 << 20, |b| b.0),
        },
        defrag_window: defrag_window(r)?,
        defrag_timeout: r.duration("maintenance.defrag_timeout")?,
        quota: quota(extra_args)?,
    })
}

/// `25%` or `25`.
struct Percent(u64);

impl FromStr for Percent {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        text.trim()
            .trim_end_matches('%')
            .trim()
            .parse()
            .map(Percent)
            .map_err(|_| ())
    }
}

/// `64MiB`, `1GiB`, `512KiB`, `100MB`, or bytes.
struct Bytes(u64);

impl FromStr for Bytes {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| ())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(()),
        };
        number.checked_mul(scale).map(Bytes).ok_or(())
    }
}

/// `maintenance.defrag_window`: `HH:MM-HH:MM` (UTC), or empty.
fn defrag_window(r: &mut Reader) -> Result<Option<(u32, u32)>, Error> {
    let text = r.text("maintenance.defrag_window").unwrap_or_default();
    if text.trim().is_empty() {
        return Ok(None);
    }
    let minute = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    match text
        .split_once('-')
        .and_then(|(a, b)| Some((minute(a)?, minute(b)?)))
    {
        Some((start, end)) if start != end => Ok(Some((start, end))),
        _ => Err(error(
            "maintenance.defrag_window",
            format!("{text:?} is not a daily range of UTC times"),
            "write e.g. \"01:00-05:00\" (it may run over midnight: \"22:00-02:00\"), or \"\" for any time",
        )),
    }
}

/// etcd's quota, from `--quota-backend-bytes` in `etcd.extra_args` (etcd's default 2 GiB
/// otherwise; 0 means that default to etcd too).
fn quota(extra_args: &[String]) -> Result<u64, Error> {
    const DEFAULT: u64 = 2 << 30;
    let mut given = None;
    for (i, arg) in extra_args.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--quota-backend-bytes=") {
            given = Some(value.to_owned());
        } else if arg == "--quota-backend-bytes" {
            given = extra_args.get(i + 1).cloned();
        }
    }
    let Some(value) = given else {
        return Ok(DEFAULT);
    };
    match value.trim().parse::<u64>() {
        Ok(0) => Ok(DEFAULT),
        Ok(n) => Ok(n),
        Err(_) => Err(error(
            "etcd.extra_args",
            format!("--quota-backend-bytes {value:?} is not a number of bytes"),
            "write e.g. --quota-backend-bytes=8589934592",
        )),
    }
}

fn quarantine(r: &mut Reader) -> Result<QuarantineConfig, Error> {
    Ok(QuarantineConfig {
        keep: r
            .number(
                "quarantine.keep",
                |_: &usize| true,
                "is not a whole number",
                "use e.g. 3 (the newest copy is always kept)",
            )?
            .unwrap_or_default(),
        max_bytes: r.number(
            "quarantine.max_bytes",
            |_: &u64| true,
            "is not a number of bytes",
            "use e.g. 17179869184 (16 GiB), or leave it unset",
        )?,
    })
}

fn credentials(r: &Reader) -> Result<Option<(String, String)>, Error> {
    let password = match (r.given("etcd.password"), r.given("etcd.password_file")) {
        (Some(_), Some(_)) => {
            return Err(error(
                "etcd.password",
                "both etcd.password and etcd.password_file are set",
                "keep one of them (etcd.password_file keeps the secret out of the config)",
            ));
        }
        (Some(password), None) => Some(password.to_owned()),
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
    match (r.given("etcd.username"), password) {
        (Some(user), Some(password)) => Ok(Some((user.to_owned(), password))),
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
