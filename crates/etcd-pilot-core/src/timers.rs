//! How long each member has been in a state the plan times: absent from discovery (removal
//! waits `remove_after`), pending (a learner, removed after the learner timeout) and not
//! healthy (its age, for the conditions). Pure bookkeeping: the caller passes the time as a
//! value (a monotonic offset) and what it saw.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::MemberId;

/// What one observation saw of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The member.
    pub id: MemberId,
    /// Discovery does not list it.
    pub unlisted: bool,
    /// It is a learner.
    pub pending: bool,
    /// It does not answer healthy as itself.
    pub down: bool,
}

/// How long each state has lasted, as of the observation; `None` while not in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ages {
    /// Absent from discovery for this long.
    pub unlisted_for: Option<Duration>,
    /// A learner for this long.
    pub pending_for: Option<Duration>,
    /// Not healthy for this long.
    pub down_for: Option<Duration>,
}

/// Since when each member has been in each state.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    unlisted: BTreeMap<MemberId, Duration>,
    pending: BTreeMap<MemberId, Duration>,
    down: BTreeMap<MemberId, Duration>,
}

impl Timers {
    /// Records what was seen at `now` (a monotonic offset) and returns each member's ages, in
    /// the order given. A state left resets its timer; a member no longer seen is forgotten.
    pub fn observe(&mut self, now: Duration, seen: &[Seen]) -> Vec<Ages> {
        let ages = seen
            .iter()
            .map(|s| Ages {
                unlisted_for: track(&mut self.unlisted, s.id, s.unlisted, now),
                pending_for: track(&mut self.pending, s.id, s.pending, now),
                down_for: track(&mut self.down, s.id, s.down, now),
            })
            .collect();
        for map in [&mut self.unlisted, &mut self.pending, &mut self.down] {
            map.retain(|id, _| seen.iter().any(|s| s.id == *id));
        }
        ages
    }
}

fn track(
    since: &mut BTreeMap<MemberId, Duration>,
    id: MemberId,
    now_in: bool,
    now: Duration,
) -> Option<Duration> {
    if now_in {
        Some(now.saturating_sub(*since.entry(id).or_insert(now)))
    } else {
        since.remove(&id);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: u64, unlisted: bool, pending: bool, down: bool) -> Seen {
        Seen {
            id: MemberId(id),
            unlisted,
            pending,
            down,
        }
    }

    #[test]
    fn each_state_is_timed_from_its_first_sighting_and_reset_when_left() {
        let mut timers = Timers::default();
        let at = Duration::from_secs;
        // t=0: 1 unlisted and down, 2 a learner.
        let ages = timers.observe(
            at(0),
            &[seen(1, true, false, true), seen(2, false, true, false)],
        );
        assert_eq!(ages[0].unlisted_for, Some(at(0)));
        assert_eq!(ages[1].pending_for, Some(at(0)));
        // t=10: still so.
        let ages = timers.observe(
            at(10),
            &[seen(1, true, false, true), seen(2, false, true, false)],
        );
        assert_eq!(
            ages[0],
            Ages {
                unlisted_for: Some(at(10)),
                pending_for: None,
                down_for: Some(at(10))
            }
        );
        assert_eq!(ages[1].pending_for, Some(at(10)));
        // t=12: 1 answers again (still unlisted); 2 promoted.
        let ages = timers.observe(
            at(12),
            &[seen(1, true, false, false), seen(2, false, false, false)],
        );
        assert_eq!(ages[0].down_for, None);
        assert_eq!(ages[0].unlisted_for, Some(at(12)));
        assert_eq!(ages[1], Ages::default());
        // t=20: 1 down again: timed afresh.
        let ages = timers.observe(at(20), &[seen(1, true, false, true)]);
        assert_eq!(ages[0].down_for, Some(at(0)));
        // 2 left the member list and came back (same id): forgotten, timed afresh.
        let ages = timers.observe(at(30), &[seen(2, false, true, false)]);
        assert_eq!(ages[0].pending_for, Some(at(0)));
        let ages = timers.observe(at(31), &[seen(1, true, false, true)]);
        assert_eq!(ages[0].unlisted_for, Some(at(0)), "1 was forgotten at t=30");
    }
}
