//! The dataplane's fixed sizes, checked at apply time so that an update that cannot fit is
//! refused whole, before anything is written, with an error that names the object where the
//! limit is passed, the limit, and what to do. The sizes come from `sfc_common`, the same
//! constants the eBPF maps are declared with.
//!
//! Where the limit is passed: objects are counted in apply order (those applied before first,
//! then the files' objects in order, see [`Origins`]), so that the object named is one being
//! applied whenever the state applied before fitted.
//!
//! Some limits are checked while compiling (the compiler knows the counts); those that depend
//! on the state alone, counting interfaces whether present or not, are in [`limits_of_state`],
//! which `plan` runs after compiling.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::{CLASSIFY_CAPACITY, MEMBER_SLOTS, PORTS_CAPACITY, RING_SIZE, SLOTS_PER_GEN};

use crate::{
    document::{shown, ConfigError},
    model::{Kind, State},
    validate::{Origins, Rank},
};

/// Classifier entries one generation may hold: the map holds both generations, and the new
/// one is written while the old one still steers.
pub const CLASSIFY_PER_GEN: usize = (CLASSIFY_CAPACITY / 2) as usize;
/// Source-port ranges of classify entries that have several, per generation.
pub const SOURCE_PORTS_PER_GEN: usize = sfc_common::SOURCE_PORTS_PER_GEN as usize;
/// Interfaces with the program, per generation (likewise).
pub const PORTS_PER_GEN: usize = (PORTS_CAPACITY / 2) as usize;
/// SF-facing interfaces with counters: slot 0 of the member counters means "none".
pub const COUNTED_INTERFACES: usize = (MEMBER_SLOTS - 1) as usize;
/// Members of one group: each needs at least one entry of its table.
pub const GROUP_MEMBERS: usize = RING_SIZE as usize;
/// Chain ids travel in 16 bits; 0 means none.
pub const MAX_CHAIN_ID: u32 = u16::MAX as u32;

/// An input error naming the file the object came from (or the applied state).
pub fn error(
    origins: &Origins,
    kind: Kind,
    name: &str,
    field: &str,
    message: String,
) -> ConfigError {
    ConfigError {
        file: origins.file(kind, name).to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        field: field.to_string(),
        message,
    }
}

/// Group tables (Maglev rings): one per group some chain uses (tap groups need none; both
/// directions of a symmetric chain share one). Names the first chain, in apply order, that
/// needs one too many.
pub fn group_tables(state: &State, origins: &Origins) -> Option<ConfigError> {
    let mut groups = BTreeSet::new();
    for (name, chain) in origins.in_apply_order(Kind::PortChain, &state.port_chains) {
        for group in &chain.port_pair_groups {
            if !state
                .port_pair_groups
                .get(group)
                .is_some_and(|g| g.tap_enabled)
            {
                groups.insert(group);
            }
        }
        let needed = groups.len();
        if needed > SLOTS_PER_GEN as usize {
            return Some(error(
                origins,
                Kind::PortChain,
                name,
                "spec.portPairGroups",
                format!(
                    "needs group table {needed}, and this node holds at most {SLOTS_PER_GEN} (one per group in use); use fewer groups: let chains share groups, or delete chains no longer needed"
                ),
            ));
        }
    }
    None
}

/// Classification domains of logical ports are numbered below the groups' domains: at most
/// `limit - 1` logical ports. Names the classifier (or chain) that brings in the first one too
/// many.
pub fn entry_ports<P: AsRef<str>>(
    ports: &BTreeMap<P, u32>,
    limit: u32,
    state: &State,
    origins: &Origins,
) -> Option<ConfigError> {
    if ports.len() < limit as usize {
        return None;
    }
    let ports: BTreeSet<&str> = ports.keys().map(|p| p.as_ref()).collect();
    let uses: Vec<Use> = logical_port_uses(state, origins)
        .into_iter()
        .filter(|u| ports.contains(u.item))
        .collect();
    let passed = past_limit(&uses, limit as usize - 1, origins)?;
    Some(passed.error(
        origins,
        format!(
            "{} would be logical port {limit}, and this node supports at most {}; let classifiers share logical ports",
            shown(passed.item()),
            limit - 1
        ),
    ))
}

/// Classifier map entries, counted after destination-port ranges are split into blocks and
/// after entries of one key are merged. `at` is the classifier whose entries pass the limit.
pub fn classifier_entries(
    count: usize,
    at: Option<&str>,
    origins: &Origins,
) -> Option<ConfigError> {
    if count <= CLASSIFY_PER_GEN {
        return None;
    }
    Some(error(
        origins,
        Kind::FlowClassifier,
        at.unwrap_or_default(),
        "spec",
        format!(
            "the classifiers need {count} classifier map entries, and this node holds at most {CLASSIFY_PER_GEN} (the limit is passed at this classifier); a classifier takes one entry per block of its destination-port range (blocks of 1, 16, 256 or 4096 aligned ports: \"8192:12287\" is one block, \"2:65534\" is 103) where it enters and again after each hop: use fewer classifiers or hops, or destination-port ranges aligned to those blocks"
        ),
    ))
}

/// Source-port ranges stored for keys that several classifiers share (those differing by
/// source port alone). `at` is the classifier whose ranges pass the limit.
pub fn source_port_ranges(
    count: usize,
    at: Option<&str>,
    origins: &Origins,
) -> Option<ConfigError> {
    if count <= SOURCE_PORTS_PER_GEN {
        return None;
    }
    Some(error(
        origins,
        Kind::FlowClassifier,
        at.unwrap_or_default(),
        "spec.sourcePortRange",
        format!(
            "the classifiers need {count} stored source-port ranges, and this node holds at most {SOURCE_PORTS_PER_GEN} (the limit is passed at this classifier); ranges are stored where classifiers with the same addresses, protocol and destination port differ by source port alone: merge such classifiers into fewer, wider ranges"
        ),
    ))
}

/// Interfaces that need the program, among those present (`attach`): logical ports and SF
/// egress ports (and SF ingress ports of symmetric chains). Names an object that brings in
/// the first interface too many.
pub fn managed_interfaces(
    attach: &BTreeMap<String, u32>,
    state: &State,
    origins: &Origins,
) -> Option<ConfigError> {
    if attach.len() <= PORTS_PER_GEN {
        return None;
    }
    let uses: Vec<Use> = steering_uses(state, origins)
        .into_iter()
        .filter(|u| attach.contains_key(u.item))
        .collect();
    let passed = past_limit(&uses, PORTS_PER_GEN, origins)?;
    Some(passed.error(
        origins,
        format!(
            "{} interfaces need the steering program, and this node manages at most {PORTS_PER_GEN} ({} is past the limit); use fewer logical ports or SF instances on this node",
            passed.count,
            shown(passed.item())
        ),
    ))
}

/// A new chain when every chain id is taken.
pub fn no_chain_id(name: &str, origins: &Origins) -> ConfigError {
    error(
        origins,
        Kind::PortChain,
        name,
        "spec.chainId",
        format!(
            "needs a chain id, but all {MAX_CHAIN_ID} are taken (chain ids are 1..{MAX_CHAIN_ID}); delete PortChains no longer needed"
        ),
    )
}

/// The limits that depend on the state alone, whatever interfaces are present: members per
/// group, SF-facing interfaces with counters, and interfaces with the program. An interface
/// counts whether it is present or not, so that one appearing later can never pass a limit
/// at runtime (where nothing could be refused any more). `plan` runs them, so `validate`
/// and `--dry-run` report them too.
pub fn limits_of_state(state: &State, origins: &Origins) -> Vec<ConfigError> {
    let mut errors = group_members(state, origins);
    errors.extend(counted_interfaces(state, origins));
    errors.extend(steered_interfaces(state, origins));
    errors
}

/// A group's members share its table of [`RING_SIZE`] entries, and each needs one: past
/// that, some would never get traffic.
fn group_members(state: &State, origins: &Origins) -> Vec<ConfigError> {
    origins
        .in_apply_order(Kind::PortPairGroup, &state.port_pair_groups)
        .into_iter()
        .filter(|(_, g)| g.port_pairs.len() > GROUP_MEMBERS)
        .map(|(name, g)| {
            error(
                origins,
                Kind::PortPairGroup,
                name,
                "spec.portPairs",
                format!(
                    "lists {} PortPairs, and a group holds at most {GROUP_MEMBERS} (its members share a table of {RING_SIZE} entries, one at least each); use fewer instances in this group",
                    g.port_pairs.len()
                ),
            )
        })
        .collect()
}

/// SF-facing interfaces get a counter slot each: the ingress and egress of every member of a
/// group some chain uses, and the ingress of every tap, present or not; an interface crossed by
/// two pairs (one's ingress, the other's egress) gets one per pair.
fn counted_interfaces(state: &State, origins: &Origins) -> Vec<ConfigError> {
    per_node(counter_uses(state, origins), |node, uses| {
        let passed = past_limit(uses, COUNTED_INTERFACES, origins)?;
        Some(passed.error(
            origins,
            format!(
                "{} SF-facing interfaces would have counters (the ingress and egress of every member of a group in use, and the ingress of every tap, present or not), and {node} has {COUNTED_INTERFACES} counter slots ({} is past the limit); use fewer SF instances on {node}, or one interface for an instance's ingress and egress",
                passed.count,
                shown(passed.item())
            ),
        ))
    })
}

/// Interfaces that get the program once present (see [`managed_interfaces`] for those
/// present now).
fn steered_interfaces(state: &State, origins: &Origins) -> Vec<ConfigError> {
    per_node(steering_uses(state, origins), |node, uses| {
        let passed = past_limit(uses, PORTS_PER_GEN, origins)?;
        Some(passed.error(
            origins,
            format!(
                "{} interfaces would need the steering program (logical ports and SF interfaces, present or not), and {node} manages at most {PORTS_PER_GEN} ({} is past the limit); use fewer logical ports or SF instances on {node}",
                passed.count,
                shown(passed.item())
            ),
        ))
    })
}

/// Checks each node's uses apart: in a cluster's state interfaces are written `NODE/IFNAME`,
/// and every node has limits of its own; unqualified ones are this node's.
fn per_node<'s>(
    uses: Vec<Use<'s>>,
    check: impl Fn(&str, &[Use<'s>]) -> Option<ConfigError>,
) -> Vec<ConfigError> {
    let mut nodes: BTreeMap<&str, Vec<Use<'s>>> = BTreeMap::new();
    for u in uses {
        let node = crate::nodes::split(u.item).map_or("", |(node, _)| node);
        nodes.entry(node).or_default().push(u);
    }
    nodes
        .into_iter()
        .filter_map(|(node, uses)| {
            let node = if node.is_empty() {
                "this node".to_string()
            } else {
                format!("node {node}")
            };
            check(&node, &uses)
        })
        .collect()
}

/// One unit of a capacity (`item`, counted once however many uses it has), and the objects
/// that make it needed: each with the field that brings it in. It counts from when the last
/// of them is applied.
struct Use<'s> {
    item: &'s str,
    /// For counter slots: the item is a pair's egress only. An interface crossed by two pairs
    /// (one's ingress, the other's egress) has a slot for each ([`Side::key`](crate::compile::Side::key)).
    egress_side: bool,
    by: Vec<(Kind, &'s str, String)>,
}

impl Use<'_> {
    /// The object of `by` applied last (the first of equals), and its rank.
    fn latest(&self, origins: &Origins) -> (Rank, usize) {
        let mut latest = (origins.rank(self.by[0].0, self.by[0].1), 0);
        for (i, (kind, name, _)) in self.by.iter().enumerate().skip(1) {
            let rank = origins.rank(*kind, name);
            if rank > latest.0 {
                latest = (rank, i);
            }
        }
        latest
    }
}

/// Where a limit is passed: the use whose item is the first one too many, the object of it
/// to name (index into `by`), and how many items there are.
struct Passed<'u, 's> {
    at: &'u Use<'s>,
    by: usize,
    count: usize,
}

impl Passed<'_, '_> {
    fn item(&self) -> &str {
        self.at.item
    }

    fn error(&self, origins: &Origins, message: String) -> ConfigError {
        let (kind, name, field) = &self.at.by[self.by];
        error(origins, *kind, name, field, message)
    }
}

/// Counts the distinct items of `uses` in apply order: each from its earliest use, and items
/// of the same rank in name order. Past `limit`, says where.
fn past_limit<'u, 's>(
    uses: &'u [Use<'s>],
    limit: usize,
    origins: &Origins,
) -> Option<Passed<'u, 's>> {
    // Item -> (rank, use, object of the use), its earliest use.
    let mut first: BTreeMap<(&str, bool), (Rank, usize, usize)> = BTreeMap::new();
    for (u, item_use) in uses.iter().enumerate() {
        let (rank, by) = item_use.latest(origins);
        let key = (item_use.item, item_use.egress_side);
        let earliest = first.entry(key).or_insert((rank, u, by));
        if rank < earliest.0 {
            *earliest = (rank, u, by);
        }
    }
    if first.len() <= limit {
        return None;
    }
    let mut order: Vec<(Rank, (&str, bool), usize, usize)> = first
        .iter()
        .map(|(item, &(rank, u, by))| (rank, *item, u, by))
        .collect();
    order.sort_unstable();
    let (_, _, u, by) = order[limit];
    Some(Passed {
        at: &uses[u],
        by,
        count: first.len(),
    })
}

/// Logical ports, as the compiler gives them a classification domain: the source port of every
/// classifier a chain lists, and the destination port of those of symmetric chains (where
/// reverse traffic enters).
fn logical_port_uses<'s>(state: &'s State, origins: &Origins) -> Vec<Use<'s>> {
    let mut uses = Vec::new();
    for (chain_name, chain) in origins.in_apply_order(Kind::PortChain, &state.port_chains) {
        for (i, fc_name) in chain.flow_classifiers.iter().enumerate() {
            let Some(fc) = state.flow_classifiers.get(fc_name) else {
                continue;
            };
            let listed = (
                Kind::PortChain,
                chain_name.as_str(),
                format!("spec.flowClassifiers[{i}]"),
            );
            uses.push(Use {
                item: &fc.logical_source_port,
                egress_side: false,
                by: vec![
                    (
                        Kind::FlowClassifier,
                        fc_name,
                        "spec.logicalSourcePort".into(),
                    ),
                    listed.clone(),
                ],
            });
            if let (true, Some(ldp)) = (
                chain.chain_parameters.symmetric,
                &fc.logical_destination_port,
            ) {
                uses.push(Use {
                    item: ldp,
                    egress_side: false,
                    by: vec![
                        (
                            Kind::FlowClassifier,
                            fc_name,
                            "spec.logicalDestinationPort".into(),
                        ),
                        listed,
                    ],
                });
            }
        }
    }
    uses
}

/// A group's place in the first chain (in apply order) that uses it in some way.
type FirstChain<'s> = BTreeMap<&'s str, (Kind, &'s str, String)>;

fn note_first<'s>(first: &mut FirstChain<'s>, group: &'s str, chain: &'s str, hop: usize) {
    first.entry(group).or_insert_with(|| {
        (
            Kind::PortChain,
            chain,
            format!("spec.portPairGroups[{hop}]"),
        )
    });
}

/// The uses of each pair of `group` on one side (ingress or egress), brought in by `chains`;
/// `counting` counter slots (one per side of an interface) rather than interfaces.
fn member_uses<'s>(
    state: &'s State,
    group: &'s str,
    (ingress, counting): (bool, bool),
    chains: &[&(Kind, &'s str, String)],
    uses: &mut Vec<Use<'s>>,
) {
    let Some(spec) = state.port_pair_groups.get(group) else {
        return;
    };
    for (k, pp_name) in spec.port_pairs.iter().enumerate() {
        let Some(pp) = state.port_pairs.get(pp_name) else {
            continue;
        };
        let (item, field) = if ingress {
            (&pp.ingress, "spec.ingress")
        } else {
            (&pp.egress, "spec.egress")
        };
        let mut by = vec![
            (Kind::PortPair, pp_name.as_str(), field.to_string()),
            (Kind::PortPairGroup, group, format!("spec.portPairs[{k}]")),
        ];
        by.extend(chains.iter().map(|c| (*c).clone()));
        // Only what counts slots tells the sides apart; an interface gets the program once.
        let egress_side = counting && !ingress && pp.ingress != pp.egress;
        uses.push(Use {
            item,
            egress_side,
            by,
        });
        if spec.tap_enabled {
            // A tap: its one pair's ingress only.
            return;
        }
    }
}

/// The interfaces the compiler attaches the program to when present: the logical ports; the
/// egress of every member of a group whose egress side classifies something (a chain with a
/// classifier goes through it); and the ingress of every member of a group of a symmetric
/// chain whose reverse side classifies something (a symmetric chain with a classifier goes
/// through it, or the group's members share one interface for both sides).
fn steering_uses<'s>(state: &'s State, origins: &Origins) -> Vec<Use<'s>> {
    let mut uses = logical_port_uses(state, origins);
    let is_tap = |g: &str| state.port_pair_groups.get(g).is_some_and(|g| g.tap_enabled);
    let (mut forward, mut reverse, mut symmetric) =
        (FirstChain::new(), FirstChain::new(), FirstChain::new());
    for (name, chain) in origins.in_apply_order(Kind::PortChain, &state.port_chains) {
        let classifiers: Vec<_> = chain
            .flow_classifiers
            .iter()
            .filter_map(|f| state.flow_classifiers.get(f))
            .collect();
        let sym = chain.chain_parameters.symmetric;
        let reverse_entries = sym
            && classifiers
                .iter()
                .any(|f| f.logical_destination_port.is_some());
        for (hop, g) in chain.port_pair_groups.iter().enumerate() {
            if is_tap(g) || !state.port_pair_groups.contains_key(g) {
                continue;
            }
            if !classifiers.is_empty() {
                note_first(&mut forward, g, name, hop);
            }
            if reverse_entries {
                note_first(&mut reverse, g, name, hop);
            }
            if sym {
                note_first(&mut symmetric, g, name, hop);
            }
        }
    }
    for (group, chain) in &forward {
        member_uses(state, group, (false, false), &[chain], &mut uses);
    }
    for (group, sym_chain) in &symmetric {
        let shared = state.port_pair_groups[*group].port_pairs.iter().any(|pp| {
            state
                .port_pairs
                .get(pp)
                .is_some_and(|p| p.ingress == p.egress)
        });
        let entries = if shared { &forward } else { &reverse };
        if let Some(chain) = entries.get(group) {
            member_uses(state, group, (true, false), &[sym_chain, chain], &mut uses);
        }
    }
    uses
}

/// The SF-facing interfaces the compiler gives counters when present: both sides of every
/// member of a group some chain uses, and the ingress of every tap some chain uses.
fn counter_uses<'s>(state: &'s State, origins: &Origins) -> Vec<Use<'s>> {
    let mut first = FirstChain::new();
    for (name, chain) in origins.in_apply_order(Kind::PortChain, &state.port_chains) {
        for (hop, g) in chain.port_pair_groups.iter().enumerate() {
            note_first(&mut first, g, name, hop);
        }
    }
    let mut uses = Vec::new();
    for (group, chain) in &first {
        member_uses(state, group, (true, true), &[chain], &mut uses);
        if !state
            .port_pair_groups
            .get(*group)
            .is_some_and(|g| g.tap_enabled)
        {
            member_uses(state, group, (false, true), &[chain], &mut uses);
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{compile, Interfaces, Link},
        document::ConfigErrors,
        model::{FlowClassifierSpec, PortChainSpec, PortRange},
        plan::plan,
        testing::{chain, doc, group, pair},
    };

    fn classifier(dst: String, ports: Option<&str>) -> FlowClassifierSpec {
        FlowClassifierSpec {
            ethertype: Default::default(),
            protocol: ports.map(|_| crate::model::Protocol::Name("udp".into())),
            source_port_range: ports.map(|p| PortRange::Text(p.into())),
            destination_port_range: ports.map(|p| PortRange::Text(p.into())),
            source_ip_prefix: None,
            destination_ip_prefix: Some(dst),
            logical_source_port: "src".into(),
            logical_destination_port: None,
            unparsable: Default::default(),
        }
    }

    /// `n` groups of one pair each, pair `i` on interfaces `i{i}` / `e{i}`.
    fn groups(n: usize) -> State {
        let mut state = State::default();
        for i in 0..n {
            pair(
                &mut state,
                &format!("pp{i}"),
                &format!("i{i}"),
                &format!("e{i}"),
            );
            group(&mut state, &format!("g{i:04}"), &[format!("pp{i}")]);
        }
        state
    }

    /// The one error of a refused compile, as printed.
    fn only_error(result: Result<impl std::fmt::Debug, ConfigErrors>) -> String {
        let errors = result.expect_err("should be refused").0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    #[test]
    fn group_tables_past_the_limit_name_the_chain() {
        let limit = SLOTS_PER_GEN as usize;
        let mut state = groups(limit + 1);
        for i in 0..limit {
            chain(
                &mut state,
                &format!("c{i:04}"),
                &[format!("g{i:04}")],
                &[],
                false,
            );
        }
        compile(&state, &Interfaces::default(), &Origins::new()).expect("exactly at the limit");
        let at_limit = state.clone();
        chain(&mut state, "c9999", &[format!("g{limit:04}")], &[], false);
        let err = only_error(compile(&state, &Interfaces::default(), &Origins::new()));
        assert!(
            err.starts_with("(applied state): PortChain \"c9999\": spec.portPairGroups: needs group table 513, and this node holds at most 512"),
            "{err}"
        );
        assert!(err.contains("let chains share groups"), "{err}");

        // Tap groups need no table.
        let mut state = at_limit;
        state
            .port_pair_groups
            .get_mut(&format!("g{limit:04}"))
            .unwrap()
            .tap_enabled = true;
        chain(
            &mut state,
            "c9999",
            &["g0000".to_string(), format!("g{limit:04}")],
            &[],
            false,
        );
        compile(&state, &Interfaces::default(), &Origins::new())
            .expect("a tap group needs no table");
    }

    #[test]
    fn classifier_entries_are_counted_after_port_ranges_are_split() {
        // 32 hops: 33 domains. "2:65534" is 103 destination-port blocks (14, 15, 15 and 14
        // ports, of 1, 16, 256 and 4096, then back down: 15, 15, 15); the source-port range
        // adds none. 3399 entries per classifier; 155 of them pass 524 288, at the 155th.
        let hops = 32;
        let mut state = groups(hops);
        let mut fcs = Vec::new();
        for n in 0..155u32 {
            let name = format!("fc{n:03}");
            state.flow_classifiers.insert(
                name.clone(),
                classifier(format!("10.0.{}.{}/32", n >> 8, n & 0xff), Some("2:65534")),
            );
            fcs.push(name);
        }
        let all: Vec<String> = (0..hops).map(|i| format!("g{i:04}")).collect();
        chain(&mut state, "c", &all, &fcs, false);
        let err = only_error(compile(&state, &Interfaces::default(), &Origins::new()));
        assert!(
            err.starts_with("(applied state): FlowClassifier \"fc154\": spec: the classifiers need 526845 classifier map entries, and this node holds at most 524288"),
            "{err}"
        );
        assert!(
            err.contains("destination-port ranges aligned to those blocks"),
            "{err}"
        );
    }

    #[test]
    fn managed_interfaces_past_the_limit_name_a_port_pair() {
        // One group of 4097 instances: 4097 egress ports plus the logical port.
        let n = PORTS_PER_GEN + 1;
        let mut state = State::default();
        let mut interfaces = Interfaces::default();
        let mut link = |name: String, index: u32| {
            interfaces
                .peer_macs
                .insert(name.clone(), [2, 0, 0, 0, 0, 1]);
            interfaces.links.insert(
                name.clone(),
                Link {
                    index,
                    name,
                    mac: None,
                    kind: Some("veth".into()),
                    peer_index: None,
                    peer_nsid: None,
                    up: true,
                    running: true,
                    mtu: 1500,
                },
            );
        };
        let mut pairs = Vec::new();
        for i in 0..n {
            pair(
                &mut state,
                &format!("pp{i:04}"),
                &format!("i{i:04}"),
                &format!("e{i:04}"),
            );
            link(format!("i{i:04}"), 10 + 2 * i as u32);
            link(format!("e{i:04}"), 11 + 2 * i as u32);
            pairs.push(format!("pp{i:04}"));
        }
        link("src".into(), 1);
        group(&mut state, "g", &pairs);
        state
            .flow_classifiers
            .insert("fc".into(), classifier("10.0.0.1/32".into(), None));
        chain(&mut state, "c", &["g"], &["fc"], false);
        let err = only_error(compile(&state, &interfaces, &Origins::new()));
        assert!(
            err.starts_with("(applied state): PortPair \"pp4096\": spec.egress: 4098 interfaces need the steering program, and this node manages at most 4096 (\"e4096\" is past the limit)"),
            "{err}"
        );
    }

    #[test]
    fn chain_ids_run_out_at_65535() {
        let mut current = State::default();
        for id in 1..=MAX_CHAIN_ID {
            current.port_chains.insert(
                format!("c{id:05}"),
                PortChainSpec {
                    port_pair_groups: vec!["g".into()],
                    flow_classifiers: vec![],
                    chain_parameters: Default::default(),
                    chain_id: Some(id),
                },
            );
        }
        let file = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortChain\nmetadata: {name: extra}\nspec: {portPairGroups: [g]}\n";
        let err = only_error(
            plan(
                &current,
                &[("more.yaml".into(), file.into())],
                &Interfaces::default(),
            )
            .map(|_| ()),
        );
        assert_eq!(
            err,
            "more.yaml: PortChain \"extra\": spec.chainId: needs a chain id, but all 65535 are taken (chain ids are 1..65535); delete PortChains no longer needed"
        );
    }

    #[test]
    fn match_shapes_per_interface_are_limited() {
        // Nested destination prefixes /16 .. /32 in one chain: 17 shapes at one port.
        let mut state = groups(1);
        let mut fcs = Vec::new();
        for len in 16..=32 {
            let name = format!("fc{len}");
            state
                .flow_classifiers
                .insert(name.clone(), classifier(format!("10.1.0.0/{len}"), None));
            fcs.push(name);
        }
        chain(&mut state, "c", &["g0000".into()], &fcs, false);
        let err = compile(&state, &Interfaces::default(), &Origins::new())
            .expect_err("17 shapes")
            .to_string();
        assert!(
            err.contains("need 17 distinct match shapes") && err.contains("at most 16"),
            "{err}"
        );
        assert!(
            err.contains("give these classifiers fewer distinct prefix lengths"),
            "{err}"
        );
        // Each line names its place: the entry port, then the group the packets leave.
        assert!(err.contains("the classifiers entering at port "), "{err}");
        assert!(
            err.contains("the classifiers leaving group g0000 need"),
            "{err}"
        );
    }

    /// `plan` over `current` with one file; the errors as printed.
    fn plan_errors(current: &State, text: String) -> Result<(), Vec<String>> {
        plan(
            current,
            &[("new.yaml".into(), text)],
            &Interfaces::default(),
        )
        .map(|_| ())
        .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_chain_past_the_group_tables_is_named_in_apply_order() {
        // 512 applied chains use every table; a new chain that sorts first by name is the
        // one past the limit, not the last applied one by name.
        let limit = SLOTS_PER_GEN as usize;
        let mut current = groups(limit + 1);
        for i in 0..limit {
            chain(
                &mut current,
                &format!("c{i:04}"),
                &[format!("g{i:04}")],
                &[],
                false,
            );
        }
        let file = doc(
            "PortChain",
            "a0",
            &format!("{{portPairGroups: [g{limit:04}]}}"),
        );
        assert_eq!(
            plan_errors(&current, file),
            Err(vec![format!("new.yaml: PortChain \"a0\": spec.portPairGroups: needs group table 513, and this node holds at most 512 (one per group in use); use fewer groups: let chains share groups, or delete chains no longer needed")])
        );
    }

    #[test]
    fn entry_ports_past_the_limit_name_the_classifier_being_applied() {
        let mut state = groups(1);
        let mut fcs = Vec::new();
        for (name, port) in [("fa", "p1"), ("fb", "p2"), ("fc", "p3")] {
            let mut fc = classifier(format!("10.0.0.{}/32", fcs.len()), None);
            fc.logical_source_port = port.into();
            state.flow_classifiers.insert(name.into(), fc);
            fcs.push(name.to_string());
        }
        chain(&mut state, "c", &["g0000".into()], &fcs, false);
        let ports: BTreeMap<&String, u32> = state
            .flow_classifiers
            .values()
            .enumerate()
            .map(|(i, fc)| (&fc.logical_source_port, i as u32 + 1))
            .collect();
        // Two logical ports at most; fb is being applied, so its port is the one too many.
        let mut origins = Origins::new();
        origins.insert(Kind::FlowClassifier, "fb", "new.yaml");
        let err = entry_ports(&ports, 3, &state, &origins).expect("3 ports, 2 allowed");
        assert_eq!(
            err.to_string(),
            "new.yaml: FlowClassifier \"fb\": spec.logicalSourcePort: \"p2\" would be logical port 3, and this node supports at most 2; let classifiers share logical ports"
        );
        assert_eq!(entry_ports(&ports, 4, &state, &origins), None);
    }

    /// Pairs `pp{i}` on `i{i}`/`e{i}` (a shared interface `s{i}` for those in `shared`), in
    /// groups of at most [`GROUP_MEMBERS`], one chain through all groups.
    fn many_pairs(n: usize, shared: usize) -> State {
        let mut state = State::default();
        let mut names = Vec::new();
        for i in 0..n {
            let name = format!("pp{i:04}");
            if i < shared {
                pair(&mut state, &name, &format!("s{i:04}"), &format!("s{i:04}"));
            } else {
                pair(&mut state, &name, &format!("i{i:04}"), &format!("e{i:04}"));
            }
            names.push(name);
        }
        let groups: Vec<String> = names
            .chunks(GROUP_MEMBERS)
            .enumerate()
            .map(|(k, chunk)| {
                let g = format!("g{k}");
                group(&mut state, &g, chunk);
                g
            })
            .collect();
        chain(&mut state, "c", &groups, &[], false);
        state
    }

    #[test]
    fn counter_slots_are_checked_at_plan_time_for_interfaces_present_or_not() {
        // 2047 pairs with two interfaces and one with one: 4095, every slot.
        let at_limit = many_pairs(2048, 1);
        assert_eq!(
            counter_uses(&at_limit, &Origins::new())
                .iter()
                .map(|u| u.item)
                .collect::<BTreeSet<_>>()
                .len(),
            COUNTED_INTERFACES
        );
        let unrelated = doc("PortPair", "spare", "{ingress: x-in, egress: x-out}");
        assert_eq!(plan_errors(&at_limit, unrelated.clone()), Ok(()));
        // The same pair, now a member of the last group: two interfaces too many.
        let last = &at_limit.port_pair_groups["g2"];
        let mut members = last.port_pairs.clone();
        members.push("spare".into());
        let file = unrelated
            + &doc(
                "PortPairGroup",
                "g2",
                &format!("{{portPairs: [{}]}}", members.join(", ")),
            );
        assert_eq!(
            plan_errors(&at_limit, file),
            Err(vec![format!(
                "new.yaml: PortPairGroup \"g2\": spec.portPairs[6]: 4097 SF-facing interfaces would have counters (the ingress and egress of every member of a group in use, and the ingress of every tap, present or not), and this node has 4095 counter slots (\"x-in\" is past the limit); use fewer SF instances on this node, or one interface for an instance's ingress and egress"
            )])
        );
    }

    #[test]
    fn steered_interfaces_are_checked_at_plan_time_for_interfaces_present_or_not() {
        // One pair, and 4095 classifiers entering at their own logical ports: 4096 interfaces
        // would need the program once present (none is).
        let mut current = groups(1);
        let fcs: Vec<String> = (0..PORTS_PER_GEN - 1)
            .map(|n| format!("fc{n:04}"))
            .collect();
        for (n, name) in fcs.iter().enumerate() {
            let mut fc = classifier(format!("10.0.{}.{}/32", n >> 8, n & 0xff), None);
            fc.logical_source_port = format!("s{n:04}");
            current.flow_classifiers.insert(name.clone(), fc);
        }
        chain(&mut current, "c", &["g0000".into()], &fcs, false);
        assert_eq!(
            plan_errors(
                &current,
                doc("PortPair", "spare", "{ingress: x, egress: y}")
            ),
            Ok(())
        );
        let file = doc(
            "FlowClassifier",
            "fc4095",
            "{destinationIpPrefix: 10.0.15.255/32, logicalSourcePort: s4095}",
        ) + &doc(
            "PortChain",
            "c",
            &format!(
                "{{portPairGroups: [g0000], flowClassifiers: [{}, fc4095]}}",
                fcs.join(", ")
            ),
        );
        assert_eq!(
            plan_errors(&current, file),
            Err(vec![format!(
                "new.yaml: PortChain \"c\": spec.flowClassifiers[4095]: 4097 interfaces would need the steering program (logical ports and SF interfaces, present or not), and this node manages at most 4096 (\"s4095\" is past the limit); use fewer logical ports or SF instances on this node"
            )])
        );
    }

    #[test]
    fn in_a_cluster_each_node_has_limits_of_its_own() {
        // 4097 logical ports: past one node's limit, within two nodes' once split.
        let on = |node_of: &dyn Fn(usize) -> &'static str| {
            let mut state = groups(1);
            let fcs: Vec<String> = (0..=PORTS_PER_GEN).map(|n| format!("fc{n:04}")).collect();
            for (n, name) in fcs.iter().enumerate() {
                let mut fc = classifier(format!("10.{}.{}.0/24", n >> 8, n & 0xff), None);
                fc.logical_source_port = format!("{}/s{n:04}", node_of(n));
                state.flow_classifiers.insert(name.clone(), fc);
            }
            chain(&mut state, "c", &["g0000".into()], &fcs, false);
            limits_of_state(&state, &Origins::in_cluster())
        };
        assert_eq!(on(&|n| if n % 2 == 0 { "n1" } else { "n2" }), vec![]);
        let errors = on(&|_| "n1");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("and node n1 manages at most 4096")
                && errors[0].message.contains("SF instances on node n1"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_group_holds_at_most_one_table_of_members() {
        let current = many_pairs(GROUP_MEMBERS + 1, 0);
        assert_eq!(
            current.port_pair_groups["g0"].port_pairs.len(),
            GROUP_MEMBERS
        );
        assert_eq!(
            plan_errors(
                &current,
                doc("PortPair", "spare", "{ingress: x, egress: y}")
            ),
            Ok(())
        );
        let mut members = current.port_pair_groups["g0"].port_pairs.clone();
        members.push("spare".into());
        let file = doc("PortPair", "spare", "{ingress: x, egress: y}")
            + &doc(
                "PortPairGroup",
                "g0",
                &format!("{{portPairs: [{}]}}", members.join(", ")),
            );
        assert_eq!(
            plan_errors(&current, file),
            Err(vec!["new.yaml: PortPairGroup \"g0\": spec.portPairs: lists 1022 PortPairs, and a group holds at most 1021 (its members share a table of 1021 entries, one at least each); use fewer instances in this group".to_string()])
        );
    }

    #[test]
    fn the_plan_time_counts_are_those_of_the_compiler_when_every_interface_is_present() {
        let text = [
            doc("PortPair", "p1", "{ingress: a-in, egress: a-out}"),
            doc("PortPair", "p2", "{ingress: b, egress: b}"),
            doc("PortPair", "p3", "{ingress: c-in, egress: c-out}"),
            doc("PortPair", "p4", "{ingress: d-in, egress: d-out}"),
            doc("PortPair", "p5", "{ingress: e-in, egress: e-out}"),
            doc("PortPair", "p6", "{ingress: f-in, egress: f-out}"),
            doc("PortPair", "p7", "{ingress: t-in, egress: t-out}"),
            doc("PortPair", "p8", "{ingress: h-in, egress: h-out}"),
            doc("PortPair", "unused", "{ingress: u-in, egress: u-out}"),
            doc("PortPair", "x-pair", "{ingress: x, egress: y}"),
            doc("PortPair", "y-pair", "{ingress: y, egress: x}"),
            doc("PortPairGroup", "x-group", "{portPairs: [x-pair]}"),
            doc("PortPairGroup", "y-group", "{portPairs: [y-pair]}"),
            doc("FlowClassifier", "f4", "{sourceIpPrefix: 10.7.0.0/16, destinationIpPrefix: 10.8.0.0/16, logicalSourcePort: vm6, logicalDestinationPort: vm7}"),
            doc("PortChain", "crossed", "{portPairGroups: [x-group, y-group], flowClassifiers: [f4], chainParameters: {symmetric: true}}"),
            doc("PortPairGroup", "plain", "{portPairs: [p1]}"),
            doc("PortPairGroup", "shared", "{portPairs: [p2, p3]}"),
            doc("PortPairGroup", "sym", "{portPairs: [p4]}"),
            doc("PortPairGroup", "idle", "{portPairs: [p5]}"),
            doc("PortPairGroup", "idle-sym", "{portPairs: [p6]}"),
            doc("PortPairGroup", "tap", "{portPairs: [p7], tapEnabled: true}"),
            doc("PortPairGroup", "lonely", "{portPairs: [p8]}"),
            doc("PortPairGroup", "nowhere", "{portPairs: [unused]}"),
            doc("FlowClassifier", "f1", "{protocol: tcp, logicalSourcePort: vm1}"),
            doc("FlowClassifier", "f2", "{protocol: udp, destinationPortRange: '53', sourceIpPrefix: 10.1.0.0/16, destinationIpPrefix: 10.53.0.0/16, logicalSourcePort: vm2, logicalDestinationPort: vm3}"),
            doc("FlowClassifier", "f3", "{protocol: icmp, logicalSourcePort: vm4, logicalDestinationPort: vm5}"),
            doc("PortChain", "forward", "{portPairGroups: [plain, tap, shared], flowClassifiers: [f1, f3]}"),
            doc("PortChain", "both", "{portPairGroups: [sym, shared], flowClassifiers: [f2], chainParameters: {symmetric: true}}"),
            doc("PortChain", "empty", "{portPairGroups: [idle]}"),
            doc("PortChain", "empty-sym", "{portPairGroups: [idle-sym, plain], chainParameters: {symmetric: true}}"),
            doc("PortChain", "lonely", "{portPairGroups: [lonely]}"),
        ]
        .concat();
        let (state, _, _) = plan(
            &State::default(),
            &[("f.yaml".into(), text)],
            &Interfaces::default(),
        )
        .unwrap();
        let mut interfaces = Interfaces::default();
        let names = "a-in a-out b c-in c-out d-in d-out e-in e-out f-in f-out t-in t-out h-in h-out u-in u-out vm1 vm2 vm3 vm4 vm5 vm6 vm7 x y";
        for (i, name) in names.split(' ').enumerate() {
            let index = 10 + i as u32;
            interfaces
                .peer_macs
                .insert(name.into(), [2, 0, 0, 0, 0, index as u8]);
            interfaces.links.insert(
                name.into(),
                Link {
                    index,
                    name: name.into(),
                    mac: None,
                    kind: Some("veth".into()),
                    peer_index: None,
                    peer_nsid: None,
                    up: true,
                    running: true,
                    mtu: 1500,
                },
            );
        }
        let image = compile(&state, &interfaces, &Origins::new()).unwrap();
        let items = |uses: Vec<Use>| -> BTreeSet<(String, bool)> {
            uses.iter()
                .map(|u| (u.item.to_string(), u.egress_side))
                .collect()
        };
        let attached: BTreeSet<(String, bool)> =
            image.attach.keys().map(|i| (i.clone(), false)).collect();
        assert_eq!(items(steering_uses(&state, &Origins::new())), attached);
        let counted: BTreeSet<(String, bool)> = image
            .sides
            .values()
            .map(|s| (s.interface.clone(), s.role == crate::compile::Role::Egress))
            .collect();
        assert_eq!(items(counter_uses(&state, &Origins::new())), counted);
        // What the cases above are about: neither set is everything, nor the same.
        let attached = |i: &str| attached.contains(&(i.to_string(), false));
        let counted = |i: &str, egress: bool| counted.contains(&(i.to_string(), egress));
        assert!(attached("b") && !attached("e-out") && !attached("a-in"));
        assert!(counted("e-out", true) && counted("t-in", false) && !counted("t-out", true));
        assert!(!counted("u-in", false) && attached("vm4") && !attached("vm5"));
        // Crossed pairs: "x" is x-pair's ingress and y-pair's egress, a slot for each.
        assert!(counted("x", false) && counted("x", true) && attached("x"));
    }
}
