//! Backup retention: which backups may be deleted, as a pure function of the backups, the
//! policy and the current time.
//!
//! Everything from the last hour is kept, then the newest backup of each hour for a day, of
//! each day for a week, and of each week for a month (all configurable). Buckets are fixed in
//! wall-clock time (UTC hours, days, and weeks from Monday 00:00 UTC), so a backup chosen for
//! a bucket stays chosen as time passes. The newest backup and the newest verified backup are never
//! deleted, nor is anything dated in the future (a clock that jumped). It does not own
//! listing or deleting backups; the caller does both.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A backup as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupMeta {
    /// The backup's key in the store.
    pub key: String,
    /// When it was taken.
    pub created: SystemTime,
    /// Whether a restore drill has proved it restores.
    pub verified: bool,
}

/// How long each tier reaches back from now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep every backup younger than this.
    pub keep_all: Duration,
    /// Keep the newest backup of each hour younger than this.
    pub hourly: Duration,
    /// Keep the newest backup of each day younger than this.
    pub daily: Duration,
    /// Keep the newest backup of each week younger than this.
    pub weekly: Duration,
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

fn epoch_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The keys of the backups that may be deleted now, oldest first.
pub fn expired(backups: &[BackupMeta], policy: &RetentionPolicy, now: SystemTime) -> Vec<String> {
    let mut keep: BTreeSet<&str> = BTreeSet::new();
    let age = |b: &BackupMeta| now.duration_since(b.created).ok();

    for backup in backups {
        match age(backup) {
            // Dated in the future: the clock moved; never delete on a clock we cannot trust.
            None => {
                keep.insert(&backup.key);
            }
            Some(age) if age < policy.keep_all => {
                keep.insert(&backup.key);
            }
            Some(_) => {}
        }
    }
    // The epoch was a Thursday: shifting by three days makes weeks start on Monday.
    for (window, bucket, shift) in [
        (policy.hourly, HOUR, 0),
        (policy.daily, DAY, 0),
        (policy.weekly, WEEK, 3 * DAY),
    ] {
        let mut newest_per_bucket: std::collections::BTreeMap<u64, &BackupMeta> =
            std::collections::BTreeMap::new();
        for backup in backups
            .iter()
            .filter(|b| age(b).is_some_and(|a| a < window))
        {
            let slot = (epoch_secs(backup.created) + shift) / bucket;
            let entry = newest_per_bucket.entry(slot).or_insert(backup);
            if (backup.created, &backup.key) > (entry.created, &entry.key) {
                *entry = backup;
            }
        }
        keep.extend(newest_per_bucket.values().map(|b| b.key.as_str()));
    }
    let newest = |only_verified: bool| {
        backups
            .iter()
            .filter(|b| b.verified || !only_verified)
            .max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)))
    };
    keep.extend(newest(false).map(|b| b.key.as_str()));
    keep.extend(newest(true).map(|b| b.key.as_str()));

    let mut gone: Vec<&BackupMeta> = backups
        .iter()
        .filter(|b| !keep.contains(b.key.as_str()))
        .collect();
    gone.sort_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
    gone.into_iter().map(|b| b.key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use proptest::prelude::*;

    use super::*;

    /// "Now" in the tests: 2026-11-22T12:00:00Z, a Sunday at noon.
    /// The tiers of the shell's defaults (1h, 1 day, 7 days, 31 days).
    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            keep_all: Duration::from_secs(HOUR),
            hourly: Duration::from_secs(DAY),
            daily: Duration::from_secs(7 * DAY),
            weekly: Duration::from_secs(31 * DAY),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_348_800)
    }

    /// `AGE[v]` with AGE like `30m`, `2h`, `3d`, `2w` (ago); `v` marks a verified backup.
    fn backups(spec: &str) -> Vec<BackupMeta> {
        spec.split_whitespace()
            .map(|word| {
                let verified = word.ends_with('v');
                let age = word.trim_end_matches('v');
                let (number, unit) = age.split_at(age.len() - 1);
                let n: u64 = number.parse().unwrap();
                let secs = n * match unit {
                    "m" => 60,
                    "h" => HOUR,
                    "d" => DAY,
                    "w" => WEEK,
                    _ => panic!("bad unit in {word:?}"),
                };
                BackupMeta {
                    key: age.to_owned(),
                    created: now() - Duration::from_secs(secs),
                    verified,
                }
            })
            .collect()
    }

    #[track_caller]
    fn check(spec: &str, expect: Expect) {
        let gone = expired(&backups(spec), &policy(), now());
        expect.assert_eq(&gone.join(" "));
    }

    #[test]
    fn everything_from_the_last_hour_is_kept() {
        check("1m 10m 20m 30m 59m", expect![[""]]);
    }

    #[test]
    fn one_per_hour_is_kept_for_a_day() {
        // 61m and 65m share the 10:00 hour with 90m; the newest of them (61m) stays. 25h is
        // past the hourly tier and yesterday's newest (23h) stands for its day.
        check("61m 65m 90m 3h 23h 25h", expect!["25h 90m 65m"]);
    }

    #[test]
    fn one_per_day_for_a_week_and_one_per_week_for_a_month() {
        // Weeks start on Monday: 8d (Saturday) stands for the week of 9d and 10d.
        check(
            "1m 2d 50h 3d 6d 8d 9d 10d 20d 40d",
            expect!["40d 10d 9d 50h"],
        );
    }

    #[test]
    fn the_newest_verified_backup_is_never_deleted() {
        check("1m 2d 3d 40dv 50d", expect!["50d"]);
    }

    #[test]
    fn the_newest_backup_survives_even_when_backups_stopped_long_ago() {
        check("60d 70d 80d", expect!["80d 70d"]);
    }

    #[test]
    fn backups_from_the_future_are_kept() {
        let mut list = backups("2d 3d");
        list.push(BackupMeta {
            key: "future".into(),
            created: now() + Duration::from_secs(3600),
            verified: false,
        });
        assert!(!expired(&list, &policy(), now()).contains(&"future".to_owned()));
    }

    fn arb_backups() -> impl Strategy<Value = Vec<BackupMeta>> {
        prop::collection::vec((0..60 * DAY, any::<bool>()), 0..60).prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (age, verified))| BackupMeta {
                    key: format!("b{i}"),
                    created: now() - Duration::from_secs(age),
                    verified,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_newest_and_the_newest_verified_always_survive(list in arb_backups()) {
            let gone = expired(&list, &policy(), now());
            let newest = list.iter().max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
            let newest_verified = list.iter().filter(|b| b.verified)
                .max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)));
            for keep in [newest, newest_verified].into_iter().flatten() {
                prop_assert!(!gone.contains(&keep.key), "{} deleted", keep.key);
            }
        }

        #[test]
        fn nothing_from_the_last_hour_is_deleted(list in arb_backups()) {
            let gone = expired(&list, &policy(), now());
            for backup in &list {
                if now().duration_since(backup.created).unwrap() < Duration::from_secs(HOUR) {
                    prop_assert!(!gone.contains(&backup.key));
                }
            }
        }

        #[test]
        fn applying_retention_twice_deletes_nothing_more(list in arb_backups()) {
            let gone = expired(&list, &policy(), now());
            let kept: Vec<BackupMeta> = list.into_iter().filter(|b| !gone.contains(&b.key)).collect();
            prop_assert!(expired(&kept, &policy(), now()).is_empty());
        }
    }
}
