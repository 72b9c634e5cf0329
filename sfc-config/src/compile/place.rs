//! Where the dataplane classifies a classifier's packets.
//!
//! The datapath keeps no per-packet chain state: a packet is classified again wherever it
//! arrives, at a logical port and each time it leaves an SF, in the classification domain of
//! that place. Two classifiers of different chains that match the same packet in the same
//! place would leave the datapath a choice it cannot make, so the overlap check of validation
//! compares exactly the classifiers that share a place, and the compiler gives each place its
//! domain. Both read the places from [`stops`], so that they cannot drift apart.

use crate::{
    compile::Direction,
    model::{FlowClassifierSpec, PortChainSpec, State},
};

/// A place where arriving packets are classified: each has a classification domain of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place<'s> {
    /// Arriving at a logical port: where chains start (forward at a classifier's
    /// `logicalSourcePort`, reverse at the `logicalDestinationPort` of a symmetric chain's).
    Port(&'s str),
    /// Leaving a group's members through their egress; for reverse traffic too when a member of
    /// the group uses one interface for both sides (what comes out of it cannot be told apart
    /// by the side it came from).
    Egress(&'s str),
    /// Leaving a group's members through their ingress: reverse traffic of symmetric chains.
    Ingress(&'s str),
}

/// One place a classifier's packets are classified at: going `direction` (reverse: its match
/// with source and destination swapped), after `position` steering hops in that direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stop<'s> {
    pub place: Place<'s>,
    pub direction: Direction,
    pub position: usize,
}

/// The groups a chain steers through, in order: tap groups only get copies, so what leaves
/// them is never classified. Names of groups that do not exist are left out (validation
/// reports them; the compiler only sees valid states).
pub fn steering_groups<'s>(
    state: &'s State,
    chain: &'s PortChainSpec,
) -> impl DoubleEndedIterator<Item = &'s str> + 's {
    chain.port_pair_groups.iter().filter_map(move |g| {
        let group = state.port_pair_groups.get(g)?;
        (!group.tap_enabled).then_some(g.as_str())
    })
}

/// Where what leaves a group's members in reverse is classified (see [`Place::Egress`]).
pub fn reverse_place<'s>(state: &'s State, group: &'s str) -> Place<'s> {
    let shares = state.port_pair_groups.get(group).is_some_and(|g| {
        g.port_pairs.iter().any(|pp| {
            state
                .port_pairs
                .get(pp)
                .is_some_and(|pp| pp.ingress == pp.egress)
        })
    });
    if shares {
        Place::Egress(group)
    } else {
        Place::Ingress(group)
    }
}

/// Every place where the dataplane classifies the packets of `classifier` in `chain`, in the
/// order the compiler makes their entries: forward, entering at the source port and then
/// leaving each hop; for a symmetric chain whose classifier has a destination port, reverse
/// too, entering there and leaving the hops backwards.
pub fn stops<'s>(
    state: &'s State,
    chain: &'s PortChainSpec,
    classifier: &'s FlowClassifierSpec,
) -> Vec<Stop<'s>> {
    let hops: Vec<&str> = steering_groups(state, chain).collect();
    let mut out = vec![Stop {
        place: Place::Port(&classifier.logical_source_port),
        direction: Direction::Forward,
        position: 0,
    }];
    out.extend(hops.iter().enumerate().map(|(k, g)| Stop {
        place: Place::Egress(g),
        direction: Direction::Forward,
        position: k + 1,
    }));
    if let (true, Some(ldp)) = (
        chain.chain_parameters.symmetric,
        &classifier.logical_destination_port,
    ) {
        out.push(Stop {
            place: Place::Port(ldp),
            direction: Direction::Reverse,
            position: 0,
        });
        out.extend(hops.iter().rev().enumerate().map(|(k, g)| Stop {
            place: reverse_place(state, g),
            direction: Direction::Reverse,
            position: k + 1,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::tests::classifier;
    use crate::testing::{chain, group, pair, tap};
    use Direction::{Forward, Reverse};

    #[test]
    fn stops_follow_the_steering_hops_both_ways() {
        let mut s = State::default();
        pair(&mut s, "p1", "in1", "out1");
        pair(&mut s, "p2", "sh", "sh");
        pair(&mut s, "t", "t-in", "t-out");
        group(&mut s, "g1", &["p1"]);
        group(&mut s, "g2", &["p2"]);
        tap(&mut s, "tap", "t");
        classifier(
            &mut s,
            "fc",
            "{protocol: tcp, logicalSourcePort: a, logicalDestinationPort: b}",
        );
        chain(&mut s, "c", &["g1", "tap", "g2"], &["fc"], true);
        let both_ways = stops(&s, &s.port_chains["c"], &s.flow_classifiers["fc"]);
        let stop = |place, direction, position| Stop {
            place,
            direction,
            position,
        };
        assert_eq!(
            both_ways,
            [
                stop(Place::Port("a"), Forward, 0),
                stop(Place::Egress("g1"), Forward, 1),
                stop(Place::Egress("g2"), Forward, 2),
                // Reverse: into b, out of g2 (one interface: its egress domain), then g1.
                stop(Place::Port("b"), Reverse, 0),
                stop(Place::Egress("g2"), Reverse, 1),
                stop(Place::Ingress("g1"), Reverse, 2),
            ]
        );
        // One way, only forward.
        let mut one_way = s.port_chains["c"].clone();
        one_way.chain_parameters.symmetric = false;
        assert_eq!(
            stops(&s, &one_way, &s.flow_classifiers["fc"]),
            both_ways[..3]
        );
    }
}
