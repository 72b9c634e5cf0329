//! One member's health from its probes' outcomes: `failures` misses in a row take it down,
//! `successes` returns in a row bring it back up. A member starts up, so that a new member or
//! a restarted agent moves no flow before its probes have had their say.

use std::time::SystemTime;

use sfc_api::health::{MemberHealth, Probed};

/// How many in a row change the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub failures: u32,
    pub successes: u32,
}

/// Records one probe's outcome (`Err(why)`: it did not come back); true when the state changed.
pub fn record(
    h: &mut MemberHealth,
    outcome: Result<(), String>,
    t: Thresholds,
    now: SystemTime,
) -> bool {
    h.probes_sent += 1;
    match outcome {
        Ok(()) => {
            h.probes_back += 1;
            h.failures_in_row = 0;
            h.successes_in_row += 1;
            if h.state == Probed::Down && h.successes_in_row >= t.successes {
                h.state = Probed::Up;
                h.since = now;
                h.reason = format!("{} probes in a row came back", h.successes_in_row);
                return true;
            }
        }
        Err(why) => {
            h.successes_in_row = 0;
            h.failures_in_row += 1;
            if h.state == Probed::Up && h.failures_in_row >= t.failures {
                h.state = Probed::Down;
                h.since = now;
                h.reason = format!(
                    "{} probes in a row did not come back: {why}",
                    h.failures_in_row
                );
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        failures: 3,
        successes: 2,
    };

    fn fresh() -> MemberHealth {
        MemberHealth::starting(SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_member_goes_down_after_three_misses_in_a_row_and_up_after_two_returns() {
        let now = SystemTime::UNIX_EPOCH;
        let mut h = fresh();
        let miss = || Err("not out of sf1-out within 250 ms".to_string());
        assert!(!record(&mut h, miss(), T, now));
        assert!(!record(&mut h, miss(), T, now));
        // A return in between starts the count again.
        assert!(!record(&mut h, Ok(()), T, now));
        assert!(!record(&mut h, miss(), T, now));
        assert!(!record(&mut h, miss(), T, now));
        assert!(record(&mut h, miss(), T, now));
        assert_eq!(h.state, Probed::Down);
        assert_eq!(
            h.reason,
            "3 probes in a row did not come back: not out of sf1-out within 250 ms"
        );
        assert!(!record(&mut h, miss(), T, now), "down stays down");
        assert!(!record(&mut h, Ok(()), T, now));
        assert!(record(&mut h, Ok(()), T, now));
        assert_eq!(h.state, Probed::Up);
        assert_eq!((h.probes_sent, h.probes_back), (9, 3));
    }
}
