//! The one place child processes are built, and the signals we send them.
//!
//! `clippy.toml` bans `Command::new` everywhere else, so every child the pilot starts is
//! visible here: it gets no stdin and dies with the pilot's runtime if its handle is dropped.

use std::ffi::OsStr;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A command for `program` with stdin closed, in a process group of its own: a Ctrl-C in the
/// terminal reaches only us, and we stop our children in the order we choose.
pub(crate) fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    #[allow(clippy::disallowed_methods)] // This is the one helper the ban points to.
    let mut command = tokio::process::Command::new(program);
    command.stdin(std::process::Stdio::null()).process_group(0);
    command
}

/// [`command`] at the lowest CPU priority (nice 19) and the idle IO class, through
/// `ionice -t -c 3 nice -n 19` (both exec the program: the pid is the program's; `-t`: a
/// kernel or sandbox that refuses the IO class leaves it at normal IO priority): for work beside
/// etcd that may wait (restore drills), so it never competes with the member for disk or CPU.
/// Without those tools, a plain [`command`].
pub(crate) fn idle_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    match (
        crate::config::search_path("ionice"),
        crate::config::search_path("nice"),
    ) {
        (Some(ionice), Some(nice)) => {
            let mut wrapped = command(ionice);
            wrapped
                .args(["-t", "-c", "3"])
                .arg(nice)
                .args(["-n", "19"])
                .arg(program.as_ref());
            wrapped
        }
        _ => command(program),
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub(crate) fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid).map_err(std::io::Error::other)?);
    match kill(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// Whether a process with `pid` exists and has not exited (a zombie, exited but not yet
/// reaped by its parent, counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    let exists = i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), None).is_ok());
    exists && !is_zombie(pid)
}

/// The arguments `pid` runs with, from `/proc/<pid>/cmdline` (empty when it is gone).
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether `pid` is a zombie, from `/proc/<pid>/stat`.
pub(crate) fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`. Waits for it to exit.
pub(crate) async fn terminate(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        signal(pid, Signal::SIGTERM)?;
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(grace = ?grace, "child did not stop in time, sending SIGKILL");
            child.kill().await?;
            child.wait().await
        }
    }
}
