//! The dataplane's fixed sizes, checked at apply time so that an update that cannot fit is
//! refused whole, before anything is written, with an error that names the object where the
//! limit is passed, the limit, and what to do. The sizes come from `sfc_common`, the same
//! constants the eBPF maps are declared with.

use std::collections::{BTreeMap, BTreeSet};

use sfc_common::{CLASSIFY_CAPACITY, PORTS_CAPACITY, SLOTS_PER_GEN};

use crate::{
    document::ConfigError,
    model::{Kind, State},
    validate::{Origins, APPLIED},
};

/// Classifier entries one generation may hold: the map holds both generations, and the new
/// one is written while the old one still steers.
pub const CLASSIFY_PER_GEN: usize = (CLASSIFY_CAPACITY / 2) as usize;
/// Interfaces with the program, per generation (likewise).
pub const PORTS_PER_GEN: usize = (PORTS_CAPACITY / 2) as usize;
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
        file: origins
            .get(&(kind, name.to_string()))
            .cloned()
            .unwrap_or_else(|| APPLIED.to_string()),
        kind: kind.to_string(),
        name: name.to_string(),
        field: field.to_string(),
        message,
    }
}

/// Group tables (Maglev rings): one per group some chain uses (tap groups need none; both
/// directions of a symmetric chain share one). Names the first chain, in name order, that
/// needs one too many.
pub fn group_tables(state: &State, origins: &Origins) -> Option<ConfigError> {
    let mut groups = BTreeSet::new();
    for (name, chain) in &state.port_chains {
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

/// Classification domains of logical ports are numbered below the groups' domains.
pub fn entry_ports(
    ports: &BTreeMap<&String, u32>,
    limit: u32,
    state: &State,
    origins: &Origins,
) -> Option<ConfigError> {
    let (port, _) = ports.iter().find(|(_, &domain)| domain >= limit)?;
    let (name, fc) = state.flow_classifiers.iter().find(|(_, fc)| {
        &fc.logical_source_port == *port || fc.logical_destination_port.as_ref() == Some(*port)
    })?;
    let field = if &fc.logical_source_port == *port {
        "spec.logicalSourcePort"
    } else {
        "spec.logicalDestinationPort"
    };
    Some(error(
        origins,
        Kind::FlowClassifier,
        name,
        field,
        format!(
            "{port:?} would be logical port {}, and this node supports at most {}; let classifiers share logical ports",
            ports.len(),
            limit - 1
        ),
    ))
}

/// Classifier map entries, counted after port ranges are split into prefix blocks and after
/// identical entries are merged. `at` is the classifier whose entries pass the limit.
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
            "the classifiers need {count} classifier map entries, and this node holds at most {CLASSIFY_PER_GEN} (the limit is passed at this classifier); a classifier takes one entry per block of its port ranges (source blocks times destination blocks) where it enters and again after each hop: use fewer classifiers or hops, or port ranges aligned to powers of two (\"1024:2047\" is one block, \"1:65534\" is 30)"
        ),
    ))
}

/// Interfaces that need the program: logical ports and SF egress ports (and SF ingress
/// ports of symmetric chains). Names an object that uses the first interface too many.
pub fn managed_interfaces(
    attach: &BTreeMap<String, u32>,
    state: &State,
    origins: &Origins,
) -> Option<ConfigError> {
    let iface = attach.keys().nth(PORTS_PER_GEN)?;
    let message = format!(
        "{} interfaces need the steering program, and this node manages at most {PORTS_PER_GEN} ({iface:?} is past the limit); use fewer logical ports or SF instances on this node",
        attach.len()
    );
    let pair = state.port_pairs.iter().find_map(|(name, pp)| {
        let field = if &pp.egress == iface {
            "spec.egress"
        } else if &pp.ingress == iface {
            "spec.ingress"
        } else {
            return None;
        };
        Some((Kind::PortPair, name, field))
    });
    let classifier = || {
        state.flow_classifiers.iter().find_map(|(name, fc)| {
            let field = if &fc.logical_source_port == iface {
                "spec.logicalSourcePort"
            } else if fc.logical_destination_port.as_ref() == Some(iface) {
                "spec.logicalDestinationPort"
            } else {
                return None;
            };
            Some((Kind::FlowClassifier, name, field))
        })
    };
    let (kind, name, field) = pair.or_else(classifier)?;
    Some(error(origins, kind, name, field, message))
}

/// A new chain when every chain id is taken.
pub fn no_chain_id(name: &str, origins: &Origins) -> ConfigError {
    error(
        origins,
        Kind::PortChain,
        name,
        "spec.chainId",
        format!(
            "needs a chain id, but all {MAX_CHAIN_ID} are taken (a node holds at most {MAX_CHAIN_ID} chains); delete PortChains no longer needed"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::plan,
        compile::{compile, Interfaces},
        document::ConfigErrors,
        model::{
            ChainParameters, FlowClassifierSpec, PortChainSpec, PortPairGroupSpec, PortPairSpec,
            PortRange,
        },
        netlink::Link,
    };

    fn pair(state: &mut State, name: &str, ingress: &str, egress: &str) {
        state.port_pairs.insert(
            name.into(),
            PortPairSpec {
                ingress: ingress.into(),
                egress: egress.into(),
                ingress_mac: None,
                egress_mac: None,
                weight: 1,
            },
        );
    }

    fn group(state: &mut State, name: &str, pairs: Vec<String>) {
        state.port_pair_groups.insert(
            name.into(),
            PortPairGroupSpec {
                port_pairs: pairs,
                lb_fields: vec![],
                tap_enabled: false,
            },
        );
    }

    fn chain(state: &mut State, name: &str, groups: Vec<String>, fcs: Vec<String>, sym: bool) {
        state.port_chains.insert(
            name.into(),
            PortChainSpec {
                port_pair_groups: groups,
                flow_classifiers: fcs,
                chain_parameters: ChainParameters {
                    symmetric: sym,
                    ..Default::default()
                },
                chain_id: None,
            },
        );
    }

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
            group(&mut state, &format!("g{i:04}"), vec![format!("pp{i}")]);
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
                vec![format!("g{i:04}")],
                vec![],
                false,
            );
        }
        compile(&state, &Interfaces::default(), &Origins::new()).expect("exactly at the limit");
        let at_limit = state.clone();
        chain(
            &mut state,
            "c9999",
            vec![format!("g{limit:04}")],
            vec![],
            false,
        );
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
            vec![format!("g0000"), format!("g{limit:04}")],
            vec![],
            false,
        );
        compile(&state, &Interfaces::default(), &Origins::new())
            .expect("a tap group needs no table");
    }

    #[test]
    fn classifier_entries_are_counted_after_port_ranges_are_split() {
        // 32 hops: 33 domains. "1:30" is 8 blocks (1, 2-3, 4-7, 8-15, 16-23, 24-27, 28-29, 30)
        // of 4 sizes, so source times destination range is 64 entries of 16 shapes per
        // domain, 2112 per classifier; 249 of them pass 524 288, at the 249th.
        let hops = 32;
        let mut state = groups(hops);
        let mut fcs = Vec::new();
        for n in 0..249u32 {
            let name = format!("fc{n:03}");
            state.flow_classifiers.insert(
                name.clone(),
                classifier(format!("10.0.{}.{}/32", n >> 8, n & 0xff), Some("1:30")),
            );
            fcs.push(name);
        }
        let all: Vec<String> = (0..hops).map(|i| format!("g{i:04}")).collect();
        chain(&mut state, "c", all, fcs, false);
        let err = only_error(compile(&state, &Interfaces::default(), &Origins::new()));
        assert!(
            err.starts_with("(applied state): FlowClassifier \"fc248\": spec: the classifiers need 525888 classifier map entries, and this node holds at most 524288"),
            "{err}"
        );
        assert!(
            err.contains("port ranges aligned to powers of two"),
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
        group(&mut state, "g", pairs);
        state
            .flow_classifiers
            .insert("fc".into(), classifier("10.0.0.1/32".into(), None));
        chain(&mut state, "c", vec!["g".into()], vec!["fc".into()], false);
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
            "more.yaml: PortChain \"extra\": spec.chainId: needs a chain id, but all 65535 are taken (a node holds at most 65535 chains); delete PortChains no longer needed"
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
        chain(&mut state, "c", vec!["g0000".into()], fcs, false);
        let err = compile(&state, &Interfaces::default(), &Origins::new())
            .expect_err("17 shapes")
            .to_string();
        assert!(
            err.contains("need 17 distinct match shapes") && err.contains("at most 16"),
            "{err}"
        );
        assert!(err.contains("use fewer distinct prefix lengths"), "{err}");
        // Each line names its place: the entry port, then the group the packets leave.
        assert!(err.contains("the classifiers entering at port "), "{err}");
        assert!(
            err.contains("the classifiers leaving group g0000 need"),
            "{err}"
        );
    }
}
