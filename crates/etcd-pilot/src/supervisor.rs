//! Runs etcd as a child process and keeps it running.
//!
//! The restart policy is the core's state machine (`etcd_pilot_core::supervise`); this module
//! carries out its commands: spawn, wait out a backoff, terminate. etcd's output goes into
//! tracing under the `etcd_output` target, tagged with the member name, at the level etcd logged it,
//! and its last lines are kept so that each crash gets the core's verdict (`crash::classify`:
//! unusable data, or cannot run). The pilot may ask for an etcd that stopped answering to be
//! restarted (liveness); that too is a crash, never one of the data.
//! A pid file in the data dir lets a restarted pilot stop an etcd its previous life left behind.
//! etcd's command line is built here too (`etcd_args`, from the config and the start
//! decision's `StartMode`); how etcd should start is the start decision's, not this module's.

use std::path::PathBuf;
use std::time::Duration;

use etcd_pilot_core::crash::{self, Crash, Exit};
use etcd_pilot_core::supervise::{self, Command, Event, RestartPolicy, State};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, url_string};
use crate::datadir::DataDir;
use crate::metrics::Metrics;
use crate::process;

/// What the child is doing, for the pilot and the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChildStatus {
    NotStarted,
    Running {
        pid: u32,
    },
    BackingOff {
        failures: u32,
        last_exit: String,
        /// The core's verdict on the last crash.
        crash: Crash,
        /// How many crashes in a row, without a stable run, etcd blamed on its data.
        damaged_in_a_row: u32,
    },
    Stopped,
}

/// How to run etcd.
#[derive(Clone, Debug)]
pub(crate) struct EtcdCommand {
    pub(crate) bin: PathBuf,
    pub(crate) args: Vec<String>,
    /// The member name, for log lines.
    pub(crate) member: String,
    /// Where the pid of the running child is recorded.
    pub(crate) pid_file: PathBuf,
}

/// How many of etcd's last output lines are kept for the crash verdict.
const KEPT_LINES: usize = 200;

/// etcd's last output lines, shared with the tasks that forward them.
type Lines = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

pub(crate) struct Supervisor {
    pub(crate) command: EtcdCommand,
    pub(crate) policy: RestartPolicy,
    pub(crate) stop_grace: Duration,
    pub(crate) status: watch::Sender<ChildStatus>,
    pub(crate) metrics: Metrics,
    /// Requests to restart an etcd that stopped answering: its pid (a request about another
    /// run is ignored) and how long it has been silent.
    pub(crate) unresponsive: mpsc::Receiver<(u32, Duration)>,
}

/// The running child, when it started, the tasks forwarding its output, and its last lines
/// (this run's only).
struct Running {
    process: tokio::process::Child,
    started: Instant,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
    lines: Lines,
}

impl Supervisor {
    /// Supervises until `cancel`, then stops etcd (SIGTERM, SIGKILL after the grace period).
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        stop_leftover(&self.command, self.stop_grace).await;
        let (mut state, mut command) =
            supervise::step(State::Idle, Event::Start, &self.policy, 0.5);
        let mut child: Option<Running> = None;
        let mut last_exit = String::new();
        let mut last_crash = Crash::CannotRun {
            reason: String::new(),
        };
        let mut damaged_in_a_row: u32 = 0;
        loop {
            let event = match command {
                Command::Done => break,
                Command::Spawn => match self.spawn() {
                    Ok(spawned) => {
                        let pid = spawned.process.id().unwrap_or_default();
                        self.status.send_replace(ChildStatus::Running { pid });
                        child = Some(spawned);
                        self.wait_child(&mut child, &mut last_exit, &mut last_crash, &cancel)
                            .await
                    }
                    Err(err) => {
                        tracing::error!(bin = %self.command.bin.display(), "cannot start etcd: {err:#}");
                        last_exit = format!("cannot start: {err:#}");
                        last_crash = crash::classify(&Exit::SpawnFailed(format!("{err:#}")), &[]);
                        self.count(&last_crash, false);
                        Event::Exited {
                            ran_for: Duration::ZERO,
                        }
                    }
                },
                // Only a late event leads here; wait for the next real one.
                Command::Nothing => {
                    self.wait_child(&mut child, &mut last_exit, &mut last_crash, &cancel)
                        .await
                }
                Command::SpawnAfter(delay) => {
                    // Cancel-safe: only a sleep is dropped.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => Event::BackoffElapsed,
                        () = cancel.cancelled() => Event::Stop,
                    }
                }
                Command::Terminate => {
                    let ran_for = match child.take() {
                        Some(mut running) => {
                            tracing::info!(member = %self.command.member, "stopping etcd");
                            match process::terminate(&mut running.process, self.stop_grace).await {
                                Ok(status) => {
                                    tracing::info!(member = %self.command.member, %status, "etcd stopped");
                                }
                                Err(err) => tracing::error!("cannot stop etcd: {err:#}"),
                            }
                            running.started.elapsed()
                        }
                        None => Duration::ZERO,
                    };
                    Event::Exited { ran_for }
                }
            };
            if let Event::Exited { ran_for } = event {
                // A stable run, or a crash that is not the data's, starts the count afresh.
                damaged_in_a_row = match (&last_crash, ran_for >= self.policy.stable_after) {
                    (Crash::UnusableData { .. }, false) => damaged_in_a_row.saturating_add(1),
                    (Crash::UnusableData { .. }, true) => 1,
                    (Crash::CannotRun { .. }, _) => 0,
                };
            }
            let jitter = rand::random::<f64>();
            let previous = state;
            (state, command) = supervise::step(state, event, &self.policy, jitter);
            if let (State::BackingOff { failures }, Command::SpawnAfter(delay)) = (state, command) {
                self.metrics.etcd_restarts.inc();
                tracing::warn!(member = %self.command.member, failures, delay = ?delay, %last_exit, verdict = ?last_crash, "restarting etcd after backoff");
                self.status.send_replace(ChildStatus::BackingOff {
                    failures,
                    last_exit: last_exit.clone(),
                    crash: last_crash.clone(),
                    damaged_in_a_row,
                });
            }
            tracing::debug!(?previous, ?state, ?command, "supervisor step");
        }
        let _ = std::fs::remove_file(&self.command.pid_file);
        self.status.send_replace(ChildStatus::Stopped);
        Ok(())
    }

    /// Waits for the running child (if any) to exit, for a liveness restart request, or for
    /// cancellation (a stop request). On exit, clears `child`, describes the exit in
    /// `last_exit` and gives the core's verdict in `last_crash`.
    async fn wait_child(
        &mut self,
        child: &mut Option<Running>,
        last_exit: &mut String,
        last_crash: &mut Crash,
        cancel: &CancellationToken,
    ) -> Event {
        let Some(running) = child else {
            cancel.cancelled().await;
            return Event::Stop;
        };
        let pid = running.process.id();
        let (status, exit) = loop {
            // Cancel-safe: `Child::wait` and `recv` may be dropped and called again.
            tokio::select! {
                status = running.process.wait() => break (status, None),
                Some((asked, silent)) = self.unresponsive.recv() => {
                    if Some(asked) != pid {
                        // About an earlier run: stale.
                        continue;
                    }
                    tracing::warn!(member = %self.command.member, silent_for = ?silent, "etcd does not answer; restarting it");
                    // A stopped process (SIGSTOP) holds SIGTERM until it runs again: let it
                    // run, so it can stop gracefully; a hung one is killed after the grace.
                    let _ = process::signal(asked, Signal::SIGCONT);
                    let status = process::terminate(&mut running.process, self.stop_grace).await;
                    break (status, Some(Exit::Unresponsive(silent)));
                }
                () = cancel.cancelled() => return Event::Stop,
            }
        };
        let ran_for = running.started.elapsed();
        // Let the forwarders drain etcd's last words before they are read.
        for forwarder in running.forwarders.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), forwarder).await;
        }
        *last_exit = match &status {
            Ok(status) => status.to_string(),
            Err(err) => format!("cannot wait for etcd: {err}"),
        };
        let exit = exit.unwrap_or_else(|| match &status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Code(-1),
                }
            }
            Err(_) => Exit::Code(-1),
        });
        let output: Vec<String> = running
            .lines
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default();
        *last_crash = crash::classify(&exit, &output);
        self.count(last_crash, matches!(exit, Exit::Unresponsive(_)));
        tracing::warn!(member = %self.command.member, exit = %last_exit, ?ran_for, verdict = ?last_crash, "etcd exited");
        *child = None;
        Event::Exited { ran_for }
    }

    fn count(&self, crash: &Crash, unresponsive: bool) {
        let kind = match (crash, unresponsive) {
            (_, true) => "unresponsive",
            (Crash::UnusableData { .. }, false) => "unusable_data",
            (Crash::CannotRun { .. }, false) => "cannot_run",
        };
        self.metrics
            .etcd_crashes
            .get_or_create(&crate::metrics::KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }

    fn spawn(&self) -> anyhow::Result<Running> {
        use anyhow::Context as _;
        tracing::info!(member = %self.command.member, bin = %self.command.bin.display(), args = ?self.command.args, "starting etcd");
        let mut child = process::command(&self.command.bin)
            .args(&self.command.args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawn {}", self.command.bin.display()))?;
        if let Some(pid) = child.id() {
            std::fs::write(
                &self.command.pid_file,
                format!("{pid}\n{}\n", self.command.bin.display()),
            )
            .with_context(|| format!("write {}", self.command.pid_file.display()))?;
        }
        let lines = Lines::default();
        let mut forwarders = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            forwarders.push(tokio::spawn(forward_output(
                stdout,
                self.command.member.clone(),
                lines.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            forwarders.push(tokio::spawn(forward_output(
                stderr,
                self.command.member.clone(),
                lines.clone(),
            )));
        }
        Ok(Running {
            process: child,
            started: Instant::now(),
            forwarders,
            lines,
        })
    }
}

/// Stops an etcd that an earlier life of this pilot started and did not stop (the pilot was
/// killed with SIGKILL): it holds the ports and the data dir's lock.
async fn stop_leftover(command: &EtcdCommand, grace: Duration) {
    stop_leftover_at(&command.pid_file, grace).await;
}

/// [`stop_leftover`] by the pid file alone, for a pilot that must stop such an etcd before
/// it starts one (a reseed resumed after a crash copies the data of a stopped etcd).
pub(crate) async fn stop_leftover_at(pid_file: &std::path::Path, grace: Duration) {
    let Some(pid) = leftover_pid(pid_file) else {
        return;
    };
    tracing::warn!(pid, "stopping an etcd left running by an earlier pilot");
    let _ = process::signal(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while process::alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if process::alive(pid) {
        let _ = process::signal(pid, Signal::SIGKILL);
        while process::alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The binary the pid file names: the one etcd ran last on this data (running or not).
pub(crate) fn pid_file_bin(pid_file: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    text.lines().nth(1).map(PathBuf::from)
}

/// The pid of an etcd an earlier life of this pilot started and left running, if any: the
/// pid file's process, while it still runs the binary the file names (a reused pid is not).
pub(crate) fn leftover_pid(pid_file: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let mut lines = text.lines();
    let (Some(Ok(pid)), Some(bin)) = (lines.next().map(str::parse::<u32>), lines.next()) else {
        return None;
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let ours =
        exe == std::path::Path::new(bin) || std::fs::canonicalize(bin).is_ok_and(|b| b == exe);
    (ours && process::alive(pid)).then_some(pid)
}

/// Forwards etcd's log lines into tracing at the level etcd gave them, and keeps the last
/// [`KEPT_LINES`] in `kept`.
///
/// Lines are read as bytes and decoded lossily: stopping at a line that is not UTF-8 would
/// close the pipe, and etcd's next write to it would kill etcd (SIGPIPE).
async fn forward_output(stream: impl AsyncRead + Unpin, member: String, kept: Lines) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer)
            .trim_end_matches(['\n', '\r'])
            .to_owned();
        if let Ok(mut kept) = kept.lock() {
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line.clone());
        }
        let level = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(str::to_owned));
        match level.as_deref() {
            Some("debug") => tracing::debug!(target: "etcd_output", member = %member, "{line}"),
            Some("warn") => tracing::warn!(target: "etcd_output", member = %member, "{line}"),
            Some("error" | "dpanic" | "panic" | "fatal") => {
                tracing::error!(target: "etcd_output", member = %member, "{line}")
            }
            _ => tracing::info!(target: "etcd_output", member = %member, "{line}"),
        }
    }
}

/// How etcd is started, from the start decision.
#[derive(Clone, Debug)]
pub(crate) enum StartMode {
    /// On existing data (a WAL exists): etcd ignores the `--initial-*` flags, and should the
    /// WAL be gone after all, `existing` with this member list makes it fail, never bootstrap.
    Restart { initial_cluster: String },
    /// A new cluster.
    New {
        initial_cluster: String,
        token: String,
    },
    /// Joining a live cluster whose member list already has our entry.
    Existing { initial_cluster: String },
    /// A reseed after quorum loss: etcd's `--force-new-cluster` on the existing data keeps
    /// what this member applied and leaves it the only member. Run once, until it leads;
    /// then etcd restarts normally (`Restart`), so a later crash never forces again.
    ForceNewCluster { initial_cluster: String },
}

/// etcd's flags for `mode`.
pub(crate) fn etcd_args(config: &Config, data: &DataDir, mode: &StartMode) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", config.name),
        format!("--data-dir={}", data.etcd_dir().display()),
        format!(
            "--listen-peer-urls={}",
            url_string(&config.etcd.listen_peer_url)
        ),
        format!(
            "--initial-advertise-peer-urls={}",
            url_string(&config.etcd.peer_url)
        ),
        format!(
            "--listen-client-urls={}",
            url_string(&config.etcd.listen_client_url)
        ),
        format!(
            "--advertise-client-urls={}",
            url_string(&config.etcd.client_url)
        ),
        "--logger=zap".to_owned(),
        "--log-outputs=stderr".to_owned(),
    ];
    match mode {
        StartMode::New {
            initial_cluster,
            token,
        } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=new".to_owned());
            args.push(format!("--initial-cluster-token={token}"));
        }
        StartMode::Existing { initial_cluster } | StartMode::Restart { initial_cluster } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=existing".to_owned());
        }
        StartMode::ForceNewCluster { initial_cluster } => {
            args.push(format!("--initial-cluster={initial_cluster}"));
            args.push("--initial-cluster-state=existing".to_owned());
            args.push("--force-new-cluster".to_owned());
        }
    }
    args.extend(config.etcd.extra_args.iter().cloned());
    args
}

/// The release `bin` is (its `etcd --version`), asked with a 10 s timeout.
pub(crate) async fn release_of(
    bin: &std::path::Path,
) -> anyhow::Result<etcd_pilot_core::upgrade::Version> {
    use anyhow::Context as _;
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        crate::process::command(bin)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} --version did not finish within 10 s", bin.display()))?
    .with_context(|| format!("run {} --version", bin.display()))?;
    etcd_pilot_core::upgrade::from_version_output(&String::from_utf8_lossy(&output.stdout))
        .with_context(|| format!("{} --version names no etcd release", bin.display()))
}

/// Finds the releases this node has (`etcd.bin` and `etcd.versions`), publishes them in
/// `/v1/status` `release` with `etcd.bin`'s flags and sets the flags metric; logs each flag.
/// Returns the release `etcd.bin` is, when it says.
pub(crate) async fn publish_releases(
    bin: &std::path::Path,
    versions: &[PathBuf],
    status: &watch::Sender<crate::state::PilotStatus>,
    metrics: &crate::metrics::Metrics,
) -> Option<etcd_pilot_core::upgrade::Version> {
    let (available, unreadable) = releases(bin, versions).await;
    let bin_version = available
        .iter()
        .find(|(_, path)| path == bin)
        .map(|(version, _)| *version);
    let bin_release = bin_version.map(|v| v.to_string());
    let flags = bin_release
        .as_deref()
        .map(crate::state::ReleaseStatus::flags_of)
        .unwrap_or_default();
    match &bin_release {
        Some(version) => {
            for flag in &flags {
                tracing::warn!(release = %version, "etcd.bin is flagged: {flag}");
            }
            // Until the member answers, the release it will run is etcd.bin's.
            if status.borrow().release.running.is_none() {
                metrics.set_release(version, flags.len());
            }
        }
        None => tracing::warn!("cannot tell which etcd release etcd.bin is: {unreadable:?}"),
    }
    status.send_modify(|s| {
        s.release.bin = bin.display().to_string();
        s.release.available = available
            .iter()
            .map(|(version, path)| format!("{version} {}", path.display()))
            .collect();
        s.release.unreadable = unreadable;
        s.release.bin_version = bin_release;
        if s.release.running.is_none() {
            s.release.flags = flags;
        }
    });
    bin_version
}

/// The etcd releases this node has: `etcd.bin` first, then each binary `etcd.versions` names
/// (`*` matching within one folder name), one per release (the first path found wins), with
/// a line for each path that says no release.
pub(crate) async fn releases(
    bin: &std::path::Path,
    versions: &[PathBuf],
) -> (
    Vec<(etcd_pilot_core::upgrade::Version, PathBuf)>,
    Vec<String>,
) {
    let mut paths = vec![bin.to_owned()];
    let mut errors = Vec::new();
    for pattern in versions {
        let matched = expand(pattern);
        if matched.is_empty() {
            errors.push(format!(
                "etcd.versions: {} names no file",
                pattern.display()
            ));
        }
        paths.extend(matched);
    }
    let mut found: Vec<(etcd_pilot_core::upgrade::Version, PathBuf)> = Vec::new();
    for path in paths {
        match release_of(&path).await {
            Ok(version) if !found.iter().any(|(v, _)| *v == version) => found.push((version, path)),
            Ok(_) => {}
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    found.sort();
    (found, errors)
}

/// The files `pattern` names: itself (a path without `*`, whether or not it exists: asking
/// it its release says what is wrong), or with `*` in folder or file names, each file that
/// matches (a `*` matches any run of characters within one name).
pub(crate) fn expand(pattern: &std::path::Path) -> Vec<PathBuf> {
    if !pattern.to_string_lossy().contains('*') {
        return vec![pattern.to_owned()];
    }
    let mut matches = vec![PathBuf::from("/")];
    for part in pattern.components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for base in matches {
            if !part.contains('*') {
                next.push(base.join(part.as_ref()));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&base) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| wildcard(&part, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| base.join(name)));
        }
        matches = next;
    }
    matches.into_iter().filter(|p| p.is_file()).collect()
}

/// Whether `name` matches `pattern`, whose `*`s match any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    for (i, piece) in pieces.iter().enumerate() {
        if i + 1 == pieces.len() {
            return rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("fake-etcd");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn supervisor(
        bin: PathBuf,
        dir: &std::path::Path,
    ) -> (Supervisor, watch::Receiver<ChildStatus>, Metrics) {
        let (supervisor, rx, metrics, _restart) = supervisor_with_liveness(bin, dir);
        (supervisor, rx, metrics)
    }

    fn supervisor_with_liveness(
        bin: PathBuf,
        dir: &std::path::Path,
    ) -> (
        Supervisor,
        watch::Receiver<ChildStatus>,
        Metrics,
        mpsc::Sender<(u32, Duration)>,
    ) {
        let (tx, rx) = watch::channel(ChildStatus::NotStarted);
        let (restart_tx, restart_rx) = mpsc::channel(2);
        let metrics = Metrics::new();
        let supervisor = Supervisor {
            command: EtcdCommand {
                bin,
                args: vec![],
                member: "m1".into(),
                pid_file: dir.join("etcd.pid"),
            },
            policy: RestartPolicy {
                initial_backoff: Duration::from_secs(10),
                max_backoff: Duration::from_secs(60),
                stable_after: Duration::from_secs(600),
                jitter: 0.0,
            },
            stop_grace: Duration::from_secs(10),
            status: tx,
            metrics: metrics.clone(),
            unresponsive: restart_rx,
        };
        (supervisor, rx, metrics, restart_tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashing_child_is_restarted_with_growing_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let (supervisor, mut status, metrics) =
            supervisor(script(dir.path(), "exit 3"), dir.path());
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(supervisor.run(cancel.clone()));
        let mut backoffs = Vec::new();
        while backoffs.len() < 3 {
            status.changed().await.unwrap();
            if let ChildStatus::BackingOff { failures, .. } = *status.borrow() {
                backoffs.push((failures, started.elapsed()));
            }
        }
        assert_eq!(backoffs.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 2, 3]);
        // The third crash comes after the first two delays (10 s, then 20 s) have passed.
        assert!(backoffs[2].1 >= Duration::from_secs(30), "{backoffs:?}");
        assert!(backoffs[2].1 < Duration::from_secs(40), "{backoffs:?}");
        assert_eq!(metrics.etcd_restarts.get(), 3);
        cancel.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(*status.borrow(), ChildStatus::Stopped);
    }

    async fn running_pid(status: &mut watch::Receiver<ChildStatus>) -> u32 {
        loop {
            status.changed().await.unwrap();
            if let ChildStatus::Running { pid } = *status.borrow() {
                return pid;
            }
        }
    }

    async fn first_backoff(status: &mut watch::Receiver<ChildStatus>) -> (String, Crash) {
        loop {
            status.changed().await.unwrap();
            if let ChildStatus::BackingOff {
                last_exit, crash, ..
            } = &*status.borrow()
            {
                return (last_exit.clone(), crash.clone());
            }
        }
    }

    #[tokio::test]
    async fn each_crash_gets_a_verdict_from_etcd_s_last_words() {
        let dir = tempfile::tempdir().unwrap();
        let damaged = r#"echo '{"level":"fatal","msg":"failed to read WAL","error":"walpb: crc mismatch"}' >&2; exit 1"#;
        let (first, mut status, metrics) = supervisor(script(dir.path(), damaged), dir.path());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(first.run(cancel.clone()));
        let (_, crash) = first_backoff(&mut status).await;
        assert_eq!(
            crash,
            Crash::UnusableData {
                reason: "failed to read WAL: walpb: crc mismatch".into()
            }
        );
        cancel.cancel();
        task.await.unwrap().unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"etcd_pilot_etcd_crashes_total{kind="unusable_data"} 1"#)
        );

        let flag = "echo 'flag provided but not defined: -bogus' >&2; exit 2";
        let (second, mut status, _) = supervisor(script(dir.path(), flag), dir.path());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(second.run(cancel.clone()));
        let (last_exit, crash) = first_backoff(&mut status).await;
        assert!(last_exit.contains('2'), "{last_exit}");
        assert!(!crash.is_unusable_data(), "{crash:?}");
        assert!(crash.reason().starts_with("an unknown flag"), "{crash:?}");
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_unresponsive_child_is_restarted_and_never_judged_unusable_data() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "while true; do sleep 1; done");
        let (supervisor, mut status, metrics, restart) = supervisor_with_liveness(bin, dir.path());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervisor.run(cancel.clone()));
        let pid = running_pid(&mut status).await;
        // A request about another run is ignored; one about this run restarts it.
        restart
            .send((pid + 1, Duration::from_secs(30)))
            .await
            .unwrap();
        restart.send((pid, Duration::from_secs(30))).await.unwrap();
        let (_, crash) = first_backoff(&mut status).await;
        assert_eq!(
            crash.reason(),
            "etcd ran but did not answer its health check for 30s; restarted"
        );
        assert!(!process::alive(pid), "the silent child was stopped");
        assert!(
            metrics
                .encode()
                .contains(r#"etcd_pilot_etcd_crashes_total{kind="unresponsive"} 1"#)
        );
        cancel.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_etcd_left_running_by_an_earlier_pilot_is_stopped_first() {
        let dir = tempfile::tempdir().unwrap();
        // The "leftover": a process running the binary the pid file names.
        let leftover = process::command("sleep").arg("1000").spawn().unwrap();
        let pid = leftover.id().unwrap();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        std::fs::write(
            dir.path().join("etcd.pid"),
            format!("{pid}\n{}\n", exe.display()),
        )
        .unwrap();
        let (supervisor, _status, _) = supervisor(script(dir.path(), "exit 0"), dir.path());
        let cancel = CancellationToken::new();
        cancel.cancel();
        supervisor.run(cancel).await.unwrap();
        assert!(!process::alive(pid), "the leftover {pid} was stopped");
    }

    #[tokio::test]
    async fn a_pid_file_naming_another_program_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = process::command("sleep").arg("1000").spawn().unwrap();
        let pid = other.id().unwrap();
        std::fs::write(
            dir.path().join("etcd.pid"),
            format!("{pid}\n/usr/bin/etcd\n"),
        )
        .unwrap();
        let (supervisor, _status, _) = supervisor(script(dir.path(), "exit 0"), dir.path());
        let cancel = CancellationToken::new();
        cancel.cancel();
        supervisor.run(cancel).await.unwrap();
        assert!(process::alive(pid), "a reused pid is not ours to kill");
        other.kill().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "trap '' TERM\nwhile true; do sleep 1; done");
        let (supervisor, mut status, metrics) = supervisor(bin, dir.path());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervisor.run(cancel.clone()));
        let pid = running_pid(&mut status).await;
        assert!(dir.path().join("etcd.pid").exists());
        cancel.cancel();
        task.await.unwrap().unwrap();
        assert!(
            !process::alive(pid)
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap()
                    .contains(") Z")
        );
        assert_eq!(*status.borrow(), ChildStatus::Stopped);
        assert!(
            !dir.path().join("etcd.pid").exists(),
            "the pid file goes with the child"
        );
        assert_eq!(metrics.etcd_restarts.get(), 0, "a stop is not a restart");
    }

    #[test]
    fn wildcards_match_within_one_name() {
        assert!(super::wildcard("*", "3.5.16"));
        assert!(super::wildcard("etcd-*", "etcd-3.5.16"));
        assert!(super::wildcard("etcd-*-linux", "etcd-3.5.16-linux"));
        assert!(!super::wildcard("etcd-*-linux", "etcd-3.5.16-darwin"));
        assert!(super::wildcard("etcd", "etcd"));
        assert!(!super::wildcard("etcd", "etcdctl"));
    }

    #[test]
    fn patterns_expand_to_the_files_they_name() {
        let dir = tempfile::tempdir().unwrap();
        for release in ["3.5.16", "3.5.30", "notes"] {
            std::fs::create_dir_all(dir.path().join(release)).unwrap();
        }
        std::fs::write(dir.path().join("3.5.16/etcd"), "").unwrap();
        std::fs::write(dir.path().join("3.5.30/etcd"), "").unwrap();
        let found = super::expand(&dir.path().join("*/etcd"));
        assert_eq!(
            found,
            vec![
                dir.path().join("3.5.16/etcd"),
                dir.path().join("3.5.30/etcd")
            ]
        );
        assert_eq!(super::expand(&dir.path().join("3.5.16/etcd")).len(), 1);
        // A path without `*` is kept even when missing: asking it says what is wrong.
        assert_eq!(super::expand(&dir.path().join("typo/etcd")).len(), 1);
        assert!(super::expand(&dir.path().join("nowhere/*/etcd")).is_empty());
    }
}
