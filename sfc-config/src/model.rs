//! The resource model of the user contract (PortPair, PortPairGroup, FlowClassifier, PortChain)
//! and the desired state made of them.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{
    de::{self, Visitor},
    Deserialize, Deserializer, Serialize,
};

pub const API_VERSION: &str = "sfc.dataplane.dev/v1alpha1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    PortPair,
    PortPairGroup,
    FlowClassifier,
    PortChain,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::PortPair,
        Kind::PortPairGroup,
        Kind::FlowClassifier,
        Kind::PortChain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PortPair => "PortPair",
            Kind::PortPairGroup => "PortPairGroup",
            Kind::FlowClassifier => "FlowClassifier",
            Kind::PortChain => "PortChain",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    /// Accepts the kind names of the YAML, the CLI's plural and singular forms, and the short
    /// names (`pp`, `ppg`, `fc`, `pc`), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "portpair" | "portpairs" | "pp" => Ok(Kind::PortPair),
            "portpairgroup" | "portpairgroups" | "ppg" => Ok(Kind::PortPairGroup),
            "flowclassifier" | "flowclassifiers" | "fc" => Ok(Kind::FlowClassifier),
            "portchain" | "portchains" | "pc" => Ok(Kind::PortChain),
            _ => Err(format!(
                "unknown kind {s:?}: use portpairs (pp), portpairgroups (ppg), flowclassifiers (fc) or portchains (pc)"
            )),
        }
    }
}

fn default_weight() -> u32 {
    1
}

fn is_default_weight(w: &u32) -> bool {
    *w == 1
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of PortPair fields"
)]
pub struct PortPairSpec {
    pub ingress: String,
    pub egress: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_mac: Option<String>,
    /// MAC of the SF's NIC behind `egress` (an extension: reverse traffic of symmetric chains
    /// is sent there); discovered like `ingressMac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mac: Option<String>,
    #[serde(default = "default_weight", skip_serializing_if = "is_default_weight")]
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbField {
    EthSrc,
    EthDst,
    IpSrc,
    IpDst,
    TcpSrc,
    TcpDst,
    UdpSrc,
    UdpDst,
}

impl<'de> Deserialize<'de> for LbField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use LbField::*;
        const ALL: [LbField; 8] = [EthSrc, EthDst, IpSrc, IpDst, TcpSrc, TcpDst, UdpSrc, UdpDst];
        const NAMES: [&str; 8] = [
            "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
        ];
        by_name(d, &NAMES).map(|i| ALL[i])
    }
}

impl LbField {
    pub fn bit(self) -> u8 {
        use sfc_common::lb;
        match self {
            LbField::EthSrc => lb::ETH_SRC,
            LbField::EthDst => lb::ETH_DST,
            LbField::IpSrc => lb::IP_SRC,
            LbField::IpDst => lb::IP_DST,
            LbField::TcpSrc => lb::TCP_SRC,
            LbField::TcpDst => lb::TCP_DST,
            LbField::UdpSrc => lb::UDP_SRC,
            LbField::UdpDst => lb::UDP_DST,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of PortPairGroup fields"
)]
pub struct PortPairGroupSpec {
    pub port_pairs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lb_fields: Vec<LbField>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tap_enabled: bool,
    /// Probes through each member, which leaves the group while they fail: none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// What its chains do while no member is live: drop (default) or skip its hop.
    #[serde(default, skip_serializing_if = "FailMode::is_closed")]
    pub fail_mode: FailMode,
}

/// What a group's chains do with their packets while none of its members is live (each
/// absent, or failing its health check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FailMode {
    /// Drop them and count them (`no_member`): nothing bypasses the SF.
    #[default]
    FailClosed,
    /// Skip the hop, on to the next one (or the chain's end), and count them (`hop_skipped`):
    /// the traffic goes on without the SF.
    FailOpen,
}

impl FailMode {
    fn is_closed(&self) -> bool {
        *self == FailMode::FailClosed
    }
}

impl<'de> Deserialize<'de> for FailMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const ALL: [FailMode; 2] = [FailMode::FailClosed, FailMode::FailOpen];
        by_name(d, &["failClosed", "failOpen"]).map(|i| ALL[i])
    }
}

/// A group's health check: every `intervalMs`, a probe goes into each member's ingress and is
/// expected out of its egress within `timeoutMs`; `failures` misses in a row take the member
/// out of the group, `successes` returns in a row bring it back. With `passive`, a member whose
/// counters say it is a black hole is out too, for `ejectMs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of healthCheck fields"
)]
pub struct HealthCheck {
    /// The probe's source and destination (IPv4 or IPv6, both of one family): addresses the
    /// SF forwards like its chains' traffic. Default: from the first classifier with source
    /// and destination prefixes of a chain through the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<std::net::IpAddr>,
    #[serde(default = "HealthCheck::default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "HealthCheck::default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "HealthCheck::default_failures")]
    pub failures: u32,
    #[serde(default = "HealthCheck::default_successes")]
    pub successes: u32,
    /// Also take out a member its counters judge a black hole (packets go in, none come
    /// out), for `ejectMs`; then it is judged afresh.
    #[serde(default, skip_serializing_if = "is_false")]
    pub passive: bool,
    #[serde(default = "HealthCheck::default_eject_ms")]
    pub eject_ms: u32,
}

impl HealthCheck {
    fn default_interval_ms() -> u32 {
        500
    }
    fn default_timeout_ms() -> u32 {
        250
    }
    fn default_failures() -> u32 {
        3
    }
    fn default_successes() -> u32 {
        2
    }
    fn default_eject_ms() -> u32 {
        30_000
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Ethertype {
    #[default]
    IPv4,
    IPv6,
}

impl<'de> Deserialize<'de> for Ethertype {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const ALL: [Ethertype; 2] = [Ethertype::IPv4, Ethertype::IPv6];
        by_name(d, &["IPv4", "IPv6"]).map(|i| ALL[i])
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number. (`expecting` is the whole message
/// when the value is neither: serde's own names the Rust type.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "is not a protocol; use tcp, udp, icmp, icmpv6 or a number 0..255"
)]
pub enum Protocol {
    Number(i64),
    Name(String),
}

/// `"N"` or `"MIN:MAX"`; a bare integer is accepted too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "is not a port range; use \"N\" or \"MIN:MAX\" with ports 1..65535"
)]
pub enum PortRange {
    Number(i64),
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of FlowClassifier fields"
)]
pub struct FlowClassifierSpec {
    #[serde(default)]
    pub ethertype: Ethertype,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_range: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ip_prefix: Option<String>,
    pub logical_source_port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_destination_port: Option<String>,
    /// What becomes of traffic entering at `logicalSourcePort` whose headers cannot be fully
    /// parsed (an extension of networking-sfc's model).
    #[serde(default, skip_serializing_if = "Unparsable::is_drop")]
    pub unparsable: Unparsable,
}

/// `FlowClassifier.spec.unparsable`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unparsable {
    /// Dropped and counted: whether it would have matched cannot be known, and passing it on
    /// would let the node route it around the chain.
    #[default]
    Drop,
    /// Passed on untouched, as networking-sfc does: a crafted packet (too many VLAN tags or
    /// IPv6 extension headers, a fragment whose ports are unknown) then skips the SFs.
    Pass,
}

impl Unparsable {
    fn is_drop(&self) -> bool {
        *self == Unparsable::Drop
    }
}

impl<'de> Deserialize<'de> for Unparsable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const ALL: [Unparsable; 2] = [Unparsable::Drop, Unparsable::Pass];
        by_name(d, &["drop", "pass"]).map(|i| ALL[i])
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Correlation {
    #[default]
    None,
    Mpls,
    Nsh,
}

impl<'de> Deserialize<'de> for Correlation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const ALL: [Correlation; 3] = [Correlation::None, Correlation::Mpls, Correlation::Nsh];
        by_name(d, &["none", "mpls", "nsh"]).map(|i| ALL[i])
    }
}

/// Reads a name-only enum written as one of `names` (their serialized names, in the order of
/// the variants): the index of the one given. The derived deserializer reaches the YAML
/// through `serde_yaml_ng::Value`, which reports a value of another type (a number, a list)
/// as "expected a Value::Tagged enum"; asking for a string instead reports it against the
/// names, as an unknown name is.
fn by_name<'de, D: Deserializer<'de>>(
    d: D,
    names: &'static [&'static str],
) -> Result<usize, D::Error> {
    struct Names(&'static [&'static str]);

    impl Visitor<'_> for Names {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            let quoted: Vec<String> = self.0.iter().map(|n| format!("`{n}`")).collect();
            match quoted.as_slice() {
                [a, b] => write!(f, "{a} or {b}"),
                _ => write!(f, "one of {}", quoted.join(", ")),
            }
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            self.0
                .iter()
                .position(|n| *n == v)
                .ok_or_else(|| E::unknown_variant(v, self.0))
        }
    }

    d.deserialize_str(Names(names))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of symmetric and correlation"
)]
pub struct ChainParameters {
    #[serde(default)]
    pub symmetric: bool,
    #[serde(default)]
    pub correlation: Correlation,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping of PortChain fields"
)]
pub struct PortChainSpec {
    pub port_pair_groups: Vec<String>,
    #[serde(default)]
    pub flow_classifiers: Vec<String>,
    #[serde(default)]
    pub chain_parameters: ChainParameters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "spec")]
pub enum Spec {
    PortPair(PortPairSpec),
    PortPairGroup(PortPairGroupSpec),
    FlowClassifier(FlowClassifierSpec),
    PortChain(PortChainSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::PortPair(_) => Kind::PortPair,
            Spec::PortPairGroup(_) => Kind::PortPairGroup,
            Spec::FlowClassifier(_) => Kind::FlowClassifier,
            Spec::PortChain(_) => Kind::PortChain,
        }
    }
}

/// One named object of any kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub name: String,
    #[serde(flatten)]
    pub spec: Spec,
}

/// The desired state: every applied object, by kind and name (sorted, so every listing and
/// every compiled map image is deterministic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub port_pairs: BTreeMap<String, PortPairSpec>,
    #[serde(default)]
    pub port_pair_groups: BTreeMap<String, PortPairGroupSpec>,
    #[serde(default)]
    pub flow_classifiers: BTreeMap<String, FlowClassifierSpec>,
    #[serde(default)]
    pub port_chains: BTreeMap<String, PortChainSpec>,
}

impl State {
    pub fn upsert(&mut self, object: Object) {
        match object.spec {
            Spec::PortPair(s) => {
                self.port_pairs.insert(object.name, s);
            }
            Spec::PortPairGroup(s) => {
                self.port_pair_groups.insert(object.name, s);
            }
            Spec::FlowClassifier(s) => {
                self.flow_classifiers.insert(object.name, s);
            }
            Spec::PortChain(s) => {
                self.port_chains.insert(object.name, s);
            }
        }
    }

    /// Removes an object; returns whether it existed.
    pub fn remove(&mut self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::PortPair => self.port_pairs.remove(name).is_some(),
            Kind::PortPairGroup => self.port_pair_groups.remove(name).is_some(),
            Kind::FlowClassifier => self.flow_classifiers.remove(name).is_some(),
            Kind::PortChain => self.port_chains.remove(name).is_some(),
        }
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<Spec> {
        match kind {
            Kind::PortPair => self.port_pairs.get(name).cloned().map(Spec::PortPair),
            Kind::PortPairGroup => self
                .port_pair_groups
                .get(name)
                .cloned()
                .map(Spec::PortPairGroup),
            Kind::FlowClassifier => self
                .flow_classifiers
                .get(name)
                .cloned()
                .map(Spec::FlowClassifier),
            Kind::PortChain => self.port_chains.get(name).cloned().map(Spec::PortChain),
        }
    }

    /// The group a PortPair is in (at most one: validation sees to it).
    pub fn group_of(&self, pair: &str) -> Option<&PortPairGroupSpec> {
        self.port_pair_groups
            .values()
            .find(|g| g.port_pairs.iter().any(|p| p == pair))
    }

    /// The kind and name of every object.
    pub fn objects(&self) -> impl Iterator<Item = (Kind, String)> + '_ {
        fn names<S>(
            kind: Kind,
            m: &BTreeMap<String, S>,
        ) -> impl Iterator<Item = (Kind, String)> + '_ {
            m.keys().map(move |n| (kind, n.clone()))
        }
        names(Kind::PortPair, &self.port_pairs)
            .chain(names(Kind::PortPairGroup, &self.port_pair_groups))
            .chain(names(Kind::FlowClassifier, &self.flow_classifiers))
            .chain(names(Kind::PortChain, &self.port_chains))
    }

    /// Every object of one kind, sorted by name.
    pub fn list(&self, kind: Kind) -> Vec<Object> {
        fn wrap<S: Clone>(m: &BTreeMap<String, S>, f: fn(S) -> Spec) -> Vec<Object> {
            m.iter()
                .map(|(name, s)| Object {
                    name: name.clone(),
                    spec: f(s.clone()),
                })
                .collect()
        }
        match kind {
            Kind::PortPair => wrap(&self.port_pairs, Spec::PortPair),
            Kind::PortPairGroup => wrap(&self.port_pair_groups, Spec::PortPairGroup),
            Kind::FlowClassifier => wrap(&self.flow_classifiers, Spec::FlowClassifier),
            Kind::PortChain => wrap(&self.port_chains, Spec::PortChain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the hand-written deserializers read are those the derived serializers write.
    #[test]
    fn name_only_enums_read_back_what_they_write() {
        use LbField::*;
        for f in [EthSrc, EthDst, IpSrc, IpDst, TcpSrc, TcpDst, UdpSrc, UdpDst] {
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<LbField>(&text).unwrap(), f);
        }
        for e in [Ethertype::IPv4, Ethertype::IPv6] {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Ethertype>(&text).unwrap(), e);
        }
        for c in [Correlation::None, Correlation::Mpls, Correlation::Nsh] {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Correlation>(&text).unwrap(), c);
        }
        for u in [Unparsable::Drop, Unparsable::Pass] {
            let text = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<Unparsable>(&text).unwrap(), u);
        }
    }
}
