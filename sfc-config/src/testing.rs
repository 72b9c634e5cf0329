//! Builders the unit tests share: objects put straight into a [`State`], and the YAML of a
//! document for [`plan`](crate::plan::plan). Builders only one test module needs stay in it.

use crate::model::{ChainParameters, PortChainSpec, PortPairGroupSpec, PortPairSpec, State};

/// A port pair of weight 1 with no MACs given.
pub(crate) fn pair(state: &mut State, name: &str, ingress: &str, egress: &str) {
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

/// A group of `pairs` with the default hashing, no tap.
pub(crate) fn group(state: &mut State, name: &str, pairs: &[impl AsRef<str>]) {
    state.port_pair_groups.insert(
        name.into(),
        PortPairGroupSpec {
            port_pairs: pairs.iter().map(|p| p.as_ref().to_string()).collect(),
            lb_fields: vec![],
            tap_enabled: false,
            health_check: None,
            fail_mode: Default::default(),
        },
    );
}

/// A tap group of the one pair `pair`.
pub(crate) fn tap(state: &mut State, name: &str, pair: &str) {
    group(state, name, &[pair]);
    state.port_pair_groups.get_mut(name).unwrap().tap_enabled = true;
}

/// A chain through `groups` with the classifiers `fcs`, and the next free chain id (the number
/// of chains so far, plus one) as an applied chain has. Both lists hold the same kind of
/// string, so an empty one (`&[]`) takes the type of the other.
pub(crate) fn chain<S: AsRef<str>>(
    state: &mut State,
    name: &str,
    groups: &[S],
    fcs: &[S],
    sym: bool,
) {
    let id = state.port_chains.len() as u32 + 1;
    let names = |list: &[S]| list.iter().map(|s| s.as_ref().to_string()).collect();
    state.port_chains.insert(
        name.into(),
        PortChainSpec {
            port_pair_groups: names(groups),
            flow_classifiers: names(fcs),
            chain_parameters: ChainParameters {
                symmetric: sym,
                ..Default::default()
            },
            chain_id: Some(id),
        },
    );
}

/// One YAML document of `kind` named `name`, its spec a flow mapping such as
/// `{ingress: a, egress: b}`, ending in `---` so that documents can be concatenated.
pub(crate) fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n")
}
