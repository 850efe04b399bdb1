//! Why etcd stopped running: its data is unusable, or it cannot run for a reason that is not
//! its data's fault.
//!
//! [`classify`] reads how the process ended and etcd's last log lines. Only etcd's own words
//! for a damaged WAL, snapshot or backend make a crash [`Crash::UnusableData`]; that is the
//! one verdict that lets the coordinator remove the member and its pilot quarantine the data.
//! Everything else (a flag error, a missing binary, an address in use, a full disk, a refused
//! downgrade, a member that stopped answering, a crash we do not recognise) is
//! [`Crash::CannotRun`]: the pilot backs off and reports it, and nobody touches the member or
//! its data, so a bad config rolled out node after node costs availability, never members.
//! The message lists come from etcd's source (3.4 and 3.5) and were checked against the real
//! binaries; CONTRIBUTING.md records how. This module does not watch the process.

use std::time::Duration;

/// How the etcd process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it (SIGKILL from the kernel's OOM killer, for instance).
    Signal(i32),
    /// It could not be started at all (missing binary, not executable).
    SpawnFailed(String),
    /// It ran but stopped answering its health check for this long, and the pilot restarted it.
    Unresponsive(Duration),
}

/// The verdict on one crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crash {
    /// etcd says its data is damaged or unreadable: a WAL, snapshot or backend error.
    UnusableData {
        /// etcd's words.
        reason: String,
    },
    /// etcd cannot run, and its data is not known to be at fault.
    CannotRun {
        /// What stops it, from etcd's words when it said anything.
        reason: String,
    },
}

impl Crash {
    /// Whether the data is at fault.
    pub fn is_unusable_data(&self) -> bool {
        matches!(self, Crash::UnusableData { .. })
    }

    /// The reason, for people.
    pub fn reason(&self) -> &str {
        match self {
            Crash::UnusableData { reason } | Crash::CannotRun { reason } => reason,
        }
    }
}

/// How many crashes in a row that etcd blamed on its data make the data unusable (the member
/// is then removed and rejoins from an empty disk): enough that a one-off is never taken for
/// damage.
pub const UNUSABLE_AFTER_FAILURES: u32 = 5;

/// What the pilot reports about an etcd that keeps crashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The data is unusable: enough crashes in a row on damaged data.
    DataUnusable,
    /// etcd cannot run, for a reason that is not (yet) its data's: the member and its data
    /// are left as they are.
    CannotRun,
}

/// The verdict on a crash loop whose last crash is `last`, after `damaged_in_a_row`
/// consecutive crashes that etcd blamed on its data.
pub fn verdict(last: &Crash, damaged_in_a_row: u32) -> Verdict {
    if last.is_unusable_data() && damaged_in_a_row >= UNUSABLE_AFTER_FAILURES {
        Verdict::DataUnusable
    } else {
        Verdict::CannotRun
    }
}

/// Causes that are never the data's fault, even when they surface inside a WAL or backend
/// error ("failed to open WAL: ... no space left on device"). Checked first, in any line.
/// Most of etcd's startup errors reach its log as one fatal line, `"msg":"discovery failed"`
/// with the cause in `"error"`, so the whole line is searched, not the message.
const NOT_THE_DATA: &[(&str, &str)] = &[
    ("no space left on device", "the disk is full"),
    ("permission denied", "permission denied"),
    ("read-only file system", "the file system is read-only"),
    ("too many open files", "too many open files"),
    ("cannot allocate memory", "out of memory"),
    (
        "address already in use",
        "an address etcd listens on is in use",
    ),
    (
        "cannot assign requested address",
        "an address etcd listens on is not local",
    ),
    ("flag provided but not defined", "an unknown flag"),
    ("for flag -", "an invalid flag value"),
    ("failed to verify flags", "invalid flags"),
    ("is not a valid flag", "an unknown flag"),
    (
        "couldn't find local name",
        "its name is missing from --initial-cluster",
    ),
    (
        "cannot be downgraded",
        "the data was written by a newer etcd (downgrade refused)",
    ),
    (
        "invalid downgrade",
        "the data was written by a newer etcd (downgrade refused)",
    ),
    (
        "cannot fetch cluster info from peer urls",
        "no peer answered its join",
    ),
    (
        "member count is unequal",
        "--initial-cluster does not match the cluster",
    ),
    (
        "no match found for existing member",
        "--initial-cluster does not match the cluster",
    ),
    (
        "incompatible with current running cluster",
        "its version is incompatible with the cluster",
    ),
    (
        "has already been bootstrapped",
        "the member was already bootstrapped",
    ),
];

/// etcd's words for damaged or unreadable data: WAL, snapshot files, the bbolt backend, and a
/// raft state behind what the cluster committed. Looked for only in lines etcd wrote at fatal
/// or panic level and in Go's own `panic:`/`fatal error:` lines: a warning such as a peer
/// stream's "unexpected EOF", or a function name in a goroutine dump, is never evidence
/// against the data.
const DAMAGED_DATA: &[&str] = &[
    // WAL (server/wal, server/etcdserver/storage.go).
    "failed to open wal",
    "failed to read wal",
    "failed to repair wal",
    "crc mismatch",
    "unexpected block type",
    "wal: file not found",
    "wal: snapshot not found",
    "wal: snapshot mismatch",
    "wal: conflicting metadata found",
    "wal: slice bounds out of range",
    "max entry size limit exceeded",
    // Snapshots and the v2 store (server/etcdserver/server.go).
    "failed to recover v3 backend from snapshot",
    "failed to find database snapshot file",
    "failed to recover from snapshot",
    "of the backend is missing",
    "does not match with snapshot",
    "illegal v2store content",
    "failed to open snapshot backend",
    // Backend (bbolt, server/mvcc/backend).
    "failed to open database",
    "invalid database",
    "file size too small",
    "checksum error",
    "database isn't correctly mapped",
    "mmap stat error",
    "freepages: failed to get all reachable pages",
    "invalid freelist page",
    "already freed",
    "invalid page type",
    "above high water mark",
    "invalid meta pages",
    // Raft state behind the cluster's: "tocommit(N) is out of range [lastIndex(M)]",
    // "state.commit N is out of range [a, b]".
    "is out of range [",
    "unexpected committed entry index",
    "unexpected leader snapshot from outdated index",
];

/// The longest reason kept from a log line.
const MAX_REASON: usize = 300;

/// Classifies one crash from how it ended and etcd's last output lines (oldest first).
pub fn classify(exit: &Exit, output: &[String]) -> Crash {
    let cannot_run = |reason: String| Crash::CannotRun { reason };
    match exit {
        Exit::SpawnFailed(error) => return cannot_run(format!("cannot start etcd: {error}")),
        Exit::Unresponsive(silent) => {
            return cannot_run(format!(
                "etcd ran but did not answer its health check for {}s; restarted",
                silent.as_secs()
            ));
        }
        Exit::Code(_) | Exit::Signal(_) => {}
    }
    let lowered: Vec<String> = output.iter().map(|line| line.to_lowercase()).collect();
    for (pattern, cause) in NOT_THE_DATA {
        if let Some(index) = lowered.iter().rposition(|line| line.contains(pattern)) {
            return cannot_run(format!("{cause}: {}", summary(&output[index])));
        }
    }
    let severe = |line: &str| {
        line.starts_with("panic:")
            || line.starts_with("fatal error:")
            || [
                "\"level\":\"fatal\"",
                "\"level\":\"panic\"",
                "\"level\":\"dpanic\"",
            ]
            .iter()
            .any(|level| line.contains(level))
    };
    for pattern in DAMAGED_DATA {
        if let Some(index) = lowered
            .iter()
            .rposition(|line| severe(line) && line.contains(pattern))
        {
            return Crash::UnusableData {
                reason: summary(&output[index]),
            };
        }
    }
    let how = match exit {
        Exit::Signal(signal) => format!("killed by signal {signal}"),
        Exit::Code(code) => format!("exited with code {code}"),
        Exit::SpawnFailed(_) | Exit::Unresponsive(_) => unreachable!("handled above"),
    };
    // The last thing etcd said at error level or above, else its last line.
    let last = output
        .iter()
        .rev()
        .find(|line| {
            let line = line.to_lowercase();
            line.contains("\"level\":\"fatal\"")
                || line.contains("\"level\":\"panic\"")
                || line.contains("\"level\":\"error\"")
                || line.starts_with("panic:")
        })
        .or_else(|| output.last());
    match last {
        Some(line) => cannot_run(format!("etcd {how}: {}", summary(line))),
        None => cannot_run(format!("etcd {how} without a word")),
    }
}

/// A log line made short: a zap JSON line becomes `msg: error`; anything is cut at
/// [`MAX_REASON`] bytes.
fn summary(line: &str) -> String {
    let text = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) => {
            let field = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            match (field("msg"), field("error")) {
                (Some(msg), Some(error)) => format!("{msg}: {error}"),
                (Some(msg), None) => msg,
                _ => line.to_owned(),
            }
        }
        Err(_) => line.trim().to_owned(),
    };
    if text.len() <= MAX_REASON {
        return text;
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests;
