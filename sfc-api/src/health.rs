//! How healthy an SF or a hop looks from its counters, as `stats` and `describe` show it.

use serde::{Deserialize, Serialize};
use sfc_config::compile::Direction;

use std::time::Duration;

/// Fewer packets than this into an SF over the window say nothing about it...
const MIN_PACKETS: u64 = 10;
/// ... unless at least this many went in with nothing out since the first of them...
const UNANSWERED_PACKETS: u64 = 3;
/// ... and the first went in at least this long ago: an SF forwards in milliseconds, so a
/// trickle (one client retrying its SYN) into a dead SF is a black hole too.
const UNANSWERED_FOR: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Traffic goes in and comes out.
    Ok,
    /// Too little traffic in the window to tell.
    Idle,
    /// Packets go in, (almost) none come out.
    BlackHole,
    /// A tap: copies go in, nothing is expected back.
    Tap,
    /// In a cluster, a hop of a chain that spans nodes: its packets may go in on one node and
    /// come out on another, so one node's counters cannot judge it; every node's together do
    /// (`sfcctl stats` and `describe` in a cluster, the `all` rows).
    AcrossNodes,
}

impl State {
    /// From packets in and out over the window, and however low the rate, from `unanswered`
    /// packets that went in since anything last came out, the first at least `waited` ago.
    pub fn judge_with_unanswered(into: u64, from: u64, unanswered: u64, waited: Duration) -> Self {
        if unanswered >= UNANSWERED_PACKETS && waited >= UNANSWERED_FOR {
            State::BlackHole
        } else {
            State::judge(into, from)
        }
    }

    /// From packets in and out over the window.
    pub fn judge(into: u64, from: u64) -> Self {
        if into < MIN_PACKETS {
            State::Idle
        } else if from * 10 < into {
            State::BlackHole
        } else {
            State::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Idle => "idle",
            State::BlackHole => "black-hole",
            State::Tap => "tap",
            State::AcrossNodes => "across-nodes",
        }
    }
}

/// Traffic into and out of one port pair (all its interfaces), with rates over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairHealth {
    pub pair: String,
    pub interfaces: Vec<String>,
    pub into_packets: u64,
    pub into_bytes: u64,
    pub from_packets: u64,
    pub from_bytes: u64,
    pub into_pps: f64,
    pub from_pps: f64,
    pub state: State,
    /// In a group with a health check, on the node that checks it: in or out of its group (by
    /// its probes, or its group's passive check), since when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<MemberHealth>,
}

/// Packets a chain sent into one hop and got back out of it, with rates over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HopHealth {
    pub chain: String,
    pub direction: Direction,
    /// 1-based, in the direction's crossing order.
    pub hop: u8,
    pub into_packets: u64,
    pub from_packets: u64,
    pub into_pps: f64,
    pub from_pps: f64,
    pub state: State,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_black_hole_takes_in_and_lets_nothing_out() {
        assert_eq!(State::judge(0, 0), State::Idle);
        assert_eq!(State::judge(9, 0), State::Idle);
        assert_eq!(State::judge(100, 0), State::BlackHole);
        assert_eq!(State::judge(100, 9), State::BlackHole);
        assert_eq!(State::judge(100, 10), State::Ok);
        assert_eq!(State::judge(100, 100), State::Ok);
    }

    #[test]
    fn a_trickle_that_never_comes_out_is_a_black_hole_too() {
        let s = Duration::from_secs;
        assert_eq!(
            State::judge_with_unanswered(3, 0, 3, s(2)),
            State::BlackHole
        );
        // Too few, or too fresh (a burst just went in): nothing to say yet.
        assert_eq!(State::judge_with_unanswered(2, 0, 2, s(5)), State::Idle);
        assert_eq!(
            State::judge_with_unanswered(3, 0, 3, Duration::from_millis(1900)),
            State::Idle
        );
        // Packets come out: judged over the window.
        assert_eq!(State::judge_with_unanswered(100, 100, 0, s(0)), State::Ok);
    }
}

/// What a member's health check says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probed {
    /// In its group (also before its first probe).
    Up,
    /// Out of its group: its probes did not come back.
    Down,
}

/// A member of a group with a health check: its state, since when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHealth {
    pub state: Probed,
    pub since: std::time::SystemTime,
    pub reason: String,
    pub probes_sent: u64,
    pub probes_back: u64,
    #[serde(skip)]
    pub failures_in_row: u32,
    #[serde(skip)]
    pub successes_in_row: u32,
}

impl MemberHealth {
    /// Before its first probe: up, so that nothing moves until the probes have had their say.
    pub fn starting(now: std::time::SystemTime) -> Self {
        Self {
            state: Probed::Up,
            since: now,
            reason: "starts up (a new member, or the agent started)".into(),
            probes_sent: 0,
            probes_back: 0,
            failures_in_row: 0,
            successes_in_row: 0,
        }
    }
}
