//! The YAML fuzzer: chain files, generated or mutated, driven through what `sfcctl validate`,
//! `sfcctl apply` (the agent's plan) and `sfcctl delete` run, without a kernel. Whatever the
//! input, planning never panics and ends in a clear error or a success:
//!
//! - an error names the file it is about (or the applied state, naming the object), says
//!   something, and stays short whatever the input's size;
//! - a success is consistent: every object of the file is in the state and has its line,
//!   the state validates on its own, the image's verdicts point inside the image, applying the
//!   same file again changes nothing, and compiling it again on other interfaces the
//!   agent's way gives what a full compile gives.
//!
//! Briefly in `cargo test` (256 cases per property); longer with `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=200000 cargo test -p sfc-config --release --test fuzz_yaml`.

use std::collections::BTreeSet;

use proptest::{prelude::*, sample::select, test_runner::Config};
use sfc_common::{action, MAX_TUPLES, RING_SIZE};
use sfc_config::{
    compile::{compile, Interfaces, Link},
    document::ConfigErrors,
    model::{Kind, State},
    plan::plan_compiled,
    validate::{validate, Origins, APPLIED},
};

const FILE: &str = "fuzz.yaml";
const BASE_FILE: &str = "base.yaml";

/// Cases per property: `PROPTEST_CASES` when set (proptest's own variable), else 256.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Values: the usual ones, boundaries, and wrong ones.

/// A YAML value as written in a file: plain, quoted, or a whole structure.
fn scalar(text: &str) -> String {
    // JSON strings are YAML double-quoted scalars; the escapes agree.
    serde_json::to_string(text).unwrap()
}

/// Object names: a small pool so that references often resolve and names repeat, and some
/// that are no names.
fn name(prefix: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        8 => (0..4u8).prop_map(move |n| format!("{prefix}{n}")),
        1 => select(vec![
            String::new(),
            "a".repeat(63),
            "a".repeat(64),
            "a b".into(),
            "ünï".into(),
            "x/y".into(),
            "-".into(),
            ".".into(),
            "null".into(),
            "123".into(),
            "~".into(),
            "a:b".into(),
        ]),
    ]
    .boxed()
}

fn interface() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(vec!["a", "b", "c", "d", "e", "f", "sh", "vm1", "vm2", "vm3"]).prop_map(String::from),
        1 => select(vec![
            String::new(),
            "x".repeat(15),
            "x".repeat(16),
            "a/b".into(),
            "a:b".into(),
            "a b".into(),
            ".".into(),
            "..".into(),
            "tab\t".into(),
            "ünïcödé".into(),
            "eth0\0".into(),
            "\u{202e}rtl".into(),
        ]),
    ]
    .boxed()
}

fn mac() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (1..=255u8).prop_map(|n| format!("02:00:00:00:00:{n:02x}")),
        1 => select(vec![
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "zz",
            "02:00:00:00:00",
            "02-00-00-00-00-01",
            "02:00:00:00:00:001",
            "",
            "02:00:00:00:00:0g",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

fn prefix() -> BoxedStrategy<String> {
    prop_oneof![
        // A small space, so that classifiers often overlap.
        4 => (0..4u8, 0..4u8, select(vec![0u8, 8, 16, 24, 30, 32]))
            .prop_map(|(a, b, len)| format!("10.{a}.{b}.0/{len}")),
        2 => (0..4u8, select(vec![0u8, 16, 64, 120, 128]))
            .prop_map(|(a, len)| format!("fd00:{a}::/{len}")),
        1 => select(vec![
            "10.0.0.0",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "fd00::1/64",
            "fd00::/129",
            "::/0",
            "0.0.0.0/0",
            "10.0.0.0/-1",
            "/8",
            "10.0.0.0/",
            "abc",
            "10.0.0.0/8/8",
            "1.2.3.4/32",
            "256.0.0.0/8",
            " 10.0.0.0/8 ",
            "::ffff:10.0.0.0/104",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

fn port_range() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (select(vec![1u32, 2, 53, 80, 1000, 1024, 65535]), select(vec![0u32, 1, 3, 100, 1023]))
            .prop_map(|(lo, span)| scalar(&format!("{lo}:{}", (lo + span).min(65535)))),
        2 => select(vec![0i64, 1, 80, 65535, 65536, -1, 1 << 40]).prop_map(|n| n.to_string()),
        1 => select(vec![
            "0", "65536", "80:79", "a:b", "1:2:3", ":", "", " 80 ", "-1", "1:", ":2", "0:0",
            "1:65535", "80 : 81",
        ])
        .prop_map(scalar),
    ]
    .boxed()
}

fn protocol() -> BoxedStrategy<String> {
    prop_oneof![
        3 => select(vec!["tcp", "udp", "icmp", "icmpv6"]).prop_map(String::from),
        1 => select(vec!["TCP", "ftp", "6", "17", "256", "-1", "300", "1.5", "[]", "{}", "null"])
            .prop_map(String::from),
        1 => select(vec!["6", "300", "tcp"]).prop_map(scalar),
    ]
    .boxed()
}

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        3 => (0..4u32).prop_map(|n| (n + 1).to_string()),
        2 => select(vec![
            "0", "1", "255", "256", "65535", "65536", "-1", "4294967296", "1099511627776",
            "99999999999999999999999", "1.5", "1e400", ".inf", ".nan", "0x10", "0o17", "\"3\"",
            "~", "[]", "true",
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

fn boolean() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(vec!["true", "false"]).prop_map(String::from),
        1 => select(vec!["yes", "\"true\"", "1", "~", "[]", "True"]).prop_map(String::from),
    ]
    .boxed()
}

/// A list in flow style: `[a, "b"]`, sometimes empty, with duplicates.
fn list(item: BoxedStrategy<String>, max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(item, 0..=max)
        .prop_map(|items| format!("[{}]", items.join(", ")))
        .boxed()
}

/// A spec field, present or not.
fn field(key: &'static str, value: BoxedStrategy<String>, present: u32) -> BoxedStrategy<String> {
    prop_oneof![
        present => value.prop_map(move |v| format!("{key}: {v}")),
        10 - present => Just(String::new()),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Documents.

/// A generated document: its kind, name and spec fields (`key: value`, empty for absent).
#[derive(Clone, Debug)]
struct Doc {
    kind: String,
    name: String,
    fields: Vec<String>,
    /// Block style (one field per line) or flow style (`{a: b, c: d}`).
    block: bool,
    /// Something wrong with the document around the spec.
    frame: Frame,
}

#[derive(Clone, Copy, Debug)]
enum Frame {
    Plain,
    UnknownTopField,
    NoApiVersion,
    OtherApiVersion,
    NoMetadata,
    NoSpec,
    UnknownSpecField,
    SpecNotAMapping,
}

fn frame() -> BoxedStrategy<Frame> {
    prop_oneof![
        40 => Just(Frame::Plain),
        1 => Just(Frame::UnknownTopField),
        1 => Just(Frame::NoApiVersion),
        1 => Just(Frame::OtherApiVersion),
        1 => Just(Frame::NoMetadata),
        1 => Just(Frame::NoSpec),
        1 => Just(Frame::UnknownSpecField),
        1 => Just(Frame::SpecNotAMapping),
    ]
    .boxed()
}

fn quoted(value: BoxedStrategy<String>) -> BoxedStrategy<String> {
    value.prop_map(|v| scalar(&v)).boxed()
}

fn port_pair() -> BoxedStrategy<Vec<String>> {
    (
        field("ingress", quoted(interface()), 9),
        field("egress", quoted(interface()), 9),
        field("ingressMac", quoted(mac()), 3),
        field("egressMac", quoted(mac()), 1),
        field("weight", number(), 3),
    )
        .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e])
        .boxed()
}

fn port_pair_group() -> BoxedStrategy<Vec<String>> {
    let lb = select(vec![
        "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
        "vlan",
    ])
    .prop_map(String::from)
    .boxed();
    (
        field("portPairs", list(quoted(name("pp")), 3), 9),
        field("lbFields", list(lb, 3), 2),
        field("tapEnabled", boolean(), 2),
    )
        .prop_map(|(a, b, c)| vec![a, b, c])
        .boxed()
}

fn flow_classifier() -> BoxedStrategy<Vec<String>> {
    let ethertype = prop_oneof![
        4 => Just("IPv4".to_string()),
        2 => Just("IPv6".to_string()),
        1 => select(vec!["ipv4", "IPX", "\"\"", "4"]).prop_map(String::from),
    ]
    .boxed();
    (
        field("ethertype", ethertype, 4),
        field("protocol", protocol(), 6),
        field("sourcePortRange", port_range(), 2),
        field("destinationPortRange", port_range(), 3),
        field("sourceIpPrefix", quoted(prefix()), 3),
        field("destinationIpPrefix", quoted(prefix()), 4),
        field("logicalSourcePort", quoted(interface()), 9),
        field("logicalDestinationPort", quoted(interface()), 5),
        field("unparsable", unparsable(), 3),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i)| vec![a, b, c, d, e, f, g, h, i])
        .boxed()
}

fn unparsable() -> BoxedStrategy<String> {
    select(vec!["drop", "pass", "PASS", "\"\"", "1", "{}"])
        .prop_map(String::from)
        .boxed()
}

fn port_chain() -> BoxedStrategy<Vec<String>> {
    let correlation = prop_oneof![
        4 => Just("none".to_string()),
        1 => select(vec!["mpls", "nsh", "gre", "\"\""]).prop_map(String::from),
    ]
    .boxed();
    let parameters = (
        field("symmetric", boolean(), 5),
        field("correlation", correlation, 2),
    )
        .prop_map(|(a, b)| {
            let fields: Vec<String> = [a, b].into_iter().filter(|f| !f.is_empty()).collect();
            format!("{{{}}}", fields.join(", "))
        })
        .boxed();
    // Up to 34 groups: past the 32 hops a chain may have.
    let groups = prop_oneof![
        8 => list(quoted(name("g")), 4),
        1 => list(quoted(name("g")), 34),
    ]
    .boxed();
    (
        field("portPairGroups", groups, 9),
        field("flowClassifiers", list(quoted(name("fc")), 4), 7),
        field("chainParameters", parameters, 4),
        field("chainId", number(), 3),
    )
        .prop_map(|(a, b, c, d)| vec![a, b, c, d])
        .boxed()
}

fn doc() -> BoxedStrategy<Doc> {
    let kinds = prop_oneof![
        2 => Just("PortPair"),
        2 => Just("PortPairGroup"),
        3 => Just("FlowClassifier"),
        2 => Just("PortChain"),
        1 => select(vec!["Router", "portpair", "", "PortPairs"]),
    ];
    (kinds, any::<bool>(), frame())
        .prop_flat_map(|(kind, block, frame)| {
            let (prefix, fields) = match kind {
                "PortPair" => ("pp", port_pair()),
                "PortPairGroup" => ("g", port_pair_group()),
                "FlowClassifier" => ("fc", flow_classifier()),
                "PortChain" => ("c", port_chain()),
                _ => ("x", port_pair()),
            };
            (name(prefix), fields).prop_map(move |(name, fields)| Doc {
                kind: kind.to_string(),
                name,
                fields,
                block,
                frame,
            })
        })
        .boxed()
}

impl Doc {
    fn render(&self) -> String {
        let mut fields: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| !f.is_empty())
            .map(String::as_str)
            .collect();
        if matches!(self.frame, Frame::UnknownSpecField) {
            fields.push("colour: red");
        }
        let spec = if matches!(self.frame, Frame::SpecNotAMapping) {
            "[1, 2]".to_string()
        } else if self.block && !fields.is_empty() {
            fields
                .iter()
                .map(|f| format!("\n  {f}"))
                .collect::<String>()
        } else {
            format!("{{{}}}", fields.join(", "))
        };
        let mut out = String::new();
        match self.frame {
            Frame::NoApiVersion => {}
            Frame::OtherApiVersion => out.push_str("apiVersion: sfc.dataplane.dev/v2\n"),
            _ => out.push_str("apiVersion: sfc.dataplane.dev/v1alpha1\n"),
        }
        out.push_str(&format!("kind: {}\n", scalar(&self.kind)));
        if !matches!(self.frame, Frame::NoMetadata) {
            out.push_str(&format!("metadata:\n  name: {}\n", scalar(&self.name)));
        }
        if !matches!(self.frame, Frame::NoSpec) {
            out.push_str(&format!("spec: {spec}\n"));
        }
        if matches!(self.frame, Frame::UnknownTopField) {
            out.push_str("status: {}\n");
        }
        out
    }
}

/// A chain file of 1 to 12 generated documents.
fn chain_file() -> BoxedStrategy<String> {
    prop::collection::vec(doc(), 1..12)
        .prop_map(|docs| {
            docs.iter()
                .map(Doc::render)
                .collect::<Vec<_>>()
                .join("---\n")
        })
        .boxed()
}

/// A file of objects that mostly fit together (pairs on their own interfaces, each in one
/// group, classifiers in at most one chain, chains through existing groups), so that most
/// cases reach the overlap checks and the compiler; then a few fields given boundary or wrong
/// values.
fn coherent_file() -> BoxedStrategy<String> {
    let pair = (any::<bool>(), 0..4u8, 0..4u32, 0..6u8);
    let classifier = (
        0..5u8,
        (0..4u8, 0..6u8),
        (0..4u8, 0..6u8),
        (0..7u8, 0..7u8),
        0..4u8,
        0..6u8,
    );
    let chain = (prop::collection::vec(0..4u8, 1..4), 0..10u8, 0..4u8);
    let corruption = (select(CORRUPTIONS), 0.0..1.0f64);
    (
        prop::collection::vec(pair, 1..7),
        prop::collection::vec(classifier, 0..7),
        prop::collection::vec(chain, 1..4),
        prop::collection::vec(corruption, 0..3),
    )
        .prop_map(|(pairs, classifiers, chains, corruptions)| {
            let mut docs = Vec::new();
            let mut groups: Vec<Vec<String>> = vec![Vec::new(); 4];
            for (i, (shared, group, weight, mac)) in pairs.iter().enumerate() {
                let (ingress, egress) = if *shared {
                    (format!("s{i}"), format!("s{i}"))
                } else {
                    (format!("i{i}"), format!("o{i}"))
                };
                let mut fields = vec![format!("ingress: {ingress}"), format!("egress: {egress}")];
                if *mac > 0 {
                    fields.push(format!("ingressMac: '02:00:00:00:00:{mac:02x}'"));
                }
                if *weight > 1 {
                    fields.push(format!("weight: {weight}"));
                }
                docs.push(("PortPair", format!("pp{i}"), fields));
                groups[*group as usize].push(format!("pp{i}"));
            }
            let mut existing = Vec::new();
            for (g, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                existing.push(format!("g{g}"));
                let mut fields = vec![format!("portPairs: [{}]", members.join(", "))];
                if members.len() == 1 && g == 3 {
                    fields.push("tapEnabled: true".into());
                } else if g == 2 && pairs.len() % 3 == 0 {
                    fields.push("lbFields: [ip_src, ip_dst]".into());
                }
                docs.push(("PortPairGroup", format!("g{g}"), fields));
            }
            for (k, (proto, src, dst, (sport, dport), lsp, ldp)) in classifiers.iter().enumerate() {
                let mut fields = Vec::new();
                let ports = match proto {
                    1 => {
                        fields.push("protocol: tcp".to_string());
                        true
                    }
                    2 => {
                        fields.push("protocol: udp".to_string());
                        true
                    }
                    3 => {
                        fields.push("protocol: icmp".to_string());
                        false
                    }
                    _ => false,
                };
                let range = |n: u8| ["80", "1:1023", "1024:65535", "1000:1999", "53", "80:81", ""][n as usize % 7];
                if ports {
                    for (key, n) in [("sourcePortRange", sport), ("destinationPortRange", dport)] {
                        if !range(*n).is_empty() {
                            fields.push(format!("{key}: '{}'", range(*n)));
                        }
                    }
                }
                let prefix = |(a, len): (u8, u8)| match len {
                    1 => Some("10.0.0.0/8".to_string()),
                    2 => Some(format!("10.{a}.0.0/16")),
                    3 => Some(format!("10.{a}.0.0/24")),
                    4 => Some(format!("10.{a}.0.1/32")),
                    _ => None,
                };
                if let Some(p) = prefix(*src) {
                    fields.push(format!("sourceIpPrefix: {p}"));
                }
                if let Some(p) = prefix(*dst) {
                    fields.push(format!("destinationIpPrefix: {p}"));
                }
                fields.push(format!("logicalSourcePort: vm{lsp}"));
                if *ldp < 4 {
                    fields.push(format!("logicalDestinationPort: vm{ldp}"));
                }
                if (lsp + ldp) % 3 == 0 {
                    fields.push("unparsable: pass".into());
                }
                docs.push(("FlowClassifier", format!("fc{k}"), fields));
            }
            let mut unused: Vec<usize> = (0..classifiers.len()).collect();
            for (m, (path, flags, take)) in chains.iter().enumerate() {
                let mut hops: Vec<&str> = Vec::new();
                for g in path {
                    let g = existing[*g as usize % existing.len()].as_str();
                    if !hops.contains(&g) {
                        hops.push(g);
                    }
                }
                let mut fields = vec![format!("portPairGroups: [{}]", hops.join(", "))];
                let taken: Vec<String> = unused
                    .drain(..(*take as usize).min(unused.len()))
                    .map(|k| format!("fc{k}"))
                    .collect();
                fields.push(format!("flowClassifiers: [{}]", taken.join(", ")));
                if flags % 3 == 0 {
                    fields.push("chainParameters: {symmetric: true}".into());
                }
                if flags % 4 == 1 {
                    fields.push(format!("chainId: {}", 1 + m));
                }
                docs.push(("PortChain", format!("c{m}"), fields));
            }
            let mut text = docs
                .iter()
                .map(|(kind, name, fields)| {
                    let spec: String = fields.iter().map(|f| format!("\n  {f}")).collect();
                    format!(
                        "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:{spec}\n"
                    )
                })
                .collect::<Vec<_>>()
                .join("---\n");
            for ((key, value), at) in corruptions {
                let needle = format!("\n  {key}:");
                let found: Vec<usize> = text.match_indices(&needle).map(|(i, _)| i).collect();
                if found.is_empty() {
                    continue;
                }
                let start = found[((found.len() as f64) * at) as usize % found.len()] + needle.len();
                let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
                text = format!("{} {value}{}", &text[..start], &text[end..]);
            }
            text
        })
        .boxed()
}

/// Boundary and wrong values for the fields of [`coherent_file`].
const CORRUPTIONS: &[(&str, &str)] = &[
    ("ingress", "''"),
    ("ingress", "abcdefghijklmnop"),
    ("ingress", "s0"),
    // Crossed with pp0 (its egress as this pair's ingress), or sharing pp0's ingress.
    ("ingress", "o0"),
    ("egress", "i0"),
    ("egress", "'a/b'"),
    ("egress", "vm1"),
    ("ingressMac", "'ff:ff:ff:ff:ff:ff'"),
    ("ingressMac", "'00:00:00:00:00:00'"),
    ("ingressMac", "zz"),
    ("weight", "0"),
    ("weight", "256"),
    ("weight", "4294967296"),
    ("weight", "-1"),
    ("portPairs", "[]"),
    ("portPairs", "[pp0, pp0]"),
    ("portPairs", "[pp9]"),
    ("lbFields", "[vlan]"),
    ("protocol", "icmpv6"),
    ("protocol", "256"),
    ("protocol", "ftp"),
    ("protocol", "6"),
    ("sourcePortRange", "'0'"),
    ("sourcePortRange", "'65536'"),
    ("destinationPortRange", "'80:79'"),
    ("destinationPortRange", "'a:b'"),
    ("destinationPortRange", "'1:2:3'"),
    ("destinationPortRange", "65535"),
    ("destinationPortRange", "'1:65535'"),
    ("sourceIpPrefix", "10.0.0.0"),
    ("sourceIpPrefix", "10.0.0.1/8"),
    ("sourceIpPrefix", "'fd00::/64'"),
    ("destinationIpPrefix", "10.0.0.0/33"),
    ("destinationIpPrefix", "0.0.0.0/0"),
    ("destinationIpPrefix", "10.0.0.0/32"),
    ("logicalSourcePort", "i0"),
    ("logicalSourcePort", "vm0"),
    ("logicalSourcePort", "'x y'"),
    ("logicalDestinationPort", "vm0"),
    ("logicalDestinationPort", "o0"),
    ("unparsable", "pass"),
    ("unparsable", "Drop"),
    ("unparsable", "[pass]"),
    ("portPairGroups", "[]"),
    ("portPairGroups", "[g0, g0]"),
    ("portPairGroups", "[g9]"),
    ("portPairGroups", "[g0, g1, g2, g3]"),
    ("portPairGroups", "[g3, g3]"),
    ("flowClassifiers", "[fc0]"),
    ("flowClassifiers", "[fc0, fc0]"),
    ("flowClassifiers", "[fc9]"),
    ("chainParameters", "{symmetric: true}"),
    ("chainParameters", "{correlation: nsh}"),
    ("chainId", "0"),
    ("chainId", "1"),
    ("chainId", "65536"),
];

// ---------------------------------------------------------------------------------------------
// Mutations of valid files.

/// Valid chain files to start mutations from: the example, and smaller ones with every kind
/// of object and field.
fn valid_files() -> Vec<String> {
    let example = include_str!("../../examples/chain.yaml").to_string();
    let small = "\
apiVersion: sfc.dataplane.dev/v1alpha1
kind: PortPair
metadata: {name: pp0}
spec: {ingress: a, egress: b, ingressMac: '02:00:00:00:00:01', weight: 3}
---
apiVersion: sfc.dataplane.dev/v1alpha1
kind: PortPair
metadata: {name: pp1}
spec: {ingress: sh, egress: sh}
---
apiVersion: sfc.dataplane.dev/v1alpha1
kind: PortPairGroup
metadata: {name: g0}
spec: {portPairs: [pp0], lbFields: [ip_src, tcp_dst]}
---
apiVersion: sfc.dataplane.dev/v1alpha1
kind: PortPairGroup
metadata: {name: g1}
spec:
  portPairs:
    - pp1
  tapEnabled: true
---
apiVersion: sfc.dataplane.dev/v1alpha1
kind: FlowClassifier
metadata: {name: fc0}
spec:
  ethertype: IPv4
  protocol: tcp
  sourcePortRange: \"1024:65535\"
  destinationPortRange: \"80\"
  sourceIpPrefix: 10.0.0.0/24
  destinationIpPrefix: 10.1.0.0/16
  logicalSourcePort: vm1
  logicalDestinationPort: vm2
---
apiVersion: sfc.dataplane.dev/v1alpha1
kind: PortChain
metadata: {name: c0}
spec:
  portPairGroups: [g0, g1]
  flowClassifiers: [fc0]
  chainParameters: {symmetric: false, correlation: none}
  chainId: 7
"
    .to_string();
    let symmetric = small
        .replace("lbFields: [ip_src, tcp_dst]", "lbFields: []")
        .replace("symmetric: false", "symmetric: true");
    vec![example, small, symmetric]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the character at (fraction of the length) by one of these.
    Replace(f64, &'static str),
    Insert(f64, &'static str),
    Truncate(f64),
    DeleteLine(f64),
    DuplicateLine(f64),
    SwapLines(f64, f64),
    /// Replace the value after the n-th `: ` by this.
    Value(f64, &'static str),
    /// `depth` open brackets (or block levels) at a point.
    Nest(f64, usize, bool),
    /// A run of `count` copies of a character at a point: a value far past any limit.
    Flood(f64, char, usize),
}

const PIECES: &[&str] = &[
    ":",
    "-",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "\n",
    " ",
    "  ",
    "\t",
    "#",
    "&a ",
    "*a",
    "!",
    "!!str ",
    "|",
    ">",
    "%YAML 1.2\n",
    "@",
    "`",
    "é",
    "\u{feff}",
    "\u{200b}",
    "😀",
    "\r",
    "---\n",
    "...\n",
    "? ",
    "<<: *a\n",
    "\0",
    "\\",
];

const VALUES: &[&str] = &[
    "[]",
    "{}",
    "null",
    "~",
    "true",
    "\"\"",
    "99999999999999999999999",
    "-99999999999999999999999",
    "1e400",
    "-0",
    "0x10",
    ".inf",
    ".nan",
    "!!binary aGVsbG8=",
    "&a x",
    "*a",
    "*undefined",
    "!custom x",
    "[[[[[[[[]]]]]]]]",
    "{a: {b: {c: {d: {}}}}}",
    "\"\\u0000\"",
    "|\n  block\n",
    "'it''s'",
    "\"\\ud800\"",
    "- a\n- b",
    // Aliases that expand a billion times.
    "[&a [x, x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e], [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]]",
];

fn mutation() -> BoxedStrategy<Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        3 => (at.clone(), select(PIECES)).prop_map(|(a, p)| Mutation::Replace(a, p)),
        3 => (at.clone(), select(PIECES)).prop_map(|(a, p)| Mutation::Insert(a, p)),
        1 => at.clone().prop_map(Mutation::Truncate),
        2 => at.clone().prop_map(Mutation::DeleteLine),
        2 => at.clone().prop_map(Mutation::DuplicateLine),
        1 => (at.clone(), at.clone()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        4 => (at.clone(), select(VALUES)).prop_map(|(a, v)| Mutation::Value(a, v)),
        1 => (at.clone(), 1..200usize, any::<bool>()).prop_map(|(a, d, flow)| Mutation::Nest(a, d, flow)),
        1 => (at, select(vec!['a', '9', ' ', '[', '-', 'é']), 1..100_000usize)
            .prop_map(|(a, c, n)| Mutation::Flood(a, c, n)),
    ]
    .boxed()
}

/// The char boundary at `fraction` of `text`.
fn boundary(text: &str, fraction: f64) -> usize {
    let mut at = ((text.len() as f64) * fraction) as usize;
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at.min(text.len())
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let lines = || -> Vec<&str> { text.split_inclusive('\n').collect() };
    let line_at = |n: usize, f: f64| ((n as f64) * f) as usize % n.max(1);
    match mutation {
        Mutation::Replace(f, piece) => {
            let at = boundary(text, *f);
            let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
            format!("{}{piece}{}", &text[..at], &text[end..])
        }
        Mutation::Insert(f, piece) => {
            let at = boundary(text, *f);
            format!("{}{piece}{}", &text[..at], &text[at..])
        }
        Mutation::Truncate(f) => text[..boundary(text, *f)].to_string(),
        Mutation::DeleteLine(f) => {
            let mut lines = lines();
            if !lines.is_empty() {
                let n = line_at(lines.len(), *f);
                lines.remove(n);
            }
            lines.concat()
        }
        Mutation::DuplicateLine(f) => {
            let mut lines = lines();
            if !lines.is_empty() {
                let n = line_at(lines.len(), *f);
                lines.insert(n, lines[n]);
            }
            lines.concat()
        }
        Mutation::SwapLines(a, b) => {
            let mut lines = lines();
            if !lines.is_empty() {
                let (i, j) = (line_at(lines.len(), *a), line_at(lines.len(), *b));
                lines.swap(i, j);
            }
            lines.concat()
        }
        Mutation::Value(f, value) => {
            let colons: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
            if colons.is_empty() {
                return text.to_string();
            }
            let start = colons[line_at(colons.len(), *f)];
            let end = text[start..].find('\n').map_or(text.len(), |e| start + e);
            format!("{}{value}{}", &text[..start], &text[end..])
        }
        Mutation::Nest(f, depth, flow) => {
            let at = boundary(text, *f);
            let nest = if *flow {
                "[".repeat(*depth) + &"]".repeat(*depth)
            } else {
                (0..*depth)
                    .map(|d| format!("{}- \n", " ".repeat(2 * d)))
                    .collect()
            };
            format!("{}{nest}{}", &text[..at], &text[at..])
        }
        Mutation::Flood(f, c, count) => {
            let at = boundary(text, *f);
            let flood: String = std::iter::repeat_n(*c, *count).collect();
            format!("{}{flood}{}", &text[..at], &text[at..])
        }
    }
}

fn mutated_file() -> BoxedStrategy<String> {
    (
        select(valid_files()),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(text, mutations)| mutations.iter().fold(text, |text, m| apply(&text, m)))
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// The node's interfaces.

fn interfaces() -> BoxedStrategy<Interfaces> {
    let names = [
        "a", "b", "c", "d", "e", "f", "sh", "vm1", "vm2", "vm3", "sf1-in", "sf1-out",
    ];
    prop::collection::vec(0..4u8, names.len())
        .prop_map(move |kinds| {
            let mut interfaces = Interfaces::default();
            for (i, (name, kind)) in names.iter().zip(kinds).enumerate() {
                let index = i as u32 + 1;
                let veth = kind < 2;
                let link = Link {
                    index,
                    name: name.to_string(),
                    mac: None,
                    kind: veth.then(|| "veth".to_string()),
                    peer_index: veth.then_some(index + 100),
                    peer_nsid: (kind == 0).then_some(1),
                    up: true,
                    running: true,
                    mtu: 1500,
                };
                match kind {
                    0 | 1 => {
                        interfaces.links.insert(name.to_string(), link);
                        interfaces
                            .peer_macs
                            .insert(name.to_string(), [2, 0, 0, 0, 1, index as u8]);
                    }
                    2 => {
                        interfaces.links.insert(name.to_string(), link);
                    }
                    _ => {}
                }
            }
            interfaces
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// The properties.

/// Longest an error line may be: user values are cut at 64 characters, so no input makes a
/// message long.
const LONGEST_ERROR: usize = 2_000;

/// An error is clear: about one of `files` (or the applied state, naming an object), with a
/// message, short.
fn check_errors(errors: &ConfigErrors, files: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.0.is_empty(), "an error without a line");
    for e in &errors.0 {
        let line = e.to_string();
        prop_assert!(
            files.contains(&e.file.as_str()) || e.file == APPLIED,
            "names no file of the apply: {line}"
        );
        prop_assert!(line.starts_with(&format!("{}: ", e.file)), "{line}");
        prop_assert!(!e.message.trim().is_empty(), "no message: {line}");
        prop_assert!(line.len() <= LONGEST_ERROR, "{} bytes: {line}", line.len());
        prop_assert!(!line.contains("panicked"), "{line}");
        // Words of the libraries underneath, not of the user's file.
        for jargon in [
            "untagged enum",
            "Value::Tagged",
            "expected struct",
            " as u128",
            " as i128",
        ] {
            prop_assert!(!line.contains(jargon), "{jargon:?} in: {line}");
        }
        if e.file == APPLIED || !e.kind.is_empty() {
            prop_assert!(
                !e.kind.is_empty() && !e.name.is_empty(),
                "names no object: {line}"
            );
        }
        if !e.kind.is_empty() {
            prop_assert!(
                Kind::ALL.iter().any(|k| k.as_str() == e.kind),
                "unknown kind named: {line}"
            );
        }
    }
    Ok(())
}

/// Plans `text` over `current` as the agent does; on success checks the result, and deletes
/// an object of it as `sfcctl delete` does. Returns the state applied.
fn check_apply(
    current: &State,
    text: &str,
    interfaces: &Interfaces,
    delete: usize,
) -> Result<Option<State>, TestCaseError> {
    let files = [(FILE.to_string(), text.to_string())];
    let (next, lines, compiled) = match plan_compiled(current, &files, interfaces) {
        Ok(planned) => planned,
        Err(errors) => {
            check_errors(&errors, &[FILE])?;
            return Ok(None);
        }
    };
    // Every object of the file is in the state, with its line.
    let parsed = sfc_config::document::parse_file(FILE, text).expect("it planned");
    let objects: BTreeSet<(Kind, &str)> = parsed
        .iter()
        .map(|s| (s.object.spec.kind(), s.object.name.as_str()))
        .collect();
    prop_assert_eq!(lines.len(), objects.len(), "{:?}", lines);
    for (kind, name) in &objects {
        prop_assert!(next.get(*kind, name).is_some(), "{kind} {name} missing");
    }
    // The state is valid on its own, and its chains have distinct ids in range.
    prop_assert!(validate(&next, &Origins::new()).is_ok());
    let ids: Vec<u32> = next
        .port_chains
        .values()
        .filter_map(|c| c.chain_id)
        .collect();
    prop_assert_eq!(ids.len(), next.port_chains.len());
    prop_assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len());
    prop_assert!(ids.iter().all(|id| (1..=65535).contains(id)));
    // The image's verdicts point inside it.
    let image = compiled.image();
    for ring in &image.rings {
        prop_assert_eq!(ring.len(), RING_SIZE as usize);
    }
    for (key, entry) in &image.classify {
        prop_assert!((key.tuple as usize) < MAX_TUPLES);
        // Stored source-port ranges are inside the image, sorted and disjoint (the
        // datapath's binary search relies on it), and never for one range alone.
        if entry.ranges > 0 {
            let end = (entry.first + entry.ranges) as usize;
            prop_assert!(entry.ranges > 1 && end <= image.source_ports.len());
            let list = &image.source_ports[entry.first as usize..end];
            prop_assert!(list.iter().all(|r| r.lo <= r.hi));
            prop_assert!(list.windows(2).all(|w| w[0].hi < w[1].lo));
        }
    }
    for verdict in image.verdicts() {
        prop_assert!(verdict.counter as usize <= image.counters.len());
        if verdict.action == action::STEER {
            prop_assert!((verdict.slot as usize) < image.rings.len());
        }
    }
    let indexes: BTreeSet<u32> = interfaces.links.values().map(|l| l.index).collect();
    for (ifindex, port) in &image.ports {
        prop_assert!(indexes.contains(ifindex));
        prop_assert!(port.n_tuples as usize <= MAX_TUPLES);
    }
    // Applying the same file again changes nothing.
    let (again, lines, recompiled) =
        plan_compiled(&next, &files, interfaces).expect("the same file applies again");
    prop_assert_eq!(&again, &next);
    prop_assert!(
        lines.iter().all(|l| l.ends_with(" unchanged")),
        "{:?}",
        lines
    );
    prop_assert_eq!(recompiled.image(), image);
    // The agent's incremental compile on other interfaces (one gone) is a full compile.
    let mut fewer = interfaces.clone();
    if let Some(name) = fewer
        .links
        .keys()
        .nth(delete % fewer.links.len().max(1))
        .cloned()
    {
        fewer.links.remove(&name);
        fewer.peer_macs.remove(&name);
    }
    let incremental = compiled.with_interfaces(&next, &fewer, &Origins::new());
    let full = compile(&next, &fewer, &Origins::new());
    prop_assert_eq!(incremental.as_ref().map(|c| c.image()), full.as_ref());
    if let Err(errors) = &full {
        check_errors(errors, &[])?;
    }
    // A delete: the rest compiles, or says why not.
    let all: Vec<(Kind, String)> = next.objects().collect();
    if !all.is_empty() {
        let (kind, name) = &all[delete % all.len()];
        let mut rest = next.clone();
        rest.remove(*kind, name);
        if let Err(errors) = compile(&rest, interfaces, &Origins::new()) {
            check_errors(&errors, &[])?;
        }
    }
    Ok(Some(next))
}

proptest! {
    #![proptest_config(config())]

    /// Generated files: offline (`sfcctl validate`), then over a state applied before, on
    /// the node's interfaces (the agent's apply), and a delete.
    #[test]
    fn generated_files_plan_to_a_clear_error_or_a_consistent_state(
        base in prop_oneof![coherent_file(), chain_file()],
        text in prop_oneof![2 => coherent_file(), 1 => chain_file()],
        interfaces in interfaces(),
        delete in any::<usize>(),
    ) {
        check_apply(&State::default(), &text, &Interfaces::default(), delete)?;
        let current = check_apply(&State::default(), &base, &interfaces, delete)?
            .unwrap_or_default();
        check_apply(&current, &text, &interfaces, delete)?;
        // Two files in one apply: errors name either.
        let files = [(BASE_FILE.to_string(), base), (FILE.to_string(), text)];
        if let Err(errors) = plan_compiled(&State::default(), &files, &interfaces) {
            check_errors(&errors, &[BASE_FILE, FILE])?;
        }
    }

    /// Valid files damaged: byte flips, truncations, lines deleted, duplicated (duplicate
    /// keys) or swapped, values of the wrong type or huge, deep nesting, odd unicode.
    #[test]
    fn mutated_files_plan_to_a_clear_error_or_a_consistent_state(
        text in mutated_file(),
        interfaces in interfaces(),
        delete in any::<usize>(),
    ) {
        check_apply(&State::default(), &text, &Interfaces::default(), delete)?;
        let current = check_apply(&State::default(), &valid_files()[1], &interfaces, delete)?
            .unwrap_or_default();
        check_apply(&current, &text, &interfaces, delete)?;
    }
}

/// The mutations start from valid files: otherwise most cases would test one error.
#[test]
fn the_files_mutations_start_from_are_valid() {
    for text in valid_files() {
        let planned = plan_compiled(
            &State::default(),
            &[(FILE.to_string(), text)],
            &Interfaces::default(),
        );
        assert!(
            planned.is_ok(),
            "{:?}",
            planned.err().map(|e| e.to_string())
        );
    }
}
