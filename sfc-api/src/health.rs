//! How healthy an SF or a hop looks from its counters, as `stats` and `describe` show it.

use serde::{Deserialize, Serialize};
use sfc_config::compile::Direction;

/// Fewer packets than this into an SF over the window say nothing about it.
const MIN_PACKETS: u64 = 10;

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
}
