//! `etcd-pilot local up`: a development cluster on loopback, run by the production code path.
//!
//! Writes one config per member (member N on 127.0.10.N, ports 2379/2380, admin 2378, the
//! `static` provider reading a shared peers file) and starts one `etcd-pilot agent` process
//! per member, exactly as a node would run it (its pid in `mN/pilot.pid`, its log in
//! `mN/pilot.log`). Ctrl-C stops every pilot, and each pilot stops its etcd. A second `local up` on the same directory restarts the cluster on its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ADMIN_PORT, PeersFile};
use crate::etcd::{self, ClientOptions};
use crate::{output, process};

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// Number of members (1 to 9).
    #[arg(long, default_value_t = 3)]
    members: u8,
    /// Where configs, data and logs live.
    #[arg(long, default_value = ".etcd-pilot-local")]
    dir: PathBuf,
    /// The etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// The first three octets of the members' loopback addresses.
    #[arg(long, default_value = "127.0.10", hide = true)]
    subnet: String,
}

impl UpArgs {
    /// Checks the arguments; returns the etcd binary to use.
    pub(crate) fn validate(&self) -> anyhow::Result<PathBuf> {
        if !(1..=9).contains(&self.members) {
            anyhow::bail!(
                "--members {} is out of range: use 1 to 9 (odd numbers keep quorum math simple)",
                self.members
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
        let bin = self.etcd_bin.as_ref().map(|p| p.display().to_string());
        config::etcd_bin(bin.as_deref()).map_err(|err| {
            anyhow::anyhow!(
                "--etcd-bin: {}\n  fix: install etcd (scripts/setup.sh) or pass --etcd-bin PATH",
                err.problem
            )
        })
    }
}

struct LocalMember {
    name: String,
    config_path: PathBuf,
    log_path: PathBuf,
    pid_path: PathBuf,
    client_url: String,
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
    let members = write_configs(&dir, args.members, &args.subnet, &etcd_bin)?;
    let exe = std::env::current_exe().context("find the etcd-pilot executable")?;

    let started = Instant::now();
    let mut children = Vec::new();
    for member in &members {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .with_context(|| format!("open {}", member.log_path.display()))?;
        let child = process::command(&exe)
            .arg("agent")
            .arg("--config")
            .arg(&member.config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start the pilot of {}", member.name))?;
        if let Some(pid) = child.id() {
            // For people and scripts that want to stop or kill one pilot.
            std::fs::write(&member.pid_path, format!("{pid}\n"))
                .with_context(|| format!("write {}", member.pid_path.display()))?;
        }
        children.push(child);
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
    if outcome.is_ok() {
        output::print(&format!(
            "cluster ready in {:.2}s\n\nclient endpoints: {}\ntry:\n  etcdctl --endpoints={} put greeting hello\n  etcdctl --endpoints={} get greeting\n  etcd-pilot status --dir {}\n\nCtrl-C stops the cluster; `local up` again restarts it with its data.",
            started.elapsed().as_secs_f64(),
            endpoints.join(","),
            endpoints.join(","),
            endpoints.join(","),
            dir.display(),
        ));
        watch_pilots(&members, &mut children, &cancel).await;
    }
    output::print("stopping the cluster");
    stop_all(&mut children).await;
    for member in &members {
        let _ = std::fs::remove_file(&member.pid_path);
    }
    output::print("stopped");
    outcome
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("read the current directory")?
        .join(path))
}

fn write_configs(
    dir: &Path,
    n_members: u8,
    subnet: &str,
    etcd_bin: &Path,
) -> anyhow::Result<Vec<LocalMember>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let peers_path = dir.join("peers.toml");
    if let Ok(text) = std::fs::read_to_string(&peers_path) {
        let existing: PeersFile =
            toml::from_str(&text).with_context(|| format!("parse {}", peers_path.display()))?;
        if existing.peers.len() != usize::from(n_members) {
            anyhow::bail!(
                "{} holds a cluster of {} members; pass --members {} or use another --dir",
                dir.display(),
                existing.peers.len(),
                existing.peers.len()
            );
        }
    }
    let mut peers = String::new();
    let mut members = Vec::new();
    for i in 1..=n_members {
        let name = format!("m{i}");
        let ip = format!("{subnet}.{i}");
        let (peer_url, client_url) = (format!("http://{ip}:2380"), format!("http://{ip}:2379"));
        peers.push_str(&format!(
            "[[peers]]\nname = \"{name}\"\npeer_url = \"{peer_url}\"\nclient_url = \"{client_url}\"\nadmin_url = \"http://{ip}:{ADMIN_PORT}\"\n\n"
        ));
        let member_dir = dir.join(&name);
        std::fs::create_dir_all(&member_dir)
            .with_context(|| format!("create {}", member_dir.display()))?;
        let config_path = member_dir.join("pilot.toml");
        let body = format!(
            "# Written by `etcd-pilot local up`; rewritten on every run.\n\
             name = \"{name}\"\ncluster_name = \"local\"\ndata_dir = {data:?}\n\n\
             [etcd]\nbin = {bin:?}\npeer_url = \"{peer_url}\"\nclient_url = \"{client_url}\"\n\n\
             [admin]\nlisten = \"{ip}:{ADMIN_PORT}\"\n\n\
             [discovery]\nprovider = \"static\"\npeers_file = {peers_path:?}\n",
            data = member_dir.join("data").display().to_string(),
            bin = etcd_bin.display().to_string(),
            peers_path = peers_path.display().to_string(),
        );
        std::fs::write(&config_path, body)
            .with_context(|| format!("write {}", config_path.display()))?;
        members.push(LocalMember {
            name,
            config_path,
            log_path: member_dir.join("pilot.log"),
            pid_path: member_dir.join("pilot.pid"),
            client_url,
        });
    }
    std::fs::write(&peers_path, peers)
        .with_context(|| format!("write {}", peers_path.display()))?;
    Ok(members)
}

/// Waits until every member is a healthy voter; fails if a pilot exits meanwhile.
async fn wait_ready(
    endpoints: &[String],
    members: &[LocalMember],
    children: &mut [tokio::process::Child],
) -> anyhow::Result<()> {
    let options = ClientOptions {
        timeout: Duration::from_secs(1),
        credentials: None,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (member, child) in members.iter().zip(children.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!(
                    "the pilot of {} exited ({status}); last lines of {}:\n{}",
                    member.name,
                    member.log_path.display(),
                    tail(&member.log_path, 15)
                );
            }
        }
        if let Some(list) = etcd::first_member_list(endpoints, &options).await {
            let voters = list
                .members
                .iter()
                .filter(|m| m.is_started() && !m.is_learner)
                .count();
            if voters == members.len() {
                let probes = etcd::probe_members(&list.members, &options).await;
                if probes.iter().all(|p| {
                    p.as_ref()
                        .is_ok_and(|s| s.health() == etcd_pilot_core::Health::Healthy)
                }) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the cluster is not healthy after 120 s; see {}/m*/pilot.log and `etcd-pilot status --endpoints {}`",
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

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
