//! Table of crash verdicts: etcd's own lines for damaged data, and everything that is not.

use expect_test::{Expect, expect};

use super::*;

#[track_caller]
fn check(exit: Exit, lines: &[&str], expect: Expect) {
    let output: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    expect.assert_eq(&format!("{:?}", classify(&exit, &output)));
}

fn fatal(msg: &str, error: &str) -> String {
    format!(
        r#"{{"level":"fatal","ts":"2026-11-29T10:00:00.000Z","caller":"etcdserver/x.go:1","msg":"{msg}","error":"{error}"}}"#
    )
}

#[test]
fn damaged_wal_snapshot_or_backend_is_unusable_data() {
    check(
        Exit::Code(1),
        &[&fatal("failed to read WAL", "walpb: crc mismatch")],
        expect![[r#"UnusableData { reason: "failed to read WAL: walpb: crc mismatch" }"#]],
    );
    check(
        Exit::Code(1),
        &[&fatal("failed to open WAL", "wal: file not found")],
        expect![[r#"UnusableData { reason: "failed to open WAL: wal: file not found" }"#]],
    );
    check(
        Exit::Code(1),
        &[&fatal(
            "failed to recover v3 backend from snapshot",
            "failed to find database snapshot file (snap: snapshot file doesn't exist)",
        )],
        expect![[
            r#"UnusableData { reason: "failed to recover v3 backend from snapshot: failed to find database snapshot file (snap: snapshot file doesn't exist)" }"#
        ]],
    );
    check(
        Exit::Code(2),
        &[
            "panic: freepages: failed to get all reachable pages (page 7: multiple references)",
            "",
            "goroutine 1 [running]:",
        ],
        expect![[
            r#"UnusableData { reason: "panic: freepages: failed to get all reachable pages (page 7: multiple references)" }"#
        ]],
    );
    check(
        Exit::Code(2),
        &[
            r#"{"level":"panic","msg":"failed to open database","path":"/d/member/snap/db","error":"invalid database"}"#,
        ],
        expect![[r#"UnusableData { reason: "failed to open database: invalid database" }"#]],
    );
    check(
        Exit::Code(2),
        &[
            r#"{"level":"panic","msg":"tocommit(9) is out of range [lastIndex(3)]. Was the raft log corrupted, truncated, or lost?"}"#,
        ],
        expect![[
            r#"UnusableData { reason: "tocommit(9) is out of range [lastIndex(3)]. Was the raft log corrupted, truncated, or lost?" }"#
        ]],
    );
}

#[test]
fn configuration_and_environment_faults_are_cannot_run() {
    check(
        Exit::Code(1),
        &[&fatal(
            "discovery failed",
            "cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs",
        )],
        expect![[
            r#"CannotRun { reason: "no peer answered its join: discovery failed: cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs" }"#
        ]],
    );
    check(
        Exit::Code(2),
        &["flag provided but not defined: -no-such-flag"],
        expect![[
            r#"CannotRun { reason: "an unknown flag: flag provided but not defined: -no-such-flag" }"#
        ]],
    );
    check(
        Exit::Code(1),
        &[&fatal(
            "failed to start etcd",
            "listen tcp 127.0.0.1:2379: bind: address already in use",
        )],
        expect![[
            r#"CannotRun { reason: "an address etcd listens on is in use: failed to start etcd: listen tcp 127.0.0.1:2379: bind: address already in use" }"#
        ]],
    );
    // A full disk surfaces inside a WAL error: the disk, not the data, is at fault.
    check(
        Exit::Code(1),
        &[&fatal(
            "failed to open WAL",
            "write /d/member/wal/0.tmp: no space left on device",
        )],
        expect![[
            r#"CannotRun { reason: "the disk is full: failed to open WAL: write /d/member/wal/0.tmp: no space left on device" }"#
        ]],
    );
    check(
        Exit::Code(1),
        &[&fatal(
            "failed to bootstrap",
            "cluster cannot be downgraded (current version: 3.4.23 is lower than determined cluster version: 3.5)",
        )],
        expect![[
            r#"CannotRun { reason: "the data was written by a newer etcd (downgrade refused): failed to bootstrap: cluster cannot be downgraded (current version: 3.4.23 is lower than determined cluster version: 3.5)" }"#
        ]],
    );
    check(
        Exit::SpawnFailed("No such file or directory (os error 2)".into()),
        &[],
        expect![[
            r#"CannotRun { reason: "cannot start etcd: No such file or directory (os error 2)" }"#
        ]],
    );
    check(
        Exit::Unresponsive(Duration::from_secs(30)),
        &[],
        expect![[
            r#"CannotRun { reason: "etcd ran but did not answer its health check for 30s; restarted" }"#
        ]],
    );
}

#[test]
fn anything_unknown_is_cannot_run_never_unusable_data() {
    check(
        Exit::Signal(9),
        &[r#"{"level":"info","msg":"serving client traffic"}"#],
        expect![[r#"CannotRun { reason: "etcd killed by signal 9: serving client traffic" }"#]],
    );
    check(
        Exit::Code(1),
        &[],
        expect![[r#"CannotRun { reason: "etcd exited with code 1 without a word" }"#]],
    );
    // A peer's stream breaking is a warning about the network, not about our data.
    check(
        Exit::Code(1),
        &[
            r#"{"level":"warn","msg":"lost TCP streaming connection with remote peer","error":"unexpected EOF"}"#,
            r#"{"level":"warn","msg":"failed to read WAL? no: a warning never counts","error":"crc mismatch"}"#,
            "\tgo.etcd.io/bbolt.(*DB).freepages(0xc000)",
            r#"{"level":"error","msg":"something else went wrong"}"#,
        ],
        expect![[r#"CannotRun { reason: "etcd exited with code 1: something else went wrong" }"#]],
    );
}

#[test]
fn long_lines_are_cut_at_a_character_boundary() {
    let long = format!("panic: invalid database {}", "é".repeat(400));
    let crash = classify(&Exit::Code(2), &[long]);
    assert!(crash.is_unusable_data());
    assert!(crash.reason().len() <= MAX_REASON + 3, "{}", crash.reason());
    assert!(crash.reason().ends_with("..."));
}

#[test]
fn data_is_unusable_only_after_enough_damaged_crashes_in_a_row() {
    let damaged = Crash::UnusableData {
        reason: "wal: crc mismatch".into(),
    };
    let flag = Crash::CannotRun {
        reason: "unknown flag".into(),
    };
    assert_eq!(
        verdict(&damaged, UNUSABLE_AFTER_FAILURES - 1),
        Verdict::CannotRun
    );
    assert_eq!(
        verdict(&damaged, UNUSABLE_AFTER_FAILURES),
        Verdict::DataUnusable
    );
    // The last crash decides what kind it is: a run of damage ended by another cause is not.
    assert_eq!(
        verdict(&flag, UNUSABLE_AFTER_FAILURES + 3),
        Verdict::CannotRun
    );
}
