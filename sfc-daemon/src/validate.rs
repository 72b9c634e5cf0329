//! The all-or-nothing checks run on the whole desired state before anything changes.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::MAX_HOPS;

use crate::{
    classifier::{normalize, Match},
    document::{ConfigError, ConfigErrors},
    model::{Correlation, Kind, State},
};

/// Where each object came from, for messages; objects not listed were applied earlier.
pub type Origins = BTreeMap<(Kind, String), String>;

pub const APPLIED: &str = "(applied state)";

struct Report<'a> {
    origins: &'a Origins,
    errors: Vec<ConfigError>,
}

impl Report<'_> {
    /// Checks a list of references whose targets each belong to one owner only: every name
    /// resolves, and none is listed twice or already claimed by another owner.
    fn exclusive_refs<'s, V>(
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
                    format!("{target_kind} {target:?} does not exist; apply it first or in the same file"),
                );
            }
            if let Some(other) = claimed.insert(target, owner) {
                let what = if other == owner {
                    "is listed twice".to_string()
                } else {
                    format!("is already in {kind} {other:?}")
                };
                self.push(
                    kind,
                    owner,
                    &field,
                    format!("{target_kind} {target:?} {what}; {rule}"),
                );
            }
        }
    }
    fn push(&mut self, kind: Kind, name: &str, field: &str, message: String) {
        let file = self
            .origins
            .get(&(kind, name.to_string()))
            .cloned()
            .unwrap_or_else(|| APPLIED.to_string());
        self.errors.push(ConfigError {
            file,
            kind: kind.to_string(),
            name: name.to_string(),
            field: field.to_string(),
            message,
        });
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
    let mut r = Report {
        origins,
        errors: Vec::new(),
    };
    let iface_field = |r: &mut Report, kind, name: &str, field: &str, value: &str| {
        if !valid_interface(value) {
            r.push(
                kind,
                name,
                field,
                format!("{value:?} is not an interface name; use 1 to 15 characters without '/', ':' or spaces"),
            );
        }
    };

    // Port pairs: fields, and one interface belongs to one pair.
    let mut iface_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, pp) in &state.port_pairs {
        iface_field(&mut r, Kind::PortPair, name, "spec.ingress", &pp.ingress);
        iface_field(&mut r, Kind::PortPair, name, "spec.egress", &pp.egress);
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
                        format!("{m:?} is not a unicast MAC; use the form 02:00:00:00:00:01"),
                    );
                }
            }
        }
        let mut ifaces = vec![("spec.ingress", pp.ingress.as_str())];
        if pp.egress != pp.ingress {
            ifaces.push(("spec.egress", pp.egress.as_str()));
        }
        for (field, iface) in ifaces {
            if let Some(other) = iface_owner.insert(iface, name) {
                r.push(Kind::PortPair, name, field, format!("interface {iface:?} already belongs to PortPair {other:?}; an interface belongs to one SF instance"));
            }
        }
    }

    // Groups: members exist, each pair in at most one group.
    let mut pair_group: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, g) in &state.port_pair_groups {
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
            (Kind::PortPair, &state.port_pairs),
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
    }

    // Classifiers: fields.
    let mut matches = BTreeMap::new();
    for (name, fc) in &state.flow_classifiers {
        iface_field(
            &mut r,
            Kind::FlowClassifier,
            name,
            "spec.logicalSourcePort",
            &fc.logical_source_port,
        );
        if let Some(d) = &fc.logical_destination_port {
            iface_field(
                &mut r,
                Kind::FlowClassifier,
                name,
                "spec.logicalDestinationPort",
                d,
            );
        }
        for port in std::iter::once(&fc.logical_source_port).chain(&fc.logical_destination_port) {
            if let Some(pp) = iface_owner.get(port.as_str()) {
                r.push(Kind::FlowClassifier, name, "spec.logicalSourcePort", format!("{port:?} is a port of PortPair {pp:?}; a logical port is where traffic enters or leaves the node, not an SF port"));
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

    // Chains.
    let mut fc_chain: BTreeMap<&str, &str> = BTreeMap::new();
    let mut paths: BTreeMap<&Vec<String>, &str> = BTreeMap::new();
    let mut ids: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, pc) in &state.port_chains {
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
            if !state.port_pair_groups.contains_key(g) {
                r.push(
                    Kind::PortChain,
                    name,
                    &field,
                    format!(
                        "PortPairGroup {g:?} does not exist; apply it first or in the same file"
                    ),
                );
            }
            if !seen.insert(g) {
                r.push(Kind::PortChain, name, &field, format!("PortPairGroup {g:?} appears twice; a packet leaving it could not tell which hop comes next"));
            }
        }
        if let Some(other) = paths.insert(groups, name) {
            r.push(
                Kind::PortChain,
                name,
                "spec.portPairGroups",
                format!("PortChain {other:?} has the same ordered groups; two chains must differ"),
            );
        }
        r.exclusive_refs(
            (Kind::PortChain, name, "spec.flowClassifiers"),
            &pc.flow_classifiers,
            (Kind::FlowClassifier, &state.flow_classifiers),
            &mut fc_chain,
            "a classifier belongs to at most one chain",
        );
        if let Some(id) = pc.chain_id {
            if !(1..=65535).contains(&id) {
                r.push(
                    Kind::PortChain,
                    name,
                    "spec.chainId",
                    format!(
                        "{id} is out of range; use 1..65535 or leave it out to have one assigned"
                    ),
                );
            } else if let Some(other) = ids.insert(id, name) {
                r.push(
                    Kind::PortChain,
                    name,
                    "spec.chainId",
                    format!("{id} is already the id of PortChain {other:?}"),
                );
            }
        }
        if pc.chain_parameters.symmetric {
            for fc in &pc.flow_classifiers {
                if state
                    .flow_classifiers
                    .get(fc)
                    .is_some_and(|f| f.logical_destination_port.is_none())
                {
                    r.push(Kind::PortChain, name, "spec.chainParameters.symmetric", format!("FlowClassifier {fc:?} has no logicalDestinationPort; symmetric chains need one on every classifier"));
                }
            }
            for (i, g) in groups.iter().enumerate() {
                if state
                    .port_pair_groups
                    .get(g)
                    .is_some_and(|g| !g.lb_fields.is_empty())
                {
                    r.push(Kind::PortChain, name, &format!("spec.portPairGroups[{i}]"), format!("PortPairGroup {g:?} sets lbFields; in a symmetric chain a group must use the default symmetric 5-tuple so that both directions of a flow pick the same instance"));
                }
            }
        }
        if pc.chain_parameters.correlation != Correlation::None {
            r.push(Kind::PortChain, name, "spec.chainParameters.correlation", "only none is supported: this dataplane steers on one node and needs no encapsulation".into());
        }
        let taps: Vec<bool> = groups
            .iter()
            .map(|g| state.port_pair_groups.get(g).is_some_and(|g| g.tap_enabled))
            .collect();
        if taps.windows(2).any(|w| w[0] && w[1]) {
            r.push(
                Kind::PortChain,
                name,
                "spec.portPairGroups",
                "two tap groups are consecutive; put a normal group between them".into(),
            );
        }
    }

    // Overlaps between chains: at the same entry (networking-sfc's rule) and, for chains that
    // share a group, anywhere (a packet leaving the shared SF must belong to one chain).
    for conflict in conflicts(state, &matches, &fc_chain) {
        let Conflict { a, ca, b, cb, .. } = &conflict;
        let message = match conflict.shared_group {
            None => format!("overlaps FlowClassifier {a:?} of PortChain {ca:?} (this one is in {cb:?}); classifiers of different chains must not match the same packets: narrow a prefix, port range or protocol"),
            Some(g) => format!("overlaps FlowClassifier {a:?} of PortChain {ca:?}, and both chains use PortPairGroup {g:?}: a packet leaving it could belong to either chain; make the classifiers disjoint or use separate groups"),
        };
        r.push(Kind::FlowClassifier, b, "spec", message);
    }

    if r.errors.is_empty() {
        Ok(matches)
    } else {
        Err(ConfigErrors(r.errors))
    }
}

/// Two classifiers of different chains that match some packet alike where it matters: `b` (of
/// chain `cb`) is reported against `a` (of `ca`), with `ca < cb`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Conflict<'s> {
    ca: &'s str,
    a: &'s str,
    cb: &'s str,
    b: &'s str,
    /// `None` when they enter at the same logical ports; otherwise the first group both
    /// chains use.
    shared_group: Option<&'s str>,
}

/// Where classifiers of different chains meet: the logical ports they enter at, or a group
/// their chains share.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Meeting<'s> {
    Entry(&'s str, Option<&'s str>),
    Group(&'s str),
}

/// Only classifiers that meet somewhere can conflict: those entering at the same logical
/// ports, and those of chains through one group. Each such set is searched with the overlap
/// index, never pair by pair, so the cost follows the classifiers, not their square.
fn conflicts<'s>(
    state: &'s State,
    matches: &'s BTreeMap<String, Match>,
    fc_chain: &BTreeMap<&'s str, &'s str>,
) -> BTreeSet<Conflict<'s>> {
    let mut sets: BTreeMap<Meeting, Vec<&str>> = BTreeMap::new();
    for name in matches.keys() {
        let Some(chain) = fc_chain.get(name.as_str()) else {
            continue;
        };
        let fc = &state.flow_classifiers[name];
        let entry = Meeting::Entry(
            &fc.logical_source_port,
            fc.logical_destination_port.as_deref(),
        );
        sets.entry(entry).or_default().push(name);
        for group in &state.port_chains[*chain].port_pair_groups {
            sets.entry(Meeting::Group(group)).or_default().push(name);
        }
    }
    let mut found = BTreeSet::new();
    for members in sets.values() {
        let items: Vec<(&str, &Match)> = members
            .iter()
            .map(|fc| (fc_chain[fc], &matches[*fc]))
            .collect();
        for (i, j) in crate::overlap::overlapping_pairs(&items) {
            let (mut a, mut b) = (members[i], members[j]);
            if fc_chain[b] < fc_chain[a] {
                std::mem::swap(&mut a, &mut b);
            }
            let (ca, cb) = (fc_chain[a], fc_chain[b]);
            let (fa, fb) = (&state.flow_classifiers[a], &state.flow_classifiers[b]);
            let same_entry = fa.logical_source_port == fb.logical_source_port
                && fa.logical_destination_port == fb.logical_destination_port;
            let shared_group = if same_entry {
                None
            } else {
                let groups_b: BTreeSet<&String> =
                    state.port_chains[cb].port_pair_groups.iter().collect();
                let shared = state.port_chains[ca]
                    .port_pair_groups
                    .iter()
                    .filter(|g| groups_b.contains(g))
                    .min();
                match shared {
                    Some(g) => Some(g.as_str()),
                    // Met in the set of another group of theirs; reported from there.
                    None => continue,
                }
            };
            found.insert(Conflict {
                ca,
                a,
                cb,
                b,
                shared_group,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::{agent::plan, compile::Interfaces, model::State};

    const HEAD: &str = "apiVersion: sfc.dataplane.dev/v1alpha1\n";

    fn doc(kind: &str, name: &str, spec: &str) -> String {
        format!("{HEAD}kind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n")
    }

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
                "{destinationIpPrefix: 10.0.0.1/8, logicalSourcePort: src}",
            ),
            "FlowClassifier \"fc3\"",
            "spec.destinationIpPrefix",
            "10.0.0.0/8",
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
            "already belongs",
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
    fn classifiers_of_chains_sharing_a_group_must_be_disjoint_even_from_other_ports() {
        let shared = doc(
            "FlowClassifier",
            "fc3",
            "{protocol: tcp, logicalSourcePort: other}",
        ) + &doc(
            "PortChain",
            "c2",
            "{portPairGroups: [g2], flowClassifiers: [fc3]}",
        );
        rejects(
            &shared,
            "FlowClassifier \"fc3\"",
            "spec",
            "both chains use PortPairGroup \"g2\"",
        );
        // From another port and through other groups, the same packets are fine.
        let text = base()
            + &doc("PortPair", "pp3", "{ingress: c-in, egress: c-out}")
            + &doc("PortPairGroup", "g3", "{portPairs: [pp3]}")
            + &doc(
                "FlowClassifier",
                "fc3",
                "{protocol: tcp, logicalSourcePort: other}",
            )
            + &doc(
                "PortChain",
                "c2",
                "{portPairGroups: [g3], flowClassifiers: [fc3]}",
            );
        plan(
            &State::default(),
            &[("f.yaml".into(), text)],
            &Interfaces::default(),
        )
        .unwrap();
    }
}
