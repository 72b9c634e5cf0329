//! Compiling the same state again on other interfaces, redoing only what depends on those
//! that changed.
//!
//! Of the compiler's stages, only three read the interfaces: the group tables (each member's
//! sides, and the taps' ingress), the classifier entries through their verdicts (the tap's
//! ifindex and MAC, and those of the logical port a chain ends at), and the roots (`ports` and
//! `attach`). Validation, classification domains, counters, match shapes and the rest of the
//! entries depend on the state alone. So while no interface that verdicts hold changes, and no
//! group that fails open loses its last live member or gets one back (verdicts skip its hop
//! while it has none), the image on other interfaces is the group tables and roots redone, with
//! the counters and the classify map of the image before.

use std::{collections::BTreeSet, sync::Arc};

use super::{compile_cached, Compiler, Image, Interfaces, Roots, Shapes};
use crate::{document::ConfigErrors, model::State, validate::Origins};

/// An image, and what its compile found out that does not depend on the interfaces. Besides
/// the image, it holds the interfaces it was compiled against and what the images of its
/// state share (roots, match shapes, the interfaces verdicts hold): no second classify map.
#[derive(Clone, Debug)]
pub struct Compiled {
    image: Image,
    /// The interfaces it was compiled against.
    interfaces: Interfaces,
    /// Shared by the images of one state.
    fixed: Arc<Fixed>,
}

/// What a state compiles to whatever the interfaces, besides the image's counters and
/// classify map.
#[derive(Debug)]
struct Fixed {
    /// The interfaces whose ifindex or MAC end up in classifier verdicts.
    in_verdicts: BTreeSet<String>,
    roots: Roots,
    shapes: Shapes,
}

impl Compiled {
    pub(super) fn new(
        image: Image,
        state: &State,
        interfaces: &Interfaces,
        roots: Roots,
        shapes: Shapes,
    ) -> Self {
        Compiled {
            image,
            interfaces: interfaces.clone(),
            fixed: Arc::new(Fixed {
                in_verdicts: in_verdicts(state),
                roots,
                shapes,
            }),
        }
    }

    pub fn image(&self) -> &Image {
        &self.image
    }

    pub fn into_image(self) -> Image {
        self.image
    }

    /// The same state on other interfaces: exactly what [`compile`](super::compile) gives for
    /// them (image, notes and errors alike). Only the stages that read the interfaces that
    /// changed are redone: the group tables and the roots when no interface that verdicts
    /// hold changed (an SF member's, a logical port where no chain ends) and no group that
    /// fails open lost its last live member or got one back; otherwise (a tap's interface, a
    /// logical port where chains end, a hop skipped or no longer) it is a full compile. `state` must be the
    /// state this was compiled from; `origins` only name files in errors.
    pub fn with_interfaces(
        &self,
        state: &State,
        interfaces: &Interfaces,
        origins: &Origins,
    ) -> Result<Compiled, ConfigErrors> {
        if self.verdicts_change(interfaces) {
            return compile_cached(state, interfaces, origins);
        }
        // The stages of `build` that read the interfaces. The others (domains, entries,
        // shapes, classify map) read only the state and the interfaces verdicts hold, none of
        // which changed: they found no error the last time (it compiled), and would leave the
        // same counters and classify map, and the same note where counters do not fit.
        let mut compiler = Compiler::new(state, interfaces, origins);
        let groups = compiler.group_tables()?;
        if compiler.image.skipped != self.image.skipped {
            // A group that fails open lost its last live member or got one back: verdicts
            // skip its hop, or no longer do.
            return compile_cached(state, interfaces, origins);
        }
        compiler.counters_per_classifier();
        compiler.image.counters = self.image.counters.clone();
        compiler.image.classify = self.image.classify.clone();
        compiler.image.source_ports = self.image.source_ports.clone();
        compiler.attach(&self.fixed.roots, &self.fixed.shapes);
        compiler.tunnels(&groups.taps);
        Ok(Compiled {
            image: compiler.finish()?,
            interfaces: interfaces.clone(),
            fixed: Arc::clone(&self.fixed),
        })
    }

    /// Whether an interface that verdicts hold differs on `interfaces`.
    fn verdicts_change(&self, interfaces: &Interfaces) -> bool {
        let (before, after) = (&self.interfaces, interfaces);
        let remote = |i: &Interfaces, name: &String| {
            i.cluster.as_ref().and_then(|c| c.remote.get(name).copied())
        };
        self.fixed.in_verdicts.iter().any(|name| {
            before.links.get(name) != after.links.get(name)
                || before.peer_macs.get(name) != after.peer_macs.get(name)
                || remote(before, name) != remote(after, name)
        })
    }
}

/// The interfaces whose ifindex or MAC end up in classifier verdicts, as the compiler reads
/// them: the ingress of each tap group a chain lists ([`Compiler::tap_members`]), and where
/// chains end ([`Compiler::end_of_chain`]): each classifier's destination port and, in
/// reverse (symmetric chains), its source port.
fn in_verdicts(state: &State) -> BTreeSet<String> {
    let mut names: BTreeSet<&String> = BTreeSet::new();
    for chain in state.port_chains.values() {
        for g in &chain.port_pair_groups {
            let group = &state.port_pair_groups[g];
            if let (true, Some(pp)) = (group.tap_enabled, group.port_pairs.first()) {
                names.insert(&state.port_pairs[pp].ingress);
            }
        }
        for fc in &chain.flow_classifiers {
            let fc = &state.flow_classifiers[fc];
            if let Some(ldp) = &fc.logical_destination_port {
                names.insert(ldp);
                if chain.chain_parameters.symmetric {
                    names.insert(&fc.logical_source_port);
                }
            }
        }
    }
    names.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        compile::{
            compile,
            tests::{classifier, plain, veth},
        },
        model::{ChainParameters, FailMode, FlowClassifierSpec, PortChainSpec},
        testing::{chain, group, pair, tap},
        validate::validate,
    };

    /// splitmix64: reproducible random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn percent(&mut self, p: u64) -> bool {
            self.next() % 100 < p
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }

        fn mac(&mut self) -> [u8; 6] {
            [2, 0, 0, 0, 0, 1 + self.below(8) as u8]
        }
    }

    /// The interface names a state uses, by role, and some it does not.
    struct Names {
        members: Vec<String>,
        taps: Vec<String>,
        ports: Vec<String>,
        others: Vec<String>,
    }

    impl Names {
        fn all(&self) -> impl Iterator<Item = &String> {
            self.members
                .iter()
                .chain(&self.taps)
                .chain(&self.ports)
                .chain(&self.others)
        }

        /// Mostly SF members' interfaces (the common change), often logical ports and taps.
        fn pick(&self, rng: &mut Rng) -> String {
            let roles = [
                (&self.members, 50),
                (&self.ports, 20),
                (&self.taps, 15),
                (&self.others, 15),
            ];
            let mut roll = rng.below(100);
            for (names, weight) in roles {
                if roll < weight && !names.is_empty() {
                    return rng.pick(names).clone();
                }
                roll = roll.saturating_sub(weight);
            }
            rng.pick(&self.members).clone()
        }
    }

    /// A random valid state: groups of members (some on one interface for both sides, some
    /// with configured MACs, some groups failing open), taps before hops and after the last, chains sharing groups, one
    /// way and symmetric, classifiers with and without a destination port, some with port
    /// ranges, and twins: classifiers of one chain matching the same packets from other
    /// logical ports, with the same end.
    fn random_state(rng: &mut Rng) -> (State, Names) {
        let mut s = State::default();
        let mut names = Names {
            members: Vec::new(),
            taps: Vec::new(),
            ports: (0..4).map(|p| format!("lp{p}")).collect(),
            others: vec!["x0".into()],
        };
        let n_groups = 1 + rng.below(4);
        let mut n_pairs = 0;
        for g in 0..n_groups {
            let mut members = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let name = format!("p{n_pairs}");
                n_pairs += 1;
                let (ingress, egress) = if rng.percent(20) {
                    (name.clone(), name.clone())
                } else {
                    (format!("{name}i"), format!("{name}e"))
                };
                pair(&mut s, &name, &ingress, &egress);
                let mac = rng.mac();
                let spec = s.port_pairs.get_mut(&name).unwrap();
                spec.weight = 1 + rng.below(3) as u32;
                let text = format!("02:00:00:00:00:{:02x}", mac[5]);
                match rng.below(8) {
                    0 => spec.ingress_mac = Some(text),
                    1 => spec.egress_mac = Some(text),
                    _ => {}
                }
                if egress != ingress {
                    names.members.push(egress);
                }
                names.members.push(ingress);
                members.push(name);
            }
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            group(&mut s, &format!("g{g}"), &refs);
            if rng.percent(40) {
                // Its hop is skipped while none of its members is present.
                s.port_pair_groups
                    .get_mut(&format!("g{g}"))
                    .unwrap()
                    .fail_mode = FailMode::FailOpen;
            }
        }
        let mut taps = Vec::new();
        for t in 0..rng.below(3) {
            let name = format!("t{t}");
            pair(&mut s, &name, &format!("{name}i"), &format!("{name}e"));
            if rng.percent(15) {
                s.port_pairs.get_mut(&name).unwrap().ingress_mac = Some("02:00:00:00:00:77".into());
            }
            tap(&mut s, &format!("tap{t}"), &name);
            names.taps.push(format!("{name}i"));
            // Read by nothing.
            names.others.push(format!("{name}e"));
            taps.push(format!("tap{t}"));
        }
        let mut paths = BTreeSet::new();
        let mut n_fcs = 0;
        for c in 0..1 + rng.below(4) {
            let mut groups: Vec<usize> = (0..n_groups).collect();
            rng.shuffle(&mut groups);
            groups.truncate(1 + rng.below(n_groups.min(3)));
            let mut spare = taps.clone();
            rng.shuffle(&mut spare);
            let mut path = Vec::new();
            for g in groups {
                if rng.percent(30) {
                    path.extend(spare.pop());
                }
                path.push(format!("g{g}"));
            }
            if rng.percent(20) {
                path.extend(spare.pop());
            }
            if !paths.insert(path.clone()) {
                continue;
            }
            let symmetric = rng.percent(40);
            let mut fcs = Vec::new();
            for _ in 0..rng.below(4) {
                let lsp = rng.pick(&names.ports).clone();
                let ldp = (symmetric || rng.percent(70)).then(|| rng.pick(&names.ports).clone());
                // A source prefix too, from a range no destination uses: the reverse of a
                // symmetric chain's classifier (entering at its destination port) must not
                // match what another chain classifies there.
                let mut fields = format!(
                    "sourceIpPrefix: 10.1.0.{n_fcs}/32, destinationIpPrefix: 10.0.0.{n_fcs}/32"
                );
                if rng.percent(20) {
                    fields.push_str(", protocol: tcp, destinationPortRange: \"1000:1005\"");
                }
                let mut ends = vec![(lsp, ldp)];
                if rng.percent(20) {
                    let other = |rng: &mut Rng, port: &String| loop {
                        let p = rng.pick(&names.ports);
                        if p != port {
                            break p.clone();
                        }
                    };
                    // The same end: twins that entered at different ports and ended apart
                    // could not be told apart after a hop (validation refuses them).
                    let twin = (other(rng, &ends[0].0), ends[0].1.clone());
                    ends.push(twin);
                }
                for (lsp, ldp) in ends {
                    let name = format!("fc{}", fcs.len() + 10 * c);
                    let ldp =
                        ldp.map_or(String::new(), |p| format!(", logicalDestinationPort: {p}"));
                    classifier(
                        &mut s,
                        &name,
                        &format!("{{{fields}, logicalSourcePort: {lsp}{ldp}}}"),
                    );
                    fcs.push(name);
                }
                n_fcs += 1;
            }
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let fcs: Vec<&str> = fcs.iter().map(String::as_str).collect();
            chain(&mut s, &format!("c{c}"), &path, &fcs, symmetric);
        }
        (s, names)
    }

    /// `name` (re-)created: a veth into another namespace with its peer's MAC, or into ours,
    /// or one whose peer's MAC is unknown, or no veth.
    fn random_link(rng: &mut Rng, interfaces: &mut Interfaces, name: &str) {
        let index = 1 + rng.below(40) as u32;
        match rng.below(10) {
            0..=6 => veth(interfaces, name, index),
            7 => {
                veth(interfaces, name, index);
                interfaces.links.get_mut(name).unwrap().peer_nsid = None;
            }
            8 => {
                veth(interfaces, name, index);
                interfaces.peer_macs.remove(name);
            }
            _ => {
                plain(interfaces, name, index);
                interfaces.peer_macs.remove(name);
            }
        }
    }

    /// One change of the namespace: an interface deleted, (re-)created, re-indexed, renamed,
    /// or its peer's MAC learnt, changed or forgotten.
    fn random_change(rng: &mut Rng, interfaces: &mut Interfaces, names: &Names) {
        let name = names.pick(rng);
        match rng.below(5) {
            0 => {
                interfaces.links.remove(&name);
                interfaces.peer_macs.remove(&name);
            }
            1 => random_link(rng, interfaces, &name),
            2 => {
                if let Some(link) = interfaces.links.get_mut(&name) {
                    link.index = 1 + rng.below(40) as u32;
                }
            }
            3 => {
                let to = names.pick(rng);
                if let Some(mut link) = interfaces.links.remove(&name) {
                    link.name = to.clone();
                    interfaces.links.insert(to.clone(), link);
                }
                if let Some(mac) = interfaces.peer_macs.remove(&name) {
                    interfaces.peer_macs.insert(to, mac);
                }
            }
            _ => {
                if rng.percent(60) {
                    let mac = rng.mac();
                    interfaces.peer_macs.insert(name, mac);
                } else {
                    interfaces.peer_macs.remove(&name);
                }
            }
        }
    }

    #[test]
    fn with_interfaces_is_a_full_compile_on_any_interface_change() {
        let mut rng = Rng(0x5fc_1ac4);
        let origins = Origins::new();
        let (mut cases, mut incremental, mut incremental_refused) = (0, 0, 0);
        let started = Instant::now();
        for _ in 0..800 {
            let (state, names) = random_state(&mut rng);
            validate(&state, &origins).expect("a valid state");
            let mut interfaces = Interfaces::default();
            for name in names.all() {
                if rng.percent(80) {
                    random_link(&mut rng, &mut interfaces, name);
                }
            }
            // The last image that compiled, as the agent keeps it.
            let mut last = compile_cached(&state, &interfaces, &origins).ok();
            for _ in 0..16 {
                for _ in 0..1 + rng.below(3) {
                    random_change(&mut rng, &mut interfaces, &names);
                }
                let Some(before) = &last else {
                    last = compile_cached(&state, &interfaces, &origins).ok();
                    continue;
                };
                let full = compile(&state, &interfaces, &origins);
                let partial = !before.verdicts_change(&interfaces);
                let got = before.with_interfaces(&state, &interfaces, &origins);
                assert_eq!(
                    got.as_ref().map(Compiled::image),
                    full.as_ref(),
                    "{state:#?}\nfrom {:#?}\nto {interfaces:#?}",
                    before.interfaces
                );
                cases += 1;
                incremental += partial as usize;
                incremental_refused += (partial && got.is_err()) as usize;
                if let Ok(compiled) = got {
                    last = Some(compiled);
                }
            }
        }
        println!(
            "{cases} cases ({incremental} incremental, {incremental_refused} of them refused) in {:?}",
            started.elapsed()
        );
        assert!(cases >= 4000, "{cases}");
        assert!(incremental >= cases / 3, "{incremental} of {cases}");
        assert!(
            cases - incremental >= cases / 10,
            "{incremental} of {cases}"
        );
        assert!(incremental_refused >= 100, "{incremental_refused}");
    }

    /// `chains` chains of two hops over 100 groups of two members, 100 classifiers each, one
    /// chain in `symmetric` symmetric; every interface present.
    fn large(chains: u32, symmetric: u32) -> (State, Interfaces) {
        let mut s = State::default();
        let mut interfaces = Interfaces::default();
        let mut index = 0;
        let mut link = |interfaces: &mut Interfaces, name: &str| {
            index += 1;
            veth(interfaces, name, index);
        };
        for g in 0..100 {
            let members = [format!("m{g}a"), format!("m{g}b")];
            for m in &members {
                pair(&mut s, m, &format!("{m}i"), &format!("{m}e"));
                link(&mut interfaces, &format!("{m}i"));
                link(&mut interfaces, &format!("{m}e"));
            }
            group(&mut s, &format!("g{g:03}"), &[&members[0], &members[1]]);
        }
        for p in 0..4 {
            link(&mut interfaces, &format!("src{p}"));
            link(&mut interfaces, &format!("dst{p}"));
        }
        for c in 0..chains {
            let (a, b) = (c % 100, (c % 100 + 1 + c / 100) % 100);
            let mut fcs = Vec::new();
            for k in 0..100u32 {
                let n = c * 100 + k;
                let name = format!("fc{n:06}");
                s.flow_classifiers.insert(
                    name.clone(),
                    FlowClassifierSpec {
                        ethertype: Default::default(),
                        protocol: None,
                        source_port_range: None,
                        destination_port_range: None,
                        source_ip_prefix: None,
                        destination_ip_prefix: Some(format!(
                            "10.{}.{}.{}/32",
                            n >> 16,
                            (n >> 8) & 0xff,
                            n & 0xff
                        )),
                        logical_source_port: format!("src{}", c % 4),
                        logical_destination_port: Some(format!("dst{}", c % 4)),
                        unparsable: Default::default(),
                    },
                );
                fcs.push(name);
            }
            s.port_chains.insert(
                format!("c{c:04}"),
                PortChainSpec {
                    port_pair_groups: vec![format!("g{a:03}"), format!("g{b:03}")],
                    flow_classifiers: fcs,
                    chain_parameters: ChainParameters {
                        symmetric: c % symmetric == 0,
                        ..Default::default()
                    },
                    chain_id: Some(c + 1),
                },
            );
        }
        (s, interfaces)
    }

    fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let started = Instant::now();
        let value = f();
        (value, started.elapsed())
    }

    #[test]
    fn notes_keep_their_order_when_hits_are_counted_per_chain() {
        // 2 * (2 + 100) counters per chain: 165 chains need more than the node holds.
        let (state, interfaces) = large(165, 1);
        let origins = Origins::new();
        let compiled = compile_cached(&state, &interfaces, &origins).expect("compiles");
        let mut after = interfaces.clone();
        after.links.remove("m0ai");
        after.peer_macs.remove("m0ai");
        assert!(!compiled.verdicts_change(&after));
        let image = compiled
            .with_interfaces(&state, &after, &origins)
            .expect("compiles")
            .into_image();
        assert_eq!(Ok(&image), compile(&state, &after, &origins).as_ref());
        assert_eq!(
            image.notes,
            [
                "PortPair \"m0a\": interface \"m0ai\" is not present; the member is skipped until it appears",
                "33660 counters would be needed to count each classifier's hits; this node holds 32767: hits are counted per chain",
                "interface \"m0ai\" is not present; steering from it starts when it appears",
            ]
        );
    }

    /// The 100 000 classifiers of the capacity figures, one chain in ten symmetric.
    #[test]
    #[ignore = "a measurement: run with --release -- --ignored --nocapture"]
    fn an_sf_interface_deleted_at_100_000_classifiers() {
        let (state, interfaces) = large(1000, 10);
        let origins = Origins::new();
        let (compiled, first) = timed(|| compile_cached(&state, &interfaces, &origins));
        let compiled = compiled.expect("compiles");
        let mut after = interfaces.clone();
        after.links.remove("m0ai");
        after.peer_macs.remove("m0ai");
        assert!(!compiled.verdicts_change(&after));
        // Each the best of 5, alternating so that both see the same load.
        let (mut full_took, mut partial_took) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            let (full, took) = timed(|| compile(&state, &after, &origins));
            full_took = full_took.min(took);
            let (partial, took) = timed(|| compiled.with_interfaces(&state, &after, &origins));
            partial_took = partial_took.min(took);
            assert_eq!(partial.as_ref().map(Compiled::image), full.as_ref());
            // And back: the member's interface re-created.
            let back = partial
                .unwrap()
                .with_interfaces(&state, &interfaces, &origins);
            assert_eq!(back.expect("compiles").image(), compiled.image());
        }
        // What with_interfaces cannot avoid: a new image holds its own classify map.
        let (_, clone_took) = timed(|| compiled.image().classify.clone());
        println!(
            "{} classifiers, {} classify entries: compile_cached {first:?}; one member interface deleted: full compile {full_took:?}, with_interfaces {partial_took:?} (of which cloning the classify map {clone_took:?})",
            state.flow_classifiers.len(),
            compiled.image().classify.len(),
        );
    }
}
