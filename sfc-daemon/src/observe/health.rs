//! Black-hole detection and rates: the agent samples its counters every second and keeps the
//! last few seconds; an SF (or a hop) that takes packets in and lets (almost) none out over
//! that window is a black hole, and so is one that let nothing out since a few packets went in,
//! seconds ago, however low their rate.

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

/// A member out of its group as a black hole (its group's passive check), since when and
/// until when.
#[derive(Clone, Copy, Debug)]
pub struct Ejection {
    pub since: std::time::SystemTime,
    pub until: Instant,
}

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

/// Of one pair's or hop's counters at each sample (oldest first; `None` where not counted):
/// the packets that went in since anything last came out, and how long ago the sample was
/// taken that first saw one of them (so the first has waited at least that long).
fn unanswered(points: &[(Instant, Option<(u64, u64)>)]) -> (u64, Duration) {
    let Some(&(now, Some((into, from)))) = points.last() else {
        return (0, Duration::ZERO);
    };
    // The oldest sample since the last packet came out (or since it was first counted).
    let base = points
        .iter()
        .rposition(|(_, c)| c.is_none_or(|(_, f)| f != from))
        .map_or(0, |i| i + 1);
    let base_into = points[base].1.map_or(into, |(i, _)| i);
    let first_seen = points[base..]
        .iter()
        .find(|(_, c)| c.is_some_and(|(i, _)| i > base_into));
    match first_seen {
        Some((at, _)) => (into.saturating_sub(base_into), now.duration_since(*at)),
        None => (0, Duration::ZERO),
    }
}

impl Health {
    /// Records the counters as they are now; forgets samples older than the window.
    pub fn sample(&mut self, members: &BTreeMap<Side, MemberCounter>, chains: &[Row]) {
        self.sample_at(Instant::now(), members, chains);
    }

    fn sample_at(&mut self, now: Instant, members: &BTreeMap<Side, MemberCounter>, chains: &[Row]) {
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

    /// One pair's or hop's (into, from) at each sample kept, oldest first.
    fn points(
        &self,
        counters: impl Fn(&Sample) -> Option<(u64, u64)>,
    ) -> Vec<(Instant, Option<(u64, u64)>)> {
        self.samples.iter().map(|s| (s.at, counters(s))).collect()
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
                        let points = self.points(|s| {
                            s.pairs
                                .get(pair)
                                .map(|(c, _)| (c.into_packets, c.from_packets))
                        });
                        let (unanswered, waited) = unanswered(&points);
                        State::judge_with_unanswered(d_into, d_from, unanswered, waited)
                    },
                    check: None,
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
                        let key = (chain.clone(), *direction, *hop);
                        let points = self.points(|s| s.hops.get(&key).copied());
                        let (unanswered, waited) = unanswered(&points);
                        State::judge_with_unanswered(d_into, d_from, unanswered, waited)
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

    /// A pair's state after samples a second apart, each its (into, from) so far.
    fn judged(counts: &[(u64, u64)]) -> State {
        let mut health = Health::default();
        let start = Instant::now();
        for (k, &(into, from)) in counts.iter().enumerate() {
            let members = BTreeMap::from([(side("PP", "in", Role::Ingress), counter(into, from))]);
            health.sample_at(start + Duration::from_secs(k as u64), &members, &[]);
        }
        health.pairs(&|_| false)[0].state
    }

    #[test]
    fn a_black_hole_is_found_at_a_packet_a_second() {
        // A SYN a second into a dead SF: a black hole once the first of three waited 2 s.
        assert_eq!(judged(&[(10, 10), (11, 10), (12, 10)]), State::Idle);
        assert_eq!(
            judged(&[(10, 10), (11, 10), (12, 10), (13, 10)]),
            State::BlackHole
        );
        // The same trickle through an SF that forwards it.
        assert_eq!(
            judged(&[(10, 10), (11, 11), (12, 12), (13, 13)]),
            State::Idle
        );
        // It forwarded the first ones, then stopped.
        assert_eq!(
            judged(&[(10, 10), (11, 11), (12, 11), (13, 11), (14, 11)]),
            State::BlackHole
        );
        // A burst that just went in, after a quiet while: nothing to say yet.
        assert_eq!(
            judged(&[(10, 10), (10, 10), (10, 10), (15, 10)]),
            State::Idle
        );
        // Counted only since the last sample: no history to judge.
        assert_eq!(judged(&[(13, 0)]), State::Idle);
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
