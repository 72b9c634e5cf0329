//! Black-hole detection and rates: the agent samples its counters every second and keeps the
//! last few seconds; an SF (or a hop) that takes packets in and lets (almost) none out over
//! that window is a black hole.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use sfc_common::MemberCounter;

use sfc_api::{
    counters::Row,
    health::{HopHealth, PairHealth, State},
};
use sfc_config::compile::{Direction, Side};

/// How far back rates and health look.
pub const WINDOW: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    pairs: BTreeMap<String, (MemberCounter, Vec<String>)>,
    hops: BTreeMap<(String, Direction, u8), (u64, u64)>,
}

#[derive(Clone, Debug, Default)]
pub struct Health {
    samples: VecDeque<Sample>,
}

/// Per pair: the sum over its sides (with crossed pairs an interface has a side for each of
/// two pairs, each counted for its own pair), and its interfaces, once each.
fn by_pair(
    members: &BTreeMap<Side, MemberCounter>,
) -> BTreeMap<String, (MemberCounter, Vec<String>)> {
    let mut out: BTreeMap<String, (MemberCounter, Vec<String>)> = BTreeMap::new();
    for (side, c) in members {
        let (total, ifaces) = out.entry(side.pair.clone()).or_default();
        total.into_packets += c.into_packets;
        total.into_bytes += c.into_bytes;
        total.from_packets += c.from_packets;
        total.from_bytes += c.from_bytes;
        if !ifaces.contains(&side.interface) {
            ifaces.push(side.interface.clone());
        }
    }
    out
}

/// Per chain, direction and hop (1-based): packets sent into the hop (position hop - 1) and
/// packets that came back out of it (position hop).
fn by_hop(chains: &[Row]) -> BTreeMap<(String, Direction, u8), (u64, u64)> {
    let mut out: BTreeMap<(String, Direction, u8), (u64, u64)> = BTreeMap::new();
    for row in chains {
        let l = &row.label;
        if l.position < l.hops {
            out.entry((l.chain.clone(), l.direction, l.position + 1))
                .or_default()
                .0 += row.packets;
        }
        if l.position > 0 {
            out.entry((l.chain.clone(), l.direction, l.position))
                .or_default()
                .1 += row.packets;
        }
    }
    out
}

impl Health {
    /// Records the counters as they are now; forgets samples older than the window.
    pub fn sample(&mut self, members: &BTreeMap<Side, MemberCounter>, chains: &[Row]) {
        let now = Instant::now();
        self.samples.push_back(Sample {
            at: now,
            pairs: by_pair(members),
            hops: by_hop(chains),
        });
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > WINDOW + Duration::from_secs(1))
        {
            self.samples.pop_front();
        }
    }

    /// The oldest sample within the window and the newest one, and the seconds between them.
    fn span(&self) -> Option<(&Sample, &Sample, f64)> {
        let newest = self.samples.back()?;
        let oldest = self
            .samples
            .iter()
            .find(|s| newest.at.duration_since(s.at) <= WINDOW)?;
        let seconds = newest.at.duration_since(oldest.at).as_secs_f64();
        (seconds > 0.0).then_some((oldest, newest, seconds))
    }

    /// `taps`: pairs that are tap SFs (nothing comes back from them).
    pub fn pairs(&self, taps: &dyn Fn(&str) -> bool) -> Vec<PairHealth> {
        let Some(newest) = self.samples.back() else {
            return Vec::new();
        };
        let span = self.span();
        newest
            .pairs
            .iter()
            .map(|(pair, (c, ifaces))| {
                let (d_into, d_from, seconds) = match span {
                    Some((old, _, s)) => {
                        let before = old.pairs.get(pair).map(|p| p.0).unwrap_or_default();
                        (
                            c.into_packets.saturating_sub(before.into_packets),
                            c.from_packets.saturating_sub(before.from_packets),
                            s,
                        )
                    }
                    None => (0, 0, 1.0),
                };
                PairHealth {
                    pair: pair.clone(),
                    interfaces: ifaces.clone(),
                    into_packets: c.into_packets,
                    into_bytes: c.into_bytes,
                    from_packets: c.from_packets,
                    from_bytes: c.from_bytes,
                    into_pps: d_into as f64 / seconds,
                    from_pps: d_from as f64 / seconds,
                    state: if taps(pair) {
                        State::Tap
                    } else {
                        State::judge(d_into, d_from)
                    },
                    probed: None,
                }
            })
            .collect()
    }

    /// `spans`: chains whose hops may be entered on one node and left on another (in a
    /// cluster), which this node's counters alone cannot judge.
    pub fn hops(&self, spans: &dyn Fn(&str) -> bool) -> Vec<HopHealth> {
        let Some(newest) = self.samples.back() else {
            return Vec::new();
        };
        let span = self.span();
        newest
            .hops
            .iter()
            .map(|((chain, direction, hop), (into, from))| {
                let (d_into, d_from, seconds) = match span {
                    Some((old, _, s)) => {
                        let key = (chain.clone(), *direction, *hop);
                        let (i0, f0) = old.hops.get(&key).copied().unwrap_or_default();
                        (into.saturating_sub(i0), from.saturating_sub(f0), s)
                    }
                    None => (0, 0, 1.0),
                };
                HopHealth {
                    chain: chain.clone(),
                    direction: *direction,
                    hop: *hop,
                    into_packets: *into,
                    from_packets: *from,
                    into_pps: d_into as f64 / seconds,
                    from_pps: d_from as f64 / seconds,
                    state: if spans(chain) {
                        State::AcrossNodes
                    } else {
                        State::judge(d_into, d_from)
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use sfc_config::compile::Role;

    use super::*;

    fn side(pair: &str, interface: &str, role: Role) -> Side {
        Side {
            pair: pair.into(),
            interface: interface.into(),
            role,
        }
    }

    fn counter(into_packets: u64, from_packets: u64) -> MemberCounter {
        MemberCounter {
            into_packets,
            from_packets,
            ..Default::default()
        }
    }

    #[test]
    fn each_side_of_a_crossed_interface_counts_for_its_own_pair() {
        // PP-AB: a → b, PP-BA: b → a. 10 packets forward (through both), 4 in reverse.
        let members = BTreeMap::from([
            (side("PP-AB", "a", Role::Ingress), counter(10, 4)),
            (side("PP-AB", "b", Role::Egress), counter(4, 10)),
            (side("PP-BA", "b", Role::Ingress), counter(10, 4)),
            (side("PP-BA", "a", Role::Egress), counter(4, 10)),
            (side("PP-S", "s", Role::Both), counter(3, 3)),
        ]);
        let pairs = by_pair(&members);
        let summary = |p: &str| {
            let (c, ifaces) = &pairs[p];
            (c.into_packets, c.from_packets, ifaces.clone())
        };
        assert_eq!(summary("PP-AB"), (14, 14, vec!["a".into(), "b".into()]));
        assert_eq!(summary("PP-BA"), (14, 14, vec!["a".into(), "b".into()]));
        assert_eq!(summary("PP-S"), (3, 3, vec!["s".to_string()]));
    }
}
