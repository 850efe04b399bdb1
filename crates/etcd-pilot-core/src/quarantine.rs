//! Which quarantined copies of etcd data to let go: data set aside (another member's, another
//! cluster's, removed, unusable) is kept for an operator, but a loop (a learner that keeps
//! timing out, a node that keeps rejoining) on a multi-GiB database must not fill the disk.
//!
//! The shell lists `quarantine/` and deletes what this returns; it does not own how folders
//! are named or measured.

/// One quarantined copy, as the shell measured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// Its folder name; names sort in the order the copies were made.
    pub name: String,
    /// Bytes on disk.
    pub bytes: u64,
}

/// The copies to delete, oldest first, so that at most `keep` remain and together they take
/// at most `max_bytes`. The newest copy is always kept, whatever its size: it is the one an
/// operator is most likely to need.
pub fn to_delete(copies: &[Quarantined], keep: usize, max_bytes: u64) -> Vec<String> {
    let mut sorted: Vec<&Quarantined> = copies.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut kept_bytes: u64 = 0;
    let mut kept = 0usize;
    let mut deleted = Vec::new();
    // Newest first: keep while both limits allow (the newest always).
    for (i, copy) in sorted.iter().rev().enumerate() {
        let fits = kept < keep && kept_bytes.saturating_add(copy.bytes) <= max_bytes;
        if i == 0 || (fits && deleted.is_empty()) {
            kept += 1;
            kept_bytes = kept_bytes.saturating_add(copy.bytes);
        } else {
            deleted.push(copy.name.clone());
        }
    }
    deleted.reverse();
    deleted
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn copies(spec: &[(&str, u64)]) -> Vec<Quarantined> {
        spec.iter()
            .map(|(name, bytes)| Quarantined {
                name: (*name).to_owned(),
                bytes: *bytes,
            })
            .collect()
    }

    #[test]
    fn the_newest_copies_are_kept_within_both_limits() {
        let list = copies(&[("t1", 10), ("t2", 10), ("t3", 10), ("t4", 10)]);
        assert_eq!(to_delete(&list, 3, 100), ["t1"]);
        assert_eq!(to_delete(&list, 5, 100), Vec::<String>::new());
        assert_eq!(to_delete(&list, 3, 25), ["t1", "t2"]);
        // The newest stays even alone over the limit, and even with keep = 0.
        assert_eq!(to_delete(&list, 3, 5), ["t1", "t2", "t3"]);
        assert_eq!(to_delete(&list, 0, 100), ["t1", "t2", "t3"]);
        // An old big copy goes, and everything older than it too (oldest first).
        let list = copies(&[("t1", 1), ("t2", 90), ("t3", 5), ("t4", 5)]);
        assert_eq!(to_delete(&list, 3, 50), ["t1", "t2"]);
        assert!(to_delete(&[], 3, 10).is_empty());
    }

    proptest! {
        #[test]
        fn deletions_are_the_oldest_and_the_rest_fit(
            sizes in prop::collection::vec(0u64..100, 0..12),
            keep in 0usize..5,
            max_bytes in 0u64..400,
        ) {
            let list: Vec<Quarantined> = sizes
                .iter()
                .enumerate()
                .map(|(i, bytes)| Quarantined { name: format!("t{i:02}"), bytes: *bytes })
                .collect();
            let deleted = to_delete(&list, keep, max_bytes);
            let kept: Vec<&Quarantined> =
                list.iter().filter(|c| !deleted.contains(&c.name)).collect();
            if !list.is_empty() {
                // The newest is kept.
                prop_assert_eq!(&kept.last().unwrap().name, &list.last().unwrap().name);
                // Every deleted copy is older than every kept one.
                let newest_deleted = deleted.iter().max();
                let oldest_kept = kept.iter().map(|c| &c.name).min();
                if let (Some(d), Some(k)) = (newest_deleted, oldest_kept) {
                    prop_assert!(d < k);
                }
                // Within the limits, unless only the newest is left.
                if kept.len() > 1 {
                    prop_assert!(kept.len() <= keep);
                    prop_assert!(kept.iter().map(|c| c.bytes).sum::<u64>() <= max_bytes);
                }
                // Nothing deleted that the limits did not demand: one more would not fit.
                if let Some(d) = deleted.last() {
                    let next = list.iter().find(|c| &c.name == d).unwrap();
                    let total: u64 = kept.iter().map(|c| c.bytes).sum::<u64>() + next.bytes;
                    prop_assert!(kept.len() + 1 > keep || total > max_bytes);
                }
            } else {
                prop_assert!(deleted.is_empty());
            }
        }
    }
}
