//! Interfaces across the nodes of a cluster: references written `NODE/IFNAME` or `IFNAME`,
//! how an unqualified name is pinned to the one node that has it when it is applied, and the
//! view of the state one node programs (its own interfaces by name, the others' qualified,
//! which no local interface can be called).

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    document::{shown, ConfigError, ConfigErrors, Sourced},
    model::Spec,
};

/// Which node each interface reference of one object is on, by the reference as written.
pub type Placement = BTreeMap<String, String>;

/// The interface names each registered node has.
pub type NodeInterfaces = BTreeMap<String, BTreeSet<String>>;

/// A node name: 1 to 63 characters of `a-z`, `0-9`, `.` and `-`.
pub fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// `NODE/IFNAME` as its two parts; `None` for an unqualified name.
pub fn split(reference: &str) -> Option<(&str, &str)> {
    reference.split_once('/')
}

/// The interface references of an object, with the field each is in.
pub fn references(spec: &Spec) -> Vec<(&'static str, &String)> {
    match spec {
        Spec::PortPair(pp) => vec![("spec.ingress", &pp.ingress), ("spec.egress", &pp.egress)],
        Spec::FlowClassifier(fc) => {
            let mut refs = vec![("spec.logicalSourcePort", &fc.logical_source_port)];
            if let Some(port) = &fc.logical_destination_port {
                refs.push(("spec.logicalDestinationPort", port));
            }
            refs
        }
        Spec::PortPairGroup(_) | Spec::PortChain(_) => Vec::new(),
    }
}

fn references_mut(spec: &mut Spec) -> Vec<&mut String> {
    match spec {
        Spec::PortPair(pp) => vec![&mut pp.ingress, &mut pp.egress],
        Spec::FlowClassifier(fc) => std::iter::once(&mut fc.logical_source_port)
            .chain(fc.logical_destination_port.as_mut())
            .collect(),
        Spec::PortPairGroup(_) | Spec::PortChain(_) => Vec::new(),
    }
}

/// Pins every interface reference of the objects being applied to a node: a qualified one to
/// the node it names (which must be registered), an unqualified one to the one node that has
/// an interface of that name. A PortPair's two interfaces must be on one node. All or nothing:
/// every problem is reported, each naming the nodes concerned.
pub fn resolve(
    objects: &[Sourced],
    nodes: &NodeInterfaces,
) -> Result<Vec<Placement>, ConfigErrors> {
    let registered = || {
        if nodes.is_empty() {
            "no node is registered".to_string()
        } else {
            let names: Vec<&str> = nodes.keys().map(String::as_str).collect();
            format!("registered nodes: {}", names.join(", "))
        }
    };
    let mut errors = Vec::new();
    let mut placements = Vec::with_capacity(objects.len());
    for s in objects {
        let spec = &s.object.spec;
        let mut error = |field: &str, message: String| {
            errors.push(ConfigError {
                file: s.file.clone(),
                kind: spec.kind().to_string(),
                name: s.object.name.clone(),
                field: field.into(),
                message,
            })
        };
        let mut placement = Placement::new();
        let mut found = Vec::new();
        for (field, reference) in references(spec) {
            let node = match split(reference) {
                Some((node, _)) if nodes.contains_key(node) => Some(node.to_string()),
                // Left to validation, which says what a reference looks like.
                Some((node, _)) if !crate::nodes::valid_node_name(node) => None,
                Some((node, _)) => {
                    error(
                        field,
                        format!(
                            "{}: node {} is not registered ({}); `sfcctl get nodes` lists them",
                            shown(reference),
                            shown(node),
                            registered()
                        ),
                    );
                    None
                }
                None => {
                    let holders: Vec<&str> = nodes
                        .iter()
                        .filter(|(_, ifaces)| ifaces.contains(reference))
                        .map(|(node, _)| node.as_str())
                        .collect();
                    match holders.as_slice() {
                        [one] => Some(one.to_string()),
                        [] => {
                            error(
                                field,
                                format!(
                                    "no node has an interface named {} ({}); create it first, or write NODE/{reference} for an interface still to come",
                                    shown(reference),
                                    registered()
                                ),
                            );
                            None
                        }
                        many => {
                            error(
                                field,
                                format!(
                                    "interface {} is on nodes {}; write NODE/{reference} to say which",
                                    shown(reference),
                                    many.join(", ")
                                ),
                            );
                            None
                        }
                    }
                }
            };
            if let Some(node) = node {
                found.push((field, node.clone()));
                placement.insert(reference.clone(), node);
            }
        }
        if let [(_, ingress), (field, egress)] = found.as_slice() {
            if matches!(spec, Spec::PortPair(_)) && ingress != egress {
                error(
                    field,
                    format!(
                        "is on node {egress} but spec.ingress is on node {ingress}; a PortPair's interfaces are on one node"
                    ),
                );
            }
        }
        placements.push(placement);
    }
    if errors.is_empty() {
        Ok(placements)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The object with every reference written `NODE/IFNAME`: how the cluster's state is
/// validated, so that two nodes' interfaces of one name are two interfaces.
pub fn qualify(spec: &Spec, placement: &Placement) -> Spec {
    rewrite(spec, |reference| match placement.get(reference.as_str()) {
        Some(node) if split(reference).is_none() => format!("{node}/{reference}"),
        _ => reference.clone(),
    })
}

/// The object as `node` programs it: its own interfaces by their names, those of other
/// nodes qualified (no local interface has such a name, so they count as absent here).
pub fn localize(spec: &Spec, placement: &Placement, node: &str) -> Spec {
    let mine = |n: &str| n == node;
    rewrite(spec, |reference| match split(reference) {
        Some((n, ifname)) if mine(n) => ifname.to_string(),
        Some(_) => reference.clone(),
        None => match placement.get(reference.as_str()) {
            Some(n) if !mine(n) => format!("{n}/{reference}"),
            _ => reference.clone(),
        },
    })
}

fn rewrite(spec: &Spec, f: impl Fn(&String) -> String) -> Spec {
    let mut out = spec.clone();
    for reference in references_mut(&mut out) {
        *reference = f(reference);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Object, PortPairSpec};

    fn pair(name: &str, ingress: &str, egress: &str) -> Sourced {
        Sourced {
            file: "c.yaml".into(),
            object: Object {
                name: name.into(),
                spec: Spec::PortPair(PortPairSpec {
                    ingress: ingress.into(),
                    egress: egress.into(),
                    ingress_mac: None,
                    egress_mac: None,
                    weight: 1,
                }),
            },
        }
    }

    fn nodes() -> NodeInterfaces {
        let mut n = NodeInterfaces::new();
        n.insert("n1".into(), ["a".into(), "b".into(), "x".into()].into());
        n.insert("n2".into(), ["c".into(), "x".into()].into());
        n
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("node-1.example"));
        for bad in ["", "Node", "a_b", "a/b", &"a".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }

    #[test]
    fn unqualified_names_resolve_to_the_one_node_that_has_them() {
        let placements = resolve(&[pair("p", "a", "n1/b")], &nodes()).unwrap();
        assert_eq!(placements[0]["a"], "n1");
        assert_eq!(placements[0]["n1/b"], "n1");
        let spec = &pair("p", "a", "n1/b").object.spec;
        let Spec::PortPair(q) = qualify(spec, &placements[0]) else {
            unreachable!()
        };
        assert_eq!((q.ingress.as_str(), q.egress.as_str()), ("n1/a", "n1/b"));
        let Spec::PortPair(l) = localize(spec, &placements[0], "n1") else {
            unreachable!()
        };
        assert_eq!((l.ingress.as_str(), l.egress.as_str()), ("a", "b"));
        let Spec::PortPair(l) = localize(spec, &placements[0], "n2") else {
            unreachable!()
        };
        assert_eq!((l.ingress.as_str(), l.egress.as_str()), ("n1/a", "n1/b"));
    }

    #[test]
    fn errors_name_the_nodes() {
        let errors = resolve(
            &[
                pair("p1", "x", "n1/x"),
                pair("p2", "zz", "n3/a"),
                pair("p3", "a", "c"),
            ],
            &nodes(),
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "PortPair \"p1\": spec.ingress: interface \"x\" is on nodes n1, n2; write NODE/x to say which",
            "PortPair \"p2\": spec.ingress: no node has an interface named \"zz\" (registered nodes: n1, n2)",
            "PortPair \"p2\": spec.egress: \"n3/a\": node \"n3\" is not registered (registered nodes: n1, n2)",
            "PortPair \"p3\": spec.egress: is on node n2 but spec.ingress is on node n1",
        ] {
            assert!(errors.contains(expected), "{expected}\nnot in\n{errors}");
        }
    }
}
