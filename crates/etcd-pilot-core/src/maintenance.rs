//! Day-2 maintenance decisions. Compaction: the revision the coordinator compacts to,
//! keeping `keep_revisions` revisions or `keep_for` of history, whichever keeps more, from
//! the revisions it has seen over time (`compaction_target`, with `remember` keeping those
//! samples small). Nothing is compacted while the history it would drop cannot be dated:
//! a coordinator that has not been in the role for `keep_for` compacts nothing by time.

/// How much history compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// At least this many of the newest revisions stay.
    pub keep_revisions: i64,
    /// Every revision written within this many seconds stays.
    pub keep_for_secs: u64,
}

/// The cluster's revision, seen at a time (seconds on the observer's monotonic clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevisionSample {
    pub at_secs: u64,
    pub revision: i64,
}

/// How far apart kept samples are: the age of the history kept is known to this precision.
pub const SAMPLE_EVERY_SECS: u64 = 10;

/// The revision to compact to (etcd drops every revision below it), or `None`: nothing to
/// compact. With `current` the cluster's revision now, `samples` the revisions seen (oldest
/// first), `compacted` the revision compacted to last (0: never), and `hold` a revision no
/// compaction may pass (a backup reading it), if any.
///
/// The target keeps at least `keep_revisions` revisions and everything written within
/// `keep_for_secs`: it is at most `current - keep_revisions`, and at most the revision seen
/// `keep_for_secs` ago or earlier (with no sample that old, nothing is compacted).
pub fn compaction_target(
    policy: CompactionPolicy,
    now_secs: u64,
    current: i64,
    samples: &[RevisionSample],
    compacted: i64,
    hold: Option<i64>,
) -> Option<i64> {
    let by_count = current.saturating_sub(policy.keep_revisions.max(1));
    let horizon = now_secs.checked_sub(policy.keep_for_secs)?;
    let by_time = samples
        .iter()
        .filter(|s| s.at_secs <= horizon)
        .map(|s| s.revision)
        .max()?;
    let mut target = by_count.min(by_time);
    if let Some(hold) = hold {
        target = target.min(hold);
    }
    (target > compacted && target > 1).then_some(target)
}

/// `samples` with `sample` added: at most one per [`SAMPLE_EVERY_SECS`], and of those older
/// than `keep_for_secs`, only the newest (the one a compaction by time uses).
pub fn remember(samples: &mut Vec<RevisionSample>, sample: RevisionSample, keep_for_secs: u64) {
    if samples
        .last()
        .is_some_and(|last| sample.at_secs < last.at_secs + SAMPLE_EVERY_SECS)
    {
        return;
    }
    samples.push(sample);
    if let Some(horizon) = sample.at_secs.checked_sub(keep_for_secs) {
        let old = samples.iter().filter(|s| s.at_secs <= horizon).count();
        if old > 1 {
            samples.drain(..old - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const POLICY: CompactionPolicy = CompactionPolicy {
        keep_revisions: 100,
        keep_for_secs: 3600,
    };

    fn samples(pairs: &[(u64, i64)]) -> Vec<RevisionSample> {
        pairs
            .iter()
            .map(|&(at_secs, revision)| RevisionSample { at_secs, revision })
            .collect()
    }

    #[test]
    fn compaction_keeps_the_count_or_the_time_whichever_keeps_more() {
        let seen = samples(&[(0, 50), (1800, 400), (3600, 1000)]);
        // An hour in: the revision seen an hour ago (50) keeps more than the count (900).
        assert_eq!(
            compaction_target(POLICY, 3600, 1000, &seen, 0, None),
            Some(50)
        );
        // Half an hour later: the revision seen at 1800 s is an hour old.
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 50, None),
            Some(400)
        );
        // Little written: the count keeps more.
        assert_eq!(
            compaction_target(POLICY, 5400, 450, &seen, 0, None),
            Some(350)
        );
        // Not an hour of samples yet: nothing can be dated, nothing compacted.
        assert_eq!(compaction_target(POLICY, 1800, 1000, &seen, 0, None), None);
        // Already compacted that far, or a backup holds it back.
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 400, None),
            None
        );
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 0, Some(300)),
            Some(300)
        );
        assert_eq!(
            compaction_target(POLICY, 5400, 1200, &seen, 300, Some(300)),
            None
        );
        // A young cluster: nothing below revision 2.
        assert_eq!(
            compaction_target(POLICY, 9000, 101, &samples(&[(0, 1)]), 0, None),
            None
        );
    }

    #[test]
    fn samples_stay_few() {
        let mut kept = Vec::new();
        for at in 0..20_000u64 {
            remember(
                &mut kept,
                RevisionSample {
                    at_secs: at,
                    revision: i64::try_from(at).unwrap(),
                },
                3600,
            );
        }
        assert!(
            kept.len() <= 3600 / SAMPLE_EVERY_SECS as usize + 2,
            "{}",
            kept.len()
        );
        // The newest sample an hour old or older is kept, so compaction by time still works.
        assert!(kept.iter().any(|s| s.at_secs <= 20_000 - 3600));
    }

    proptest! {
        /// Whatever was seen, the target keeps `keep_revisions` revisions and every revision
        /// written within `keep_for` (any revision seen later than the horizon is above it),
        /// never passes a hold, and only moves forward.
        #[test]
        fn compaction_never_drops_what_the_policy_keeps(
            steps in prop::collection::vec((1u64..600, 0i64..500), 1..60),
            keep_revisions in 1i64..2000,
            keep_for_secs in 1u64..7200,
            hold in prop::option::of(0i64..20_000),
        ) {
            let policy = CompactionPolicy { keep_revisions, keep_for_secs };
            let (mut now, mut current, mut compacted) = (0u64, 1i64, 0i64);
            let mut seen = Vec::new();
            let mut all = Vec::new();
            for (dt, writes) in steps {
                now += dt;
                current += writes;
                let sample = RevisionSample { at_secs: now, revision: current };
                all.push(sample);
                remember(&mut seen, sample, keep_for_secs);
                if let Some(target) = compaction_target(policy, now, current, &seen, compacted, hold) {
                    prop_assert!(target > compacted);
                    prop_assert!(target <= current - keep_revisions);
                    if let Some(hold) = hold {
                        prop_assert!(target <= hold);
                    }
                    // Every revision current within keep_for is at or above the target.
                    for s in all.iter().filter(|s| s.at_secs + keep_for_secs > now) {
                        prop_assert!(s.revision >= target, "{s:?} dropped by {target}");
                    }
                    compacted = target;
                }
            }
        }
    }
}
