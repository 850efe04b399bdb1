//! The restart policy for the etcd child, as a state machine.
//!
//! [`step`] takes the current [`State`], an [`Event`] and a jitter sample, and returns the
//! next state and the [`Command`] the supervisor carries out. Time comes in as elapsed
//! [`Duration`]s, randomness as a number in `[0, 1)`; the state machine itself is pure.
//! It does not own the process: spawning, signalling and timers are the supervisor's.

use std::time::Duration;

/// How the child is restarted.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    /// The delay before the first restart after a crash.
    pub initial_backoff: Duration,
    /// The longest delay between restarts.
    pub max_backoff: Duration,
    /// A run at least this long counts as stable: the next crash starts the backoff afresh.
    pub stable_after: Duration,
    /// The share of each delay that is randomised, in `[0, 1]`: 0.2 means +-20 %.
    pub jitter: f64,
}

/// The share by which each restart delay is varied, so that members that crashed together
/// do not restart in step.
pub const RESTART_JITTER: f64 = 0.2;

/// Where the child's lifecycle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Idle,
    /// Running. `failures` counts the crashes since the last stable run.
    Running {
        /// Crashes since the last stable run.
        failures: u32,
    },
    /// Crashed; waiting out the backoff before the next spawn.
    BackingOff {
        /// Crashes since the last stable run, this one included.
        failures: u32,
    },
    /// Asked to stop; the child is being terminated.
    Stopping,
    /// Stopped for good.
    Stopped,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start supervising.
    Start,
    /// The child exited (or could not be spawned) after running for `ran_for`.
    Exited {
        /// How long it ran.
        ran_for: Duration,
    },
    /// The backoff delay ordered by [`Command::SpawnAfter`] has passed.
    BackoffElapsed,
    /// Stop supervising: terminate the child and do not restart it.
    Stop,
}

/// What the supervisor does next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// Spawn the child now.
    Spawn,
    /// Wait this long, then deliver [`Event::BackoffElapsed`].
    SpawnAfter(Duration),
    /// Terminate the running child gracefully; deliver [`Event::Exited`] when it is gone.
    Terminate,
    /// Nothing to do until the next event.
    Nothing,
    /// Supervision is over.
    Done,
}

/// Advances the restart state machine. `jitter_sample` is a number in `[0, 1)`.
pub fn step(
    state: State,
    event: Event,
    policy: &RestartPolicy,
    jitter_sample: f64,
) -> (State, Command) {
    match (state, event) {
        (State::Idle, Event::Start) => (State::Running { failures: 0 }, Command::Spawn),
        (State::Idle | State::BackingOff { .. }, Event::Stop) => (State::Stopped, Command::Done),
        (State::Running { .. }, Event::Stop) => (State::Stopping, Command::Terminate),
        (State::Running { failures }, Event::Exited { ran_for }) => {
            let failures = if ran_for >= policy.stable_after {
                1
            } else {
                failures.saturating_add(1)
            };
            let delay = backoff(policy, failures, jitter_sample);
            (State::BackingOff { failures }, Command::SpawnAfter(delay))
        }
        (State::BackingOff { failures }, Event::BackoffElapsed) => {
            (State::Running { failures }, Command::Spawn)
        }
        (State::Stopping, Event::Exited { .. }) => (State::Stopped, Command::Done),
        (State::Stopped, _) => (State::Stopped, Command::Done),
        // Anything else is a duplicate or late event (a timer that fired after a stop, a
        // second Start): it changes nothing.
        (state, _) => (state, Command::Nothing),
    }
}

/// The delay before restart number `failures` (1 for the first crash).
pub fn backoff(policy: &RestartPolicy, failures: u32, jitter_sample: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(policy.max_backoff);
    let jitter = policy.jitter.clamp(0.0, 1.0);
    let factor = 1.0 + jitter * (jitter_sample.clamp(0.0, 1.0) * 2.0 - 1.0);
    base.mul_f64(factor).min(policy.max_backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stable_after: Duration::from_secs(60),
            jitter: 0.0,
        }
    }

    fn crash(state: State, ran_for_secs: u64) -> (State, Command) {
        step(
            state,
            Event::Exited {
                ran_for: Duration::from_secs(ran_for_secs),
            },
            &policy(),
            0.5,
        )
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let (mut state, command) = step(State::Idle, Event::Start, &policy(), 0.5);
        assert_eq!(command, Command::Spawn);
        let mut delays = Vec::new();
        for _ in 0..8 {
            let (next, command) = crash(state, 1);
            let Command::SpawnAfter(delay) = command else {
                panic!("expected a delayed spawn, got {command:?}")
            };
            delays.push(delay.as_millis());
            let (next, command) = step(next, Event::BackoffElapsed, &policy(), 0.5);
            assert_eq!(command, Command::Spawn);
            state = next;
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let (_, command) = crash(state, 61);
        assert_eq!(command, Command::SpawnAfter(Duration::from_millis(100)));
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let policy = RestartPolicy {
            jitter: 0.2,
            ..policy()
        };
        assert_eq!(backoff(&policy, 1, 0.0), Duration::from_millis(80));
        assert_eq!(backoff(&policy, 1, 0.5), Duration::from_millis(100));
        assert!(backoff(&policy, 1, 0.999_999) <= Duration::from_millis(120));
        assert!(backoff(&policy, 20, 0.999) <= policy.max_backoff);
    }

    #[test]
    fn stop_terminates_a_running_child_and_never_restarts() {
        let (state, _) = step(State::Idle, Event::Start, &policy(), 0.5);
        let (state, command) = step(state, Event::Stop, &policy(), 0.5);
        assert_eq!((state, command), (State::Stopping, Command::Terminate));
        let (state, command) = crash(state, 1);
        assert_eq!((state, command), (State::Stopped, Command::Done));
        let (state, command) = step(state, Event::BackoffElapsed, &policy(), 0.5);
        assert_eq!((state, command), (State::Stopped, Command::Done));
    }

    #[test]
    fn stop_during_backoff_ends_at_once() {
        let (state, _) = step(State::Idle, Event::Start, &policy(), 0.5);
        let (state, _) = crash(state, 1);
        let (state, command) = step(state, Event::Stop, &policy(), 0.5);
        assert_eq!((state, command), (State::Stopped, Command::Done));
    }

    #[test]
    fn late_events_change_nothing() {
        let running = State::Running { failures: 0 };
        assert_eq!(
            step(running, Event::BackoffElapsed, &policy(), 0.5),
            (running, Command::Nothing)
        );
        assert_eq!(
            step(running, Event::Start, &policy(), 0.5),
            (running, Command::Nothing)
        );
    }
}
