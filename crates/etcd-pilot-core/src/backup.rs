//! Which backup to restore, which to verify next, and when the next one is due: pure functions
//! of what the backup store lists and the current time.
//!
//! A backup belongs to a lineage: the cluster that took it and every cluster restored from its
//! backups since. The store records the lineage of the cluster that writes to it; a backup
//! whose cluster is not in that lineage belongs to another cluster and is never chosen without
//! the operator's explicit override. This module does not own reading or writing the store,
//! nor restoring; the `etcd-pilot` crate does both.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::ClusterId;

/// What a restore drill said about a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verification {
    /// No drill has run on it yet.
    Unverified,
    /// A drill restored it and found the key count and hash recorded at backup time.
    Passed,
    /// A drill failed: the backup is never restored automatically.
    Failed {
        /// Why, for the operator.
        error: String,
    },
}

/// A backup as these choices see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSummary {
    /// Its id in the store (sortable by creation time).
    pub id: String,
    /// The cluster that took it.
    pub cluster_id: ClusterId,
    /// When it was taken.
    pub created: SystemTime,
    /// The etcd revision it holds (at least).
    pub revision: i64,
    /// What the last drill said.
    pub verification: Verification,
}

/// Why `id` cannot be a backup id, if it cannot. A backup id is its creation time in UTC with
/// milliseconds, `YYYYMMDDTHHMMSS.mmmZ` (the form `etcd-pilot` writes): ids come from the
/// store, which anyone with write access to it controls, and become object keys and folder
/// names, so nothing else (no `/`, `..`, NUL, absolute path, or empty id) is ever accepted.
pub fn check_backup_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    let shape_ok = bytes.len() == 20
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 => *b == b'T',
            15 => *b == b'.',
            19 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    if shape_ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a backup id (ids are creation times such as 20261130T010203.456Z)",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// What went wrong in a restore drill (or in the download of a restore), as far as it can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillFault {
    /// The object or the snapshot does not match the sha256 its manifest recorded, or does not
    /// decompress.
    Corrupt,
    /// The restore tool ran and rejected the snapshot (see [`restore_tool_rejected`]).
    RestoreRejected,
    /// The restored etcd holds another key count or `HashKV` than the manifest recorded.
    ContentDiffers,
    /// Anything else: the store, the local disk, a port, the drill's etcd not starting, the
    /// restore tool not running, credentials. Says nothing about the backup.
    Environment,
}

/// Whether a drill fault condemns the backup for good (`true`: recorded as failed, never
/// restored automatically) or leaves it unverified, to be drilled again later.
pub fn drill_fault_fails_the_backup(fault: DrillFault) -> bool {
    match fault {
        DrillFault::Corrupt | DrillFault::RestoreRejected | DrillFault::ContentDiffers => true,
        DrillFault::Environment => false,
    }
}

/// Whether a restore tool that exited with an error said the snapshot itself is bad (etcd's
/// integrity check or bbolt refusing the file), rather than something about this machine
/// (disk full, permissions, a missing library). When in doubt, the snapshot is not blamed:
/// an unverified backup is drilled again, a failed one never is.
pub fn restore_tool_rejected(stderr: &str) -> bool {
    let text = stderr.to_ascii_lowercase();
    const MACHINE: &[&str] = &[
        "no space left",
        "permission denied",
        "read-only file system",
        "too many open files",
        "cannot allocate memory",
        "disk quota exceeded",
        "input/output error",
        "no such file or directory",
        "file exists",
    ];
    const SNAPSHOT: &[&str] = &[
        "expected sha256",
        "snapshot missing hash",
        "integrity check failed",
        "invalid database",
        "file size too small",
        "version mismatch",
        "checksum error",
        "unexpected eof",
        "corrupt",
    ];
    !MACHINE.iter().any(|m| text.contains(m)) && SNAPSHOT.iter().any(|s| text.contains(s))
}

/// How long to wait before drilling a backup again after `attempts` drills that failed for
/// reasons outside it: `first`, doubling, at most 30 minutes (and never less than `first`).
pub fn drill_retry_after(attempts: u32, first: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(10);
    first
        .saturating_mul(factor)
        .min(Duration::from_secs(30 * 60))
        .max(first)
}

/// How a restore claim ended, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Its holder may be restoring.
    Open,
    /// The data is in place on the holder: that loss is over, and the others join the holder's
    /// cluster. (A later loss is keyed by the restored cluster, which records itself in the
    /// store once it answers.)
    Restored,
    /// An operator released it (its holder was gone): the next pilot claims anew.
    Released,
}

/// The newest restore claim after a loss, as the store shows it (see [`claim_step`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimView {
    /// Claims are numbered: each takeover, or claim after a release, creates the next one.
    pub generation: u64,
    /// The holder: a pilot's name and a nonce of its process, so a restarted pilot, or the
    /// operator's `restore` on the same node, is another holder.
    pub holder: String,
    /// How it ended, if it did.
    pub outcome: ClaimOutcome,
    /// How long this observer has seen the holder's heartbeat unchanged (measured on its own
    /// clock, so clock skew between pilots does not matter).
    pub unchanged_for: Duration,
}

/// What a pilot that wants to restore does about the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimStep {
    /// Create claim `generation` (a conditional create: only one pilot can).
    Create {
        /// The generation to create.
        generation: u64,
    },
    /// It holds the claim already (a retry after a failed attempt): go on.
    Held,
    /// Another holder restores, or restored: wait for (and join) its cluster.
    Wait {
        /// Who.
        holder: String,
        /// Whether it finished restoring.
        restored: bool,
    },
}

/// The next step about the restore claim `latest` (the highest generation; `None`: no claim
/// for this loss yet) for holder `me`. An open claim whose heartbeat stood still for
/// `timeout` belongs to a dead holder, and a released one to nobody: both are replaced by the
/// next generation. A restored claim is never replaced: that loss is over (only an operator's
/// release, once its holder is gone, reopens it). Never takes over a claim whose holder
/// heartbeats.
pub fn claim_step(latest: Option<&ClaimView>, me: &str, timeout: Duration) -> ClaimStep {
    match latest {
        None => ClaimStep::Create { generation: 1 },
        Some(claim) => match claim.outcome {
            ClaimOutcome::Restored => ClaimStep::Wait {
                holder: claim.holder.clone(),
                restored: true,
            },
            ClaimOutcome::Released => ClaimStep::Create {
                generation: claim.generation.saturating_add(1),
            },
            ClaimOutcome::Open if claim.holder == me => ClaimStep::Held,
            ClaimOutcome::Open if claim.unchanged_for >= timeout => ClaimStep::Create {
                generation: claim.generation.saturating_add(1),
            },
            ClaimOutcome::Open => ClaimStep::Wait {
                holder: claim.holder.clone(),
                restored: false,
            },
        },
    }
}

fn newest<'a>(backups: impl Iterator<Item = &'a BackupSummary>) -> Option<&'a BackupSummary> {
    backups.max_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)))
}

/// The backup an automatic restore uses: the newest one that passed a drill and belongs to
/// `lineage` (any cluster, when the store records no lineage). `None` when there is none.
pub fn restore_candidate<'a>(
    backups: &'a [BackupSummary],
    lineage: &[ClusterId],
) -> Option<&'a BackupSummary> {
    newest(backups.iter().filter(|b| {
        b.verification == Verification::Passed
            && (lineage.is_empty() || lineage.contains(&b.cluster_id))
    }))
}

/// Why an operator-chosen backup may not be restored, if it may not: it belongs to another
/// cluster than the store's lineage, or a drill failed on it. `force` overrides both.
pub fn refuse_restore(
    backup: &BackupSummary,
    lineage: &[ClusterId],
    force: bool,
) -> Option<String> {
    if force {
        return None;
    }
    if !lineage.is_empty() && !lineage.contains(&backup.cluster_id) {
        return Some(format!(
            "backup {} was taken by cluster {}, which is not this store's cluster or one it \
             descends from ({}); pass --force to restore it anyway",
            backup.id,
            backup.cluster_id,
            lineage
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Verification::Failed { error } = &backup.verification {
        return Some(format!(
            "backup {} failed verification ({error}); pass --force to restore it anyway",
            backup.id
        ));
    }
    None
}

/// The backup the next restore drill checks: the newest backup, if no drill has run on it.
/// Older unverified backups are skipped: proving the newest one is what restores need.
pub fn drill_target(backups: &[BackupSummary]) -> Option<&BackupSummary> {
    newest(backups.iter()).filter(|b| b.verification == Verification::Unverified)
}

/// Whether a scheduled backup is due: none yet, or the newest is `interval` old. A newest
/// backup dated in the future (a clock that moved back) makes one due too, so a wrong clock
/// cannot stop backups.
pub fn backup_due(newest: Option<SystemTime>, interval: Duration, now: SystemTime) -> bool {
    match newest {
        None => true,
        Some(created) => match now.duration_since(created) {
            Ok(age) => age >= interval,
            Err(_) => true,
        },
    }
}

/// The lineage to record for `current` given the one recorded in its data: unchanged when
/// it already ends with `current`, else extended with it (the data was restored from a
/// backup of the last cluster in `inherited`, or this is the first record).
pub fn extend_lineage(inherited: &[ClusterId], current: ClusterId) -> Vec<ClusterId> {
    let mut lineage = inherited.to_vec();
    if lineage.last() != Some(&current) {
        lineage.retain(|id| *id != current);
        lineage.push(current);
    }
    lineage
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;

    fn at(minutes: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_348_800 + minutes * 60)
    }

    /// `CLUSTER:MINUTE:STATE` words, STATE one of `u` (unverified), `p` (passed), `f` (failed).
    fn backups(spec: &str) -> Vec<BackupSummary> {
        spec.split_whitespace()
            .map(|word| {
                let parts: Vec<&str> = word.split(':').collect();
                let [cluster, minute, state] = parts.as_slice() else {
                    panic!("bad word {word:?}");
                };
                BackupSummary {
                    id: format!("{cluster}-{minute}"),
                    cluster_id: ClusterId(u64::from_str_radix(cluster, 16).unwrap()),
                    created: at(minute.parse().unwrap()),
                    revision: minute.parse().unwrap(),
                    verification: match *state {
                        "u" => Verification::Unverified,
                        "p" => Verification::Passed,
                        "f" => Verification::Failed {
                            error: "sha256 mismatch".into(),
                        },
                        _ => panic!("bad state in {word:?}"),
                    },
                }
            })
            .collect()
    }

    fn lineage(spec: &str) -> Vec<ClusterId> {
        spec.split_whitespace()
            .map(|c| ClusterId(u64::from_str_radix(c, 16).unwrap()))
            .collect()
    }

    #[track_caller]
    fn check_candidate(spec: &str, line: &str, expect: Expect) {
        let list = backups(spec);
        let chosen = restore_candidate(&list, &lineage(line)).map_or("none", |b| b.id.as_str());
        expect.assert_eq(chosen);
    }

    #[test]
    fn restore_uses_the_newest_passed_backup_of_the_lineage() {
        check_candidate("a:1:p a:2:p a:3:u", "a", expect!["a-2"]);
        // A failed drill (a corrupt backup) is skipped for the previous verified one.
        check_candidate("a:1:p a:2:f", "a", expect!["a-1"]);
        check_candidate("a:1:u a:2:f", "a", expect!["none"]);
        check_candidate("", "a", expect!["none"]);
        // Another cluster's backup is never chosen, however new.
        check_candidate("a:1:p b:9:p", "a", expect!["a-1"]);
        check_candidate("b:9:p", "a", expect!["none"]);
        // A restored cluster (b, from a) may use its ancestor's backups.
        check_candidate("a:1:p b:9:u", "a b", expect!["a-1"]);
        check_candidate("a:1:p b:9:p", "a b", expect!["b-9"]);
        // No lineage recorded: any verified backup.
        check_candidate("a:1:p b:9:p", "", expect!["b-9"]);
    }

    #[track_caller]
    fn check_refusal(word: &str, line: &str, force: bool, expect: Expect) {
        let list = backups(word);
        let refusal = refuse_restore(&list[0], &lineage(line), force);
        expect.assert_eq(refusal.as_deref().unwrap_or("allowed"));
    }

    #[test]
    fn operator_restores_are_refused_for_foreign_or_failed_backups_unless_forced() {
        check_refusal("a:1:p", "a", false, expect!["allowed"]);
        check_refusal("a:1:u", "a", false, expect!["allowed"]);
        check_refusal("a:1:u", "", false, expect!["allowed"]);
        check_refusal(
            "b:1:p",
            "a",
            false,
            expect![
                "backup b-1 was taken by cluster b, which is not this store's cluster or one it descends from (a); pass --force to restore it anyway"
            ],
        );
        check_refusal("b:1:p", "a", true, expect!["allowed"]);
        check_refusal(
            "a:1:f",
            "a",
            false,
            expect![
                "backup a-1 failed verification (sha256 mismatch); pass --force to restore it anyway"
            ],
        );
        check_refusal("a:1:f", "a", true, expect!["allowed"]);
    }

    #[test]
    fn drills_check_the_newest_backup_once() {
        let target = |spec: &str| drill_target(&backups(spec)).map(|b| b.id.clone());
        assert_eq!(target("a:1:p a:2:u"), Some("a-2".into()));
        assert_eq!(target("a:1:u a:2:p"), None);
        assert_eq!(target("a:1:u a:2:f"), None);
        assert_eq!(target(""), None);
    }

    #[test]
    fn backup_ids_are_creation_times_and_nothing_else() {
        assert_eq!(check_backup_id("20261130T010203.456Z"), Ok(()));
        for bad in [
            "",
            "x/../../etcd",
            "../20261130T010203.456Z",
            "/etc/passwd",
            "20261130T010203.456Z/..",
            "20261130T010203.456Z\0",
            "20261130T010203.456",
            "20261130T010203.45aZ",
            "2026113OT010203.456Z",
            "20261130t010203.456Z",
            "20261130T010203.4567Z",
            "..",
            ".",
        ] {
            assert!(check_backup_id(bad).is_err(), "{bad:?} accepted");
        }
        expect![[
            r#""../x\0" is not a backup id (ids are creation times such as 20261130T010203.456Z)"#
        ]]
        .assert_eq(&check_backup_id("../x\0").unwrap_err());
    }

    #[test]
    fn only_faults_of_the_backup_itself_fail_it() {
        let table: Vec<String> = [
            DrillFault::Corrupt,
            DrillFault::RestoreRejected,
            DrillFault::ContentDiffers,
            DrillFault::Environment,
        ]
        .iter()
        .map(|f| format!("{f:?}: {}", drill_fault_fails_the_backup(*f)))
        .collect();
        expect![[r#"
            [
                "Corrupt: true",
                "RestoreRejected: true",
                "ContentDiffers: true",
                "Environment: false",
            ]
        "#]]
        .assert_debug_eq(&table);
    }

    #[test]
    fn the_restore_tool_blames_the_snapshot_only_in_its_own_words() {
        let rejected = [
            "Error: expected sha256 [1 2], got [3 4]",
            "Error: snapshot missing hash but --skip-hash-check=false",
            "panic: invalid database",
            "Error: file size too small",
            "unexpected EOF",
        ];
        for text in rejected {
            assert!(restore_tool_rejected(text), "{text}");
        }
        let not_rejected = [
            "",
            "Error: open /d/restore/etcd/member/snap/db: no space left on device",
            "Error: mkdir /d: permission denied",
            "error while loading shared libraries: libc.so.6",
            "Error: unknown flag: --bump-revision",
            "Error: data-dir \"/d/etcd\" exists",
            // A full disk while checking the hash is the disk's fault.
            "Error: expected sha256: write /tmp/x: no space left on device",
        ];
        for text in not_rejected {
            assert!(!restore_tool_rejected(text), "{text}");
        }
    }

    #[test]
    fn drills_are_retried_after_a_minute_doubling_to_half_an_hour() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (0..9)
            .map(|n| drill_retry_after(n, minute).as_secs() / 60)
            .collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
        let second = Duration::from_secs(1);
        assert_eq!(drill_retry_after(2, second), Duration::from_secs(2));
        assert_eq!(drill_retry_after(40, second), Duration::from_secs(1024));
        let hour = Duration::from_secs(3600);
        assert_eq!(drill_retry_after(3, hour), hour);
    }

    #[test]
    fn restore_claims_expire_are_released_and_a_restored_one_is_final() {
        use ClaimOutcome::{Open, Released, Restored};
        let timeout = Duration::from_secs(120);
        let claim = |holder: &str, outcome: ClaimOutcome, secs: u64| ClaimView {
            generation: 4,
            holder: holder.into(),
            outcome,
            unchanged_for: Duration::from_secs(secs),
        };
        let step = |c: Option<ClaimView>| format!("{:?}", claim_step(c.as_ref(), "m2#b", timeout));
        let table = [
            step(None),
            step(Some(claim("m1#a", Open, 10))),
            step(Some(claim("m1#a", Open, 119))),
            step(Some(claim("m1#a", Open, 120))),
            step(Some(claim("m1#a", Restored, 9999))),
            step(Some(claim("m1#a", Released, 0))),
            step(Some(claim("m2#b", Open, 500))),
            // The same node's earlier process (or the operator's restore there) is another holder.
            step(Some(claim("m2#a", Open, 10))),
            step(Some(claim("m2#b", Restored, 0))),
        ];
        expect![[r#"
            [
                "Create { generation: 1 }",
                "Wait { holder: \"m1#a\", restored: false }",
                "Wait { holder: \"m1#a\", restored: false }",
                "Create { generation: 5 }",
                "Wait { holder: \"m1#a\", restored: true }",
                "Create { generation: 5 }",
                "Held",
                "Wait { holder: \"m2#a\", restored: false }",
                "Wait { holder: \"m2#b\", restored: true }",
            ]
        "#]]
        .assert_debug_eq(&table);
    }

    #[test]
    fn backups_are_due_after_the_interval_or_on_a_clock_that_moved_back() {
        let interval = Duration::from_secs(30 * 60);
        assert!(backup_due(None, interval, at(0)));
        assert!(!backup_due(Some(at(0)), interval, at(29)));
        assert!(backup_due(Some(at(0)), interval, at(30)));
        assert!(backup_due(Some(at(10)), interval, at(0)));
    }

    #[test]
    fn lineage_grows_once_per_cluster() {
        let ids = |l: &[ClusterId]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(ids(&extend_lineage(&[], ClusterId(0xa))), ["a"]);
        assert_eq!(ids(&extend_lineage(&lineage("a"), ClusterId(0xa))), ["a"]);
        assert_eq!(
            ids(&extend_lineage(&lineage("a"), ClusterId(0xb))),
            ["a", "b"]
        );
        assert_eq!(
            ids(&extend_lineage(&lineage("a b"), ClusterId(0xa))),
            ["b", "a"]
        );
    }

    fn arb_backups() -> impl Strategy<Value = Vec<BackupSummary>> {
        prop::collection::vec((0u64..3, 0u64..500, 0u8..3), 0..12).prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (cluster, minute, state))| BackupSummary {
                    id: format!("{i}"),
                    cluster_id: ClusterId(cluster),
                    created: at(minute),
                    revision: 1,
                    verification: match state {
                        0 => Verification::Unverified,
                        1 => Verification::Passed,
                        _ => Verification::Failed { error: "x".into() },
                    },
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn an_accepted_backup_id_is_one_plain_path_component(id in "\\PC{0,24}|[0-9T.Z/]{18,22}") {
            if check_backup_id(&id).is_ok() {
                prop_assert!(!id.contains('/') && !id.contains('\0') && !id.contains(".."));
                prop_assert!(id != "." && !id.is_empty());
                let path = std::path::Path::new(&id);
                prop_assert_eq!(path.components().count(), 1);
                prop_assert!(matches!(
                    path.components().next(),
                    Some(std::path::Component::Normal(_))
                ));
            }
        }
    }

    proptest! {
        /// Pilots contend for claims in a store whose creates are conditional: whatever the
        /// interleaving of steps, heartbeats, deaths, restores and releases, no live holder's
        /// open claim is ever replaced, and once a claim is restored no new claim is ever
        /// created (one restore per loss) unless an operator released it.
        #[test]
        fn one_live_holder_at_a_time_and_one_restore_per_loss(
            events in prop::collection::vec((0usize..3, 0u8..5, 0u64..200), 1..60),
        ) {
            let timeout = Duration::from_secs(120);
            let mut claims: Vec<String> = Vec::new();
            let mut unchanged = Duration::ZERO;
            let mut outcome = ClaimOutcome::Open;
            let mut dead = [false; 3];
            let index = |holder: &str| holder[1..2].parse::<usize>().unwrap();
            for (who, action, secs) in events {
                let me = format!("m{who}#n");
                match action {
                    // Time passes; a live holder heartbeats.
                    0 => {
                        if claims.last().is_some_and(|h| !dead[index(h)]) {
                            unchanged = Duration::ZERO;
                        } else {
                            unchanged += Duration::from_secs(secs);
                        }
                    }
                    // A pilot steps.
                    1 | 2 if !dead[who] => {
                        let latest = claims.last().map(|holder| ClaimView {
                            generation: claims.len() as u64,
                            holder: holder.clone(),
                            outcome,
                            unchanged_for: unchanged,
                        });
                        if let ClaimStep::Create { generation } =
                            claim_step(latest.as_ref(), &me, timeout)
                            && generation == claims.len() as u64 + 1
                        {
                            if let Some(previous) = claims.last() {
                                prop_assert!(
                                    outcome != ClaimOutcome::Restored,
                                    "a second restore of the same loss"
                                );
                                prop_assert!(
                                    outcome == ClaimOutcome::Released || dead[index(previous)],
                                    "took over live holder {}'s claim", previous
                                );
                            }
                            claims.push(me.clone());
                            unchanged = Duration::ZERO;
                            outcome = ClaimOutcome::Open;
                        }
                    }
                    // The holder restores.
                    3 if claims.last() == Some(&me) && !dead[who] => {
                        outcome = ClaimOutcome::Restored;
                    }
                    // An operator releases the claim of a dead holder.
                    4 if claims.last().is_some_and(|h| dead[index(h)]) && secs % 2 == 0 => {
                        outcome = ClaimOutcome::Released;
                    }
                    3 | 4 => dead[who] = true,
                    _ => {}
                }
            }
        }
    }

    proptest! {
        #[test]
        fn the_candidate_passed_belongs_to_the_lineage_and_is_the_newest_such(
            list in arb_backups(),
            line in prop::collection::vec(0u64..3, 0..3),
        ) {
            let line: Vec<ClusterId> = line.into_iter().map(ClusterId).collect();
            if let Some(chosen) = restore_candidate(&list, &line) {
                prop_assert_eq!(&chosen.verification, &Verification::Passed);
                prop_assert!(line.is_empty() || line.contains(&chosen.cluster_id));
                prop_assert!(refuse_restore(chosen, &line, false).is_none());
                for other in list.iter().filter(|b| b.verification == Verification::Passed
                    && (line.is_empty() || line.contains(&b.cluster_id))) {
                    prop_assert!(other.created <= chosen.created);
                }
            } else {
                prop_assert!(!list.iter().any(|b| b.verification == Verification::Passed
                    && (line.is_empty() || line.contains(&b.cluster_id))));
            }
        }
    }
}
