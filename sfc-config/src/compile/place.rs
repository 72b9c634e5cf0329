//! Where the dataplane classifies a classifier's packets.
//!
//! A packet is classified wherever it arrives, at a logical port and each time it leaves an
//! SF, in the classification domain of that place; where it enters a chain, the path it takes
//! (classifier, direction) is recorded with its flow, and decides past the entry wherever
//! paths meet. So two classifiers of different chains that match the same packet where they
//! enter would leave the datapath a choice it cannot make: validation compares the classifiers
//! entering at each logical port, and the compiler gives each place its domain. Both read the
//! places from [`stops`], so that they cannot drift apart.
//!
//! The datapath classifies what arrives on an interface in one domain, so places whose packets
//! arrive on one interface are one domain ([`Domains`]): with crossed pairs (one pair's egress
//! is another's ingress) in a symmetric chain, forward traffic leaving one group and reverse
//! traffic leaving another arrive on the same interface. The compiler gives them one number;
//! validation refuses the one thing a flow's path cannot tell apart there: one classifier going
//! one way classified at two places of one domain.

use std::collections::{BTreeMap, BTreeSet};

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

/// The interfaces where the packets of each place some classifier reaches arrive, as the
/// compiler gives them the program: the logical port itself; for what leaves a group going
/// forward, its members' egress; in reverse, their ingress (in the group's reverse place, its
/// egress place when a member uses one interface for both sides). Places no classifier reaches
/// classify nothing and have none. Without duplicates, in the order of the places. Names that
/// do not exist are left out.
pub fn roots(state: &State) -> Vec<(&str, Place<'_>)> {
    let mut reached: BTreeSet<(Place, Direction)> = BTreeSet::new();
    for chain in state.port_chains.values() {
        // A classifier's stops depend on it only through its logical ports, which many
        // classifiers share: each pair of ports once (100 000 classifiers cost 50 ms else).
        let mut ports_seen: BTreeSet<(&str, Option<&str>)> = BTreeSet::new();
        let classifiers = chain
            .flow_classifiers
            .iter()
            .filter_map(|f| state.flow_classifiers.get(f))
            .filter(|fc| {
                ports_seen.insert((
                    &fc.logical_source_port,
                    fc.logical_destination_port.as_deref(),
                ))
            });
        for fc in classifiers {
            reached.extend(
                stops(state, chain, fc)
                    .iter()
                    .map(|s| (s.place, s.direction)),
            );
        }
    }
    let mut out: Vec<(&str, Place)> = Vec::new();
    for (place, direction) in reached {
        let group = match place {
            Place::Port(p) => {
                out.push((p, place));
                continue;
            }
            Place::Egress(g) | Place::Ingress(g) => g,
        };
        let pairs = state.port_pair_groups[group]
            .port_pairs
            .iter()
            .filter_map(|pp| state.port_pairs.get(pp));
        for pp in pairs {
            let iface = match direction {
                Direction::Forward => &pp.egress,
                Direction::Reverse => &pp.ingress,
            };
            out.push((iface.as_str(), place));
        }
    }
    let mut seen = BTreeSet::new();
    out.retain(|root| seen.insert(*root));
    out
}

/// Places merged into classification domains. The datapath classifies what arrives on an
/// interface in one domain; an interface that is the root of two places (crossed pairs: the
/// egress of one pair and the ingress of another, in symmetric chains) makes those places one
/// domain, and so, transitively, every place reachable that way. Both the compiler (which
/// numbers the domains) and validation (which compares the classifiers of each domain) read
/// the domains from here, so that they cannot drift apart.
#[derive(Clone, Debug, Default)]
pub struct Domains<'s> {
    /// Each place with roots, and the smallest place of its domain (its representative).
    of: BTreeMap<Place<'s>, Place<'s>>,
    /// The roots of each place.
    interfaces: BTreeMap<Place<'s>, BTreeSet<&'s str>>,
    /// [`roots`], from which the domains were merged.
    roots: Vec<(&'s str, Place<'s>)>,
}

impl<'s> Domains<'s> {
    /// The domains of `state`, by union-find over [`roots`].
    pub fn new(state: &'s State) -> Self {
        let roots = roots(state);
        let mut parent: BTreeMap<Place, Place> = BTreeMap::new();
        let mut interfaces: BTreeMap<Place, BTreeSet<&str>> = BTreeMap::new();
        let mut first_place: BTreeMap<&str, Place> = BTreeMap::new();
        for &(iface, place) in &roots {
            parent.entry(place).or_insert(place);
            interfaces.entry(place).or_default().insert(iface);
            let other = *first_place.entry(iface).or_insert(place);
            union(&mut parent, place, other);
        }
        let places: Vec<Place> = parent.keys().copied().collect();
        let of = places
            .into_iter()
            .map(|p| (p, find(&mut parent, p)))
            .collect();
        Domains {
            of,
            interfaces,
            roots,
        }
    }

    /// The roots the domains were merged from ([`roots`]).
    pub fn roots(&self) -> &[(&'s str, Place<'s>)] {
        &self.roots
    }

    /// The representative of the domain `place` is classified in: itself when it shares no
    /// interface with another place (or has no roots).
    pub fn of(&self, place: Place<'s>) -> Place<'s> {
        self.of.get(&place).copied().unwrap_or(place)
    }

    /// The places of the domain whose representative is `representative`, in order.
    pub fn places(&self, representative: Place<'s>) -> Vec<Place<'s>> {
        let merged: Vec<Place> = self
            .of
            .iter()
            .filter(|(_, r)| **r == representative)
            .map(|(p, _)| *p)
            .collect();
        if merged.is_empty() {
            vec![representative]
        } else {
            merged
        }
    }

    /// The interfaces that put `a` and `b` in one domain: those that are roots of both, or,
    /// when they are joined through other places, every interface that is a root of two
    /// places of their domain.
    pub fn shared(&self, a: Place<'s>, b: Place<'s>) -> Vec<&'s str> {
        let roots = |p: Place<'s>| self.interfaces.get(&p).cloned().unwrap_or_default();
        let both: Vec<&str> = roots(a).intersection(&roots(b)).copied().collect();
        if !both.is_empty() {
            return both;
        }
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for p in self.places(self.of(a)) {
            for iface in roots(p) {
                *count.entry(iface).or_default() += 1;
            }
        }
        count
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(iface, _)| iface)
            .collect()
    }
}

/// The representative of `place`'s set: the smallest place in it (paths halved on the way).
fn find<'s>(parent: &mut BTreeMap<Place<'s>, Place<'s>>, mut place: Place<'s>) -> Place<'s> {
    while parent[&place] != place {
        let grandparent = parent[&parent[&place]];
        parent.insert(place, grandparent);
        place = grandparent;
    }
    place
}

/// Joins the sets of `a` and `b`; the smaller representative stays, so that a domain's
/// representative (and so its number in the compiler) does not depend on the order of roots.
fn union<'s>(parent: &mut BTreeMap<Place<'s>, Place<'s>>, a: Place<'s>, b: Place<'s>) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent.insert(ra.max(rb), ra.min(rb));
    }
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

    #[test]
    fn places_sharing_an_interface_are_one_domain() {
        let mut s = State::default();
        // One SF crossed by two pairs (a→b, b→a), and two pairs chained through one
        // interface (c→d, d→e), in a symmetric chain.
        pair(&mut s, "p1", "a", "b");
        pair(&mut s, "p2", "b", "a");
        pair(&mut s, "p3", "c", "d");
        pair(&mut s, "p4", "d", "e");
        group(&mut s, "g1", &["p1"]);
        group(&mut s, "g2", &["p2"]);
        group(&mut s, "g3", &["p3"]);
        group(&mut s, "g4", &["p4"]);
        classifier(
            &mut s,
            "fc",
            "{sourceIpPrefix: 10.1.0.0/16, destinationIpPrefix: 10.2.0.0/16, logicalSourcePort: src, logicalDestinationPort: dst}",
        );
        chain(&mut s, "c", &["g1", "g2", "g3", "g4"], &["fc"], true);
        let domains = Domains::new(&s);
        use Place::{Egress, Ingress};
        // "a": forward out of g2, reverse out of g1; "b": forward out of g1, reverse out of g2.
        assert_eq!(
            domains.places(domains.of(Egress("g1"))),
            [Egress("g1"), Ingress("g2")]
        );
        assert_eq!(
            domains.places(domains.of(Egress("g2"))),
            [Egress("g2"), Ingress("g1")]
        );
        assert_eq!(domains.of(Ingress("g1")), Egress("g2"));
        assert_eq!(domains.shared(Egress("g2"), Ingress("g1")), ["a"]);
        // "d": forward out of g3, reverse out of g4; "c" and "e" are no one else's.
        assert_eq!(domains.of(Ingress("g4")), Egress("g3"));
        assert_eq!(domains.places(Ingress("g3")), [Ingress("g3")]);
        assert_eq!(domains.places(Egress("g4")), [Egress("g4")]);
        // Every root interface has one domain.
        let mut domain_of: BTreeMap<&str, Place> = BTreeMap::new();
        for (iface, place) in roots(&s) {
            let d = domains.of(place);
            assert_eq!(*domain_of.entry(iface).or_insert(d), d, "{iface}");
        }
        // One way: nothing is classified leaving an ingress, so nothing is merged.
        s.port_chains
            .get_mut("c")
            .unwrap()
            .chain_parameters
            .symmetric = false;
        let domains = Domains::new(&s);
        assert_eq!(domains.places(domains.of(Egress("g1"))), [Egress("g1")]);
        assert_eq!(domains.of(Egress("g2")), Egress("g2"));
    }
}
