//! The all-or-nothing checks run on the whole desired state before anything changes.
//!
//! [`validate`] runs them in stages, one per kind of object and then the overlaps between
//! chains; each stage reports every problem it finds, so one run shows everything to fix.
//! Objects are visited in apply order (see [`Origins::in_apply_order`]): where two objects
//! conflict, the error is reported on the one applied last, and names the other.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::MAX_HOPS;

pub mod classifier;
pub mod nesting;
pub mod overlap;

use crate::{
    compile::{
        place::{self, stops, Place},
        Direction,
    },
    document::{shown, ConfigError, ConfigErrors},
    model::{Correlation, FailMode, HealthCheck, Kind, PortChainSpec, State},
};
use classifier::{normalize, Match};

pub const APPLIED: &str = "(applied state)";

/// When an object came, for blame: `None` when it was applied before, `Some(n)` when it is
/// the n-th object of the files being applied. Applied objects come first (`None < Some`).
pub type Rank = Option<usize>;

/// Where the objects of an apply come from: each one's file and its place in the apply (the
/// files in the order given, the documents of each in order). Objects not listed were
/// applied before. Used to name the file in messages and, where two objects conflict, to
/// report the conflict on the one applied last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins {
    objects: BTreeMap<Kind, BTreeMap<String, (usize, String)>>,
    count: usize,
    /// Interfaces may be written `NODE/IFNAME` (a cluster's state).
    qualified: bool,
}

impl Origins {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, for a cluster's state: interface references may name their node.
    pub fn in_cluster() -> Self {
        Self {
            qualified: true,
            ..Self::default()
        }
    }

    pub fn qualified(&self) -> bool {
        self.qualified
    }

    /// Records the next object of the apply. When the same kind and name appeared before,
    /// keeps the first and returns its file.
    pub fn insert(&mut self, kind: Kind, name: &str, file: &str) -> Option<String> {
        let objects = self.objects.entry(kind).or_default();
        if let Some((_, first)) = objects.get(name) {
            return Some(first.clone());
        }
        objects.insert(name.to_string(), (self.count, file.to_string()));
        self.count += 1;
        None
    }

    /// The file an object comes from, or [`APPLIED`].
    pub fn file(&self, kind: Kind, name: &str) -> &str {
        self.objects
            .get(&kind)
            .and_then(|o| o.get(name))
            .map_or(APPLIED, |(_, file)| file)
    }

    pub fn rank(&self, kind: Kind, name: &str) -> Rank {
        self.objects.get(&kind)?.get(name).map(|(n, _)| *n)
    }

    /// The objects of one kind in apply order: those applied before first (by name), then
    /// those of the files, in their order.
    pub fn in_apply_order<'m, V>(
        &self,
        kind: Kind,
        objects: &'m BTreeMap<String, V>,
    ) -> Vec<(&'m String, &'m V)> {
        let mut out: Vec<_> = objects.iter().collect();
        if self.objects.contains_key(&kind) {
            out.sort_by_cached_key(|(name, _)| self.rank(kind, name));
        }
        out
    }

    /// `Kind "name"` of an object a message about `about` names: followed by
    /// ` (already applied)` or ` (in FILE)` when it does not come from the same place.
    pub fn other(&self, (kind, name): (Kind, &str), about: (Kind, &str)) -> String {
        let file = self.file(kind, name);
        let where_ = if file == self.file(about.0, about.1) {
            String::new()
        } else if file == APPLIED {
            " (already applied)".to_string()
        } else {
            format!(" (in {file})")
        };
        format!("{kind} {}{where_}", shown(name))
    }
}

/// The errors found so far, and what they are about.
struct Report<'s> {
    state: &'s State,
    origins: &'s Origins,
    errors: Vec<ConfigError>,
}

impl<'s> Report<'s> {
    fn new(state: &'s State, origins: &'s Origins) -> Self {
        Report {
            state,
            origins,
            errors: Vec::new(),
        }
    }

    fn push(&mut self, kind: Kind, name: &str, field: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.origins.file(kind, name).to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            field: field.to_string(),
            message,
        });
    }

    fn rank(&self, kind: Kind, name: &str) -> Rank {
        self.origins.rank(kind, name)
    }

    /// See [`Origins::other`].
    fn other(&self, object: (Kind, &str), about: (Kind, &str)) -> String {
        self.origins.other(object, about)
    }

    fn interface(&mut self, kind: Kind, name: &str, field: &str, value: &str) {
        if self.origins.qualified {
            if let Some((node, ifname)) = crate::nodes::split(value) {
                if !crate::nodes::valid_node_name(node) || !valid_interface(ifname) {
                    self.push(kind, name, field, format!(
                        "{} is not an interface reference; use IFNAME or NODE/IFNAME (a node name of 1 to 63 characters a-z, 0-9, '.', '-'; an interface name of 1 to 15 characters without '/', ':' or spaces)",
                        shown(value)
                    ));
                }
                return;
            }
        }
        if !valid_interface(value) {
            self.push(
                kind,
                name,
                field,
                format!(
                    "{} is not an interface name; use 1 to 15 characters without '/', ':' or spaces",
                    shown(value)
                ),
            );
        }
    }

    /// Checks a list of references whose targets each belong to one owner only: every name
    /// resolves, and none is listed twice or already claimed by an owner visited before.
    fn exclusive_refs<V>(
        &mut self,
        (kind, owner, field): (Kind, &'s str, &str),
        refs: &'s [String],
        (target_kind, targets): (Kind, &BTreeMap<String, V>),
        claimed: &mut BTreeMap<&'s str, &'s str>,
        rule: &str,
    ) {
        for (i, target) in refs.iter().enumerate() {
            let field = format!("{field}[{i}]");
            if !targets.contains_key(target) {
                self.push(
                    kind,
                    owner,
                    &field,
                    format!(
                        "{target_kind} {} does not exist; apply it first or in the same file",
                        shown(target)
                    ),
                );
            }
            match claimed.get(target.as_str()) {
                None => {
                    claimed.insert(target, owner);
                }
                Some(&other) => {
                    let what = if other == owner {
                        "is listed twice".to_string()
                    } else {
                        format!("is already in {}", self.other((kind, other), (kind, owner)))
                    };
                    self.push(
                        kind,
                        owner,
                        &field,
                        format!("{target_kind} {} {what}; {rule}", shown(target)),
                    );
                }
            }
        }
    }
}

pub fn valid_interface(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

pub fn mac(text: &str) -> Option<[u8; 6]> {
    parse_mac(text).filter(|m| m[0] & 1 == 0 && *m != [0; 6])
}

/// Checks the whole state; on success returns every classifier's normalised match.
pub fn validate(state: &State, origins: &Origins) -> Result<BTreeMap<String, Match>, ConfigErrors> {
    let mut r = Report::new(state, origins);
    let sf_ports = port_pairs(&mut r);
    groups(&mut r);
    let matches = classifiers(&mut r, &sf_ports);
    let fc_chain = chains(&mut r);
    overlaps(&mut r, &matches, &fc_chain);
    if r.errors.is_empty() {
        Ok(matches)
    } else {
        Err(ConfigErrors(r.errors))
    }
}

/// The SF interfaces, each with the pair it is the ingress of and the pair it is the egress of
/// (the same pair for both when its ingress and egress are one interface).
type SfPorts<'s> = BTreeMap<&'s str, Owners<'s>>;

/// Which pairs use one interface, and how: an interface is the ingress of at most one pair and
/// the egress of at most one. Two pairs may cross (A→B and B→A), as networking-sfc allows:
/// the dataplane tells their traffic apart by the direction it is classified in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owners<'s> {
    pub ingress: Option<&'s str>,
    pub egress: Option<&'s str>,
}

impl<'s> Owners<'s> {
    /// Each owning pair once, with the field of it that names the interface.
    fn pairs(&self) -> Vec<(&'s str, &'static str)> {
        let mut out: Vec<(&str, &str)> = self
            .ingress
            .map(|p| (p, "spec.ingress"))
            .into_iter()
            .collect();
        match self.egress {
            Some(p) if self.ingress != Some(p) => out.push((p, "spec.egress")),
            _ => {}
        }
        out
    }
}

/// Stage 1, port pairs: each pair's fields (interface names, weight, MACs), and interface
/// ownership ([`claim_interfaces`]). Returns the SF interfaces.
fn port_pairs<'s>(r: &mut Report<'s>) -> SfPorts<'s> {
    let mut owners = SfPorts::new();
    for (name, pp) in r
        .origins
        .in_apply_order(Kind::PortPair, &r.state.port_pairs)
    {
        r.interface(Kind::PortPair, name, "spec.ingress", &pp.ingress);
        r.interface(Kind::PortPair, name, "spec.egress", &pp.egress);
        if !(1..=255).contains(&pp.weight) {
            r.push(
                Kind::PortPair,
                name,
                "spec.weight",
                format!("{} is out of range; use 1..255", pp.weight),
            );
        }
        for (field, value) in [
            ("spec.ingressMac", &pp.ingress_mac),
            ("spec.egressMac", &pp.egress_mac),
        ] {
            if let Some(m) = value {
                if mac(m).is_none() {
                    r.push(
                        Kind::PortPair,
                        name,
                        field,
                        format!(
                            "{} is not a unicast MAC; use the form 02:00:00:00:00:01",
                            shown(m)
                        ),
                    );
                }
            }
        }
        claim_interfaces(r, name, (&pp.ingress, &pp.egress), &mut owners);
    }
    owners
}

/// Records the interfaces of pair `name`, refusing a second ingress or a second egress of one
/// interface: what the dataplane receives from an interface must come from one pair's egress
/// (forward) or one pair's ingress (reverse), and what it sends into it must go to one pair.
/// A pair whose ingress and egress are one interface uses it both ways, so it shares it with
/// no other pair. The error is on the pair visited last, naming the other.
fn claim_interfaces<'s>(
    r: &mut Report<'s>,
    name: &'s str,
    (ingress, egress): (&'s str, &'s str),
    owners: &mut SfPorts<'s>,
) {
    if ingress == egress {
        claim_alone(r, name, ingress, owners);
        return;
    }
    claim_side(r, name, (ingress, true), owners);
    claim_side(r, name, (egress, false), owners);
}

/// Pair `name` uses `iface` as both its ingress and its egress: it must be no one's yet.
fn claim_alone<'s>(r: &mut Report<'s>, name: &'s str, iface: &'s str, owners: &mut SfPorts<'s>) {
    let owner = owners.entry(iface).or_default();
    let (other, role) = match *owner {
        Owners {
            ingress: None,
            egress: None,
        } => {
            owner.ingress = Some(name);
            owner.egress = Some(name);
            return;
        }
        Owners {
            ingress: Some(i),
            egress: Some(e),
        } if i == e => (i, "both the ingress and the egress"),
        Owners {
            ingress: Some(i), ..
        } => (i, "the ingress"),
        Owners {
            egress: Some(e), ..
        } => (e, "the egress"),
    };
    let other = r.other((Kind::PortPair, other), (Kind::PortPair, name));
    r.push(
        Kind::PortPair,
        name,
        "spec.ingress",
        format!(
            "interface {} is already {role} of {other}; this pair uses it as both its ingress and its egress, so no other pair may use it: give this pair interfaces of its own",
            shown(iface)
        ),
    );
}

/// Pair `name` uses `iface` as its ingress (`is_ingress`) or its egress: no other pair may,
/// nor one using it both ways.
fn claim_side<'s>(
    r: &mut Report<'s>,
    name: &'s str,
    (iface, is_ingress): (&'s str, bool),
    owners: &mut SfPorts<'s>,
) {
    let owner = owners.entry(iface).or_default();
    let (mine, theirs) = if is_ingress {
        (&mut owner.ingress, owner.egress)
    } else {
        (&mut owner.egress, owner.ingress)
    };
    let (role, other_role) = if is_ingress {
        ("ingress", "egress")
    } else {
        ("egress", "ingress")
    };
    let message = match (*mine, theirs) {
        (None, _) => {
            *mine = Some(name);
            return;
        }
        // One pair uses it both ways: no other may use it at all.
        (Some(other), Some(same)) if other == same => {
            let other = r.other((Kind::PortPair, other), (Kind::PortPair, name));
            format!("interface {} is both the ingress and the egress of {other}, which leaves it to no other pair; use another interface as this pair's {role}", shown(iface))
        }
        (Some(other), _) => {
            let other = r.other((Kind::PortPair, other), (Kind::PortPair, name));
            format!("interface {} is already the {role} of {other}; an interface is the {role} of at most one PortPair (it may be the {other_role} of another): use another interface", shown(iface))
        }
    };
    r.push(Kind::PortPair, name, &format!("spec.{role}"), message);
}

/// Stage 2, groups: each lists at least one pair, every pair it lists exists and is in no
/// other group, and a tap group has exactly one pair.
fn groups(r: &mut Report) {
    let mut pair_group = BTreeMap::new();
    for (name, g) in r
        .origins
        .in_apply_order(Kind::PortPairGroup, &r.state.port_pair_groups)
    {
        if g.port_pairs.is_empty() {
            r.push(
                Kind::PortPairGroup,
                name,
                "spec.portPairs",
                "is empty; list at least one PortPair".into(),
            );
        }
        r.exclusive_refs(
            (Kind::PortPairGroup, name, "spec.portPairs"),
            &g.port_pairs,
            (Kind::PortPair, &r.state.port_pairs),
            &mut pair_group,
            "a PortPair is in at most one group",
        );
        if g.tap_enabled && g.port_pairs.len() != 1 {
            r.push(
                Kind::PortPairGroup,
                name,
                "spec.tapEnabled",
                "a tap group has exactly one PortPair".into(),
            );
        }
        if g.tap_enabled && g.fail_mode == FailMode::FailOpen {
            r.push(
                Kind::PortPairGroup,
                name,
                "spec.failMode",
                "a tap group gets copies and steers nothing: nothing fails open; remove it".into(),
            );
        }
        if let Some(check) = &g.health_check {
            for (field, message) in health_check_errors(check, g.tap_enabled) {
                r.push(Kind::PortPairGroup, name, field, message);
            }
        }
    }
}

/// What is wrong with a group's health check, field by field.
fn health_check_errors(c: &HealthCheck, tap: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if tap {
        out.push((
            "spec.healthCheck",
            "a tap group gets copies and steers nothing: it has no health check; remove it".into(),
        ));
    }
    match (c.source, c.destination) {
        (Some(s), Some(d)) if s.is_ipv4() != d.is_ipv4() => out.push((
            "spec.healthCheck.destination",
            format!("{d} is not of the family of source {s}; give two IPv4 or two IPv6 addresses"),
        )),
        (Some(_), None) | (None, Some(_)) => out.push((
            "spec.healthCheck",
            "source and destination go together: set both, or neither (then a classifier's are used)".into(),
        )),
        _ => {}
    }
    if !(100..=60_000).contains(&c.interval_ms) {
        out.push((
            "spec.healthCheck.intervalMs",
            format!("{} is out of range; use 100 to 60000", c.interval_ms),
        ));
    }
    if c.timeout_ms < 10 || c.timeout_ms > c.interval_ms {
        out.push((
            "spec.healthCheck.timeoutMs",
            format!(
                "{} is out of range; use 10 up to intervalMs ({})",
                c.timeout_ms, c.interval_ms
            ),
        ));
    }
    for (field, n) in [
        ("spec.healthCheck.failures", c.failures),
        ("spec.healthCheck.successes", c.successes),
    ] {
        if !(1..=100).contains(&n) {
            out.push((field, format!("{n} is out of range; use 1 to 100")));
        }
    }
    // At least the black-hole window and a second, so that what went in before it was out is
    // forgotten when it comes back.
    if !(10_000..=3_600_000).contains(&c.eject_ms) {
        out.push((
            "spec.healthCheck.ejectMs",
            format!("{} is out of range; use 10000 to 3600000", c.eject_ms),
        ));
    }
    out
}

/// Stage 3, classifiers: logical port names, logical ports that are no SF's interface, and
/// the match fields, normalised (each field's error from [`normalize`]). Returns the
/// normalised match of every classifier without field errors.
fn classifiers(r: &mut Report, sf_ports: &SfPorts) -> BTreeMap<String, Match> {
    let mut matches = BTreeMap::new();
    for (name, fc) in r
        .origins
        .in_apply_order(Kind::FlowClassifier, &r.state.flow_classifiers)
    {
        let ports = [
            ("spec.logicalSourcePort", Some(&fc.logical_source_port)),
            (
                "spec.logicalDestinationPort",
                fc.logical_destination_port.as_ref(),
            ),
        ];
        for (field, port) in ports {
            if let Some(port) = port {
                r.interface(Kind::FlowClassifier, name, field, port);
            }
        }
        for (field, port) in ports {
            let Some(port) = port else {
                continue;
            };
            let Some(owners) = sf_ports.get(port.as_str()) else {
                continue;
            };
            for (pp, pp_field) in owners.pairs() {
                logical_port_is_sf_port(r, (name, field, port), (pp, pp_field));
            }
        }
        match normalize(fc) {
            Ok(m) => {
                matches.insert(name.clone(), m);
            }
            Err(errs) => {
                for (field, message) in errs {
                    r.push(Kind::FlowClassifier, name, field, message);
                }
            }
        }
    }
    matches
}

/// A classifier's logical port (`field` of classifier `name`) that is also the `pp_field` of
/// pair `pp`: reported on whichever came last.
fn logical_port_is_sf_port(
    r: &mut Report,
    (name, field, port): (&str, &str, &str),
    (pp, pp_field): (&str, &str),
) {
    let port = shown(port);
    let rule = "a logical port is where traffic enters or leaves the node, not an SF port";
    if r.rank(Kind::PortPair, pp) > r.rank(Kind::FlowClassifier, name) {
        // The pair came last: the conflict is its doing.
        let fc = r.other((Kind::FlowClassifier, name), (Kind::PortPair, pp));
        let role = field.trim_start_matches("spec.");
        r.push(
            Kind::PortPair,
            pp,
            pp_field,
            format!("{port} is the {role} of {fc}; {rule}"),
        );
    } else {
        let pair = r.other((Kind::PortPair, pp), (Kind::FlowClassifier, name));
        r.push(
            Kind::FlowClassifier,
            name,
            field,
            format!("{port} is a port of {pair}; {rule}"),
        );
    }
}

/// Stage 4, chains: for each, its hops ([`hops`]), no other chain with the same ordered
/// groups, its classifiers (each exists and is in no other chain), its id ([`chain_id`]),
/// what a symmetric chain needs ([`symmetric`]), its correlation, and no consecutive tap
/// groups ([`taps`]). Returns the chain of each classifier.
fn chains<'s>(r: &mut Report<'s>) -> BTreeMap<&'s str, &'s str> {
    let mut fc_chain = BTreeMap::new();
    let mut paths: BTreeMap<&Vec<String>, &str> = BTreeMap::new();
    let mut ids: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, pc) in r
        .origins
        .in_apply_order(Kind::PortChain, &r.state.port_chains)
    {
        hops(r, name, pc);
        match paths.get(&pc.port_pair_groups) {
            None => {
                paths.insert(&pc.port_pair_groups, name);
            }
            Some(&other) => {
                let other = r.other((Kind::PortChain, other), (Kind::PortChain, name));
                r.push(
                    Kind::PortChain,
                    name,
                    "spec.portPairGroups",
                    format!("{other} has the same ordered groups; two chains must differ"),
                );
            }
        }
        r.exclusive_refs(
            (Kind::PortChain, name, "spec.flowClassifiers"),
            &pc.flow_classifiers,
            (Kind::FlowClassifier, &r.state.flow_classifiers),
            &mut fc_chain,
            "a classifier belongs to at most one chain",
        );
        chain_id(r, name, pc, &mut ids);
        if pc.chain_parameters.symmetric {
            symmetric(r, name, pc);
        }
        if pc.chain_parameters.correlation != Correlation::None {
            r.push(Kind::PortChain, name, "spec.chainParameters.correlation", "only none is supported: this dataplane steers on one node and needs no encapsulation".into());
        }
        taps(r, name, pc);
    }
    fc_chain
}

/// A chain's hops: at least one, at most [`MAX_HOPS`], each an existing group, none twice.
fn hops(r: &mut Report, name: &str, pc: &PortChainSpec) {
    let groups = &pc.port_pair_groups;
    if groups.is_empty() {
        r.push(
            Kind::PortChain,
            name,
            "spec.portPairGroups",
            "is empty; list at least one PortPairGroup".into(),
        );
    }
    if groups.len() > MAX_HOPS {
        r.push(
            Kind::PortChain,
            name,
            "spec.portPairGroups",
            format!(
                "has {} hops; at most {MAX_HOPS} are supported: shorten the chain",
                groups.len()
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, g) in groups.iter().enumerate() {
        let field = format!("spec.portPairGroups[{i}]");
        if !r.state.port_pair_groups.contains_key(g) {
            r.push(
                Kind::PortChain,
                name,
                &field,
                format!(
                    "PortPairGroup {} does not exist; apply it first or in the same file",
                    shown(g)
                ),
            );
        }
        if !seen.insert(g) {
            r.push(Kind::PortChain, name, &field, format!("PortPairGroup {} appears twice; a packet leaving it could not tell which hop comes next", shown(g)));
        }
    }
}

/// A chain's id, when set: in range, and no chain visited before has it.
fn chain_id<'s>(
    r: &mut Report,
    name: &'s str,
    pc: &PortChainSpec,
    ids: &mut BTreeMap<u32, &'s str>,
) {
    let Some(id) = pc.chain_id else {
        return;
    };
    if !(1..=65535).contains(&id) {
        r.push(
            Kind::PortChain,
            name,
            "spec.chainId",
            format!("{id} is out of range; use 1..65535 or leave it out to have one assigned"),
        );
    } else if let Some(&other) = ids.get(&id) {
        let other = r.other((Kind::PortChain, other), (Kind::PortChain, name));
        r.push(
            Kind::PortChain,
            name,
            "spec.chainId",
            format!("{id} is already the id of {other}"),
        );
    } else {
        ids.insert(id, name);
    }
}

/// A symmetric chain: every classifier has a logicalDestinationPort (where reverse traffic
/// enters), and every group hashes the default symmetric 5-tuple. Reported on the chain, or
/// on the classifier or group when that came last.
fn symmetric(r: &mut Report, name: &str, pc: &PortChainSpec) {
    let chain = (Kind::PortChain, name);
    for fc in &pc.flow_classifiers {
        let lacks = r
            .state
            .flow_classifiers
            .get(fc)
            .is_some_and(|f| f.logical_destination_port.is_none());
        if !lacks {
            continue;
        }
        let classifier = (Kind::FlowClassifier, fc.as_str());
        if r.rank(classifier.0, classifier.1) > r.rank(chain.0, chain.1) {
            let chain = r.other(chain, classifier);
            r.push(
                classifier.0,
                classifier.1,
                "spec.logicalDestinationPort",
                format!("is missing, and {chain} is symmetric; symmetric chains need one on every classifier"),
            );
        } else {
            let classifier = r.other(classifier, chain);
            r.push(Kind::PortChain, name, "spec.chainParameters.symmetric", format!("{classifier} has no logicalDestinationPort; symmetric chains need one on every classifier"));
        }
    }
    let why = "in a symmetric chain a group must use the default symmetric 5-tuple so that both directions of a flow pick the same instance";
    for (i, g) in pc.port_pair_groups.iter().enumerate() {
        let sets = r
            .state
            .port_pair_groups
            .get(g)
            .is_some_and(|g| !g.lb_fields.is_empty());
        if !sets {
            continue;
        }
        let group = (Kind::PortPairGroup, g.as_str());
        if r.rank(group.0, group.1) > r.rank(chain.0, chain.1) {
            let chain = r.other(chain, group);
            r.push(
                group.0,
                group.1,
                "spec.lbFields",
                format!("is set, but {chain} is symmetric: {why}; leave lbFields out"),
            );
        } else {
            let group = r.other(group, chain);
            r.push(
                Kind::PortChain,
                name,
                &format!("spec.portPairGroups[{i}]"),
                format!("{group} sets lbFields; {why}"),
            );
        }
    }
}

/// Two tap groups are never consecutive in a chain. Reported once per chain: on the chain,
/// or on the group of the first such two whose tapEnabled came last.
fn taps(r: &mut Report, name: &str, pc: &PortChainSpec) {
    let groups = &pc.port_pair_groups;
    let is_tap = |g: &String| {
        r.state
            .port_pair_groups
            .get(g)
            .is_some_and(|g| g.tap_enabled)
    };
    let Some(i) = (1..groups.len()).find(|&i| is_tap(&groups[i - 1]) && is_tap(&groups[i])) else {
        return;
    };
    let (before, after) = (groups[i - 1].as_str(), groups[i].as_str());
    let group_rank = |g: &str| r.rank(Kind::PortPairGroup, g);
    let (late, other, place) = if group_rank(after) >= group_rank(before) {
        (after, before, "right after")
    } else {
        (before, after, "right before")
    };
    if group_rank(late) > r.rank(Kind::PortChain, name) {
        let about = (Kind::PortPairGroup, late);
        let chain = r.other((Kind::PortChain, name), about);
        let other = r.other((Kind::PortPairGroup, other), about);
        r.push(
            Kind::PortPairGroup,
            late,
            "spec.tapEnabled",
            format!("is true, but {chain} lists this group {place} {other}, a tap group too; two tap groups are never consecutive: put a normal group between them"),
        );
    } else {
        r.push(
            Kind::PortChain,
            name,
            "spec.portPairGroups",
            "two tap groups are consecutive; put a normal group between them".into(),
        );
    }
}

/// Stage 5, overlaps: a packet is classified where it enters at a logical port (forward at
/// a classifier's `logicalSourcePort`, in reverse at a symmetric chain's
/// `logicalDestinationPort`), and the path it takes there is recorded with its flow, which
/// decides wherever paths meet later on. So classifiers that match the same packet where they
/// enter must agree on it there. Between chains ([`between_chains`]): never. Within one chain
/// ([`within_a_chain`]): going one way the most specific takes the packet (the compiler's
/// precedence); both ways, never. And one path must not be classified at two hops in one
/// domain ([`one_path_at_two_hops`]): its own record cannot tell them apart.
fn overlaps(r: &mut Report, matches: &BTreeMap<String, Match>, fc_chain: &BTreeMap<&str, &str>) {
    let (between, within) = conflicts(r.state, matches, fc_chain);
    for conflict in between {
        between_chains(r, conflict);
    }
    for conflict in within {
        within_a_chain(r, conflict);
    }
    one_path_at_two_hops(r, fc_chain);
}

/// Classifiers of different chains must not match the same packets where they enter at the
/// same port (networking-sfc's rule, whatever their `logicalDestinationPort`; a symmetric
/// chain's reverse traffic enters at its classifiers' `logicalDestinationPort`). Reported on
/// the side (classifier and chain) applied last: on its classifier, or on its chain when only
/// the chain is being applied (it brought an applied classifier in).
fn between_chains(r: &mut Report, conflict: Conflict) {
    let Conflict { a, ca, b, cb, at } = conflict;
    let side = |fc: &str, chain: &str| {
        r.rank(Kind::FlowClassifier, fc)
            .max(r.rank(Kind::PortChain, chain))
    };
    // (x, cx, dx) is blamed, (y, cy, dy) named; b's side unless a's came last.
    let ((x, cx, dx), (y, cy, dy)) = if side(a, ca) > side(b, cb) {
        ((a, ca, at.da), (b, cb, at.db))
    } else {
        ((b, cb, at.db), (a, ca, at.da))
    };
    let by_chain = by_chain_of(r, x, cx);
    let about = if by_chain {
        (Kind::PortChain, cx)
    } else {
        (Kind::FlowClassifier, x)
    };
    let other = r.other((Kind::FlowClassifier, y), about);
    let reverse = if dx == Direction::Reverse || dy == Direction::Reverse {
        ", and a symmetric chain's reverse traffic enters at its classifiers' logicalDestinationPort"
    } else {
        ""
    };
    let this = if by_chain {
        String::new()
    } else {
        format!(" (this one is in {})", shown(cx))
    };
    let message = format!(
        "{}overlaps {}{other} of PortChain {}{this}, both entering at {}; classifiers of different chains that enter at the same port must not match the same packets, whatever their logicalDestinationPort{reverse}: narrow a prefix, port range or protocol",
        reversed(dx),
        the_reverse_of(dy),
        shown(cy),
        shown(at.port)
    );
    report_overlap(r, (x, cx), by_chain, message);
}

/// Classifiers of one chain may overlap: where they enter, the most specific takes the
/// packet, and its path is recorded with the flow. That is wrong only where the chain
/// classifies both directions at one port (a port that is one classifier's source and
/// another's, or its own, destination in a symmetric chain) and a packet could be either.
/// Reported on the classifier applied last, or on the chain when only the chain is being
/// applied.
fn within_a_chain(r: &mut Report, twin: Twin) {
    let Twin { chain, a, b, at } = twin;
    let (x, dx, y, dy) = if r.rank(Kind::FlowClassifier, a) > r.rank(Kind::FlowClassifier, b) {
        (a, at.da, b, at.db)
    } else {
        (b, at.db, a, at.da)
    };
    let by_chain = by_chain_of(r, x, chain);
    let what = if x == y {
        "its traffic and its reverse traffic (source and destination swapped) match some of the same packets".to_string()
    } else {
        let about = if by_chain {
            (Kind::PortChain, chain)
        } else {
            (Kind::FlowClassifier, x)
        };
        let other = r.other((Kind::FlowClassifier, y), about);
        format!(
            "{}overlaps {}{other} of the same chain",
            reversed(dx),
            the_reverse_of(dy)
        )
    };
    let message = format!("{what} entering at {}, where PortChain {} classifies both directions; the datapath could not tell which way such a packet goes: make them disjoint (source and destination prefixes or ports)", shown(at.port), shown(chain));
    report_overlap(r, (x, chain), by_chain, message);
}

/// A classifier's packets going one way are classified at two hops whose places are one
/// domain (their pairs share an interface, see [`place::Domains`]): the path recorded with
/// the flow is the same at both, and no narrowing separates a classifier from itself. Found
/// per classifier and direction from its own stops, never pair by pair.
fn one_path_at_two_hops(r: &mut Report, fc_chain: &BTreeMap<&str, &str>) {
    let state = r.state;
    let domains = place::Domains::new(state);
    for (fc_name, chain) in fc_chain {
        let (Some(pc), Some(fc)) = (
            state.port_chains.get(*chain),
            state.flow_classifiers.get(*fc_name),
        ) else {
            continue;
        };
        let mut seen: BTreeMap<(Direction, Place), Place> = BTreeMap::new();
        for stop in stops(state, pc, fc) {
            let domain = domains.of(stop.place);
            let first = *seen.entry((stop.direction, domain)).or_insert(stop.place);
            if first == stop.place {
                continue;
            }
            let traffic = match stop.direction {
                Direction::Forward => "its traffic",
                Direction::Reverse => "its reverse traffic (source and destination swapped)",
            };
            let message = format!(
                "{traffic} is classified both {} and {}, and PortChain {} classifies those together, on {}; the datapath could not tell which hop such a packet is at: give these pairs interfaces of their own",
                place_words(first, stop.direction),
                place_words(stop.place, stop.direction),
                shown(chain),
                shared_words(state, &domains, first, stop.place),
            );
            report_overlap(r, (fc_name, chain), by_chain_of(r, fc_name, chain), message);
            break;
        }
    }
}

/// Whether an overlap of classifier `x` of `chain` is reported on the chain: when only the
/// chain is being applied (it brought an applied classifier in).
fn by_chain_of(r: &Report, x: &str, chain: &str) -> bool {
    r.rank(Kind::FlowClassifier, x).is_none() && r.rank(Kind::PortChain, chain).is_some()
}

/// Where a classifier's packets are classified, as messages say it.
fn place_words(place: Place, direction: Direction) -> String {
    let way = match direction {
        Direction::Forward => "",
        Direction::Reverse => " in reverse",
    };
    match place {
        Place::Port(p) => format!("entering at {}{way}", shown(p)),
        Place::Egress(g) | Place::Ingress(g) => {
            format!("leaving PortPairGroup {}{way}", shown(g))
        }
    }
}

/// The interfaces that make places `a` and `b` one domain, with the pairs that share each:
/// `interface "A" (the ingress of PortPair "pp1", the egress of PortPair "pp2")`.
fn shared_words(state: &State, domains: &place::Domains, a: Place, b: Place) -> String {
    let shared = domains.shared(a, b);
    let each: Vec<String> = shared
        .iter()
        .map(|iface| {
            let mut uses = Vec::new();
            for (name, pp) in &state.port_pairs {
                if pp.ingress == *iface {
                    uses.push(format!("the ingress of PortPair {}", shown(name)));
                }
                if pp.egress == *iface && pp.ingress != *iface {
                    uses.push(format!("the egress of PortPair {}", shown(name)));
                }
            }
            format!("{} ({})", shown(iface), uses.join(", "))
        })
        .collect();
    let noun = if each.len() == 1 {
        "interface"
    } else {
        "interfaces"
    };
    format!("{noun} {}", each.join(" and "))
}

/// `"reversed (…), "` for a classifier's reverse traffic, `""` for its own.
fn reversed(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "",
        Direction::Reverse => "reversed (source and destination swapped), ",
    }
}

fn the_reverse_of(direction: Direction) -> &'static str {
    match direction {
        Direction::Forward => "",
        Direction::Reverse => "the reverse of ",
    }
}

/// Reports an overlap on classifier `x`, or on the entry of its chain that lists it.
fn report_overlap(r: &mut Report, (x, chain): (&str, &str), by_chain: bool, message: String) {
    if by_chain {
        let i = r.state.port_chains[chain]
            .flow_classifiers
            .iter()
            .position(|f| f == x)
            .unwrap_or_default();
        r.push(
            Kind::PortChain,
            chain,
            &format!("spec.flowClassifiers[{i}]"),
            format!("its FlowClassifier {} {message}", shown(x)),
        );
    } else {
        r.push(Kind::FlowClassifier, x, "spec", message);
    }
}

/// Two classifiers of different chains that match some packet alike where both enter:
/// `b` (of chain `cb`) against `a` (of `ca`), with `ca < cb`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Conflict<'s> {
    ca: &'s str,
    a: &'s str,
    cb: &'s str,
    b: &'s str,
    /// Where they meet (the first such port, in the order of [`Meeting`]).
    at: Meeting<'s>,
}

/// Two classifiers of one chain (or one classifier, both ways) that enter at one port going
/// different ways and match some packet alike there (see [`within_a_chain`]);
/// `(a, at.da) < (b, at.db)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Twin<'s> {
    chain: &'s str,
    a: &'s str,
    b: &'s str,
    at: Meeting<'s>,
}

/// A logical port where two classifiers enter, and which way each does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Meeting<'s> {
    port: &'s str,
    da: Direction,
    db: Direction,
}

/// The conflicts between chains, and within chains, of classifiers that enter at the same
/// logical port (the places of [`stops`] that are ports; one domain each). Each port is
/// searched with the overlap index, never pair by pair, so the cost follows the classifiers,
/// not their square. One conflict per pair of classifiers.
fn conflicts<'s>(
    state: &'s State,
    matches: &'s BTreeMap<String, Match>,
    fc_chain: &BTreeMap<&'s str, &'s str>,
) -> (Vec<Conflict<'s>>, Vec<Twin<'s>>) {
    let mut ports: BTreeMap<&str, BTreeSet<(&str, Direction)>> = BTreeMap::new();
    let mut reversed: BTreeMap<&str, Match> = BTreeMap::new();
    for name in matches.keys() {
        let Some(chain) = fc_chain.get(name.as_str()) else {
            continue;
        };
        let (Some(pc), Some(fc)) = (
            state.port_chains.get(*chain),
            state.flow_classifiers.get(name),
        ) else {
            continue;
        };
        for stop in stops(state, pc, fc) {
            let Place::Port(port) = stop.place else {
                continue;
            };
            if stop.direction == Direction::Reverse {
                reversed
                    .entry(name)
                    .or_insert_with(|| matches[name].reversed());
            }
            ports
                .entry(port)
                .or_default()
                .insert((name, stop.direction));
        }
    }
    let mut between: BTreeMap<(&str, &str, &str, &str), Meeting> = BTreeMap::new();
    let mut within: BTreeMap<(&str, &str, &str), Meeting> = BTreeMap::new();
    for (port, members) in &ports {
        let members: Vec<(&str, Direction)> = members.iter().copied().collect();
        // Keyed by chain and direction: classifiers of one chain going one way may overlap
        // (the most specific wins), so those pairs are never even listed; with nested
        // prefixes in one chain they are most pairs.
        let items: Vec<((&str, Direction), &Match)> = members
            .iter()
            .map(|&(fc, direction)| {
                let m = match direction {
                    Direction::Forward => &matches[fc],
                    Direction::Reverse => &reversed[fc],
                };
                ((fc_chain[fc], direction), m)
            })
            .collect();
        for (i, j) in overlap::overlapping_pairs(&items) {
            let ((mut a, mut da), (mut b, mut db)) = (members[i], members[j]);
            let (ca, cb) = (fc_chain[a], fc_chain[b]);
            if ca == cb {
                let at = Meeting { port, da, db };
                within
                    .entry((ca, a, b))
                    .and_modify(|m| *m = (*m).min(at))
                    .or_insert(at);
                continue;
            }
            if cb < ca {
                std::mem::swap(&mut a, &mut b);
                std::mem::swap(&mut da, &mut db);
            }
            let at = Meeting { port, da, db };
            between
                .entry((fc_chain[a], a, fc_chain[b], b))
                .and_modify(|m| *m = (*m).min(at))
                .or_insert(at);
        }
    }
    (
        between
            .into_iter()
            .map(|((ca, a, cb, b), at)| Conflict { ca, a, cb, b, at })
            .collect(),
        within
            .into_iter()
            .map(|((chain, a, b), at)| Twin { chain, a, b, at })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::Interfaces, document::parse_file, plan::plan, testing::doc};

    fn base() -> String {
        [
            doc("PortPair", "pp1", "{ingress: a-in, egress: a-out}"),
            doc("PortPair", "pp2", "{ingress: b-in, egress: b-out}"),
            doc("PortPairGroup", "g1", "{portPairs: [pp1]}"),
            doc("PortPairGroup", "g2", "{portPairs: [pp2]}"),
            doc(
                "FlowClassifier",
                "fc1",
                "{protocol: tcp, destinationPortRange: '80', logicalSourcePort: src}",
            ),
            doc(
                "FlowClassifier",
                "fc2",
                "{protocol: udp, logicalSourcePort: src}",
            ),
            doc(
                "PortChain",
                "c1",
                "{portPairGroups: [g1, g2], flowClassifiers: [fc1]}",
            ),
        ]
        .concat()
    }

    /// Applies `extra` on top of the base file and expects one error naming `kind "name"` and
    /// `field`, with `words` in its message.
    fn rejects(extra: &str, kind_name: &str, field: &str, words: &str) {
        let text = base() + extra;
        let err = plan(
            &State::default(),
            &[("f.yaml".into(), text)],
            &Interfaces::default(),
        )
        .expect_err("should be rejected")
        .to_string();
        let wanted = format!("f.yaml: {kind_name}: {field}: ");
        assert!(err.contains(&wanted), "wanted {wanted:?} in:\n{err}");
        assert!(err.contains(words), "wanted {words:?} in:\n{err}");
    }

    #[test]
    fn a_health_check_is_checked_field_by_field() {
        let group = |check: &str| {
            doc(
                "PortPairGroup",
                "g3",
                &format!("{{portPairs: [pp3], healthCheck: {check}}}"),
            ) + &doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")
        };
        // Every field has a default.
        plan(
            &State::default(),
            &[("f.yaml".into(), base() + &group("{}"))],
            &Interfaces::default(),
        )
        .unwrap();
        rejects(
            &group("{intervalMs: 50}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck.intervalMs",
            "50 is out of range; use 100 to 60000",
        );
        rejects(
            &group("{intervalMs: 200, timeoutMs: 300}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck.timeoutMs",
            "300 is out of range; use 10 up to intervalMs (200)",
        );
        rejects(
            &group("{failures: 0}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck.failures",
            "0 is out of range; use 1 to 100",
        );
        rejects(
            &group("{source: 10.0.0.1, destination: 'fd00::1'}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck.destination",
            "fd00::1 is not of the family of source 10.0.0.1",
        );
        rejects(
            &group("{source: 10.0.0.1}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck",
            "source and destination go together",
        );
        rejects(
            &group("{passive: true, ejectMs: 1000}"),
            "PortPairGroup \"g3\"",
            "spec.healthCheck.ejectMs",
            "1000 is out of range; use 10000 to 3600000",
        );
        rejects(
            &(doc(
                "PortPairGroup",
                "g3",
                "{portPairs: [pp3], tapEnabled: true, healthCheck: {}}",
            ) + &doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")),
            "PortPairGroup \"g3\"",
            "spec.healthCheck",
            "a tap group gets copies and steers nothing",
        );
        let err = errors_of(&(base() + &group("{interval: 5}"))).join("\n");
        assert!(err.contains("unknown field `interval`"), "{err}");
    }

    #[test]
    fn a_fail_mode_is_one_of_two_and_only_for_a_group_that_steers() {
        let group = |spec: &str| {
            doc("PortPairGroup", "g3", spec)
                + &doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")
        };
        for mode in ["failOpen", "failClosed"] {
            plan(
                &State::default(),
                &[(
                    "f.yaml".into(),
                    base() + &group(&format!("{{portPairs: [pp3], failMode: {mode}}}")),
                )],
                &Interfaces::default(),
            )
            .unwrap();
        }
        let err = errors_of(&(base() + &group("{portPairs: [pp3], failMode: open}"))).join("\n");
        assert!(
            err.contains("spec.failMode") && err.contains("`failClosed` or `failOpen`"),
            "{err}"
        );
        rejects(
            &group("{portPairs: [pp3], tapEnabled: true, failMode: failOpen}"),
            "PortPairGroup \"g3\"",
            "spec.failMode",
            "a tap group gets copies and steers nothing: nothing fails open",
        );
    }

    #[test]
    fn the_base_is_valid() {
        plan(
            &State::default(),
            &[("f.yaml".into(), base())],
            &Interfaces::default(),
        )
        .unwrap();
    }

    #[test]
    fn every_rule_names_file_kind_name_and_field() {
        rejects(
            &doc("PortPairGroup", "g3", "{portPairs: [nope]}"),
            "PortPairGroup \"g3\"",
            "spec.portPairs[0]",
            "does not exist",
        );
        rejects(
            &doc("PortChain", "c2", "{portPairGroups: [g9]}"),
            "PortChain \"c2\"",
            "spec.portPairGroups[0]",
            "does not exist",
        );
        rejects(
            &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g2], flowClassifiers: [fc9]}",
            ),
            "PortChain \"c2\"",
            "spec.flowClassifiers[0]",
            "does not exist",
        );
        rejects(
            &doc("PortPairGroup", "g3", "{portPairs: [pp1]}"),
            "PortPairGroup \"g3\"",
            "spec.portPairs[0]",
            "at most one group",
        );
        rejects(
            &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g2], flowClassifiers: [fc1]}",
            ),
            "PortChain \"c2\"",
            "spec.flowClassifiers[0]",
            "at most one chain",
        );
        rejects(
            &(doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, sourceIpPrefix: 10.0.0.0/8, logicalSourcePort: src}",
            ) + &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g2], flowClassifiers: [fc3]}",
            )),
            "FlowClassifier \"fc3\"",
            "spec",
            "overlaps FlowClassifier \"fc1\"",
        );
        rejects(
            &doc("PortChain", "c2", "{portPairGroups: [g1, g2]}"),
            "PortChain \"c2\"",
            "spec.portPairGroups",
            "same ordered groups",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{destinationPortRange: '80', logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.destinationPortRange",
            "tcp or udp",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, sourcePortRange: '90:80', logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.sourcePortRange",
            "min > max",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, sourcePortRange: '0', logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.sourcePortRange",
            "1..65535",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{ethertype: IPv6, sourceIpPrefix: 10.0.0.0/8, logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.sourceIpPrefix",
            "ethertype",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{protocol: ftp, logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.protocol",
            "unknown protocol",
        );
        rejects(
            &doc(
                "FlowClassifier",
                "fc3",
                "{ethertype: IPv4, protocol: icmpv6, logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.protocol",
            "icmpv6",
        );
        rejects(
            &doc("FlowClassifier", "fc3", "{logicalSourcePort: a-in}"),
            "FlowClassifier \"fc3\"",
            "spec.logicalSourcePort",
            "SF port",
        );
        rejects(
            &doc("PortPair", "pp3", "{ingress: a-in, egress: c-out}"),
            "PortPair \"pp3\"",
            "spec.ingress",
            "is already the ingress of PortPair \"pp1\"",
        );
        rejects(
            &doc(
                "PortPair",
                "pp3",
                "{ingress: c-in, egress: c-out, weight: 300}",
            ),
            "PortPair \"pp3\"",
            "spec.weight",
            "1..255",
        );
        rejects(
            &doc(
                "PortPair",
                "pp3",
                "{ingress: c-in, egress: c-out, ingressMac: 'zz'}",
            ),
            "PortPair \"pp3\"",
            "spec.ingressMac",
            "MAC",
        );
        rejects(
            &doc(
                "PortPair",
                "pp3",
                "{ingress: this-name-is-too-long, egress: c-out}",
            ),
            "PortPair \"pp3\"",
            "spec.ingress",
            "interface name",
        );
        rejects(
            &doc("PortPairGroup", "g3", "{portPairs: []}"),
            "PortPairGroup \"g3\"",
            "spec.portPairs",
            "at least one",
        );
        rejects(
            &doc("PortPairGroup", "g3", "{portPairs: [pp3]}").replace("pp3", "pp2"),
            "PortPairGroup \"g3\"",
            "spec.portPairs[0]",
            "at most one group",
        );
        rejects(
            &doc(
                "PortPairGroup",
                "g3",
                "{portPairs: [pp1], lbFields: [vlan]}",
            ),
            "PortPairGroup \"g3\"",
            "spec.lbFields[0]",
            "unknown variant",
        );
        rejects(
            &doc("PortChain", "c2", "{portPairGroups: [g2, g2]}"),
            "PortChain \"c2\"",
            "spec.portPairGroups[1]",
            "appears twice",
        );
        rejects(
            &doc("PortChain", "c2", "{portPairGroups: [g2], chainId: 0}"),
            "PortChain \"c2\"",
            "spec.chainId",
            "1..65535",
        );
        rejects(
            &(doc("PortChain", "c0", "{portPairGroups: [g1], chainId: 7}")
                + &doc("PortChain", "c2", "{portPairGroups: [g2], chainId: 7}")),
            "PortChain \"c2\"",
            "spec.chainId",
            "already the id",
        );
        rejects(&doc("PortChain", "c2", "{portPairGroups: [g2], flowClassifiers: [fc2], chainParameters: {symmetric: true}}"), "PortChain \"c2\"", "spec.chainParameters.symmetric", "logicalDestinationPort");
        rejects(
            &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g2], chainParameters: {correlation: mpls}}",
            ),
            "PortChain \"c2\"",
            "spec.chainParameters.correlation",
            "only none",
        );
        rejects(
            &doc("PortChain", "c2", "{portPairGroups: [g2], colour: red}"),
            "PortChain \"c2\"",
            "spec.colour",
            "unknown field `colour`",
        );
        rejects(
            &doc("PortPair", "pp1", "{ingress: a-in, egress: a-out}"),
            "PortPair \"pp1\"",
            "metadata.name",
            "appears twice",
        );
    }

    #[test]
    fn symmetric_chains_need_symmetric_hashing() {
        let text = base().replace(
            "{portPairs: [pp2]}",
            "{portPairs: [pp2], lbFields: [ip_src]}",
        ) + &doc(
            "FlowClassifier",
            "fc3",
            "{protocol: icmp, logicalSourcePort: x, logicalDestinationPort: y}",
        ) + &doc(
            "PortChain",
            "c2",
            "{portPairGroups: [g2], flowClassifiers: [fc3], chainParameters: {symmetric: true}}",
        );
        let err = plan(
            &State::default(),
            &[("f.yaml".into(), text)],
            &Interfaces::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("f.yaml: PortChain \"c2\": spec.portPairGroups[0]: PortPairGroup \"g2\" sets lbFields"), "{err}");
    }

    #[test]
    /// As the contract (and networking-sfc) has it: classifiers at different source ports may
    /// match the same packets, whether or not their chains share a group (the path each flow
    /// entered by is recorded with it, and decides as it leaves the shared group).
    fn classifiers_of_different_chains_at_other_ports_may_overlap_sharing_a_group_or_not() {
        // fc3 matches what fc1 (c1: g1, g2) matches, from another port, through `groups`.
        let through = |groups: &str| {
            doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, logicalSourcePort: other}",
            ) + &doc(
                "PortChain",
                "c2",
                &format!("{{portPairGroups: [{groups}], flowClassifiers: [fc3]}}"),
            )
        };
        assert_eq!(errors_of(&(base() + &through("g2"))), Vec::<String>::new());
        let apart = doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")
            + &doc("PortPairGroup", "g3", "{portPairs: [pp3]}")
            + &through("g3");
        assert_eq!(errors_of(&(base() + &apart)), Vec::<String>::new());
    }

    /// A third pair and group (`pp3`, `g3`) that no chain of the base file uses: chains through
    /// it share no group with `c1`, so only where they enter can make them meet.
    fn apart() -> String {
        doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")
            + &doc("PortPairGroup", "g3", "{portPairs: [pp3]}")
    }

    #[test]
    fn classifiers_of_different_chains_entering_at_one_port_overlap_whatever_their_destination() {
        // fc1 (tcp to port 80, entering at src, no destination port) against a tcp classifier
        // entering at src too, with a destination port: the dataplane classifies both in the
        // domain of src, so they meet there.
        let chain = doc(
            "PortChain",
            "c2",
            "{portPairGroups: [g3], flowClassifiers: [fc3]}",
        );
        let fc3 = |fields: &str| {
            apart() + &doc("FlowClassifier", "fc3", &format!("{{{fields}}}")) + &chain
        };
        rejects(
            &fc3("protocol: tcp, logicalSourcePort: src, logicalDestinationPort: dst"),
            "FlowClassifier \"fc3\"",
            "spec",
            "overlaps FlowClassifier \"fc1\" of PortChain \"c1\" (this one is in \"c2\"), both entering at \"src\"",
        );
        // Port ranges are compared as ranges, not per block: 1:80 is seven blocks, none of
        // them the block of 80 alone.
        rejects(
            &fc3("protocol: tcp, destinationPortRange: '1:80', logicalSourcePort: src, logicalDestinationPort: dst"),
            "FlowClassifier \"fc3\"",
            "spec",
            "overlaps FlowClassifier \"fc1\"",
        );
        // The same packets entering at another port, or other packets at src: no conflict.
        for fields in [
            "protocol: tcp, logicalSourcePort: other, logicalDestinationPort: dst",
            "protocol: tcp, destinationPortRange: '81:65535', logicalSourcePort: src, logicalDestinationPort: dst",
            "protocol: udp, logicalSourcePort: src, logicalDestinationPort: dst",
        ] {
            plan(
                &State::default(),
                &[("f.yaml".into(), base() + &fc3(fields))],
                &Interfaces::default(),
            )
            .unwrap_or_else(|e| panic!("{fields}: {e}"));
        }
    }

    #[test]
    fn the_reverse_of_a_symmetric_chain_enters_at_its_destination_port() {
        // c2 is symmetric: its reverse traffic (from 10.0.0.0/8 port 80 to anything) enters at
        // src, where fc1 (tcp to port 80) classifies the same packets.
        let text = apart()
            + &doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, sourcePortRange: '80', destinationIpPrefix: 10.0.0.0/8, logicalSourcePort: x, logicalDestinationPort: src}",
            )
            + &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g3], flowClassifiers: [fc3], chainParameters: {symmetric: true}}",
            );
        rejects(
            &text,
            "FlowClassifier \"fc3\"",
            "spec",
            "overlaps FlowClassifier \"fc1\" of PortChain \"c1\"",
        );
        // One way, c2 never classifies at src.
        let one_way = base() + &text.replace("symmetric: true", "symmetric: false");
        plan(
            &State::default(),
            &[("f.yaml".into(), one_way)],
            &Interfaces::default(),
        )
        .unwrap();
    }

    /// The errors of planning `text` alone, as printed (none when it is valid).
    fn errors_of(text: &str) -> Vec<String> {
        match plan(
            &State::default(),
            &[("f.yaml".into(), text.to_string())],
            &Interfaces::default(),
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn classifiers_of_one_chain_may_overlap_unless_they_send_a_packet_two_ways() {
        let group = doc("PortPair", "pp", "{ingress: in, egress: out}")
            + &doc("PortPairGroup", "g", "{portPairs: [pp]}");
        let two = |a: &str, b: &str, symmetric: bool| {
            group.clone()
                + &doc("FlowClassifier", "a", a)
                + &doc("FlowClassifier", "b", b)
                + &doc(
                    "PortChain",
                    "c",
                    &format!("{{portPairGroups: [g], flowClassifiers: [a, b], chainParameters: {{symmetric: {symmetric}}}}}"),
                )
        };
        // The same entry: the precedence picks the same one at the entry and after the hop.
        let one_entry = two(
            "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
            "{protocol: tcp, destinationPortRange: '80', logicalSourcePort: s1, logicalDestinationPort: d2}",
            false,
        );
        assert_eq!(errors_of(&one_entry), Vec::<String>::new());
        // The same end: after the hop, both go the same way.
        let one_end = two(
            "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
            "{protocol: tcp, destinationPortRange: '80', logicalSourcePort: s2, logicalDestinationPort: d1}",
            false,
        );
        assert_eq!(errors_of(&one_end), Vec::<String>::new());
        // Two entries and two ends: a packet to port 80 from s1 entered by a, and its flow's
        // path says so after the hop, where b would take it otherwise.
        let apart = two(
            "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
            "{protocol: tcp, destinationPortRange: '80', logicalSourcePort: s2, logicalDestinationPort: d2}",
            false,
        );
        assert_eq!(errors_of(&apart), Vec::<String>::new());
        // A symmetric chain: b's reverse traffic enters at s1, where a's enters, and overlaps it.
        let crossed = two(
            "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
            "{protocol: tcp, logicalSourcePort: d1, logicalDestinationPort: s1}",
            true,
        );
        assert_eq!(
            errors_of(&crossed),
            ["f.yaml: FlowClassifier \"b\": spec: overlaps the reverse of FlowClassifier \"a\" of the same chain entering at \"d1\", where PortChain \"c\" classifies both directions; the datapath could not tell which way such a packet goes: make them disjoint (source and destination prefixes or ports)"]
        );
        // One interface for both sides of the member: what comes back out of it is classified
        // in one place both ways, and tcp reversed is tcp; each flow's path tells its way.
        let shared = doc("PortPair", "pp", "{ingress: sh, egress: sh}")
            + &doc("PortPairGroup", "g", "{portPairs: [pp]}")
            + &doc(
                "FlowClassifier",
                "a",
                "{protocol: tcp, logicalSourcePort: s1, logicalDestinationPort: d1}",
            )
            + &doc(
                "PortChain",
                "c",
                "{portPairGroups: [g], flowClassifiers: [a], chainParameters: {symmetric: true}}",
            );
        assert_eq!(errors_of(&shared), Vec::<String>::new());
        // But at a port that is its own source and destination, both directions enter there.
        let looped = shared.replace("logicalDestinationPort: d1", "logicalDestinationPort: s1");
        assert_eq!(
            errors_of(&looped),
            ["f.yaml: FlowClassifier \"a\": spec: its traffic and its reverse traffic (source and destination swapped) match some of the same packets entering at \"s1\", where PortChain \"c\" classifies both directions; the datapath could not tell which way such a packet goes: make them disjoint (source and destination prefixes or ports)"]
        );
    }

    /// The state a chain file describes, without checking it.
    fn state_of(text: &str) -> State {
        let mut state = State::default();
        for s in parse_file("t.yaml", text).unwrap() {
            state.upsert(s.object);
        }
        state
    }

    /// Runs stages on `state`: what they return, and their errors as printed.
    fn stage<'s, T>(
        state: &'s State,
        origins: &'s Origins,
        run: impl FnOnce(&mut Report<'s>) -> T,
    ) -> (T, Vec<String>) {
        let mut r = Report::new(state, origins);
        let out = run(&mut r);
        (out, r.errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn stage_port_pairs_checks_fields_and_interface_owners() {
        let state = state_of(
            &[
                doc("PortPair", "pp1", "{ingress: a-in, egress: a-out}"),
                doc("PortPair", "pp2", "{ingress: b, egress: b}"),
                // a-out: pp1's egress and pp3's ingress, as networking-sfc allows.
                doc(
                    "PortPair",
                    "pp3",
                    "{ingress: a-out, egress: c, weight: 0, ingressMac: 'ff:ff:ff:ff:ff:ff'}",
                ),
                doc("PortPair", "pp4", "{ingress: bad/name, egress: d}"),
                doc("PortPair", "pp5", "{ingress: c5, egress: a-out}"),
                doc("PortPair", "pp6", "{ingress: f, egress: b}"),
                doc("PortPair", "pp7", "{ingress: c, egress: c}"),
                // Crossed: x→y and y→x.
                doc("PortPair", "pp8", "{ingress: x, egress: y}"),
                doc("PortPair", "pp9", "{ingress: y, egress: x}"),
                doc("PortPair", "pp0", "{ingress: a-in, egress: e}"),
            ]
            .concat(),
        );
        // pp0 comes from a file: it is visited after the applied pairs, and blamed.
        let mut origins = Origins::new();
        origins.insert(Kind::PortPair, "pp0", "new.yaml");
        let (owners, errors) = stage(&state, &origins, port_pairs);
        let applied = "(applied state): PortPair";
        assert_eq!(
            errors,
            [
                format!("{applied} \"pp3\": spec.weight: 0 is out of range; use 1..255"),
                format!("{applied} \"pp3\": spec.ingressMac: \"ff:ff:ff:ff:ff:ff\" is not a unicast MAC; use the form 02:00:00:00:00:01"),
                format!("{applied} \"pp4\": spec.ingress: \"bad/name\" is not an interface name; use 1 to 15 characters without '/', ':' or spaces"),
                format!("{applied} \"pp5\": spec.egress: interface \"a-out\" is already the egress of PortPair \"pp1\"; an interface is the egress of at most one PortPair (it may be the ingress of another): use another interface"),
                format!("{applied} \"pp6\": spec.egress: interface \"b\" is both the ingress and the egress of PortPair \"pp2\", which leaves it to no other pair; use another interface as this pair's egress"),
                format!("{applied} \"pp7\": spec.ingress: interface \"c\" is already the egress of PortPair \"pp3\"; this pair uses it as both its ingress and its egress, so no other pair may use it: give this pair interfaces of its own"),
                "new.yaml: PortPair \"pp0\": spec.ingress: interface \"a-in\" is already the ingress of PortPair \"pp1\" (already applied); an interface is the ingress of at most one PortPair (it may be the egress of another): use another interface".to_string(),
            ]
        );
        let owner = |ingress, egress| Owners { ingress, egress };
        assert_eq!(owners["a-out"], owner(Some("pp3"), Some("pp1")));
        assert_eq!(owners["b"], owner(Some("pp2"), Some("pp2")));
        assert_eq!(owners["e"], owner(None, Some("pp0")));
        assert_eq!(owners["x"], owner(Some("pp8"), Some("pp9")));
        assert_eq!(owners["y"], owner(Some("pp9"), Some("pp8")));
        assert_eq!(
            owners["a-out"].pairs(),
            [("pp3", "spec.ingress"), ("pp1", "spec.egress")]
        );
        assert_eq!(owners["b"].pairs(), [("pp2", "spec.ingress")]);
    }

    #[test]
    fn stage_groups_checks_members_and_taps() {
        let state = state_of(
            &[
                doc("PortPair", "pp1", "{ingress: a, egress: a}"),
                doc("PortPair", "pp2", "{ingress: b, egress: b}"),
                doc("PortPair", "pp3", "{ingress: c, egress: c}"),
                doc("PortPairGroup", "g1", "{portPairs: [pp1]}"),
                doc("PortPairGroup", "g2", "{portPairs: [pp2, pp2, nope]}"),
                doc("PortPairGroup", "g3", "{portPairs: []}"),
                doc(
                    "PortPairGroup",
                    "t1",
                    "{portPairs: [pp3, pp1], tapEnabled: true}",
                ),
            ]
            .concat(),
        );
        let ((), errors) = stage(&state, &Origins::new(), groups);
        assert_eq!(
            errors,
            [
                "(applied state): PortPairGroup \"g2\": spec.portPairs[1]: PortPair \"pp2\" is listed twice; a PortPair is in at most one group",
                "(applied state): PortPairGroup \"g2\": spec.portPairs[2]: PortPair \"nope\" does not exist; apply it first or in the same file",
                "(applied state): PortPairGroup \"g3\": spec.portPairs: is empty; list at least one PortPair",
                "(applied state): PortPairGroup \"t1\": spec.portPairs[1]: PortPair \"pp1\" is already in PortPairGroup \"g1\"; a PortPair is in at most one group",
                "(applied state): PortPairGroup \"t1\": spec.tapEnabled: a tap group has exactly one PortPair",
            ]
        );
    }

    #[test]
    fn stage_classifiers_checks_ports_and_fields_and_normalises() {
        let state = state_of(
            &[
                doc("PortPair", "pp1", "{ingress: a-in, egress: a-out}"),
                doc("FlowClassifier", "fc1", "{logicalSourcePort: a-in}"),
                doc(
                    "FlowClassifier",
                    "fc2",
                    "{logicalSourcePort: src, logicalDestinationPort: a-out}",
                ),
                doc(
                    "FlowClassifier",
                    "fc3",
                    "{protocol: tcp, sourcePortRange: '90:80', logicalSourcePort: src}",
                ),
                doc(
                    "FlowClassifier",
                    "fc4",
                    "{protocol: udp, destinationIpPrefix: 10.0.0.0/8, logicalSourcePort: 'x y'}",
                ),
            ]
            .concat(),
        );
        let (matches, errors) = stage(&state, &Origins::new(), |r| {
            let sf_ports = port_pairs(r);
            classifiers(r, &sf_ports)
        });
        assert_eq!(
            errors,
            [
                "(applied state): FlowClassifier \"fc1\": spec.logicalSourcePort: \"a-in\" is a port of PortPair \"pp1\"; a logical port is where traffic enters or leaves the node, not an SF port",
                "(applied state): FlowClassifier \"fc2\": spec.logicalDestinationPort: \"a-out\" is a port of PortPair \"pp1\"; a logical port is where traffic enters or leaves the node, not an SF port",
                "(applied state): FlowClassifier \"fc3\": spec.sourcePortRange: range 90:80 has min > max; write it as \"80:90\"",
                "(applied state): FlowClassifier \"fc4\": spec.logicalSourcePort: \"x y\" is not an interface name; use 1 to 15 characters without '/', ':' or spaces",
            ]
        );
        assert_eq!(matches.keys().collect::<Vec<_>>(), ["fc1", "fc2", "fc4"]);
        assert_eq!(matches["fc4"].dst.map(|p| p.len), Some(8));
        assert_eq!(matches["fc4"].proto, Some(sfc_common::PROTO_UDP));
    }

    #[test]
    fn stage_chains_checks_hops_classifiers_ids_symmetry_and_taps() {
        let state = state_of(
            &[
                doc("PortPair", "pp1", "{ingress: a, egress: a}"),
                doc("PortPair", "pp2", "{ingress: b, egress: b}"),
                doc("PortPair", "pp3", "{ingress: c, egress: c}"),
                doc("PortPair", "pp4", "{ingress: d, egress: d}"),
                doc("PortPair", "pp5", "{ingress: e, egress: e}"),
                doc("PortPairGroup", "g1", "{portPairs: [pp1]}"),
                doc("PortPairGroup", "g2", "{portPairs: [pp2]}"),
                doc("PortPairGroup", "g3", "{portPairs: [pp5], lbFields: [ip_src]}"),
                doc("PortPairGroup", "t1", "{portPairs: [pp3], tapEnabled: true}"),
                doc("PortPairGroup", "t2", "{portPairs: [pp4], tapEnabled: true}"),
                doc("FlowClassifier", "fc1", "{logicalSourcePort: s1}"),
                doc("FlowClassifier", "fc2", "{logicalSourcePort: s2}"),
                doc(
                    "PortChain",
                    "c1",
                    "{portPairGroups: [g1, g2], flowClassifiers: [fc1], chainId: 7}",
                ),
                doc(
                    "PortChain",
                    "c2",
                    "{portPairGroups: [g1, g2], flowClassifiers: [fc1], chainId: 7}",
                ),
                doc("PortChain", "c3", "{portPairGroups: [], chainId: 0}"),
                doc("PortChain", "c4", "{portPairGroups: [g1, g1, nope]}"),
                doc("PortChain", "c5", "{portPairGroups: [g1, t1, t2]}"),
                doc(
                    "PortChain",
                    "c6",
                    "{portPairGroups: [g3], flowClassifiers: [fc2], chainParameters: {symmetric: true, correlation: nsh}}",
                ),
            ]
            .concat(),
        );
        let origins = Origins::new();
        let (fc_chain, errors) = stage(&state, &origins, chains);
        let applied = "(applied state): PortChain";
        assert_eq!(
            errors,
            [
                format!("{applied} \"c2\": spec.portPairGroups: PortChain \"c1\" has the same ordered groups; two chains must differ"),
                format!("{applied} \"c2\": spec.flowClassifiers[0]: FlowClassifier \"fc1\" is already in PortChain \"c1\"; a classifier belongs to at most one chain"),
                format!("{applied} \"c2\": spec.chainId: 7 is already the id of PortChain \"c1\""),
                format!("{applied} \"c3\": spec.portPairGroups: is empty; list at least one PortPairGroup"),
                format!("{applied} \"c3\": spec.chainId: 0 is out of range; use 1..65535 or leave it out to have one assigned"),
                format!("{applied} \"c4\": spec.portPairGroups[1]: PortPairGroup \"g1\" appears twice; a packet leaving it could not tell which hop comes next"),
                format!("{applied} \"c4\": spec.portPairGroups[2]: PortPairGroup \"nope\" does not exist; apply it first or in the same file"),
                format!("{applied} \"c5\": spec.portPairGroups: two tap groups are consecutive; put a normal group between them"),
                format!("{applied} \"c6\": spec.chainParameters.symmetric: FlowClassifier \"fc2\" has no logicalDestinationPort; symmetric chains need one on every classifier"),
                format!("{applied} \"c6\": spec.portPairGroups[0]: PortPairGroup \"g3\" sets lbFields; in a symmetric chain a group must use the default symmetric 5-tuple so that both directions of a flow pick the same instance"),
                format!("{applied} \"c6\": spec.chainParameters.correlation: only none is supported: this dataplane steers on one node and needs no encapsulation"),
            ]
        );
        assert_eq!(
            fc_chain.into_iter().collect::<Vec<_>>(),
            [("fc1", "c1"), ("fc2", "c6")]
        );
    }

    #[test]
    fn stage_overlaps_checks_classifiers_that_meet() {
        let state = state_of(
            &[
                doc("PortPair", "pp1", "{ingress: a, egress: a}"),
                doc("PortPair", "pp2", "{ingress: b, egress: b}"),
                doc("PortPairGroup", "g1", "{portPairs: [pp1]}"),
                doc("PortPairGroup", "g2", "{portPairs: [pp2]}"),
                doc(
                    "FlowClassifier",
                    "fc1",
                    "{protocol: tcp, logicalSourcePort: src}",
                ),
                doc(
                    "FlowClassifier",
                    "fc2",
                    "{protocol: tcp, destinationIpPrefix: 10.0.0.0/8, logicalSourcePort: src}",
                ),
                doc(
                    "FlowClassifier",
                    "fc3",
                    "{protocol: tcp, logicalSourcePort: other}",
                ),
                doc(
                    "FlowClassifier",
                    "fc4",
                    "{protocol: udp, logicalSourcePort: src}",
                ),
                doc(
                    "PortChain",
                    "c1",
                    "{portPairGroups: [g1], flowClassifiers: [fc1]}",
                ),
                doc(
                    "PortChain",
                    "c2",
                    "{portPairGroups: [g2], flowClassifiers: [fc2, fc4]}",
                ),
                doc(
                    "PortChain",
                    "c3",
                    "{portPairGroups: [g1, g2], flowClassifiers: [fc3]}",
                ),
            ]
            .concat(),
        );
        let origins = Origins::new();
        let (_, errors) = stage(&state, &origins, |r| {
            let sf_ports = port_pairs(r);
            groups(r);
            let matches = classifiers(r, &sf_ports);
            let fc_chain = chains(r);
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            overlaps(r, &matches, &fc_chain);
        });
        assert_eq!(
            errors,
            [
                "(applied state): FlowClassifier \"fc2\": spec: overlaps FlowClassifier \"fc1\" of PortChain \"c1\" (this one is in \"c2\"), both entering at \"src\"; classifiers of different chains that enter at the same port must not match the same packets, whatever their logicalDestinationPort: narrow a prefix, port range or protocol",
            ]
        );
    }

    /// Applies `current` (one file) to an empty state, then `files` over it; the errors of
    /// the second apply, as printed.
    fn errors_applying(current: &str, files: &[(&str, String)]) -> Vec<String> {
        let (state, _, _) = plan(
            &State::default(),
            &[("old.yaml".into(), current.into())],
            &Interfaces::default(),
        )
        .expect("the current state is valid");
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(f, t)| (f.to_string(), t.clone()))
            .collect();
        plan(&state, &files, &Interfaces::default())
            .expect_err("should be refused")
            .0
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn new_file(text: String) -> [(&'static str, String); 1] {
        [("new.yaml", text)]
    }

    #[test]
    fn a_conflict_with_the_applied_state_is_reported_on_the_object_being_applied() {
        let pair = doc("PortPair", "pp0", "{ingress: a-in, egress: z-out}");
        assert_eq!(
            errors_applying(&base(), &new_file(pair)),
            ["new.yaml: PortPair \"pp0\": spec.ingress: interface \"a-in\" is already the ingress of PortPair \"pp1\" (already applied); an interface is the ingress of at most one PortPair (it may be the egress of another): use another interface"]
        );
        let group = doc("PortPairGroup", "g0", "{portPairs: [pp1]}");
        assert_eq!(
            errors_applying(&base(), &new_file(group)),
            ["new.yaml: PortPairGroup \"g0\": spec.portPairs[0]: PortPair \"pp1\" is already in PortPairGroup \"g1\" (already applied); a PortPair is in at most one group"]
        );
        let chain = doc(
            "PortChain",
            "c0",
            "{portPairGroups: [g2], flowClassifiers: [fc1]}",
        );
        assert_eq!(
            errors_applying(&base(), &new_file(chain)),
            ["new.yaml: PortChain \"c0\": spec.flowClassifiers[0]: FlowClassifier \"fc1\" is already in PortChain \"c1\" (already applied); a classifier belongs to at most one chain"]
        );
        let chain = doc("PortChain", "c0", "{portPairGroups: [g1, g2]}");
        assert_eq!(
            errors_applying(&base(), &new_file(chain)),
            ["new.yaml: PortChain \"c0\": spec.portPairGroups: PortChain \"c1\" (already applied) has the same ordered groups; two chains must differ"]
        );
        // c1 was given id 1 when it was applied.
        let chain = doc("PortChain", "c0", "{portPairGroups: [g2], chainId: 1}");
        assert_eq!(
            errors_applying(&base(), &new_file(chain)),
            ["new.yaml: PortChain \"c0\": spec.chainId: 1 is already the id of PortChain \"c1\" (already applied)"]
        );
    }

    #[test]
    fn a_conflict_of_two_kinds_is_reported_on_the_one_being_applied() {
        // A new pair on an applied classifier's logical port, and the reverse.
        let pair = doc("PortPair", "pp0", "{ingress: src, egress: z-out}");
        assert_eq!(
            errors_applying(&base(), &new_file(pair)),
            [
                "new.yaml: PortPair \"pp0\": spec.ingress: \"src\" is the logicalSourcePort of FlowClassifier \"fc1\" (already applied); a logical port is where traffic enters or leaves the node, not an SF port",
                "new.yaml: PortPair \"pp0\": spec.ingress: \"src\" is the logicalSourcePort of FlowClassifier \"fc2\" (already applied); a logical port is where traffic enters or leaves the node, not an SF port",
            ]
        );
        let classifier = doc(
            "FlowClassifier",
            "fc0",
            "{logicalSourcePort: src, logicalDestinationPort: a-out}",
        );
        assert_eq!(
            errors_applying(&base(), &new_file(classifier)),
            ["new.yaml: FlowClassifier \"fc0\": spec.logicalDestinationPort: \"a-out\" is a port of PortPair \"pp1\" (already applied); a logical port is where traffic enters or leaves the node, not an SF port"]
        );
        // A symmetric chain applied before; its classifier and group changed now.
        let symmetric = base()
            + &doc(
                "FlowClassifier",
                "fs",
                "{protocol: icmp, logicalSourcePort: x, logicalDestinationPort: y}",
            )
            + &doc(
                "PortChain",
                "cs",
                "{portPairGroups: [g2], flowClassifiers: [fs], chainParameters: {symmetric: true}}",
            );
        let classifier = doc(
            "FlowClassifier",
            "fs",
            "{protocol: icmp, logicalSourcePort: x}",
        );
        assert_eq!(
            errors_applying(&symmetric, &new_file(classifier)),
            ["new.yaml: FlowClassifier \"fs\": spec.logicalDestinationPort: is missing, and PortChain \"cs\" (already applied) is symmetric; symmetric chains need one on every classifier"]
        );
        let group = doc(
            "PortPairGroup",
            "g2",
            "{portPairs: [pp2], lbFields: [ip_src]}",
        );
        assert_eq!(
            errors_applying(&symmetric, &new_file(group)),
            ["new.yaml: PortPairGroup \"g2\": spec.lbFields: is set, but PortChain \"cs\" (already applied) is symmetric: in a symmetric chain a group must use the default symmetric 5-tuple so that both directions of a flow pick the same instance; leave lbFields out"]
        );
        // A group turned into a tap right after a tap group of an applied chain.
        let taps = base()
            + &doc("PortPair", "pp3", "{ingress: t-in, egress: t-out}")
            + &doc("PortPair", "pp4", "{ingress: u-in, egress: u-out}")
            + &doc(
                "PortPairGroup",
                "t1",
                "{portPairs: [pp3], tapEnabled: true}",
            )
            + &doc("PortPairGroup", "g4", "{portPairs: [pp4]}")
            + &doc("PortChain", "ct", "{portPairGroups: [t1, g4]}");
        let group = doc(
            "PortPairGroup",
            "g4",
            "{portPairs: [pp4], tapEnabled: true}",
        );
        assert_eq!(
            errors_applying(&taps, &new_file(group)),
            ["new.yaml: PortPairGroup \"g4\": spec.tapEnabled: is true, but PortChain \"ct\" (already applied) lists this group right after PortPairGroup \"t1\" (already applied), a tap group too; two tap groups are never consecutive: put a normal group between them"]
        );
    }

    #[test]
    fn an_overlap_is_reported_on_the_classifier_or_chain_being_applied() {
        // By name, c0 sorts before the applied c1: the error still goes to the new side.
        let text = doc(
            "FlowClassifier",
            "fc0",
            "{protocol: tcp, logicalSourcePort: src}",
        ) + &doc(
            "PortChain",
            "c0",
            "{portPairGroups: [g2, g1], flowClassifiers: [fc0]}",
        );
        assert_eq!(
            errors_applying(&base(), &new_file(text)),
            ["new.yaml: FlowClassifier \"fc0\": spec: overlaps FlowClassifier \"fc1\" (already applied) of PortChain \"c1\" (this one is in \"c0\"), both entering at \"src\"; classifiers of different chains that enter at the same port must not match the same packets, whatever their logicalDestinationPort: narrow a prefix, port range or protocol"]
        );
        // An applied classifier no chain used, brought in by a new chain: the chain is blamed.
        let current = base()
            + &doc(
                "FlowClassifier",
                "fc9",
                "{protocol: tcp, logicalSourcePort: src}",
            );
        let chain = doc(
            "PortChain",
            "c0",
            "{portPairGroups: [g2, g1], flowClassifiers: [fc9]}",
        );
        assert_eq!(
            errors_applying(&current, &new_file(chain)),
            ["new.yaml: PortChain \"c0\": spec.flowClassifiers[0]: its FlowClassifier \"fc9\" overlaps FlowClassifier \"fc1\" (already applied) of PortChain \"c1\", both entering at \"src\"; classifiers of different chains that enter at the same port must not match the same packets, whatever their logicalDestinationPort: narrow a prefix, port range or protocol"]
        );
    }

    /// One SF with two NICs crossed by two pairs: `pp-ab` goes in at "a" and out at "b",
    /// `pp-ba` the other way; a chain through both (`g1` then `g2`) with classifier `fc`.
    fn crossed(symmetric: bool, classifier: &str) -> String {
        [
            doc("PortPair", "pp-ab", "{ingress: a, egress: b}"),
            doc("PortPair", "pp-ba", "{ingress: b, egress: a}"),
            doc("PortPairGroup", "g1", "{portPairs: [pp-ab]}"),
            doc("PortPairGroup", "g2", "{portPairs: [pp-ba]}"),
            doc("FlowClassifier", "fc", classifier),
            doc(
                "PortChain",
                "c",
                &format!("{{portPairGroups: [g1, g2], flowClassifiers: [fc], chainParameters: {{symmetric: {symmetric}}}}}"),
            ),
        ]
        .concat()
    }

    fn errors_planning(text: String) -> Vec<String> {
        match plan(
            &State::default(),
            &[("f.yaml".into(), text)],
            &Interfaces::default(),
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const DISJOINT_WAYS: &str = "{sourceIpPrefix: 10.1.0.0/16, destinationIpPrefix: 10.2.0.0/16, logicalSourcePort: src, logicalDestinationPort: dst}";

    #[test]
    fn crossed_pairs_are_accepted_where_their_traffic_can_be_told_apart() {
        // Symmetric: "a" takes forward traffic leaving g2 and reverse traffic leaving g1, told
        // apart by their addresses.
        assert_eq!(
            errors_planning(crossed(true, DISJOINT_WAYS)),
            [] as [String; 0]
        );
        // One way: only forward traffic is classified on "a" and "b", whatever it matches.
        let broad = "{protocol: tcp, logicalSourcePort: src}";
        assert_eq!(errors_planning(crossed(false, broad)), [] as [String; 0]);
        // Not crossed but chained: a→b, then c→a.
        let text = crossed(true, DISJOINT_WAYS)
            .replace("{ingress: b, egress: a}", "{ingress: c, egress: a}");
        assert_eq!(errors_planning(text), [] as [String; 0]);
    }

    /// Crossed pairs in a symmetric chain whose classifier matches its own reverse: on "b",
    /// forward traffic leaving g1 and reverse traffic leaving g2 look alike, and each flow's
    /// path tells them apart. So for two chains meeting on "a" (no group shared).
    #[test]
    fn crossed_pairs_whose_traffic_looks_alike_are_told_apart_by_path() {
        let both_ways = "{protocol: tcp, logicalSourcePort: src, logicalDestinationPort: dst}";
        assert_eq!(
            errors_planning(crossed(true, both_ways)),
            Vec::<String>::new()
        );
        let text = crossed(true, DISJOINT_WAYS)
            .replace("portPairGroups: [g1, g2]", "portPairGroups: [g1]")
            + &doc(
                "FlowClassifier",
                "fc2",
                "{destinationIpPrefix: 10.1.0.0/24, logicalSourcePort: src2}",
            )
            + &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g2], flowClassifiers: [fc2]}",
            );
        assert_eq!(errors_planning(text), Vec::<String>::new());
    }

    #[test]
    fn one_way_at_two_hops_of_one_domain_is_refused() {
        // g2's member "ps" uses one interface for both sides, so what leaves g2 in reverse is
        // classified in g2's egress domain, on "s" and on p3's ingress "c"; p3's egress "d" is
        // p1's ingress, where reverse traffic leaves g1. So the chain's reverse traffic is
        // classified at two hops in one domain, with nothing to tell them apart.
        let text = [
            doc("PortPair", "p1", "{ingress: d, egress: e}"),
            doc("PortPair", "p3", "{ingress: c, egress: d}"),
            doc("PortPair", "ps", "{ingress: s, egress: s}"),
            doc("PortPairGroup", "g1", "{portPairs: [p1]}"),
            doc("PortPairGroup", "g2", "{portPairs: [ps, p3]}"),
            doc("FlowClassifier", "fc", DISJOINT_WAYS),
            doc(
                "PortChain",
                "c",
                "{portPairGroups: [g1, g2], flowClassifiers: [fc], chainParameters: {symmetric: true}}",
            ),
        ]
        .concat();
        assert_eq!(
            errors_planning(text),
            ["f.yaml: FlowClassifier \"fc\": spec: its reverse traffic (source and destination swapped) is classified both leaving PortPairGroup \"g2\" in reverse and leaving PortPairGroup \"g1\" in reverse, and PortChain \"c\" classifies those together, on interface \"d\" (the ingress of PortPair \"p1\", the egress of PortPair \"p3\"); the datapath could not tell which hop such a packet is at: give these pairs interfaces of their own"]
        );
    }

    #[test]
    fn between_files_the_later_object_is_blamed_and_the_other_file_named() {
        let first = doc("PortPair", "pp5", "{ingress: q-in, egress: q-out}");
        let second = doc("PortPair", "pp0", "{ingress: r, egress: q-out}");
        assert_eq!(
            errors_applying(&base(), &[("f1.yaml", first), ("f2.yaml", second)]),
            ["f2.yaml: PortPair \"pp0\": spec.egress: interface \"q-out\" is already the egress of PortPair \"pp5\" (in f1.yaml); an interface is the egress of at most one PortPair (it may be the ingress of another): use another interface"]
        );
        // In one file, the later document (not the later name).
        let text = doc("PortPair", "pp9", "{ingress: x-in, egress: x-out}")
            + &doc("PortPair", "pp0", "{ingress: x-in, egress: y}");
        assert_eq!(
            errors_applying(&base(), &new_file(text)),
            ["new.yaml: PortPair \"pp0\": spec.ingress: interface \"x-in\" is already the ingress of PortPair \"pp9\"; an interface is the ingress of at most one PortPair (it may be the egress of another): use another interface"]
        );
        let again = doc("PortPair", "pp7", "{ingress: w-in, egress: w-out}");
        assert_eq!(
            errors_applying(&base(), &[("f1.yaml", again.clone()), ("f2.yaml", again)]),
            ["f2.yaml: PortPair \"pp7\": metadata.name: appears twice (first in f1.yaml); names are unique within a kind"]
        );
    }
}
