//! The restore drill: proves a backup restores. Download and check it, restore it into a
//! scratch folder, start a throwaway etcd on free loopback ports, and compare the key count
//! and `HashKV` at the backup's revision with what the manifest recorded at backup time.
//!
//! The throwaway etcd is stopped (by its PID) and the scratch folder removed on every path;
//! a drill interrupted by the pilot's death leaves its etcd's pid in `<scratch root>/etcd.pid`,
//! and the next drill stops that etcd and clears the folder first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context as _;

use etcd_pilot_core::backup::DrillFault;

use super::restore::{self, RestoreTarget, RestoreTool};
use super::store::{Manifest, Store};
use super::{Faulted, Progress};
use crate::datadir::Scratch;
use crate::etcd::{self, ClientOptions, Etcd};

/// What a passing drill measured.
#[derive(Clone, Debug)]
pub(crate) struct DrillReport {
    pub(crate) key_count: i64,
    pub(crate) hash_kv: u32,
    pub(crate) duration: Duration,
}

/// The etcd a drill starts, and the credentials it asks it with.
pub(crate) struct DrillEtcd<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) credentials: Option<(String, String)>,
}

/// Runs the drill on `manifest` in a fresh folder under `scratch_root`.
pub(crate) async fn drill(
    store: &Store,
    manifest: &Manifest,
    etcd: &DrillEtcd<'_>,
    tool: &RestoreTool,
    scratch_root: &Path,
    progress: &Progress,
) -> anyhow::Result<DrillReport> {
    let started = Instant::now();
    let root = Scratch::open(scratch_root, crate::datadir::legacy_drill)?;
    clear_leftovers(&root);
    let name = format!("drill-{}", manifest.id);
    let scratch = root.child(&name)?;
    tokio::fs::create_dir_all(&scratch)
        .await
        .with_context(|| format!("create scratch folder {}", scratch.display()))?;
    let result = drill_in(&scratch, store, manifest, etcd, tool, progress).await;
    if let Err(err) = root.remove_child(&name) {
        tracing::warn!("cannot remove the drill's scratch folder: {err:#}");
    }
    let (key_count, hash_kv) = result?;
    Ok(DrillReport {
        key_count,
        hash_kv,
        duration: started.elapsed(),
    })
}

async fn drill_in(
    scratch: &Path,
    store: &Store,
    manifest: &Manifest,
    etcd: &DrillEtcd<'_>,
    tool: &RestoreTool,
    progress: &Progress,
) -> anyhow::Result<(i64, u32)> {
    let snapshot = scratch.join("snapshot.db");
    restore::download(store, manifest, &snapshot, progress).await?;
    let (peer_port, client_port) = (free_port()?, free_port()?);
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let client_url = format!("http://127.0.0.1:{client_port}");
    let data_dir = scratch.join("etcd");
    let target = RestoreTarget {
        name: "drill".to_owned(),
        peer_url: peer_url.clone(),
        initial_cluster: format!("drill={peer_url}"),
        token: format!("drill-{}", manifest.id),
        data_dir: data_dir.clone(),
        // A bump would compact away the revision the drill checks.
        bump_revision: 0,
        idle: true,
    };
    restore::run_restore(tool, &snapshot, &target).await?;
    tokio::fs::remove_file(&snapshot).await.ok();
    // Test: a drill that cannot start its etcd (a port taken, a start that times out).
    fail::fail_point!("drill-etcd-start", |_| Err(anyhow::anyhow!(
        "failpoint drill-etcd-start: the drill's etcd did not start"
    )));
    let mut child = start_etcd(etcd.bin, scratch, &data_dir, &peer_url, &client_url)?;
    let pid_file = pid_file(scratch);
    if let Some(pid) = child.id() {
        std::fs::write(&pid_file, format!("{pid}\n")).ok();
    }
    // Crash test: the pilot dies with the drill's etcd running.
    fail::fail_point!("drill-after-etcd-start", |_| std::process::abort());
    let checked = check(manifest, &client_url, etcd.credentials.clone()).await;
    if let Err(err) = crate::process::terminate(&mut child, Duration::from_secs(10)).await {
        tracing::warn!("cannot stop the drill's etcd: {err}");
    }
    std::fs::remove_file(&pid_file).ok();
    let (key_count, hash) = checked.map_err(|err| {
        let log = std::fs::read_to_string(scratch.join("etcd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        err.context(format!(
            "the drill's etcd log ends with: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    })?;
    if key_count != manifest.key_count || hash != manifest.hash_kv {
        return Err(Faulted::error(
            DrillFault::ContentDiffers,
            format!(
                "backup {} restores, but its content differs: {key_count} keys and HashKV {hash} \
                 at revision {}, the manifest recorded {} keys and HashKV {}",
                manifest.id, manifest.revision, manifest.key_count, manifest.hash_kv
            ),
        ));
    }
    Ok((key_count, hash))
}

fn start_etcd(
    etcd_bin: &Path,
    scratch: &Path,
    data_dir: &Path,
    peer_url: &str,
    client_url: &str,
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(scratch.join("etcd.log")).context("create the drill's log")?;
    let log_err = log.try_clone()?;
    let data: PathBuf = data_dir.to_owned();
    // Idle priority: the drill must not slow the member beside it.
    crate::process::idle_command(etcd_bin)
        .args([
            "--name=drill".to_owned(),
            format!("--data-dir={}", data.display()),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--initial-cluster=drill={peer_url}"),
        ])
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start the drill's etcd ({})", etcd_bin.display()))
}

async fn check(
    manifest: &Manifest,
    client_url: &str,
    credentials: Option<(String, String)>,
) -> anyhow::Result<(i64, u32)> {
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        credentials,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match etcd::probe(client_url, &options).await {
            Ok(status) if status.leader.is_some() => break,
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => anyhow::bail!("the drill's etcd has no leader after 60 s"),
            Err(err) => {
                return Err(
                    anyhow::Error::new(err).context("the drill's etcd did not answer in 60 s")
                );
            }
        }
    }
    let client = Etcd::connect(&[client_url.to_owned()], &options).await?;
    let count = client
        .count_keys(manifest.revision)
        .await
        .context("count the restored keys")?;
    let hash = client
        .hash_kv(manifest.revision)
        .await
        .context("hash the restored key space")?;
    Ok((count, hash.hash))
}

/// Where a running drill's etcd pid is kept: beside the drill folders.
fn pid_file(scratch: &Path) -> PathBuf {
    scratch.parent().unwrap_or(scratch).join("etcd.pid")
}

/// Stops a drill etcd left by an earlier life of the pilot (only if its command line is a
/// drill's) and removes old drill folders.
fn clear_leftovers(root: &Scratch) {
    let pid_path = root.path().join("etcd.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    {
        // Only a drill's etcd of this folder: its exact `--name=drill` and a data dir in it
        // (a reused pid may be anything else).
        let args = crate::process::cmdline(pid);
        let data_prefix = format!("--data-dir={}/", root.path().display());
        let ours = args.iter().any(|a| a == "--name=drill")
            && args.iter().any(|a| a.starts_with(&data_prefix));
        if crate::process::alive(pid) && ours {
            tracing::warn!(pid, "stopping the etcd of an interrupted restore drill");
            crate::process::signal(pid, nix::sys::signal::Signal::SIGKILL).ok();
        }
        std::fs::remove_file(&pid_path).ok();
    }
    if let Ok(entries) = std::fs::read_dir(root.path()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("drill-")
                && let Err(err) = root.remove_child(&name)
            {
                tracing::warn!("cannot remove an old drill folder: {err:#}");
            }
        }
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}
