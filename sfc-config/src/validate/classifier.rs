//! FlowClassifier semantics: a normalised match, the overlap test of the validation rules, and
//! the expansion into masked hash keys (tuple space search: a destination-port range becomes
//! aligned blocks of 1, 16, 256 or 4096 ports, so every key is an exact match under one of a
//! few masks; the source-port range is checked in the entry the key finds).

use std::net::IpAddr;

use sfc_common::{
    ClassKey, TupleMask, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{
    document::shown,
    model::{Ethertype, FlowClassifierSpec, PortRange, Protocol},
};

/// A classifier with every field parsed and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub family: u8,
    pub proto: Option<u8>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The network address, top-aligned in 128 bits (IPv4 in the top 32).
    pub(crate) fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => (u32::from(a) as u128) << 96,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn contains_bits(&self, other: &Prefix) -> bool {
        let mask = prefix_mask(self.len);
        self.len <= other.len && self.bits() & mask == other.bits() & mask
    }

    pub fn intersects(&self, other: &Prefix) -> bool {
        self.contains_bits(other) || other.contains_bits(self)
    }

    /// Address words in network byte order (as the datapath reads them), masked.
    fn words(&self) -> [u32; 4] {
        addr_words(self.bits() & prefix_mask(self.len), self.addr.is_ipv4())
    }

    fn mask_words(&self) -> [u32; 4] {
        addr_words(prefix_mask(self.len), self.addr.is_ipv4())
    }
}

pub(crate) fn prefix_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// Converts the top-aligned 128-bit value to the datapath's words: IPv4 lives in word 0.
fn addr_words(bits: u128, v4: bool) -> [u32; 4] {
    let bytes = bits.to_be_bytes();
    let mut words = [0u32; 4];
    if v4 {
        words[0] = u32::from_ne_bytes(bytes[0..4].try_into().unwrap());
    } else {
        for (i, w) in words.iter_mut().enumerate() {
            *w = u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        }
    }
    words
}

/// A field-level problem: (field, message).
pub type FieldError = (&'static str, String);

pub fn normalize(spec: &FlowClassifierSpec) -> Result<Match, Vec<FieldError>> {
    let mut errors = Vec::new();
    let family = match spec.ethertype {
        Ethertype::IPv4 => FAMILY_V4,
        Ethertype::IPv6 => FAMILY_V6,
    };
    let proto = match &spec.protocol {
        None => None,
        Some(p) => match protocol(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(("spec.protocol", e));
                None
            }
        },
    };
    let mut range = |field: &'static str, value: &Option<PortRange>| {
        let value = value.as_ref()?;
        let parsed = match port_range(value) {
            Ok(r) => r,
            Err(e) => {
                errors.push((field, e));
                return None;
            }
        };
        if !matches!(proto, Some(PROTO_TCP | PROTO_UDP)) {
            errors.push((
                field,
                "port ranges need protocol tcp or udp; set spec.protocol".into(),
            ));
        }
        // 1..65535 is every valid port: the same as no range, and one mask instead of sixteen.
        (parsed != (1, 65535)).then_some(parsed)
    };
    let sport = range("spec.sourcePortRange", &spec.source_port_range);
    let dport = range("spec.destinationPortRange", &spec.destination_port_range);
    let mut prefix_of = |field: &'static str, value: &Option<String>| {
        let value = value.as_ref()?;
        match prefix(value, family) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push((field, e));
                None
            }
        }
    };
    let src = prefix_of("spec.sourceIpPrefix", &spec.source_ip_prefix);
    let dst = prefix_of("spec.destinationIpPrefix", &spec.destination_ip_prefix);
    if let Some(p) = proto {
        let wrong = match family {
            FAMILY_V4 => p == PROTO_ICMPV6,
            _ => p == PROTO_ICMP,
        };
        if wrong {
            errors.push((
                "spec.protocol",
                format!(
                    "{} does not exist in {:?}; use icmp with IPv4 and icmpv6 with IPv6",
                    if p == PROTO_ICMP { "icmp" } else { "icmpv6" },
                    spec.ethertype
                ),
            ));
        }
    }
    if errors.is_empty() {
        Ok(Match {
            family,
            proto,
            sport,
            dport,
            src,
            dst,
        })
    } else {
        Err(errors)
    }
}

fn protocol(p: &Protocol) -> Result<u8, String> {
    match p {
        Protocol::Number(n) => u8::try_from(*n).map_err(|_| {
            format!("{n} is not a protocol number; use 0..255 or tcp, udp, icmp, icmpv6")
        }),
        Protocol::Name(name) => match name.to_ascii_lowercase().as_str() {
            "tcp" => Ok(PROTO_TCP),
            "udp" => Ok(PROTO_UDP),
            "icmp" => Ok(PROTO_ICMP),
            "icmpv6" => Ok(PROTO_ICMPV6),
            other => other.parse::<u8>().map_err(|_| {
                format!(
                    "unknown protocol {}; use tcp, udp, icmp, icmpv6 or a number 0..255",
                    shown(name)
                )
            }),
        },
    }
}

fn port_range(value: &PortRange) -> Result<(u16, u16), String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            _ => Err(format!(
                "{} is not a port; use \"N\" or \"MIN:MAX\" with ports 1..65535",
                shown(s)
            )),
        }
    };
    let (lo, hi) = match value {
        PortRange::Number(n) => {
            let p = port(&n.to_string())?;
            (p, p)
        }
        PortRange::Text(text) => match text.split_once(':') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(text)?;
                (p, p)
            }
        },
    };
    if lo > hi {
        return Err(format!(
            "range {lo}:{hi} has min > max; write it as \"{hi}:{lo}\""
        ));
    }
    Ok((lo, hi))
}

fn prefix(value: &str, family: u8) -> Result<Prefix, String> {
    let (addr, len) = match value.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| {
        format!(
            "{} is not a CIDR prefix; use e.g. 10.0.0.0/24 or fd00::/64",
            shown(value)
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        // As networking-sfc: an address alone is not a prefix (was a /32 meant, or a /24?).
        None => {
            return Err(format!(
                "{} has no prefix length; write it with one, e.g. {}/{max} for this address alone",
                shown(value),
                addr
            ))
        }
        Some(l) => match l.trim().parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => return Err(format!("{}: prefix length must be 0..{max}", shown(value))),
        },
    };
    let expected_v4 = family == FAMILY_V4;
    if addr.is_ipv4() != expected_v4 {
        return Err(format!(
            "{} is not an {} prefix but spec.ethertype is {}; make them agree",
            shown(value),
            if expected_v4 { "IPv4" } else { "IPv6" },
            if expected_v4 { "IPv4" } else { "IPv6" },
        ));
    }
    // As networking-sfc (neutron's CIDR check): host bits may be set, and match nothing the
    // network does not: 10.0.0.1/24 is 10.0.0.0/24.
    let network = Prefix { addr, len }.bits() & prefix_mask(len);
    let addr = if addr.is_ipv4() {
        IpAddr::V4(((network >> 96) as u32).into())
    } else {
        IpAddr::V6(network.into())
    };
    Ok(Prefix { addr, len })
}

fn ranges_intersect(a: Option<(u16, u16)>, b: Option<(u16, u16)>) -> bool {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
        _ => true,
    }
}

fn prefixes_intersect(a: &Option<Prefix>, b: &Option<Prefix>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.intersects(b),
        _ => true,
    }
}

impl Match {
    /// Whether some packet matches both ("any" matches everything).
    pub fn overlaps(&self, other: &Match) -> bool {
        self.family == other.family
            && (self.proto.is_none() || other.proto.is_none() || self.proto == other.proto)
            && prefixes_intersect(&self.src, &other.src)
            && prefixes_intersect(&self.dst, &other.dst)
            && ranges_intersect(self.sport, other.sport)
            && ranges_intersect(self.dport, other.dport)
    }

    /// The match of the reverse direction: source and destination swapped.
    pub fn reversed(&self) -> Match {
        Match {
            sport: self.dport,
            dport: self.sport,
            src: self.dst,
            dst: self.src,
            ..self.clone()
        }
    }

    /// The masked (mask, key) pairs that, with the source-port range (`sport`) checked in
    /// the entry each key finds, match exactly this classifier. Keys carry no generation,
    /// tuple or domain yet; the compiler fills those in.
    pub fn expand(&self) -> Vec<(TupleMask, ClassKey)> {
        let uses_ports = u8::from(self.sport.is_some() || self.dport.is_some());
        blocks(self.dport)
            .into_iter()
            .map(|(dport, dmask)| {
                let mask = TupleMask {
                    family: self.family,
                    proto: if self.proto.is_some() { 0xff } else { 0 },
                    uses_ports,
                    dport: dmask,
                    src: self.src.map(|p| p.mask_words()).unwrap_or_default(),
                    dst: self.dst.map(|p| p.mask_words()).unwrap_or_default(),
                    ..Default::default()
                };
                let key = ClassKey {
                    family: self.family,
                    proto: self.proto.unwrap_or(0),
                    dport,
                    src: self.src.map(|p| p.words()).unwrap_or_default(),
                    dst: self.dst.map(|p| p.words()).unwrap_or_default(),
                    ..Default::default()
                };
                (mask, key)
            })
            .collect()
    }
}

/// Splits an inclusive port range into aligned blocks of 1, 16, 256 or 4096 ports:
/// (value, mask). Only four block sizes, so that however many ranges a place has, its
/// classifiers need at most five port shapes (with "any"), at the price of more keys: at most
/// 2 × 15 per size below the largest, 105 in all ("1:65535" needs none: it is "any").
fn blocks(range: Option<(u16, u16)>) -> Vec<(u16, u16)> {
    let Some((lo, hi)) = range else {
        return vec![(0, 0)];
    };
    let (mut lo, hi) = (lo as u32, hi as u32);
    let mut out = Vec::new();
    while lo <= hi {
        // The largest block of an allowed size aligned at lo that stays within hi.
        let mut size = 1u32 << 12;
        while lo % size != 0 || lo + size - 1 > hi {
            size >>= 4;
        }
        out.push((lo as u16, !(size - 1) as u16));
        lo += size;
    }
    out
}

/// The order in which the datapath probes a domain's shapes (masks): the first hit wins, so
/// this is the precedence between classifiers of one chain that match the same packet in one
/// place (those of different chains never do: validation refuses it). Most specific first: the
/// shape that fixes more bits of the packet (prefix lengths, the bits of the destination-port
/// block, 8 for a protocol); on equal counts, more destination prefix bits first, then source
/// prefix and destination port bits, then the shape whose classifiers match on ports. The key
/// depends on the shape alone, never on the other shapes of the domain, so a packet matching
/// two classifiers of a chain is taken by the same one wherever it is classified (at its entry
/// and after each hop). Distinct shapes of one family never have equal keys. Classifiers that
/// share a key are told apart by source port in its entry, the narrower range first, then the
/// one listed first in the chain (see the compiler's `classify`).
pub fn probe_order(mask: &TupleMask) -> impl Ord {
    use std::cmp::Reverse;
    let bits = |w: &[u32; 4]| w.iter().map(|x| x.count_ones()).sum::<u32>();
    let (dst, src) = (bits(&mask.dst), bits(&mask.src));
    let dport = mask.dport.count_ones();
    let proto = mask.proto.count_ones();
    (
        Reverse(dst + src + dport + proto),
        Reverse(dst),
        Reverse(src),
        Reverse(dport),
        Reverse(mask.uses_ports),
        mask.family,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> FlowClassifierSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn blocks_cover_the_range_exactly() {
        for (lo, hi) in [
            (1, 1),
            (80, 80),
            (1024, 65535),
            (1000, 2000),
            (3, 17),
            (2, 65534),
        ] {
            let bl = blocks(Some((lo, hi)));
            assert!(bl.len() <= 105, "{lo}:{hi} took {} blocks", bl.len());
            let mut covered = 0u32;
            for &(v, m) in &bl {
                let size = (!m as u32) + 1;
                assert!([1, 16, 256, 4096].contains(&size), "block of {size} ports");
                assert_eq!(v & !m, 0, "block {v} not aligned to {m:#x}");
                covered += size;
            }
            assert_eq!(covered, hi as u32 - lo as u32 + 1);
            for p in [lo, hi, lo + (hi - lo) / 2] {
                assert!(bl.iter().any(|&(v, m)| p & m == v));
            }
            if lo > 1 {
                assert!(!bl.iter().any(|&(v, m)| (lo - 1) & m == v));
            }
        }
    }

    #[test]
    fn overlap_rules() {
        let a = normalize(&spec("{protocol: tcp, destinationPortRange: '80', sourceIpPrefix: 10.0.0.0/24, logicalSourcePort: p}")).unwrap();
        let b = normalize(&spec("{sourceIpPrefix: 10.0.0.5/32, logicalSourcePort: p}")).unwrap();
        let c = normalize(&spec("{protocol: udp, logicalSourcePort: p}")).unwrap();
        let d = normalize(&spec(
            "{protocol: tcp, destinationPortRange: '81:90', logicalSourcePort: p}",
        ))
        .unwrap();
        let e = normalize(&spec("{ethertype: IPv6, logicalSourcePort: p}")).unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!(!a.overlaps(&d));
        assert!(!b.overlaps(&e));
    }

    #[test]
    fn field_errors() {
        let errs = normalize(&spec(
            "{destinationPortRange: '90:80', sourceIpPrefix: 'fd00::/64', logicalSourcePort: p}",
        ))
        .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.0).collect();
        assert!(fields.contains(&"spec.destinationPortRange"));
        assert!(fields.contains(&"spec.sourceIpPrefix"));
    }

    /// As networking-sfc: host bits may be set; the prefix is the network they are in.
    #[test]
    fn host_bits_of_a_prefix_are_ignored() {
        let with = normalize(&spec(
            "{destinationIpPrefix: 10.0.0.1/24, sourceIpPrefix: 'fd00::1/64', logicalSourcePort: p, ethertype: IPv4}",
        ));
        assert!(with.is_err(), "an IPv6 source in an IPv4 classifier");
        let with = normalize(&spec(
            "{destinationIpPrefix: 10.0.0.1/24, logicalSourcePort: p}",
        ))
        .unwrap();
        let without = normalize(&spec(
            "{destinationIpPrefix: 10.0.0.0/24, logicalSourcePort: p}",
        ))
        .unwrap();
        assert_eq!(with, without);
        let with = normalize(&spec(
            "{ethertype: IPv6, sourceIpPrefix: 'fd00::1/64', logicalSourcePort: p}",
        ))
        .unwrap();
        let without = normalize(&spec(
            "{ethertype: IPv6, sourceIpPrefix: 'fd00::/64', logicalSourcePort: p}",
        ))
        .unwrap();
        assert_eq!(with, without);
    }

    /// As networking-sfc: an address alone is refused (it used to be read as a /32), and the
    /// error shows the fix.
    #[test]
    fn a_prefix_needs_its_length() {
        for (text, fix) in [
            (
                "{sourceIpPrefix: 10.0.0.0, logicalSourcePort: p}",
                "10.0.0.0/32",
            ),
            (
                "{ethertype: IPv6, destinationIpPrefix: 'fd00::1', logicalSourcePort: p}",
                "fd00::1/128",
            ),
        ] {
            let errs = normalize(&spec(text)).unwrap_err();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(errs[0].1.contains("has no prefix length"), "{errs:?}");
            assert!(errs[0].1.contains(fix), "{errs:?}");
        }
    }
}
