//! Chain configuration as `sfcctl apply -f` reads it: YAML documents, each ended by `---`, so
//! that documents concatenate into one file.

/// One document whose `spec` is a YAML flow mapping: `doc("PortPairGroup", "PG1",
/// "{portPairs: [PP1]}")`.
pub fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n")
}

/// One document in block style, as examples/chain.yaml is written: `spec` is the lines of
/// the spec mapping, each indented by two spaces.
pub fn block_doc(kind: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}\n---\n")
}

/// The destination of classifier `i` of [`bulk_chain`]: 10.0.0.0 + `i`.
pub fn bulk_address(i: usize) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// A PortChain `bulk` through `groups` (a comma-separated list) with `n` FlowClassifiers from
/// `source_port`, named `{prefix}0`, `{prefix}1`, ...: classifier `i` matches TCP to
/// [`bulk_address`]`(i)`/32 port 443. The classifiers' documents, then the chain's.
pub fn bulk_chain(n: usize, prefix: &str, source_port: &str, groups: &str) -> String {
    let mut docs = String::with_capacity(n * 200);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let [a, b, c, d] = bulk_address(i);
        let name = format!("{prefix}{i}");
        docs += &doc(
            "FlowClassifier",
            &name,
            &format!("{{logicalSourcePort: {source_port}, protocol: tcp, destinationIpPrefix: {a}.{b}.{c}.{d}/32, destinationPortRange: '443'}}"),
        );
        names.push(name);
    }
    docs += &doc(
        "PortChain",
        "bulk",
        &format!(
            "{{portPairGroups: [{groups}], flowClassifiers: [{}]}}",
            names.join(", ")
        ),
    );
    docs
}

/// The demo's first group alone, PG1 = `pairs` (of PP1 on sf1, PP2 on sf2), for UDP from the
/// demo's source to its destination's `ports` (`"N"` or `"MIN:MAX"`).
pub fn one_group_udp_chain(pairs: &str, ports: &str) -> String {
    use crate::demo::{DST_V4, SRC_V4};
    [
        doc("PortPair", "PP1", "{ingress: sf1-in, egress: sf1-out}"),
        doc("PortPair", "PP2", "{ingress: sf2-in, egress: sf2-out}"),
        doc("PortPairGroup", "PG1", &format!("{{portPairs: [{pairs}]}}")),
        doc(
            "FlowClassifier",
            "FC1",
            &format!(
                "{{logicalSourcePort: vm-src, protocol: udp, sourceIpPrefix: {SRC_V4}/32, \
                 destinationIpPrefix: {DST_V4}/32, destinationPortRange: '{ports}'}}"
            ),
        ),
        doc(
            "PortChain",
            "PC1",
            "{portPairGroups: [PG1], flowClassifiers: [FC1]}",
        ),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_in_both_styles() {
        assert_eq!(
            doc("PortPairGroup", "PG1", "{portPairs: [PP1]}"),
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {name: PG1}\nspec: {portPairs: [PP1]}\n---\n"
        );
        assert_eq!(
            block_doc("PortPairGroup", "PG1", "  portPairs: [PP1]"),
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata:\n  name: PG1\nspec:\n  portPairs: [PP1]\n---\n"
        );
    }

    #[test]
    fn a_bulk_chain_has_one_destination_per_classifier() {
        assert_eq!(bulk_address(0), [10, 0, 0, 0]);
        assert_eq!(bulk_address(99_999), [10, 1, 134, 159]);
        assert_eq!(
            bulk_chain(2, "c", "vm-src", "G1, G2"),
            doc("FlowClassifier", "c0", "{logicalSourcePort: vm-src, protocol: tcp, destinationIpPrefix: 10.0.0.0/32, destinationPortRange: '443'}")
                + &doc("FlowClassifier", "c1", "{logicalSourcePort: vm-src, protocol: tcp, destinationIpPrefix: 10.0.0.1/32, destinationPortRange: '443'}")
                + &doc("PortChain", "bulk", "{portPairGroups: [G1, G2], flowClassifiers: [c0, c1]}")
        );
    }
}
