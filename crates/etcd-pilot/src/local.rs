//! `etcd-pilot local up`: a development cluster on loopback, run by the production code path.
//!
//! Writes one config per member (member N on 127.0.10.N, ports 2379/2380, admin 2378, the
//! `static` provider reading a shared peers file) and starts one `etcd-pilot agent` process
//! per member, exactly as a node would run it (its pid in `mN/pilot.pid`, its log in
//! `mN/pilot.log`). The coordinator backs the cluster up every minute into `<dir>/backups`
//! (a `file://` store), drills each backup and applies retention. Ctrl-C stops every pilot,
//! and each pilot stops its etcd. A second `local up` on the same directory restarts the
//! cluster on its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ADMIN_PORT};
use crate::etcd::{self, ClientOptions};
use crate::{output, process};

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Number of members (1 to 9; default 3, or the members already in --dir).
    #[arg(long)]
    members: Option<u8>,
    /// Where configs, data and logs live.
    #[arg(long, default_value = ".etcd-pilot-local")]
    dir: PathBuf,
    /// The etcd binary (default: the one an existing --dir runs; else the newest etcd of 3.5.16
    /// or later found on PATH or where scripts/setup.sh puts it; else `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// The first three octets of the members' loopback addresses.
    #[arg(long, default_value = "127.0.10", hide = true)]
    subnet: String,
}

impl UpArgs {
    /// Checks the arguments; returns the etcd binary to use.
    pub(crate) async fn validate(&self) -> anyhow::Result<PathBuf> {
        if let Some(n) = self.members
            && !(1..=9).contains(&n)
        {
            anyhow::bail!(
                "--members {n} is out of range: use 1 to 9 (odd numbers keep quorum math simple)"
            );
        }
        let octets: Vec<&str> = self.subnet.split('.').collect();
        if octets.len() != 3
            || octets[0] != "127"
            || octets.iter().any(|o| o.parse::<u8>().is_err())
        {
            anyhow::bail!(
                "--subnet {:?} must be three octets inside 127.0.0.0/8, e.g. 127.0.10",
                self.subnet
            );
        }
        if self.etcd_bin.is_none()
            && let Ok(bin) = etcd_bin_of(&self.dir)
        {
            // An existing cluster keeps what it runs: `upgrade` changes it, not a restart.
            return Ok(bin);
        }
        let bin = match &self.etcd_bin {
            Some(path) => Some(path.display().to_string()),
            None => newest_production_etcd()
                .await
                .map(|(_, path)| path.display().to_string()),
        };
        config::etcd_bin(bin.as_deref()).map_err(|err| {
            anyhow::anyhow!(
                "--etcd-bin: {}\n  fix: install etcd (scripts/setup.sh) or pass --etcd-bin PATH",
                err.problem
            )
        })
    }
}

/// Where `local up` looks for etcd binaries besides PATH: where scripts/setup.sh extracts
/// the releases it downloads.
const KNOWN_ETCD: &str = "/opt/etcd-pilot-etcd-*/usr/bin/etcd";

/// The oldest release `local up` picks on its own: the first 3.5 patch release this project
/// tested as production-grade (3.5.0-3.5.2 are not for production).
const PRODUCTION_FLOOR: etcd_pilot_core::upgrade::Version =
    etcd_pilot_core::upgrade::Version::new(3, 5, 16);

/// The etcd binaries this machine has (`etcd` on PATH and [`KNOWN_ETCD`]), each with its
/// release; one path per release (PATH's first).
async fn known_etcd() -> Vec<(etcd_pilot_core::upgrade::Version, PathBuf)> {
    let mut paths: Vec<PathBuf> = config::etcd_bin(None).into_iter().collect();
    paths.extend(crate::supervisor::expand(Path::new(KNOWN_ETCD)));
    let mut found: Vec<(etcd_pilot_core::upgrade::Version, PathBuf)> = Vec::new();
    for path in paths {
        if let Ok(version) = crate::supervisor::release_of(&path).await
            && !found.iter().any(|(v, _)| *v == version)
        {
            found.push((version, path));
        }
    }
    found.sort();
    found
}

/// The known etcd binaries' paths, for `etcd.versions`.
async fn known_paths() -> Vec<PathBuf> {
    known_etcd()
        .await
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// The newest known etcd of [`PRODUCTION_FLOOR`] or later.
async fn newest_production_etcd() -> Option<(etcd_pilot_core::upgrade::Version, PathBuf)> {
    known_etcd()
        .await
        .into_iter()
        .filter(|(v, _)| *v >= PRODUCTION_FLOOR && v.major == PRODUCTION_FLOOR.major)
        .max()
}

/// Points `etcd.bin` of every member config in `dir` at `bin` (each file replaced at once,
/// so a pilot reading it sees the old or the new one). Returns the configs changed.
pub(crate) fn set_etcd_bin(dir: &Path, bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.path().join("pilot.toml"))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut in_etcd = false;
        let mut replaced = false;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let trimmed = line.trim();
                if trimmed.starts_with('[') {
                    in_etcd = trimmed == "[etcd]";
                } else if in_etcd && !replaced && trimmed.starts_with("bin ") {
                    replaced = true;
                    return format!("bin = {:?}", bin.display().to_string());
                }
                line.to_owned()
            })
            .collect();
        anyhow::ensure!(
            replaced,
            "{} has no `bin` in its [etcd] section",
            path.display()
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n")
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))?;
        changed.push(path);
    }
    anyhow::ensure!(
        !changed.is_empty(),
        "no member config (mN/pilot.toml) in {}",
        dir.display()
    );
    Ok(changed)
}

struct LocalMember {
    name: String,
    config_path: PathBuf,
    log_path: PathBuf,
    pid_path: PathBuf,
    client_url: String,
}

/// How often `local up` clusters back up.
const LOCAL_BACKUP_INTERVAL: &str = "1m";

/// The config of a live member of the `local up` cluster in `dir`: the first by name that
/// the peers file still lists (a lost member's folder stays behind for its log, but its
/// config names a node that is gone).
pub(crate) fn member_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}; did `local up` run there?", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("pilot.toml"))
        .filter(|path| path.is_file())
        .collect();
    configs.sort();
    if let Some(listed) = listed(dir)? {
        let mut names: Vec<&String> = listed.iter().map(|(name, _)| name).collect();
        names.sort();
        return names
            .into_iter()
            .map(|name| dir.join(name).join("pilot.toml"))
            .find(|path| path.is_file())
            .with_context(|| {
                format!(
                    "no member listed in {} has a config (mN/pilot.toml) in {}",
                    dir.join("peers.toml").display(),
                    dir.display()
                )
            });
    }
    configs
        .into_iter()
        .next()
        .with_context(|| format!("no member config (mN/pilot.toml) in {}", dir.display()))
}

/// The client URLs of the `local up` cluster in `dir`, from its peers file.
pub(crate) fn client_urls(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join("peers.toml");
    let peers = config::read_peers_file(&path, ADMIN_PORT).with_context(|| {
        format!(
            "read the local cluster's peers in {}; did `local up` run there?",
            dir.display()
        )
    })?;
    Ok(peers.into_iter().map(|p| p.client_url).collect())
}

pub(crate) async fn up(
    args: UpArgs,
    etcd_bin: PathBuf,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let dir = absolute(&args.dir)?;
    let versions = known_paths().await;
    let members = write_configs(&dir, args.members, &args.subnet, &etcd_bin, &versions)?;
    let exe = std::env::current_exe().context("find the etcd-pilot executable")?;

    // A pilot of this dir still running (started by hand, by `local add`, or left by an
    // earlier `local up`) would hold its member's ports: stop it first, and say so.
    stop_dir_pilots(&dir, "so that this `local up` runs the cluster").await;
    let started = Instant::now();
    let mut children = Vec::new();
    for member in &members {
        children.push(spawn_pilot(&exe, member, true)?);
    }
    output::print(&format!(
        "started {} pilots; logs in {}/m*/pilot.log",
        members.len(),
        dir.display()
    ));

    let endpoints: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let outcome = tokio::select! {
        ready = wait_ready(&endpoints, &members, &mut children) => ready,
        () = cancel.cancelled() => Err(anyhow::anyhow!("interrupted before the cluster was ready")),
    };
    // On failure the caller prints the error, after the cluster has stopped.
    if let Ok(degraded) = &outcome {
        if !degraded.is_empty() {
            output::error(&format!(
                "not every member came up; the cluster runs without them (`etcd-pilot plan --dir {}` follows them):\n  {}",
                dir.display(),
                degraded.join("\n  ")
            ));
        }
        output::print(&format!(
            "cluster ready in {:.2}s\n\nclient endpoints: {}\ntry:\n  etcdctl --endpoints={} put greeting hello\n  etcdctl --endpoints={} get greeting\n  etcd-pilot status --dir {}\n  etcd-pilot backup list --dir {}\n\nbackups every {LOCAL_BACKUP_INTERVAL} into {}/backups\nCtrl-C stops the cluster; `local up` again restarts it with its data.",
            started.elapsed().as_secs_f64(),
            endpoints.join(","),
            endpoints.join(","),
            endpoints.join(","),
            dir.display(),
            dir.display(),
            dir.display(),
        ));
        watch_pilots(&members, &mut children, &cancel).await;
    }
    output::print("stopping the cluster");
    stop_all(&mut children).await;
    // Every other pilot of the dir, whoever started it (`local add`, or by hand as the tour
    // does).
    stop_dir_pilots(&dir, "with the cluster").await;
    for member in &members {
        let _ = std::fs::remove_file(&member.pid_path);
    }
    output::print("stopped");
    outcome.map(|_| ())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("read the current directory")?
        .join(path))
}

/// The members listed in `dir`'s peers file, as (name, IP).
fn listed(dir: &Path) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let path = dir.join("peers.toml");
    if !path.exists() {
        return Ok(None);
    }
    let peers = config::read_peers_file(&path, ADMIN_PORT)
        .with_context(|| format!("read {}", path.display()))?;
    Ok(Some(
        peers
            .into_iter()
            .map(|p| {
                let ip = url::Url::parse(&p.peer_url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default();
                (p.name.to_string(), ip)
            })
            .collect(),
    ))
}

fn write_peers(dir: &Path, members: &[(String, String)]) -> anyhow::Result<()> {
    let body: String = members
        .iter()
        .map(|(name, ip)| {
            format!(
                "[[peers]]\nname = \"{name}\"\npeer_url = \"http://{ip}:2380\"\nclient_url = \"http://{ip}:2379\"\nadmin_url = \"http://{ip}:{ADMIN_PORT}\"\n\n"
            )
        })
        .collect();
    let path = dir.join("peers.toml");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replace {}", path.display()))
}

fn write_member(
    dir: &Path,
    name: &str,
    ip: &str,
    etcd_bin: &Path,
    versions: &[PathBuf],
) -> anyhow::Result<LocalMember> {
    let (peer_url, client_url) = (format!("http://{ip}:2380"), format!("http://{ip}:2379"));
    let member_dir = dir.join(name);
    std::fs::create_dir_all(&member_dir)
        .with_context(|| format!("create {}", member_dir.display()))?;
    let config_path = member_dir.join("pilot.toml");
    let body = format!(
        "# Written by `etcd-pilot local`; rewritten on every run.\n\
         name = \"{name}\"\ncluster_name = \"local\"\ndata_dir = {data:?}\n\n\
         [etcd]\nbin = {bin:?}\nversions = {versions:?}\npeer_url = \"{peer_url}\"\nclient_url = \"{client_url}\"\n\n\
         [admin]\nlisten = \"{ip}:{ADMIN_PORT}\"\n\n\
         [discovery]\nprovider = \"static\"\npeers_file = {peers_path:?}\n\n\
         [backup]\nurl = \"file://{backups}\"\ninterval = \"{LOCAL_BACKUP_INTERVAL}\"\n",
        backups = dir.join("backups").display(),
        data = member_dir.join("data").display().to_string(),
        bin = etcd_bin.display().to_string(),
        versions = versions
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>(),
        peers_path = dir.join("peers.toml").display().to_string(),
    );
    std::fs::write(&config_path, body)
        .with_context(|| format!("write {}", config_path.display()))?;
    Ok(LocalMember {
        name: name.to_owned(),
        config_path,
        log_path: member_dir.join("pilot.log"),
        pid_path: member_dir.join("pilot.pid"),
        client_url,
    })
}

/// Writes the configs of the members `dir` lists (or of `n_members` new ones) and the peers file.
fn write_configs(
    dir: &Path,
    n_members: Option<u8>,
    subnet: &str,
    etcd_bin: &Path,
    versions: &[PathBuf],
) -> anyhow::Result<Vec<LocalMember>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let members = match (listed(dir)?, n_members) {
        (Some(existing), Some(n)) if existing.len() != usize::from(n) => {
            anyhow::bail!(
                "{} holds a cluster of {} members; pass --members {} or use another --dir",
                dir.display(),
                existing.len(),
                existing.len()
            );
        }
        (Some(existing), _) => existing,
        (None, n) => (1..=n.unwrap_or(3))
            .map(|i| (format!("m{i}"), format!("{subnet}.{i}")))
            .collect(),
    };
    write_peers(dir, &members)?;
    members
        .iter()
        .map(|(name, ip)| write_member(dir, name, ip, etcd_bin, versions))
        .collect()
}

/// Starts one pilot for `member`, in its own process group, its output into its log.
fn spawn_pilot(
    exe: &Path,
    member: &LocalMember,
    kill_on_drop: bool,
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&member.log_path)
        .with_context(|| format!("open {}", member.log_path.display()))?;
    let child = process::command(exe)
        .arg("agent")
        .arg("--config")
        .arg(&member.config_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(kill_on_drop)
        .spawn()
        .with_context(|| format!("start the pilot of {}", member.name))?;
    if let Some(pid) = child.id() {
        // For people and scripts that want to stop or kill one pilot.
        std::fs::write(&member.pid_path, format!("{pid}\n"))
            .with_context(|| format!("write {}", member.pid_path.display()))?;
    }
    Ok(child)
}

#[derive(Debug, clap::Args)]
pub(crate) struct AddArgs {
    /// The directory of a running `local up` cluster.
    #[arg(long, default_value = ".etcd-pilot-local")]
    dir: PathBuf,
}

/// `local add`: a new node in the peers file (the next free name, the lowest free address),
/// and its pilot.
pub(crate) async fn add(args: AddArgs) -> anyhow::Result<()> {
    let dir = absolute(&args.dir)?;
    let mut members = listed(&dir)?.with_context(|| {
        format!(
            "{} holds no local cluster; run `etcd-pilot local up --dir {}` first",
            dir.display(),
            dir.display()
        )
    })?;
    let etcd_bin = etcd_bin_of(&dir)?;
    let next = (1..=250u8)
        .find(|i| {
            !dir.join(format!("m{i}")).exists()
                && !members.iter().any(|(n, _)| *n == format!("m{i}"))
        })
        .context("no free member name left")?;
    let subnet = members
        .first()
        .and_then(|(_, ip)| ip.rsplit_once('.').map(|(subnet, _)| subnet.to_owned()))
        .context("cannot tell the cluster's subnet from its peers file")?;
    // The lowest address no listed member holds: a lost member's, so that clients
    // configured with the original endpoints reach the cluster again after turnover. (The
    // new node waits until the coordinator has removed the lost member that held it.)
    let host = (1..=250u8)
        .find(|i| {
            let ip = format!("{subnet}.{i}");
            !members.iter().any(|(_, listed)| *listed == ip) && ports_free(&ip)
        })
        .context("no free address left in the subnet")?;
    let (name, ip) = (format!("m{next}"), format!("{subnet}.{host}"));
    let member = write_member(&dir, &name, &ip, &etcd_bin, &known_paths().await)?;
    members.push((name.clone(), ip));
    write_peers(&dir, &members)?;
    let exe = std::env::current_exe().context("find the etcd-pilot executable")?;
    // Not killed when this command exits: the running `local up` stops it on Ctrl-C.
    spawn_pilot(&exe, &member, false)?;
    let lost = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name() != name.as_str() && e.path().join("pilot.toml").is_file() && {
                std::fs::read_to_string(e.path().join("pilot.toml"))
                    .is_ok_and(|t| t.contains(&format!("client_url = \"{}\"", member.client_url)))
            }
        });
    output::print(&format!(
        "added {name} ({}){}; its pilot joins it as a learner and the coordinator promotes \
         it\nwatch: etcd-pilot status --dir {}; log: {}",
        member.client_url,
        if lost {
            ", the address of a lost member: it joins once the coordinator has removed that \
             member (timers.remove_after)"
        } else {
            ""
        },
        dir.display(),
        member.log_path.display()
    ));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct LoseArgs {
    /// The member to lose, e.g. m3.
    name: String,
    /// The directory of a running `local up` cluster.
    #[arg(long, default_value = ".etcd-pilot-local")]
    dir: PathBuf,
}

/// `local lose`: a node lost with its disk, as a dead VM would be: kill its pilot and etcd
/// (SIGKILL), delete its data, and drop it from the peers file.
pub(crate) async fn lose(args: LoseArgs) -> anyhow::Result<()> {
    let dir = absolute(&args.dir)?;
    let mut members =
        listed(&dir)?.with_context(|| format!("{} holds no local cluster", dir.display()))?;
    let before = members.len();
    members.retain(|(name, _)| *name != args.name);
    if members.len() == before {
        anyhow::bail!(
            "{} is not in {}; members: {}",
            args.name,
            dir.join("peers.toml").display(),
            members
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let member_dir = dir.join(&args.name);
    // Its pilot first (whoever started it), so that it does not restart its etcd; then the
    // etcd it left, read only once the pilot is gone (it may have started a new one).
    if let Some(pid) = running_pilot(&member_dir) {
        kill_and_wait(pid).await?;
    }
    if let Some(pid) = running_etcd(&member_dir) {
        kill_and_wait(pid).await?;
    }
    let data = member_dir.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).with_context(|| format!("delete {}", data.display()))?;
    }
    let _ = std::fs::remove_file(member_dir.join("pilot.pid"));
    write_peers(&dir, &members)?;
    output::print(&format!(
        "lost {}: pilot and etcd killed, data deleted, dropped from the peers file; the \
         coordinator removes its member after timers.remove_after",
        args.name
    ));
    Ok(())
}

async fn kill_and_wait(pid: u32) -> anyhow::Result<()> {
    process::signal(pid, Signal::SIGKILL)?;
    while process::alive(pid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether nothing listens on `ip`'s etcd and admin ports (a process left running on a lost
/// member's address keeps it from being reused).
fn ports_free(ip: &str) -> bool {
    [2379, 2380, ADMIN_PORT].iter().all(|port| {
        ip.parse::<std::net::IpAddr>()
            .is_ok_and(|addr| std::net::TcpListener::bind((addr, *port)).is_ok())
    })
}

/// The etcd binary the cluster in `dir` runs, from a member's config.
fn etcd_bin_of(dir: &Path) -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path().join("pilot.toml")) else {
            continue;
        };
        if let Ok(table) = text.parse::<toml::Table>()
            && let Some(bin) = table
                .get("etcd")
                .and_then(|e| e.get("bin"))
                .and_then(|b| b.as_str())
        {
            return Ok(PathBuf::from(bin));
        }
    }
    anyhow::bail!(
        "no member config in {} names the etcd binary",
        dir.display()
    )
}

/// How long `local up` waits for the last members once a healthy quorum answers, before it
/// reports them and lets the cluster run without them.
const STRAGGLER_WAIT: Duration = Duration::from_secs(30);

/// Waits until every running member is a healthy voter, or until a healthy quorum has waited
/// [`STRAGGLER_WAIT`] for the rest: then returns what keeps the others out (`plan`'s degraded
/// lines), and the cluster runs without them. A pilot that exits is reported and the others
/// keep running. Fails only when no healthy quorum answers within 120 s.
async fn wait_ready(
    endpoints: &[String],
    members: &[LocalMember],
    children: &mut [tokio::process::Child],
) -> anyhow::Result<Vec<String>> {
    let pool = etcd::Pool::new(ClientOptions {
        timeout: Duration::from_secs(1),
        credentials: None,
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exited = vec![false; members.len()];
    let mut quorum_since: Option<Instant> = None;
    loop {
        // A member that cannot start is reported; the others keep running (the cluster
        // may well have its quorum without it).
        for (i, (member, child)) in members.iter().zip(children.iter_mut()).enumerate() {
            if !exited[i]
                && let Ok(Some(status)) = child.try_wait()
            {
                exited[i] = true;
                output::error(&format!(
                    "the pilot of {} exited ({status}); the others keep running. Last lines of {}:\n{}",
                    member.name,
                    member.log_path.display(),
                    tail(&member.log_path, 15)
                ));
            }
        }
        let running = exited.iter().filter(|e| !**e).count();
        if running == 0 {
            anyhow::bail!(
                "every pilot exited; see {}",
                members
                    .first()
                    .map_or_else(String::new, |m| m.log_path.display().to_string())
            );
        }
        if let Some(list) = pool.agreed_member_list(endpoints).await {
            let probes = pool.probe_members(&list).await;
            let healthy_voters = list
                .members
                .iter()
                .zip(&probes)
                .filter(|(m, p)| {
                    m.is_started()
                        && !m.is_learner
                        && p.as_ref()
                            .is_ok_and(|s| s.health() == etcd_pilot_core::Health::Healthy)
                })
                .count();
            let voters = list.members.iter().filter(|m| !m.is_learner).count();
            if healthy_voters >= running && healthy_voters == list.members.len() {
                return Ok(Vec::new());
            }
            if healthy_voters >= etcd_pilot_core::model::quorum(voters) {
                let since = *quorum_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= STRAGGLER_WAIT {
                    let view = crate::cluster_status::status(endpoints).await?;
                    return Ok(view.shown.degraded);
                }
            } else {
                quorum_since = None;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "no healthy quorum after 120 s; see {}/m*/pilot.log and `etcd-pilot status --endpoints {}`",
                members
                    .first()
                    .and_then(|m| m.log_path.parent()?.parent())
                    .map_or_else(String::new, |d| d.display().to_string()),
                endpoints.join(",")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs until `cancel`, reporting pilots that exit on their own.
async fn watch_pilots(
    members: &[LocalMember],
    children: &mut [tokio::process::Child],
    cancel: &CancellationToken,
) {
    let mut reported = vec![false; members.len()];
    loop {
        // Cancel-safe: only a sleep is dropped.
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for (index, child) in children.iter_mut().enumerate() {
            if !reported[index]
                && let Ok(Some(status)) = child.try_wait()
            {
                reported[index] = true;
                output::error(&format!(
                    "the pilot of {} exited ({status}); see {}",
                    members[index].name,
                    members[index].log_path.display()
                ));
            }
        }
    }
}

/// SIGTERM to every pilot at once (each stops its etcd), SIGKILL after 30 s.
async fn stop_all(children: &mut [tokio::process::Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            let _ = process::signal(pid, Signal::SIGTERM);
        }
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Stops every pilot of `dir` that still runs, by the pid each recorded beside its data
/// (`mN/data/pilot.pid`), if that process is an `etcd-pilot agent` of this member's config:
/// SIGTERM (it stops its etcd), SIGKILL after 30 s.
async fn stop_dir_pilots(dir: &Path, why: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // The pid `local up`/`local add` wrote when spawning it: stale once we are done here
        // (`local lose` would signal it).
        let _ = std::fs::remove_file(entry.path().join("pilot.pid"));
        let Some(pid) = running_pilot(&entry.path()) else {
            continue;
        };
        output::print(&format!(
            "stopping the pilot of {} (pid {pid}) {why}",
            entry.file_name().to_string_lossy()
        ));
        let _ = process::signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while process::alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if process::alive(pid) {
            let _ = process::signal(pid, Signal::SIGKILL);
        }
    }
}

/// The pid of the pilot running for the member folder `member_dir`, whoever started it: the
/// pid the agent recorded beside its data (or `local up` when spawning it), if that process
/// is alive and is `etcd-pilot agent` with this member's config (a reused pid is not).
fn running_pilot(member_dir: &Path) -> Option<u32> {
    let config = member_dir.join("pilot.toml");
    [
        member_dir.join("data").join("pilot.pid"),
        member_dir.join("pilot.pid"),
    ]
    .iter()
    .filter_map(|file| {
        std::fs::read_to_string(file)
            .ok()?
            .trim()
            .parse::<u32>()
            .ok()
    })
    .find(|pid| {
        let args = process::cmdline(*pid);
        // A pilot started by hand may name its config relative to its own working dir.
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
        process::alive(*pid)
            && args.iter().any(|a| a == "agent")
            && args.iter().any(|a| {
                let path = cwd.join(a);
                path == config
                    || path
                        .canonicalize()
                        .is_ok_and(|p| Some(p) == config.canonicalize().ok())
            })
    })
}

/// The pid of the etcd running on the member folder `member_dir`'s data, if alive.
fn running_etcd(member_dir: &Path) -> Option<u32> {
    let data = member_dir.join("data").join("etcd");
    let pid = std::fs::read_to_string(member_dir.join("data").join("etcd.pid"))
        .ok()?
        .lines()
        .next()?
        .parse::<u32>()
        .ok()?;
    // However the dir was spelled (relative, `./`, a symlink) when the pilot started it.
    let ours = process::cmdline(pid).iter().any(|arg| {
        arg.strip_prefix("--data-dir=").is_some_and(|dir| {
            Path::new(dir) == data
                || Path::new(dir)
                    .canonicalize()
                    .is_ok_and(|d| Some(d) == data.canonicalize().ok())
        })
    });
    (process::alive(pid) && ours).then_some(pid)
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
