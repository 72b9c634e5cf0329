//! The packet fuzzer (issue 11, item 9): generated and mutated frames through the real TC
//! program (and a share of them through the XDP program) with BPF_PROG_TEST_RUN, against a
//! chain applied by the real agent code, each checked against an oracle written here from the
//! datapath semantics of the design (not from the eBPF code).
//!
//! Frames are built from parts (0-3 VLAN tags of both TPIDs; IPv4 with 0-40 bytes of options;
//! IPv6 with chains of 0-10 extension headers; TCP, UDP, ICMP and other protocols; addresses
//! and ports at the edges of the classifiers' prefixes and ranges; datagrams cut into
//! fragments sent in order, reordered, with pieces missing or repeated), then mutated (byte
//! flips, wrong IPv4 total length and IHL, wrong IPv6 payload length, bad versions, other
//! ethertypes and next headers, trailing bytes), and some are sent cut at every offset.
//!
//! Invariants, per frame: the test run never fails (except where the kernel's test runner
//! refuses a frame before the program runs, which the oracle predicts); TC returns
//! TC_ACT_REDIRECT only for a frame whose fully parsed headers match a classifier, with the
//! destination MAC rewritten to a member of the first hop of that classifier's chain and
//! nothing else changed; TC_ACT_SHOT only for an unparsable frame at a port that drops those;
//! TC_ACT_UNSPEC with the frame untouched otherwise. Every packet of one flow (and every
//! fragment of a datagram) reaches the same member. XDP passes everything it does not steer
//! untouched, and never steers a fragment or an unparsable frame. Per chunk of frames, the
//! datapath's counters moved exactly as the oracle's tallies.
//!
//! Brief by default; `SFC_FUZZ_FRAMES` (frames through TC) and `SFC_FUZZ_SEED` select more and
//! another sequence (see README.md, Testing).

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use common::{ifindex, peer_mac, stats, try_run_on, try_run_xdp_on, Sandbox};
use sfc_daemon::dataplane::Mode;
use sfc_lab::{frames, yaml::doc};

/// Whether the pass port's classifiers say `unparsable: pass` (the FlowClassifier field of
/// issue 11, item 1). Off, that port drops what it cannot parse like the others.
const UNPARSABLE_FIELD: bool = true;

/// Whether a priority tag (VLAN id 0) counts as no VLAN for the flow keys, so that the next
/// tag's id is the flow's. The design says "the outermost VLAN id"; the datapath skips a 0
/// (its skb-metadata tag reads 0 when absent, too), which 802.1Q reads the same way (VLAN id 0:
/// priority only). Off, the oracle takes the outermost id whatever it is.
const PRIORITY_TAG_IS_NO_VLAN: bool = true;

const DEFAULT_FRAMES: u64 = 50_000;
const DEFAULT_SEED: u64 = 0x5fc0_0011;
/// Frames between two checks of the counters; the fragment table is emptied before each, so
/// that no datagram outlives its chunk (and none is near the 2 s expiry).
const CHUNK: usize = 1000;
/// Examples printed per kind of mismatch.
const EXAMPLES: usize = 3;

const TC_ACT_UNSPEC: u32 = u32::MAX; // -1
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const ETH_IP: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const TPIDS: [u16; 2] = [0x8100, 0x88a8];

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DSTOPTS: u8 = 60;

// ---- the applied configuration, and the oracle's model of it ----

/// Logical ports: two with classifiers of several chains, one whose classifiers all pass what
/// cannot be parsed, one whose classifiers match no ports, and one with no classifier.
const PORTS: [&str; 4] = ["lp1", "lp2", "lp3", "lp4"];
/// Port pair groups: (name, SFs). SF `s` is the veth pair `sfs-in`/`sfs-out`.
const GROUPS: [(&str, &[&str]); 7] = [
    ("GA", &["a", "b"]),
    ("GC", &["c"]),
    ("GD", &["d", "f"]),
    ("GE", &["e"]),
    ("GG", &["g"]),
    ("GX", &["x", "y"]),
    ("GQ", &["q"]),
];
/// Chains: (name, groups in order).
const CHAINS: [(&str, &[&str]); 6] = [
    ("CW", &["GA", "GC"]),
    ("CU", &["GD"]),
    ("CP", &["GE"]),
    ("C6", &["GG"]),
    ("CX", &["GX"]),
    ("CQ", &["GQ"]),
];

/// An address prefix; IPv4 addresses are the low 32 bits.
#[derive(Clone, Copy, Debug)]
struct Net {
    v6: bool,
    addr: u128,
    len: u8,
}

impl Net {
    fn parse(text: &str) -> Net {
        let (addr, len) = text.split_once('/').unwrap();
        let len = len.parse().unwrap();
        match addr.parse::<Ipv4Addr>() {
            Ok(a) => Net {
                v6: false,
                addr: u32::from(a) as u128,
                len,
            },
            Err(_) => Net {
                v6: true,
                addr: u128::from(addr.parse::<Ipv6Addr>().unwrap()),
                len,
            },
        }
    }

    fn host_mask(&self) -> u128 {
        let host_bits = if self.v6 { 128 } else { 32 } - self.len as u32;
        if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    fn last(&self) -> u128 {
        self.addr | self.host_mask()
    }

    fn contains(&self, a: u128) -> bool {
        a & !self.host_mask() == self.addr
    }

    fn text(&self) -> String {
        if self.v6 {
            format!("'{}/{}'", Ipv6Addr::from(self.addr), self.len)
        } else {
            format!("{}/{}", Ipv4Addr::from(self.addr as u32), self.len)
        }
    }
}

/// One FlowClassifier, as the oracle reads it.
#[derive(Clone, Debug)]
struct Rule {
    name: &'static str,
    port: usize,
    chain: usize,
    v6: bool,
    proto: Option<u8>,
    src: Option<Net>,
    dst: Option<Net>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    /// `unparsable: pass` (when [`UNPARSABLE_FIELD`] is on).
    pass: bool,
}

impl Rule {
    fn portless(&self) -> bool {
        self.sport.is_none() && self.dport.is_none()
    }

    fn matches(&self, p: &Pkt) -> bool {
        let in_range = |r: Option<(u16, u16)>, v: u16| r.is_none_or(|(lo, hi)| lo <= v && v <= hi);
        self.v6 == p.v6
            && self.proto.is_none_or(|x| x == p.proto)
            && self.src.is_none_or(|n| n.contains(p.src))
            && self.dst.is_none_or(|n| n.contains(p.dst))
            && in_range(self.sport, p.sport)
            && in_range(self.dport, p.dport)
    }

    fn yaml(&self) -> String {
        let mut spec = format!(
            "{{logicalSourcePort: {}, ethertype: {}",
            PORTS[self.port],
            if self.v6 { "IPv6" } else { "IPv4" }
        );
        if let Some(p) = self.proto {
            write!(spec, ", protocol: {p}").unwrap();
        }
        for (field, net) in [
            ("sourceIpPrefix", self.src),
            ("destinationIpPrefix", self.dst),
        ] {
            if let Some(n) = net {
                write!(spec, ", {field}: {}", n.text()).unwrap();
            }
        }
        for (field, range) in [
            ("sourcePortRange", self.sport),
            ("destinationPortRange", self.dport),
        ] {
            if let Some((lo, hi)) = range {
                write!(spec, ", {field}: '{lo}:{hi}'").unwrap();
            }
        }
        if UNPARSABLE_FIELD && self.pass {
            spec += ", unparsable: pass";
        }
        spec + "}"
    }
}

fn rules() -> Vec<Rule> {
    let chain = |name: &str| CHAINS.iter().position(|c| c.0 == name).unwrap();
    let port = |name: &str| PORTS.iter().position(|p| *p == name).unwrap();
    // At most 16 match shapes per port (prefix lengths times port-range blocks): 80:443 makes
    // 5 of them, every other range one.
    #[allow(clippy::type_complexity)]
    #[rustfmt::skip]
    let table: [(&str, &str, &str, bool, Option<u8>, &str, &str, &str, &str); 14] = [
        // name, port, chain, IPv6, protocol, source and destination prefix, port ranges
        ("web4", "lp1", "CW", false, Some(TCP), "", "198.18.1.0/24", "", "80:443"),
        ("web6", "lp1", "CW", true, Some(TCP), "", "fd00:5fc::100/120", "32768:65535", "443:443"),
        ("dns4", "lp1", "CU", false, Some(UDP), "198.18.0.0/16", "198.18.2.0/24", "5000:5007", "53:53"),
        ("vx6", "lp1", "CU", true, Some(UDP), "", "fd00:5fc::200/121", "", "4789:4790"),
        ("pfx4", "lp1", "CP", false, None, "203.0.113.0/24", "198.18.3.0/24", "", ""),
        ("icmp4", "lp1", "CP", false, Some(ICMP), "", "", "", ""),
        ("gre4", "lp1", "CP", false, Some(47), "", "", "", ""),
        ("icmp6", "lp1", "C6", true, Some(ICMPV6), "", "", "", ""),
        ("pfx6", "lp1", "C6", true, None, "fd00:beef::/32", "fd00:5fc::300/120", "", ""),
        ("xweb4", "lp2", "CX", false, Some(TCP), "", "198.18.1.0/24", "", "80:443"),
        ("xudp6", "lp2", "CX", true, Some(UDP), "", "", "", "4789:4789"),
        ("xpfx4", "lp2", "CX", false, None, "", "198.18.3.0/24", "", ""),
        ("q4", "lp3", "CQ", false, None, "", "198.18.1.0/24", "", ""),
        ("q6", "lp3", "CQ", true, Some(UDP), "", "", "", ""),
    ];
    let net = |s: &str| (!s.is_empty()).then(|| Net::parse(s));
    let range = |s: &str| {
        (!s.is_empty()).then(|| {
            let (lo, hi) = s.split_once(':').unwrap();
            (lo.parse().unwrap(), hi.parse().unwrap())
        })
    };
    table
        .iter()
        .map(|&(name, p, c, v6, proto, src, dst, sport, dport)| Rule {
            name,
            port: port(p),
            chain: chain(c),
            v6,
            proto,
            src: net(src),
            dst: net(dst),
            sport: range(sport),
            dport: range(dport),
            pass: p == "lp2",
        })
        .collect()
}

fn chain_yaml(rules: &[Rule]) -> String {
    let mut yaml = String::new();
    for (_, sfs) in GROUPS {
        for sf in sfs {
            yaml += &doc(
                "PortPair",
                &format!("P{sf}"),
                &format!("{{ingress: sf{sf}-in, egress: sf{sf}-out}}"),
            );
        }
    }
    for (name, sfs) in GROUPS {
        let pairs: Vec<String> = sfs.iter().map(|sf| format!("P{sf}")).collect();
        yaml += &doc(
            "PortPairGroup",
            name,
            &format!("{{portPairs: [{}]}}", pairs.join(", ")),
        );
    }
    for rule in rules {
        yaml += &doc("FlowClassifier", rule.name, &rule.yaml());
    }
    for (i, (name, groups)) in CHAINS.iter().enumerate() {
        let fcs: Vec<&str> = rules
            .iter()
            .filter(|r| r.chain == i)
            .map(|r| r.name)
            .collect();
        yaml += &doc(
            "PortChain",
            name,
            &format!(
                "{{portPairGroups: [{}], flowClassifiers: [{}]}}",
                groups.join(", "),
                fcs.join(", ")
            ),
        );
    }
    yaml
}

/// A logical port as the design makes the datapath see it.
struct Port {
    name: &'static str,
    ifindex: u32,
    /// Has a port entry (some classifier enters here).
    managed: bool,
    /// `PORT_PASS_UNPARSABLE`: every classifier here says `unparsable: pass`.
    pass_unparsable: bool,
    /// `PORT_NEEDS_PORTS`: some classifier here matches L4 ports.
    needs_ports: bool,
    rules: Vec<Rule>,
}

// ---- the oracle ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    No,
    /// Offset 0, more fragments: ports read, datagram recorded.
    First {
        id: u32,
        data: u32,
    },
    /// Offset > 0 (bytes): ports from the datagram's record.
    Later {
        id: u32,
        offset: u32,
        more: bool,
        data: u32,
    },
}

/// Headers as the design's parser reads them.
#[derive(Clone, Debug)]
struct Pkt {
    vlan: u16,
    v6: bool,
    proto: u8,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    frag: Frag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Unparsable {
    Malformed,
    Vlan,
    Ipv6Ext,
    FragmentUnknown,
}

impl Unparsable {
    /// The other reason the datapath may count for a frame that has two (`detail`).
    fn alternative(detail: &str) -> Option<Unparsable> {
        (detail == CUT_AND_TOO_MANY).then_some(Unparsable::Ipv6Ext)
    }

    fn counter(self) -> &'static str {
        match self {
            Unparsable::Malformed => "malformed",
            Unparsable::Vlan => "unparsable_vlan",
            Unparsable::Ipv6Ext => "unparsable_ipv6_ext",
            Unparsable::FragmentUnknown => "fragment_unknown",
        }
    }
}

enum Parsed {
    NotIp,
    /// Why, and a short detail for the reports.
    Bad(Unparsable, &'static str),
    Ip(Pkt),
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn be32(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

/// The design's parser: Ethernet, at most 2 VLAN tags, IPv4 or IPv6 (at most 8 extension
/// headers), the L4 ports of TCP and UDP.
fn parse(f: &[u8]) -> Parsed {
    use Unparsable::*;
    if f.len() < 14 {
        return Parsed::NotIp;
    }
    let mut ethertype = be16(f, 12);
    let mut off = 14;
    let mut vlan = None;
    for _ in 0..2 {
        if !TPIDS.contains(&ethertype) {
            break;
        }
        if off + 4 > f.len() {
            return Parsed::Bad(Malformed, "VLAN tag cut");
        }
        let vid = be16(f, off) & 0x0fff;
        if vlan.is_none() && !(PRIORITY_TAG_IS_NO_VLAN && vid == 0) {
            vlan = Some(vid);
        }
        ethertype = be16(f, off + 2);
        off += 4;
    }
    if TPIDS.contains(&ethertype) {
        return Parsed::Bad(Vlan, "a third VLAN tag");
    }
    let vlan = vlan.unwrap_or(0);
    match ethertype {
        ETH_IP => ipv4(f, off, vlan),
        ETH_IPV6 => ipv6(f, off, vlan),
        _ => Parsed::NotIp,
    }
}

fn ipv4(f: &[u8], off: usize, vlan: u16) -> Parsed {
    use Unparsable::*;
    if off + 20 > f.len() {
        return Parsed::Bad(Malformed, "IPv4 header cut");
    }
    let ihl = (f[off] & 0x0f) as usize * 4;
    let total = be16(f, off + 2) as usize;
    if f[off] >> 4 != 4 {
        return Parsed::Bad(Malformed, "IPv4 version not 4");
    }
    if ihl < 20 {
        return Parsed::Bad(Malformed, "IPv4 IHL < 5");
    }
    if total < ihl {
        return Parsed::Bad(Malformed, "IPv4 total length < IHL");
    }
    if off + total > f.len() {
        return Parsed::Bad(Malformed, "IPv4 total length beyond the frame");
    }
    let field = be16(f, off + 6);
    let (offset, more) = ((field & 0x1fff) as u32 * 8, field & 0x2000 != 0);
    let id = be16(f, off + 4) as u32;
    let data = (total - ihl) as u32;
    let frag = if offset != 0 {
        Frag::Later {
            id,
            offset,
            more,
            data,
        }
    } else if more {
        Frag::First { id, data }
    } else {
        Frag::No
    };
    let pkt = Pkt {
        vlan,
        v6: false,
        proto: f[off + 9],
        src: be32(f, off + 12) as u128,
        dst: be32(f, off + 16) as u128,
        sport: 0,
        dport: 0,
        frag,
    };
    l4(f, pkt, off + ihl, off + total)
}

fn ipv6(f: &[u8], off: usize, vlan: u16) -> Parsed {
    use Unparsable::*;
    if off + 40 > f.len() {
        return Parsed::Bad(Malformed, "IPv6 header cut");
    }
    if f[off] >> 4 != 6 {
        return Parsed::Bad(Malformed, "IPv6 version not 6");
    }
    let end = off + 40 + be16(f, off + 4) as usize;
    if end > f.len() {
        return Parsed::Bad(Malformed, "IPv6 payload length beyond the frame");
    }
    let addr = |at: usize| u128::from_be_bytes(f[at..at + 16].try_into().unwrap());
    let mut pkt = Pkt {
        vlan,
        v6: true,
        proto: 0,
        src: addr(off + 8),
        dst: addr(off + 24),
        sport: 0,
        dport: 0,
        frag: Frag::No,
    };
    let mut next = f[off + 6];
    let mut at = off + 40;
    let mut walked = 0;
    // A header that does not fit in the IP packet. If it is the 8th and a 9th follows, it is
    // also one too many: either reason may be counted (see `Unparsable::alternative`).
    let cut = |walked: usize, at: usize, what| {
        if walked == 8 && f.get(at).is_some_and(|n| is_extension(*n)) {
            Parsed::Bad(Malformed, CUT_AND_TOO_MANY)
        } else {
            Parsed::Bad(Malformed, what)
        }
    };
    while is_extension(next) {
        if walked == 8 {
            return Parsed::Bad(Ipv6Ext, "more than 8 extension headers");
        }
        walked += 1;
        if next == FRAGMENT {
            if at + 8 > end {
                return cut(walked, at, "IPv6 fragment header cut");
            }
            let field = be16(f, at + 2);
            let (offset, more) = ((field >> 3) as u32 * 8, field & 1 != 0);
            let id = be32(f, at + 4);
            next = f[at];
            at += 8;
            let data = (end - at) as u32;
            if offset != 0 {
                // What follows is the middle of the datagram, not headers.
                pkt.frag = Frag::Later {
                    id,
                    offset,
                    more,
                    data,
                };
                break;
            }
            // Offset 0 without M is an atomic fragment: a whole datagram, no news (not even
            // after another fragment header, which RFC 8200 does not allow anyway).
            if more {
                pkt.frag = Frag::First { id, data };
            }
            continue;
        }
        if at + 2 > end {
            return cut(walked, at, "IPv6 extension header cut");
        }
        let len = if next == AH {
            (f[at + 1] as usize + 2) * 4
        } else {
            (f[at + 1] as usize + 1) * 8
        };
        if at + len > end {
            return cut(walked, at, "IPv6 extension header cut");
        }
        next = f[at];
        at += len;
    }
    pkt.proto = next;
    l4(f, pkt, at, end)
}

fn is_extension(next: u8) -> bool {
    matches!(next, HOPOPTS | ROUTING | FRAGMENT | AH | DSTOPTS)
}

const CUT_AND_TOO_MANY: &str = "the 8th IPv6 extension header cut, and a 9th follows";

/// Ports of TCP and UDP (of a whole datagram or a first fragment), whose header must be
/// within the IP packet; other protocols have none.
fn l4(f: &[u8], mut pkt: Pkt, at: usize, end: usize) -> Parsed {
    if matches!(pkt.frag, Frag::Later { .. }) {
        return Parsed::Ip(pkt);
    }
    let need = match pkt.proto {
        TCP => 20,
        UDP => 8,
        _ => return Parsed::Ip(pkt),
    };
    if at + need > end {
        return Parsed::Bad(
            Unparsable::Malformed,
            if pkt.proto == TCP {
                "TCP header cut"
            } else {
                "UDP header cut"
            },
        );
    }
    pkt.sport = be16(f, at);
    pkt.dport = be16(f, at + 2);
    Parsed::Ip(pkt)
}

/// The kernel's test runner refuses these before any program runs (EINVAL).
fn refused_by_the_test_runner(f: &[u8], xdp: bool) -> bool {
    f.len() < 14
        || (!xdp && be16(f, 12) == ETH_IP && f.len() < 14 + 20)
        || (!xdp && be16(f, 12) == ETH_IPV6 && f.len() < 14 + 40)
}

/// A datagram whose first fragment was seen (on one interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct DatagramKey {
    ifindex: u32,
    v6: bool,
    proto: u8,
    vlan: u16,
    id: u32,
    src: u128,
    dst: u128,
}

#[derive(Clone, Copy, Debug)]
struct Datagram {
    sport: u16,
    dport: u16,
    /// Payload bytes of the datagram, 0 until its last fragment was seen.
    total: u32,
    seen: u32,
}

fn datagram_key(ifindex: u32, p: &Pkt, id: u32) -> DatagramKey {
    DatagramKey {
        ifindex,
        v6: p.v6,
        proto: p.proto,
        vlan: p.vlan,
        id,
        src: p.src,
        dst: p.dst,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Pass,
    Drop,
    /// Into a first-hop member of the chain of this rule (by index into `rules()`).
    Steer(usize),
}

/// What the oracle says of one frame at one port.
struct View {
    expect: Expect,
    /// For the reports: what the frame is, in the design's terms.
    why: String,
    parsed: Option<Pkt>,
    /// Counters this frame moves by one.
    counts: Vec<&'static str>,
    /// Counters it may move by one, or not.
    maybe: Vec<&'static str>,
}

#[derive(Default)]
struct Oracle {
    datagrams: HashMap<DatagramKey, Datagram>,
}

impl Oracle {
    /// The design's decision for `frame` arriving at `port`; updates the fragment table as the
    /// datapath does.
    fn decide(&mut self, port: &Port, frame: &[u8], rules: &[Rule]) -> View {
        let parsed = parse(frame);
        if !port.managed {
            // No port entry: passed untouched, whatever it is.
            let why = match &parsed {
                Parsed::NotIp => "unmanaged, not IP".to_string(),
                Parsed::Bad(r, d) => format!("unmanaged, {} ({d})", r.counter()),
                Parsed::Ip(_) => "unmanaged, IP".to_string(),
            };
            // The design does not say whether this is counted: either is fine.
            let maybe = match &parsed {
                Parsed::NotIp => vec!["not_ip"],
                Parsed::Bad(r, d) => {
                    let mut maybe = vec![r.counter(), "unparsable_passed"];
                    maybe.extend(Unparsable::alternative(d).map(Unparsable::counter));
                    maybe
                }
                Parsed::Ip(p) if matches!(p.frag, Frag::First { .. }) => vec!["fragments_tracked"],
                Parsed::Ip(_) => vec![],
            };
            let parsed = match parsed {
                Parsed::Ip(p) => Some(p),
                _ => None,
            };
            return View {
                expect: Expect::Pass,
                why,
                parsed,
                counts: vec![],
                maybe,
            };
        }
        let unparsable = |r: Unparsable, detail: &str, p: Option<Pkt>| {
            let (mut counts, maybe) = match Unparsable::alternative(detail) {
                Some(other) => (vec![], vec![r.counter(), other.counter()]),
                None => (vec![r.counter()], vec![]),
            };
            let expect = if port.pass_unparsable {
                counts.push("unparsable_passed");
                Expect::Pass
            } else {
                Expect::Drop
            };
            View {
                expect,
                why: format!("{} ({detail})", r.counter()),
                parsed: p,
                counts,
                maybe,
            }
        };
        let mut pkt = match parsed {
            Parsed::NotIp => {
                return View {
                    expect: Expect::Pass,
                    why: "not_ip".into(),
                    parsed: None,
                    counts: vec!["not_ip"],
                    maybe: vec![],
                }
            }
            Parsed::Bad(r, detail) => return unparsable(r, detail, None),
            Parsed::Ip(p) => p,
        };
        let mut counts = Vec::new();
        let mut why = String::new();
        match pkt.frag {
            Frag::No => {}
            Frag::First { id, data } => {
                self.datagrams.insert(
                    datagram_key(port.ifindex, &pkt, id),
                    Datagram {
                        sport: pkt.sport,
                        dport: pkt.dport,
                        total: 0,
                        seen: data,
                    },
                );
                counts.push("fragments_tracked");
                why += "first fragment, ";
            }
            Frag::Later {
                id,
                offset,
                more,
                data,
            } => {
                let key = datagram_key(port.ifindex, &pkt, id);
                match self.datagrams.get_mut(&key) {
                    Some(d) => {
                        pkt.sport = d.sport;
                        pkt.dport = d.dport;
                        d.seen += data;
                        if !more {
                            d.total = offset + data;
                        }
                        if d.total != 0 && d.seen >= d.total {
                            self.datagrams.remove(&key);
                        }
                        why += "later fragment of a known datagram, ";
                    }
                    None if port.needs_ports => {
                        return unparsable(
                            Unparsable::FragmentUnknown,
                            "later fragment, datagram unknown",
                            Some(pkt),
                        )
                    }
                    None => why += "later fragment of an unknown datagram (ports 0), ",
                }
            }
        }
        let hit = port.rules.iter().find(|r| r.matches(&pkt));
        let expect = match hit {
            Some(rule) => {
                counts.push("steered");
                write!(why, "matches {}", rule.name).unwrap();
                Expect::Steer(rules.iter().position(|r| r.name == rule.name).unwrap())
            }
            None => {
                counts.push("no_match");
                why += "no_match";
                Expect::Pass
            }
        };
        View {
            expect,
            why,
            parsed: Some(pkt),
            counts,
            maybe: vec![],
        }
    }
}

// ---- the generator ----

/// xoshiro256** seeded by splitmix64: small, fast, and the same sequence everywhere.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times out of 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// An index by weight.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut r = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        unreachable!()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One generated frame.
#[derive(Clone)]
struct Built {
    bytes: Vec<u8>,
    port: usize,
    /// Offset of the IP header (or of what follows the ethertype).
    l3: usize,
    /// 4, 6, or 0 for neither.
    family: u8,
    /// How it was made, for the reports and the mix.
    kind: &'static str,
    xdp: bool,
}

/// Fields of one packet.
#[derive(Clone, Copy)]
struct Fields {
    v6: bool,
    proto: u8,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
}

struct Gen {
    rng: Rng,
    rules: Vec<Rule>,
    next_id: u32,
    nets4: Vec<Net>,
    nets6: Vec<Net>,
    ranges: Vec<(u16, u16)>,
}

const SRC_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 1];
const DST_MACS: [[u8; 6]; 3] = [
    [0x02, 0xdd, 0, 0, 0, 1],
    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    [0x01, 0x00, 0x5e, 0, 0, 1],
];

impl Gen {
    fn new(seed: u64, rules: &[Rule]) -> Self {
        let nets = |v6: bool| {
            let mut nets: Vec<Net> = rules
                .iter()
                .filter(|r| r.v6 == v6)
                .flat_map(|r| [r.src, r.dst])
                .flatten()
                .collect();
            nets.push(Net::parse(if v6 {
                "fd00:5fc::/64"
            } else {
                "198.18.0.0/15"
            }));
            nets
        };
        let ranges = rules
            .iter()
            .flat_map(|r| [r.sport, r.dport])
            .flatten()
            .collect();
        Gen {
            rng: Rng::new(seed),
            rules: rules.to_vec(),
            next_id: 1,
            nets4: nets(false),
            nets6: nets(true),
            ranges,
        }
    }

    fn port(&mut self) -> usize {
        self.rng.weighted(&[40, 25, 20, 15])
    }

    /// An address inside `net` (its first, its last, or any), or just outside it.
    fn address_near(&mut self, net: Net, inside: bool) -> u128 {
        let max = if net.v6 { u128::MAX } else { u32::MAX as u128 };
        if inside {
            match self.rng.below(3) {
                0 => net.addr,
                1 => net.last(),
                _ => net.addr | (self.random_address(net.v6) & net.host_mask()),
            }
        } else if self.rng.chance(50) {
            net.addr.wrapping_sub(1) & max
        } else {
            net.last().wrapping_add(1) & max
        }
    }

    fn random_address(&mut self, v6: bool) -> u128 {
        if v6 {
            ((self.rng.next() as u128) << 64) | self.rng.next() as u128
        } else {
            self.rng.next() as u32 as u128
        }
    }

    fn address(&mut self, v6: bool, aim: Option<Net>) -> u128 {
        match aim {
            Some(net) => {
                let inside = self.rng.chance(80);
                self.address_near(net, inside)
            }
            None if self.rng.chance(80) => {
                let nets = if v6 { &self.nets6 } else { &self.nets4 };
                let net = nets[self.rng.below(nets.len() as u64) as usize];
                let inside = self.rng.chance(70);
                self.address_near(net, inside)
            }
            None => self.random_address(v6),
        }
    }

    fn l4_port(&mut self, aim: Option<(u16, u16)>) -> u16 {
        let (lo, hi) = match aim {
            Some(r) => r,
            None if self.rng.chance(70) => self.rng.pick(&self.ranges.clone()),
            None => {
                let any = self.rng.next() as u16;
                return self.rng.pick(&[0, 1, 65535, any]);
            }
        };
        let inside = self.rng.chance(75);
        if inside {
            match self.rng.below(5) {
                0 => lo,
                1 => hi,
                2 => lo.saturating_add(1).min(hi),
                3 => hi.saturating_sub(1).max(lo),
                _ => lo + (self.rng.next() as u16) % (hi - lo + 1).max(1),
            }
        } else {
            let any = self.rng.next() as u16;
            self.rng
                .pick(&[lo.wrapping_sub(1), hi.wrapping_add(1), 0, any])
        }
    }

    /// Fields aimed at a classifier of `port` (or of any port), or drawn from the edges of
    /// them all.
    fn fields(&mut self, port: usize, proto_weights: Option<&[(u8, u64)]>) -> Fields {
        let aim = if self.rng.chance(65) {
            let of_port: Vec<Rule> = self
                .rules
                .iter()
                .filter(|r| r.port == port || self.rng.chance(10))
                .cloned()
                .collect();
            let pool = if of_port.is_empty() {
                self.rules.clone()
            } else {
                of_port
            };
            Some(pool[self.rng.below(pool.len() as u64) as usize].clone())
        } else {
            None
        };
        let v6 = match &aim {
            Some(r) => r.v6,
            None => self.rng.chance(50),
        };
        let default_weights: &[(u8, u64)] = &[
            (TCP, 35),
            (UDP, 30),
            (ICMP, 8),
            (ICMPV6, 8),
            (47, 6),
            (132, 4),
            (0, 2),
            (255, 2),
        ];
        let weights = proto_weights.unwrap_or(default_weights);
        let mut proto = weights[self
            .rng
            .weighted(&weights.iter().map(|w| w.1).collect::<Vec<_>>())]
        .0;
        if let Some(p) = aim.as_ref().and_then(|r| r.proto) {
            if self.rng.chance(90) {
                proto = p;
            }
        }
        let (src_aim, dst_aim, sport_aim, dport_aim) = match &aim {
            Some(r) => (r.src, r.dst, r.sport, r.dport),
            None => (None, None, None, None),
        };
        Fields {
            v6,
            proto,
            src: self.address(v6, src_aim),
            dst: self.address(v6, dst_aim),
            sport: self.l4_port(sport_aim),
            dport: self.l4_port(dport_aim),
        }
    }

    /// The L4 part of a packet: a TCP, UDP or ICMP header and some payload, or bytes.
    fn l4_bytes(&mut self, f: &Fields, min_payload: usize) -> Vec<u8> {
        let payload_len = min_payload + self.rng.below(40) as usize;
        let payload = self.rng.bytes(payload_len);
        match f.proto {
            TCP => {
                let mut h = frames::l4(f.sport, f.dport, 20);
                h.extend_from_slice(&payload);
                h
            }
            UDP => frames::udp(f.sport, f.dport, &payload),
            ICMP | ICMPV6 => {
                let mut h = vec![self.rng.pick(&[0u8, 8, 128, 129]), 0, 0, 0, 0, 1, 0, 1];
                h.extend_from_slice(&payload);
                h
            }
            _ => payload,
        }
    }

    fn vlan_tags(&mut self) -> Vec<(u16, u16)> {
        let n = self.rng.weighted(&[55, 20, 15, 10]);
        (0..n)
            .map(|_| {
                let any = self.rng.next() as u16 & 0x0fff;
                let vid = self.rng.pick(&[0, 1, 100, 4095, any]);
                let pcp = (self.rng.below(8) as u16) << 13;
                (self.rng.pick(&TPIDS), pcp | vid)
            })
            .collect()
    }

    fn ethernet(&mut self, tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> (Vec<u8>, usize) {
        let mut f = if self.rng.chance(90) {
            DST_MACS[0].to_vec()
        } else {
            self.rng.pick(&DST_MACS).to_vec()
        };
        f.extend_from_slice(&SRC_MAC);
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        let at = f.len();
        f.extend_from_slice(l3);
        (f, at)
    }

    fn ipv4_options(&mut self) -> Vec<u8> {
        if self.rng.chance(70) {
            return Vec::new();
        }
        let words = 1 + self.rng.below(10) as usize;
        let mut o = vec![1u8; words * 4]; // NOPs
        if self.rng.chance(50) {
            let ts = (4 * words).min(40) as u8;
            o[0] = 0x44; // timestamp
            o[1] = ts;
            o[2] = 5;
        } else if self.rng.chance(30) {
            o = self.rng.bytes(words * 4);
        }
        o
    }

    fn v4_packet(&mut self, f: &Fields, frag: u16, id: u16, l4: &[u8]) -> Vec<u8> {
        let options = self.ipv4_options();
        let mut p = frames::ipv4(
            f.proto,
            (f.src as u32).to_be_bytes(),
            (f.dst as u32).to_be_bytes(),
            &options,
            frag,
            l4,
        );
        p[4..6].copy_from_slice(&id.to_be_bytes());
        if self.rng.chance(30) {
            frames::ipv4_checksum(&mut p);
        }
        p
    }

    /// An IPv6 extension header of type `t` (its next-header byte is filled in later).
    fn ext(&mut self, t: u8) -> Vec<u8> {
        match t {
            AH => {
                let len = self.rng.pick(&[1u8, 2, 4]);
                let mut h = vec![0, len];
                h.extend(self.rng.bytes((len as usize + 2) * 4 - 2));
                h
            }
            FRAGMENT => {
                let offset = self.rng.pick(&[0u16, 0, 1, 2, 100, 8191]);
                let more = self.rng.chance(50) as u16;
                let mut h = vec![0, 0];
                h.extend_from_slice(&((offset << 3) | more).to_be_bytes());
                h.extend_from_slice(&self.fresh_id().to_be_bytes());
                h
            }
            _ => {
                let len = self.rng.pick(&[0u8, 0, 1, 2]);
                let mut h = vec![0, len, 1, 4 + 8 * len, 0, 0, 0, 0];
                h.resize((len as usize + 1) * 8, 0);
                if t == ROUTING {
                    h[2] = self.rng.below(5) as u8;
                    h[3] = 0;
                }
                h
            }
        }
    }

    fn ext_chain(&mut self, with_fragments: bool) -> Vec<(u8, Vec<u8>)> {
        let n = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
            [self.rng.weighted(&[40, 12, 10, 8, 5, 4, 4, 4, 5, 4, 4])];
        let types: &[u8] = if with_fragments {
            &[HOPOPTS, ROUTING, DSTOPTS, AH, FRAGMENT]
        } else {
            &[HOPOPTS, ROUTING, DSTOPTS, AH]
        };
        (0..n)
            .map(|_| {
                let t = self.rng.pick(types);
                (t, self.ext(t))
            })
            .collect()
    }

    fn fresh_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// One frame: IPv4, IPv6 or something else, tagged or not; a few whole-datagram
    /// fragments on their own among them.
    fn single(&mut self) -> Built {
        let port = self.port();
        let tags = self.vlan_tags();
        let (bytes, l3, family, kind) = match self.rng.weighted(&[45, 45, 10]) {
            0 => {
                let f = self.fields(port, None);
                let f = Fields { v6: false, ..f };
                let frag = match self.rng.weighted(&[80, 8, 4, 4, 4]) {
                    0 => 0,
                    1 => 0x4000, // DF
                    2 => 0x2000, // a first fragment
                    3 => 0x2000 | (1 + self.rng.below(100) as u16),
                    _ => 1 + self.rng.below(0x1fff) as u16,
                };
                let l4 = self.short_or_whole_l4(&f);
                let id = self.fresh_id() as u16;
                let p = self.v4_packet(&f, frag, id, &l4);
                let (b, at) = self.ethernet(&tags, ETH_IP, &p);
                (b, at, 4, "IPv4")
            }
            1 => {
                let f = self.fields(port, None);
                let f = Fields { v6: true, ..f };
                let with_fragments = self.rng.chance(25);
                let exts = self.ext_chain(with_fragments);
                let l4 = self.short_or_whole_l4(&f);
                let p = frames::ipv6(
                    f.src.to_be_bytes(),
                    f.dst.to_be_bytes(),
                    &exts,
                    f.proto,
                    &l4,
                );
                let (b, at) = self.ethernet(&tags, ETH_IPV6, &p);
                (b, at, 6, "IPv6")
            }
            _ => {
                let ethertype = self
                    .rng
                    .pick(&[0x0806, 0x88cc, 0x8847, 0x0842, 0, 0xffff, 0x86de]);
                let len = self.rng.below(64) as usize;
                let payload = self.rng.bytes(len);
                let (b, at) = self.ethernet(&tags, ethertype, &payload);
                (b, at, 0, "not IP")
            }
        };
        Built {
            bytes,
            port,
            l3,
            family,
            kind,
            xdp: false,
        }
    }

    /// Mostly a whole L4 header; now and then one cut short.
    fn short_or_whole_l4(&mut self, f: &Fields) -> Vec<u8> {
        let mut l4 = self.l4_bytes(f, 0);
        if self.rng.chance(4) {
            l4.truncate(self.rng.below(21) as usize);
        }
        l4
    }

    /// A datagram cut into 2-5 fragments at multiples of 8 bytes, sent whole, reordered, with
    /// a piece missing, or with a later piece twice.
    fn datagram(&mut self) -> Vec<Built> {
        let port = self.port();
        let mut tags = self.vlan_tags();
        tags.truncate(2);
        let v6 = self.rng.chance(50);
        let weights: &[(u8, u64)] = if v6 {
            &[(TCP, 40), (UDP, 35), (ICMPV6, 15), (47, 10)]
        } else {
            &[(TCP, 40), (UDP, 35), (ICMP, 15), (47, 10)]
        };
        let mut f = self.fields(port, Some(weights));
        if f.v6 != v6 {
            f = self.fields(port, Some(weights));
        }
        let data = self.l4_bytes(&f, 16);
        let pieces = 2 + self.rng.below(4) as usize;
        let mut cuts: Vec<usize> = (0..pieces - 1)
            .map(|_| 8 * (1 + self.rng.below(((data.len() - 1) / 8) as u64) as usize))
            .collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort();
        cuts.dedup();
        let id = self.fresh_id();
        let unfragmentable = if f.v6 {
            let n = self.rng.weighted(&[60, 20, 10, 10]);
            (0..n)
                .map(|_| {
                    let t = self.rng.pick(&[HOPOPTS, ROUTING, DSTOPTS, AH]);
                    (t, self.ext(t))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut frames = Vec::new();
        for w in cuts.windows(2) {
            let (start, end) = (w[0], w[1]);
            let more = end < data.len();
            let piece = &data[start..end];
            let (bytes, l3) = if f.v6 {
                let mut exts = unfragmentable.clone();
                let mut h = vec![0, 0];
                h.extend_from_slice(&(((start / 8) as u16) << 3 | more as u16).to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                exts.push((FRAGMENT, h));
                let p = frames::ipv6(
                    f.src.to_be_bytes(),
                    f.dst.to_be_bytes(),
                    &exts,
                    f.proto,
                    piece,
                );
                self.ethernet(&tags, ETH_IPV6, &p)
            } else {
                let field = (start / 8) as u16 | if more { 0x2000 } else { 0 };
                let p = self.v4_packet(&f, field, id as u16, piece);
                self.ethernet(&tags, ETH_IP, &p)
            };
            frames.push(Built {
                bytes,
                port,
                l3,
                family: if f.v6 { 6 } else { 4 },
                kind: "fragment",
                xdp: false,
            });
        }
        match self.rng.weighted(&[55, 12, 13, 7, 7, 6]) {
            0 => {}
            1 => frames.reverse(),
            2 => {
                for i in (1..frames.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    frames.swap(i, j);
                }
            }
            3 => {
                frames.remove(0);
            }
            4 => {
                let i = self.rng.below(frames.len() as u64) as usize;
                frames.remove(i);
            }
            _ => {
                let i = 1 + self.rng.below(frames.len() as u64 - 1) as usize;
                let again = frames[i].clone();
                frames.push(again);
            }
        }
        // Now and then one piece in another VLAN (another datagram to the datapath).
        if self.rng.chance(5) && !frames.is_empty() {
            let i = self.rng.below(frames.len() as u64) as usize;
            let b = &mut frames[i];
            if b.l3 >= 18 {
                b.bytes[15] ^= 1;
            }
        }
        frames
    }

    /// One mutation of `b`, in place.
    fn mutate(&mut self, b: &mut Built) -> &'static str {
        let l3 = b.l3;
        let len = b.bytes.len();
        let has = |n: usize| l3 + n <= len;
        match self.rng.below(10) {
            1 if b.family == 4 && has(4) => {
                let v = match self.rng.below(3) {
                    0 => self.rng.next() as u16,
                    1 => be16(&b.bytes, l3 + 2).wrapping_add(1 + self.rng.below(8) as u16),
                    _ => be16(&b.bytes, l3 + 2).wrapping_sub(1 + self.rng.below(8) as u16),
                };
                b.bytes[l3 + 2..l3 + 4].copy_from_slice(&v.to_be_bytes());
                "IPv4 total length"
            }
            2 if b.family == 4 && has(1) => {
                b.bytes[l3] = 0x40 | self.rng.below(16) as u8;
                "IPv4 IHL"
            }
            3 if b.family == 6 && has(6) => {
                let v = match self.rng.below(3) {
                    0 => self.rng.next() as u16,
                    1 => be16(&b.bytes, l3 + 4).wrapping_add(1 + self.rng.below(8) as u16),
                    _ => be16(&b.bytes, l3 + 4).wrapping_sub(1 + self.rng.below(8) as u16),
                };
                b.bytes[l3 + 4..l3 + 6].copy_from_slice(&v.to_be_bytes());
                "IPv6 payload length"
            }
            4 if has(1) => {
                b.bytes[l3] = (b.bytes[l3] & 0x0f) | ((self.rng.below(16) as u8) << 4);
                "IP version"
            }
            5 => {
                let v: u16 = self.rng.pick(&[ETH_IP, ETH_IPV6, 0x8100, 0x88a8, 0x0806]);
                b.bytes[l3 - 2..l3].copy_from_slice(&v.to_be_bytes());
                "ethertype"
            }
            6 => {
                let n = 1 + self.rng.below(32) as usize;
                let tail = self.rng.bytes(n);
                b.bytes.extend_from_slice(&tail);
                "trailing bytes"
            }
            7 if b.family == 6 && has(40) => {
                // A next-header byte: the IPv6 header's or the first extension header's.
                let t = self
                    .rng
                    .pick(&[HOPOPTS, ROUTING, FRAGMENT, AH, DSTOPTS, TCP, UDP, 59]);
                let at = if self.rng.chance(50) || !has(41) {
                    l3 + 6
                } else {
                    l3 + 40
                };
                b.bytes[at] = t;
                "IPv6 next header"
            }
            8 if b.family == 4 && has(8) => {
                let v = self.rng.next() as u16;
                b.bytes[l3 + 6..l3 + 8].copy_from_slice(&v.to_be_bytes());
                "IPv4 fragment field"
            }
            _ => {
                for _ in 0..1 + self.rng.below(3) {
                    let span = len.min(l3 + 64) as u64;
                    let i = self.rng.below(span) as usize;
                    b.bytes[i] ^= 1 + self.rng.below(255) as u8;
                }
                "byte flips"
            }
        }
    }

    /// About `n` frames (a datagram's fragments or a truncation series may go past it),
    /// locally interleaved.
    fn chunk(&mut self, n: usize) -> Vec<Built> {
        let mut out: Vec<Built> = Vec::with_capacity(n + 256);
        while out.len() < n {
            if self.rng.chance(12) {
                let mut frames = self.datagram();
                for f in &mut frames {
                    if self.rng.chance(3) {
                        f.kind = self.mutate(f);
                    }
                }
                out.extend(frames);
                continue;
            }
            let mut f = self.single();
            if self.rng.chance(25) {
                f.kind = self.mutate(&mut f);
            }
            if self.rng.below(400) == 0 {
                for cut in 0..f.bytes.len() {
                    out.push(Built {
                        bytes: f.bytes[..cut].to_vec(),
                        kind: "truncated",
                        ..f.clone()
                    });
                }
            }
            out.push(f);
        }
        for i in 0..out.len() {
            let j = i + self.rng.below(8.min(out.len() - i) as u64) as usize;
            out.swap(i, j);
        }
        for f in &mut out {
            f.xdp = self.rng.chance(25);
        }
        out
    }
}

// ---- checking ----

#[derive(Default)]
struct Report {
    kinds: BTreeMap<String, u64>,
    examples: BTreeMap<String, Vec<String>>,
}

impl Report {
    fn mismatch(&mut self, kind: String, detail: impl FnOnce() -> String) {
        let examples = self.examples.entry(kind.clone()).or_default();
        if examples.len() < EXAMPLES {
            examples.push(detail());
        }
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn total(&self) -> u64 {
        self.kinds.values().sum()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn verdict_name(rc: u32, xdp: bool) -> String {
    match (rc, xdp) {
        (TC_ACT_UNSPEC, false) => "UNSPEC".into(),
        (0, false) => "TC_ACT_OK".into(),
        (TC_ACT_SHOT, false) => "SHOT".into(),
        (TC_ACT_REDIRECT, false) => "REDIRECT".into(),
        (XDP_PASS, true) => "XDP_PASS".into(),
        (XDP_REDIRECT, true) => "XDP_REDIRECT".into(),
        (rc, _) => format!("return value {rc}"),
    }
}

/// Counter deltas the oracle allows over a chunk: at least `.0`, at most `.1`.
type Bounds = BTreeMap<&'static str, (u64, u64)>;

struct Members {
    /// First-hop member MAC -> SF name, per chain.
    hop1: Vec<BTreeMap<[u8; 6], String>>,
}

/// Which member a flow went to: (chain, IPv6, protocol, VLAN, source, destination, ports —
/// 0 when the classifier matches none).
type FlowKey = (usize, bool, u8, u16, u128, u128, u16, u16);

fn frames_wanted() -> u64 {
    std::env::var("SFC_FUZZ_FRAMES")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .expect("SFC_FUZZ_FRAMES: a number")
        })
        .unwrap_or(DEFAULT_FRAMES)
}

/// Frames between two looks at the counters (`SFC_FUZZ_COUNTERS_EVERY`; 1 names the frame
/// that moved a counter wrongly).
fn counters_every() -> usize {
    std::env::var("SFC_FUZZ_COUNTERS_EVERY")
        .ok()
        .map(|v| v.parse().expect("SFC_FUZZ_COUNTERS_EVERY: a number"))
        .unwrap_or(CHUNK)
        .max(1)
}

fn seed() -> u64 {
    std::env::var("SFC_FUZZ_SEED")
        .ok()
        .map(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            }
            .expect("SFC_FUZZ_SEED: a number")
        })
        .unwrap_or(DEFAULT_SEED)
}

type FragmentTable =
    aya::maps::HashMap<aya::maps::MapData, sfc_common::FragmentKey, sfc_common::FragmentState>;

fn fragment_table(sb: &Sandbox) -> FragmentTable {
    let path = sb.bpffs.0.join("maps").join(sfc_common::MAP_FRAGMENTS);
    let map = aya::maps::MapData::from_pin(&path).unwrap();
    aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map)).unwrap()
}

/// Empties the datapath's fragment table, so that a chunk starts with no datagram known, as
/// the oracle's does.
fn forget_fragments(table: &mut FragmentTable) {
    let keys: Vec<_> = table.keys().filter_map(Result::ok).collect();
    for key in keys {
        table.remove(&key).unwrap();
    }
}

#[test]
fn fuzz_frames_against_the_design() {
    let rules = rules();
    let frames_wanted = frames_wanted();
    let seed = seed();
    let counters_every = counters_every();
    let mut veths: Vec<String> = PORTS.iter().map(|p| p.to_string()).collect();
    for (_, sfs) in GROUPS {
        for sf in sfs {
            veths.push(format!("sf{sf}-in"));
            veths.push(format!("sf{sf}-out"));
        }
    }
    let veth_names: Vec<&str> = veths.iter().map(String::as_str).collect();
    let mut sb = common::sandbox(&chain_yaml(&rules), Mode::Tc, &veth_names);
    let ports: Vec<Port> = PORTS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let here: Vec<Rule> = rules.iter().filter(|r| r.port == i).cloned().collect();
            Port {
                name,
                ifindex: ifindex(name),
                managed: !here.is_empty(),
                pass_unparsable: UNPARSABLE_FIELD
                    && !here.is_empty()
                    && here.iter().all(|r| r.pass),
                needs_ports: here.iter().any(|r| !r.portless()),
                rules: here,
            }
        })
        .collect();
    let members = Members {
        hop1: CHAINS
            .iter()
            .map(|(_, groups)| {
                let (_, sfs) = GROUPS.iter().find(|g| g.0 == groups[0]).unwrap();
                sfs.iter()
                    .map(|sf| (peer_mac(&format!("sf{sf}-in")), format!("sf{sf}")))
                    .collect()
            })
            .collect(),
    };
    println!(
        "packet fuzzer: {frames_wanted} frames through TC (about a quarter also through XDP), seed {seed:#x}; \
         unparsable: pass {}",
        if UNPARSABLE_FIELD { "on" } else { "off" }
    );

    let mut gen = Gen::new(seed, &rules);
    let mut oracle = Oracle::default();
    let mut report = Report::default();
    // The member each flow went to first, and the frame that took it there.
    let mut flows: HashMap<FlowKey, ([u8; 6], Vec<u8>)> = HashMap::new();
    let mut mix: BTreeMap<String, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut tc_runs, mut xdp_runs, mut refused) = (0u64, 0u64, 0u64);
    let names = sfc_common::stat::NAMES;
    let mut fragments = fragment_table(&sb);
    let first_stats = stats(&sb);
    let mut totals: Bounds = BTreeMap::new();
    let started = Instant::now();
    let mut ran = 0u64;
    while ran < frames_wanted {
        forget_fragments(&mut fragments);
        oracle.datagrams.clear();
        let chunk = gen.chunk(CHUNK.min((frames_wanted - ran) as usize));
        let mut before = stats(&sb);
        let mut bounds: Bounds = BTreeMap::new();
        for (i, b) in chunk.iter().enumerate() {
            if i > 0 && i % counters_every == 0 {
                let after = stats(&sb);
                let last = &chunk[i - 1];
                check_counters(&before, &after, &bounds, &names, last, &mut report);
                add_bounds(&mut totals, &bounds);
                before = after;
                bounds.clear();
            }
            ran += 1;
            *mix.entry(b.kind.to_string()).or_default() += 1;
            let port = &ports[b.port];
            let frame = &b.bytes;
            if b.xdp {
                xdp_runs += 1;
                check_xdp(&mut sb, b, port, &rules, &members, &mut bounds, &mut report);
            }
            let result = try_run_on(&mut sb, frame, port.ifindex);
            let predicted_refusal = refused_by_the_test_runner(frame, false);
            let (rc, out) = match result {
                Err(e) if predicted_refusal => {
                    let _ = e;
                    refused += 1;
                    continue;
                }
                Err(e) => {
                    report.mismatch("TC: the test run failed".into(), || {
                        format!("{} at {}: {e}", hex(frame), port.name)
                    });
                    continue;
                }
                Ok(r) => r,
            };
            tc_runs += 1;
            let view = oracle.decide(port, frame, &rules);
            for c in &view.counts {
                let e = bounds.entry(c).or_default();
                e.0 += 1;
                e.1 += 1;
            }
            for c in &view.maybe {
                bounds.entry(c).or_default().1 += 1;
            }
            let expect_label = match &view.expect {
                Expect::Pass => format!("pass, {}", view.why),
                Expect::Drop => format!("drop, {}", view.why),
                Expect::Steer(_) => format!("steer, {}", view.why),
            };
            *outcomes
                .entry(format!("{:<5} {}", port.name, expect_label))
                .or_default() += 1;
            if predicted_refusal {
                report.mismatch(
                    "oracle: predicted a refusal, but the frame ran".into(),
                    || hex(frame),
                );
            }
            let untouched = out == *frame;
            let got = match rc {
                TC_ACT_REDIRECT if out.len() == frame.len() && out[6..] == frame[6..] => {
                    let mac: [u8; 6] = out[0..6].try_into().unwrap();
                    let to = members
                        .hop1
                        .iter()
                        .flat_map(|m| m.get(&mac))
                        .next()
                        .cloned()
                        .unwrap_or_else(|| format!("{mac:02x?}"));
                    format!("REDIRECT to {to}")
                }
                TC_ACT_REDIRECT => "REDIRECT, frame changed beyond the destination MAC".into(),
                rc => format!(
                    "{}{}",
                    verdict_name(rc, false),
                    if untouched { "" } else { ", frame changed" }
                ),
            };
            let ok = match &view.expect {
                Expect::Pass => rc == TC_ACT_UNSPEC && untouched,
                Expect::Drop => rc == TC_ACT_SHOT,
                Expect::Steer(r) => {
                    let chain = rules[*r].chain;
                    let mac: [u8; 6] = out.get(0..6).unwrap_or(&[0; 6]).try_into().unwrap();
                    let steered = rc == TC_ACT_REDIRECT
                        && out.len() == frame.len()
                        && out[6..] == frame[6..]
                        && members.hop1[chain].contains_key(&mac);
                    if steered {
                        let p = view.parsed.as_ref().unwrap();
                        let portless = rules[*r].portless();
                        let key: FlowKey = (
                            chain,
                            p.v6,
                            p.proto,
                            p.vlan,
                            p.src,
                            p.dst,
                            if portless { 0 } else { p.sport },
                            if portless { 0 } else { p.dport },
                        );
                        let (first, first_frame) =
                            flows.entry(key).or_insert_with(|| (mac, frame.clone()));
                        if *first != mac {
                            report.mismatch(
                                format!(
                                    "TC steer by {}: a flow{} moved to another member",
                                    rules[*r].name,
                                    if p.frag == Frag::No { "" } else { " (fragment)" }
                                ),
                                || {
                                    format!(
                                        "{} at {}: {} -> {}, the flow's first packet went to {}\n    oracle: {:?}\n    first: {}",
                                        hex(frame),
                                        port.name,
                                        view.why,
                                        members.hop1[chain][&mac],
                                        members.hop1[chain][&*first],
                                        p,
                                        hex(first_frame),
                                    )
                                },
                            );
                        }
                    }
                    steered
                }
            };
            if !ok {
                report.mismatch(
                    format!("TC {expect_label}: got {}", strip_member(&got)),
                    || {
                        let mut s = format!(
                            "{} ({} bytes, {}) at {}\n    oracle: {}{}\n    program: {got}",
                            hex(frame),
                            frame.len(),
                            b.kind,
                            port.name,
                            view.why,
                            view.parsed
                                .as_ref()
                                .map(|p| format!(" {p:x?}"))
                                .unwrap_or_default(),
                        );
                        if !untouched {
                            write!(s, "\n    output: {}", hex(&out)).unwrap();
                        }
                        s
                    },
                );
            }
        }
        let after = stats(&sb);
        check_counters(
            &before,
            &after,
            &bounds,
            &names,
            chunk.last().unwrap(),
            &mut report,
        );
        add_bounds(&mut totals, &bounds);
    }
    let elapsed = started.elapsed();
    println!(
        "{ran} frames in {:.1} s ({:.0} frames/s): {tc_runs} TC runs, {xdp_runs} XDP runs, {refused} refused by the test runner",
        elapsed.as_secs_f64(),
        ran as f64 / elapsed.as_secs_f64()
    );
    let last_stats = stats(&sb);
    println!("counters over the run: datapath, oracle (a range where the design allows either)");
    for (i, name) in names.iter().enumerate() {
        let (lo, hi) = totals.get(name).copied().unwrap_or((0, 0));
        let oracle = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}..={hi}")
        };
        println!(
            "  {name:<20} {:>9}  {oracle}",
            last_stats[i] - first_stats[i]
        );
    }
    println!("mix (how frames were made):");
    for (k, n) in &mix {
        println!("  {n:>9}  {k}");
    }
    println!("oracle outcomes (TC):");
    for (k, n) in &outcomes {
        println!("  {n:>9}  {k}");
    }
    if report.kinds.is_empty() {
        return;
    }
    println!(
        "\nMISMATCHES: {} in {} kinds",
        report.total(),
        report.kinds.len()
    );
    for (kind, n) in &report.kinds {
        println!("\n{n:>9}  {kind}");
        for e in &report.examples[kind] {
            println!("    {e}");
        }
    }
    panic!(
        "{} frames disagree with the design ({} kinds; see above), seed {seed:#x}",
        report.total(),
        report.kinds.len()
    );
}

/// "REDIRECT to sfa" -> "REDIRECT to a member" (members differ per flow, not per kind).
fn strip_member(got: &str) -> String {
    match got.strip_prefix("REDIRECT to ") {
        Some(to) if to.starts_with("sf") => "REDIRECT to a member".into(),
        Some(_) => "REDIRECT to a non-member".into(),
        None => got.to_string(),
    }
}

/// XDP on the same frame, before TC as on a NIC: it never fails, passes what it does not
/// steer untouched and counts nothing for it, and steers only whole, parsed, matching frames.
fn check_xdp(
    sb: &mut Sandbox,
    b: &Built,
    port: &Port,
    rules: &[Rule],
    members: &Members,
    bounds: &mut Bounds,
    report: &mut Report,
) {
    let frame = &b.bytes;
    let (rc, out) = match try_run_xdp_on(sb, frame, port.ifindex) {
        Ok(r) => r,
        Err(_) if refused_by_the_test_runner(frame, true) => return,
        Err(e) => {
            report.mismatch("XDP: the test run failed".into(), || {
                format!("{} at {}: {e}", hex(frame), port.name)
            });
            return;
        }
    };
    // What TC would steer, were the frame whole: XDP may finish that, nothing else.
    let steerable = match parse(frame) {
        Parsed::Ip(p) if port.managed && p.frag == Frag::No => port
            .rules
            .iter()
            .find(|r| r.matches(&p))
            .map(|r| rules.iter().position(|x| x.name == r.name).unwrap()),
        _ => None,
    };
    let ok = match (rc, steerable) {
        (XDP_PASS, _) => out == *frame,
        (XDP_REDIRECT, Some(r)) => {
            let mac: [u8; 6] = out[0..6].try_into().unwrap();
            let good = out.len() == frame.len()
                && out[6..] == frame[6..]
                && members.hop1[rules[r].chain].contains_key(&mac);
            if good {
                bounds.entry("steered").or_default().0 += 1;
                bounds.entry("steered").or_default().1 += 1;
            }
            good
        }
        _ => false,
    };
    if !ok {
        let what = match (steerable, parse(frame)) {
            (Some(r), _) => format!("steerable by {}", rules[r].name),
            (None, Parsed::Ip(p)) if p.frag != Frag::No => "a fragment".into(),
            (None, Parsed::Ip(_)) => "no match".into(),
            (None, Parsed::Bad(r, d)) => format!("{} ({d})", r.counter()),
            (None, Parsed::NotIp) => "not IP".into(),
        };
        report.mismatch(
            format!(
                "XDP {what} at {}: got {}{}",
                if port.managed {
                    "a port"
                } else {
                    "an unmanaged interface"
                },
                verdict_name(rc, true),
                if rc != XDP_PASS || out == *frame {
                    ""
                } else {
                    ", frame changed"
                }
            ),
            || format!("{} at {}", hex(frame), port.name),
        );
    }
}

fn add_bounds(totals: &mut Bounds, bounds: &Bounds) {
    for (name, (lo, hi)) in bounds {
        let t = totals.entry(name).or_default();
        t.0 += lo;
        t.1 += hi;
    }
}

/// The counters' moves since `before` against the oracle's `bounds`. `last`: the last frame
/// run (the culprit when the counters are checked after every frame).
fn check_counters(
    before: &[u64],
    after: &[u64],
    bounds: &Bounds,
    names: &[&str],
    last: &Built,
    report: &mut Report,
) {
    for (i, name) in names.iter().enumerate() {
        let delta = after[i] - before[i];
        let (lo, hi) = bounds.get(name).copied().unwrap_or((0, 0));
        if delta < lo || delta > hi {
            report.mismatch(format!("counter {name} off"), || {
                format!(
                    "moved by {delta}, the oracle says {lo}..={hi}; last frame {} at {}",
                    hex(&last.bytes),
                    PORTS[last.port]
                )
            });
        }
    }
    for (name, (lo, _)) in bounds {
        if *lo > 0 && !names.contains(name) {
            report.mismatch(format!("counter {name} missing"), || {
                format!("this datapath has no counter {name}; the oracle counted {lo} in a chunk")
            });
        }
    }
}
