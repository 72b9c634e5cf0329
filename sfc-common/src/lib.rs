//! The ABI shared by the eBPF programs and the node agent.
//!
//! Every struct here is `#[repr(C)]`, padding-free (explicit `_pad` fields where alignment would
//! otherwise insert bytes, so map keys hash the same on both sides) and `Copy`. Map names carry a
//! version (`sfc_v12_*`): a change of any layout here bumps it, so that a new daemon gets fresh
//! maps instead of misreading pinned ones.
#![no_std]

/// The version of this ABI, in every map name (`sfc_v12_*`). A change of any layout here, of a
/// map's type or of what a value means bumps it, so that a new daemon gets fresh maps instead of
/// misreading pinned ones; `layout_fingerprint_matches_the_abi_version` fails until it is.
#[macro_export]
macro_rules! abi_version {
    () => {
        12
    };
}
pub const ABI_VERSION: u32 = abi_version!();

/// A map's name: `sfc_v{ABI_VERSION}_{name}`.
macro_rules! map_name {
    ($name:literal) => {
        concat!("sfc_v", abi_version!(), "_", $name)
    };
}

pub const MAP_PREFIX: &str = map_name!("");
pub const MAP_CONFIG: &str = map_name!("config");
pub const MAP_PORTS: &str = map_name!("ports");
/// Classifier entries for IPv6 packets (keyed by [`ClassKey`]).
pub const MAP_CLASSIFY: &str = map_name!("classify");
/// Classifier entries for IPv4 packets (keyed by [`ClassKey4`]): a key of 24 bytes instead of
/// 48, hashed once per probed shape.
pub const MAP_CLASSIFY4: &str = map_name!("classify4");
/// Source-port ranges of the classify entries whose packets are told apart by source port.
pub const MAP_SOURCE_PORTS: &str = map_name!("source_ports");
pub const MAP_RING: &str = map_name!("ring");
/// Members of every group table: a pin is honoured only while its member is still here.
pub const MAP_MEMBERS: &str = map_name!("members");
/// Interfaces packets may be redirected into (members, tap SFs, logical destination ports),
/// as a device map: the kernel removes an interface from it the moment it is deleted, and the
/// agent removes one that goes down, so a redirect into either is never counted as sent.
pub const MAP_LIVE: &str = map_name!("live");
pub const MAP_FLOWS: &str = map_name!("flows");
pub const MAP_FLOWS4: &str = map_name!("flows4");
/// Flow pins of flows seen more than once: what keeps an established flow on its member when
/// its group changes. A flood of new flows never writes here, so it cannot evict them.
pub const MAP_PINS: &str = map_name!("pins");
/// Flow pins of flows seen once so far where their flow state cannot hold them (hops from
/// `FLOW_PIN_HOPS` on, or no flow state); a flow's pin moves to `MAP_PINS` with its second
/// packet.
pub const MAP_NEW_PINS: &str = map_name!("new_pins");
pub const MAP_DECISIONS: &str = map_name!("decisions");
pub const MAP_DECISIONS4: &str = map_name!("decisions4");
/// First fragments seen, so that the rest of their datagram takes the same path.
pub const MAP_FRAGMENTS: &str = map_name!("fragments");
pub const MAP_STATS: &str = map_name!("stats");
pub const MAP_COUNTERS: &str = map_name!("counters");
pub const MAP_MEMBER_COUNTERS: &str = map_name!("member_counters");
/// Which counter slot each side of an SF-facing interface has (written and read by the agent
/// only; kept in bpffs so that a restarted agent finds the counters where it left them). Keyed
/// by ifindex for the side that is a pair's ingress (or both its ingress and egress), with
/// `SIDE_EGRESS` for the side that is a pair's egress only: crossed pairs give one interface
/// both, one per pair.
pub const MAP_MEMBER_SLOTS: &str = map_name!("member_slots");
/// See [`MAP_MEMBER_SLOTS`].
pub const SIDE_EGRESS: u32 = 1 << 31;
pub const MAP_TRACE_FILTER: &str = map_name!("trace_filter");
pub const MAP_TRACE_EVENTS: &str = map_name!("trace_events");
/// Per-CPU scratch memory of the programs (not pinned).
pub const MAP_SCRATCH: &str = map_name!("scratch");
pub const PROGRAM_TC: &str = "sfc_tc";
pub const PROGRAM_XDP: &str = "sfc_xdp";
/// One u32, set by the agent when it loads the programs (not pinned: it belongs to them):
/// 1 when the XDP program may redirect into a veth whose peer is in another namespace. Such a
/// veth takes XDP frames only if its peer has GRO on or an XDP program, which only the user
/// can vouch for (`--xdp-on-veth`); otherwise the XDP program leaves those packets to TC.
pub const MAP_XDP_INTO_VETH: &str = map_name!("xdp_into_veth");
/// Members and chain ends on other nodes (by [`RemoteKey`]): the tunnel address of their node.
pub const MAP_REMOTES: &str = map_name!("remotes");
/// Members and chain ends on this node that other nodes send to (by [`RemoteKey`]): where a
/// packet that arrives in the tunnel for them goes.
pub const MAP_LANDING: &str = map_name!("landing");
/// Tunnel addresses of the other registered nodes: the only sources tunnel packets are taken
/// from.
pub const MAP_TUNNEL_PEERS: &str = map_name!("tunnel_peers");
pub const PROGRAM_TUNNEL: &str = "sfc_tunnel";
/// The XDP program on the underlay interface that strips other nodes' packets before GRO
/// (`--tunnel-xdp`).
pub const PROGRAM_TUNNEL_XDP: &str = "sfc_tunnel_xdp";
/// Health probes that came out of an SF: egress ifindex -> the sequence number of the last
/// one (see [`ProbePayload`]).
pub const MAP_PROBES: &str = map_name!("probes");

/// Every map of the steering object, pinned or not.
pub const MAP_NAMES: [&str; 27] = [
    MAP_CONFIG,
    MAP_PORTS,
    MAP_CLASSIFY,
    MAP_CLASSIFY4,
    MAP_SOURCE_PORTS,
    MAP_RING,
    MAP_MEMBERS,
    MAP_LIVE,
    MAP_FLOWS,
    MAP_FLOWS4,
    MAP_PINS,
    MAP_NEW_PINS,
    MAP_DECISIONS,
    MAP_DECISIONS4,
    MAP_FRAGMENTS,
    MAP_STATS,
    MAP_COUNTERS,
    MAP_MEMBER_COUNTERS,
    MAP_MEMBER_SLOTS,
    MAP_TRACE_FILTER,
    MAP_TRACE_EVENTS,
    MAP_SCRATCH,
    MAP_XDP_INTO_VETH,
    MAP_REMOTES,
    MAP_LANDING,
    MAP_TUNNEL_PEERS,
    MAP_PROBES,
];

/// Distinct match shapes (prefix lengths, port-prefix lengths, protocol) probed per interface.
/// The datapath does one hash lookup per shape, so this bounds the per-packet cost whatever the
/// number of classifiers.
pub const MAX_TUPLES: usize = 16;
/// Hops in one chain.
pub const MAX_HOPS: usize = 32;
/// Maglev lookup-table size per group (prime, so every member's permutation covers the table).
pub const RING_SIZE: u32 = 1021;
/// Group tables per generation; generation `g` owns slots `g * SLOTS_PER_GEN ..`.
pub const SLOTS_PER_GEN: u32 = 512;
/// Classifier entries (both generations and both families together; each of the two classify
/// maps is this large, so the total fits either). Hash maps without preallocation.
pub const CLASSIFY_CAPACITY: u32 = 1 << 20;
/// Source-port ranges of classify entries per generation (`sfc_v12_source_ports`; generation
/// `g` owns `g * SOURCE_PORTS_PER_GEN ..`). Only keys shared by classifiers that differ by
/// source port need them.
pub const SOURCE_PORTS_PER_GEN: u32 = 32768;
/// Interfaces with a program, times two generations.
pub const PORTS_CAPACITY: u32 = 8192;
/// Default size of the flow tables (flows in a chain, per direction, IPv4 and IPv6 each: their
/// generation, packets in flight and original destination MAC). LRU: an evicted flow simply
/// starts over on the active generation. The agent sets the real size (a flag).
pub const FLOWS_CAPACITY: u32 = 65536;
/// Default size of the flow-to-member pins (per group and flow hash), each of the two tables
/// (flows seen once, and flows seen again). LRU.
pub const PINS_CAPACITY: u32 = 131072;
/// Default size of the decision tables (per interface and flow, for the current epoch, IPv4
/// and IPv6 each). LRU.
pub const DECISIONS_CAPACITY: u32 = 131072;
/// Default size of the fragment table (datagrams whose first fragment was seen and whose last
/// bytes were not). Not LRU: when it is full a new datagram is not tracked, and counted.
pub const FRAGMENTS_CAPACITY: u32 = 65536;
/// A tracked datagram whose fragments stop coming is forgotten after this (the agent sweeps
/// such entries; the datapath ignores them at once).
pub const FRAGMENT_TIMEOUT_NS: u64 = 2_000_000_000;
/// Members of group tables, both generations together.
pub const MEMBERS_CAPACITY: u32 = 131072;
/// Interfaces packets may be redirected into.
pub const LIVE_CAPACITY: u32 = 8192;
/// Per-chain counters per generation ((chain, direction, position), and the entry counter of
/// each classifier); index 0 is "none".
pub const COUNTERS_PER_GEN: u32 = 32768;
/// Counter slots of SF-facing interfaces (member sides); slot 0 is "none".
pub const MEMBER_SLOTS: u32 = 4096;
/// Size of the trace event ring buffer (bytes, a power of two).
pub const TRACE_EVENTS_BYTES: u32 = 1 << 20;

/// `sfc_v12_config` index holding the epoch; the active generation is `epoch & 1`.
pub const CONFIG_EPOCH: u32 = 0;
/// `sfc_v12_config` index holding the CLOCK_MONOTONIC time (ns) of the last flip.
pub const CONFIG_FLIP_NS: u32 = 1;
/// `sfc_v12_config` indexes `CONFIG_REVISION + gen`: the revision of the cluster's state each
/// generation steers (its low 32 bits; 0 outside a cluster). Packets between nodes carry it,
/// so that a packet is steered on every node by the revision it started with.
pub const CONFIG_REVISION: u32 = 2;
/// `sfc_v12_config` index holding the ifindex of this node's underlay interface, where
/// packets to other nodes leave and theirs arrive (0: none, outside a cluster).
pub const CONFIG_TUNNEL_IFINDEX: u32 = 4;
/// `sfc_v12_config` index holding this node's tunnel address when it is IPv4 (network byte
/// order; 0: the underlay is IPv6, or there is none).
pub const CONFIG_TUNNEL_ADDRESS: u32 = 5;
/// `sfc_v12_config` index holding the largest IP packet a chain can carry to another node: the
/// underlay interface's MTU less the encapsulation of the underlay's family (0: not known).
pub const CONFIG_TUNNEL_USABLE_MTU: u32 = 6;
/// `sfc_v12_config` index holding the agent's probe token (random, never 0; 0: no probes):
/// a packet is a health probe only if it carries it.
pub const CONFIG_PROBE_TOKEN: u32 = 7;
/// `sfc_v12_config` indexes holding this node's tunnel address when it is IPv6: its first and
/// last 8 bytes, each as the native-endian word of those bytes (both 0: not IPv6).
pub const CONFIG_TUNNEL_ADDRESS6: u32 = 8;
pub const CONFIG_ENTRIES: u32 = 10;

/// Health probes are UDP packets between this port and itself, untagged, IPv4 without options
/// or IPv6 without extension headers, whose payload is a [`ProbePayload`].
pub const PROBE_PORT: u16 = 48_481;
/// Where an IPv4 probe's payload starts: after the Ethernet, IPv4 and UDP headers.
pub const PROBE_PAYLOAD_OFFSET: usize = 14 + 20 + 8;
/// Where an IPv6 probe's payload starts: after the Ethernet, IPv6 and UDP headers.
pub const PROBE_PAYLOAD_OFFSET_V6: usize = 14 + 40 + 8;
/// Entries of `sfc_v12_probes`: one per SF egress, as the interfaces with counters.
pub const PROBES_CAPACITY: u32 = MEMBER_SLOTS;

/// The payload of a health probe: the agent's token and the probe's sequence number (both
/// in host byte order: the agent writes them and reads them back, on one machine).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbePayload {
    pub token: u64,
    pub seq: u64,
}

/// `Member::ifindex` and `Verdict::deliver_ifindex` bit: not an interface of this node but a
/// member side or chain end on another one, named by the rest (see [`remote_id`]); sent there
/// in the tunnel.
pub const REMOTE: u32 = 1 << 31;
/// Entries of `sfc_v12_remotes` and of `sfc_v12_landing` (both generations together).
pub const REMOTES_CAPACITY: u32 = 16384;
/// Nodes a node takes tunnel packets from.
pub const TUNNEL_PEERS_CAPACITY: u32 = 4096;
/// UDP port of Geneve (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;
/// Option class of the Geneve option that carries the service path (IANA's experimental range).
pub const GENEVE_OPT_CLASS: u16 = 0xfff5;
/// Its type: critical (high bit), so that a receiver that does not know it drops the packet.
pub const GENEVE_OPT_TYPE: u8 = 0x81;
/// Bytes a packet gains when it is sent to another node over an IPv4 underlay: outer IPv4
/// (20), UDP (8), Geneve (8), its option ([`TunnelOption`], 28) and the inner Ethernet header
/// (14).
pub const TUNNEL_OVERHEAD: u32 = 20 + 8 + 8 + 28 + 14;
/// The same over an IPv6 underlay: the outer IPv6 header is 40 bytes.
pub const TUNNEL_OVERHEAD_V6: u32 = TUNNEL_OVERHEAD + 20;
/// The service index of a packet sent to the first hop (RFC 8300: 255, one less per hop).
pub const SERVICE_INDEX_START: u8 = 255;

/// The id of an interface of a cluster, `NODE/IFNAME` (FNV-1a, with [`REMOTE`] set): how
/// nodes name each other's member sides and chain ends in the tunnel, the same on every node
/// and in every generation.
pub fn remote_id(qualified: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in qualified.bytes() {
        hash = (hash ^ b as u32).wrapping_mul(0x0100_0193);
    }
    REMOTE | (hash & !REMOTE)
}

/// After a flip, a flow with packets still inside its chain keeps the old generation until
/// they are out, but never longer than this; the agent leaves a retired generation intact for
/// twice as long before it reuses it.
pub const GENERATION_LEASE_NS: u64 = 100_000_000;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Bits of `Verdict::lb_fields`; 0 means the symmetric 5-tuple.
pub mod lb {
    pub const ETH_SRC: u8 = 1 << 0;
    pub const ETH_DST: u8 = 1 << 1;
    pub const IP_SRC: u8 = 1 << 2;
    pub const IP_DST: u8 = 1 << 3;
    pub const TCP_SRC: u8 = 1 << 4;
    pub const TCP_DST: u8 = 1 << 5;
    pub const UDP_SRC: u8 = 1 << 6;
    pub const UDP_DST: u8 = 1 << 7;
}

/// What the datapath does with a classified packet (`Verdict::action`).
pub mod action {
    /// Send into a member of the group table `Verdict::slot`.
    pub const STEER: u8 = 1;
    /// Last hop done: redirect to `Verdict::deliver_ifindex` (the logical destination port).
    pub const DELIVER: u8 = 2;
    /// Last hop done, no logical destination port: restore the original destination MAC and
    /// let the node forward the packet normally.
    pub const FORWARD: u8 = 3;
    /// Dropped (`stat::PATH_UNKNOWN`): the packet left an SF where paths that would take it
    /// different ways meet (`PORT_BY_PATH`), and its flow's path is not known.
    pub const PATH_UNKNOWN: u8 = 4;
}

/// Indexes of the per-CPU stats counters (summed over CPUs when read).
pub mod stat {
    /// Packets sent into an SF.
    pub const STEERED: u32 = 0;
    /// Packets redirected to a logical destination port after the last hop.
    pub const DELIVERED: u32 = 1;
    /// Packets handed back to normal forwarding after the last hop.
    pub const FORWARDED: u32 = 2;
    /// IP packets that matched no classifier (untouched).
    pub const NO_MATCH: u32 = 3;
    /// Frames that are not IPv4/IPv6 (ARP, LLDP, ...), untouched.
    pub const NOT_IP: u32 = 4;
    /// Unparsable: truncated or inconsistent IP or L4 headers.
    pub const MALFORMED: u32 = 5;
    /// Unparsable: more VLAN tags than the parser walks.
    pub const UNPARSABLE_VLAN: u32 = 6;
    /// Unparsable: more IPv6 extension headers than the parser walks.
    pub const UNPARSABLE_IPV6_EXT: u32 = 7;
    /// Unparsable: a non-first fragment whose first fragment was not seen, where a classifier
    /// needs L4 ports.
    pub const FRAGMENT_UNKNOWN: u32 = 8;
    /// Unparsable packets passed on anyway, as their port's classifiers ask
    /// (`unparsable: pass`); the others were dropped.
    pub const UNPARSABLE_PASSED: u32 = 9;
    /// Dropped: the hop's group has no live member (fail closed rather than bypass the SF).
    pub const NO_MEMBER: u32 = 10;
    /// Dropped: the interface the packet was to go into is gone or down.
    pub const TARGET_DOWN: u32 = 11;
    /// The redirect helper refused (dropped by the kernel).
    pub const REDIRECT_FAILED: u32 = 12;
    /// Copies sent to a tap SF.
    pub const TAPPED: u32 = 13;
    /// Copies a tap SF could not be sent (gone, down, or the clone failed); the original
    /// continues.
    pub const TAP_FAILED: u32 = 14;
    /// First fragments whose datagram is now tracked.
    pub const FRAGMENTS_TRACKED: u32 = 15;
    /// First fragments not tracked because the fragment table is full: the rest of their
    /// datagram is unparsable where ports matter.
    pub const FRAGMENT_TABLE_FULL: u32 = 16;
    /// Dropped: leaving an SF where paths meet that would take the packet different ways, a
    /// packet whose flow's path is not known (its flow record was lost: the flow table was
    /// full), rather than sent down the wrong one.
    pub const PATH_UNKNOWN: u32 = 17;
    /// Packets sent to another node in the tunnel (to a member there, or to a chain end).
    pub const TUNNEL_SENT: u32 = 18;
    /// Tunnel packets from another node sent on into a member or chain end here.
    pub const TUNNEL_RECEIVED: u32 = 19;
    /// Dropped: a tunnel packet from an address that is no registered node's.
    pub const TUNNEL_REJECTED_SOURCE: u32 = 20;
    /// Dropped: a tunnel packet without our option, or with one that does not parse, or
    /// whose inner packet is not IP.
    pub const TUNNEL_REJECTED_MALFORMED: u32 = 21;
    /// Dropped: a tunnel packet whose service index ran out (it went round more hops than a
    /// chain has).
    pub const TUNNEL_REJECTED_INDEX: u32 = 22;
    /// Dropped: a tunnel packet of a revision of the state this node does not hold (rather
    /// than steered on the rest of its way by another one).
    pub const TUNNEL_REJECTED_REVISION: u32 = 23;
    /// Dropped: a tunnel packet for a member or chain end this node does not have in that
    /// revision.
    pub const TUNNEL_REJECTED_TARGET: u32 = 24;
    /// Dropped: a packet for another node that would not fit the underlay's MTU once
    /// encapsulated and may not be fragmented (segmentation offload packets are cut to fit,
    /// IPv4 without DF is fragmented: `TUNNEL_FRAGMENTED`).
    pub const TUNNEL_TOO_BIG: u32 = 25;
    /// Of those, the ones answered with ICMP "fragmentation needed" or ICMPv6 "packet too
    /// big" (may not be fragmented, and are no ICMP error themselves).
    pub const TOO_BIG_ANSWERED: u32 = 26;
    /// Packets that skipped a hop whose group has no live member and fails open: sent on to
    /// the next hop, or the chain's end, without the SF (counted once where they skip one
    /// hop or several in a row).
    pub const HOP_SKIPPED: u32 = 27;
    /// Packets for another node too big for the underlay once encapsulated that may be
    /// fragmented (IPv4 without DF): cut into fragments that fit, which then go on as the
    /// packet would have (and are counted as packets themselves).
    pub const TUNNEL_FRAGMENTED: u32 = 28;
    pub const COUNT: u32 = 29;
    pub const NAMES: [&str; COUNT as usize] = [
        "steered",
        "delivered",
        "forwarded",
        "no_match",
        "not_ip",
        "malformed",
        "unparsable_vlan",
        "unparsable_ipv6_ext",
        "fragment_unknown",
        "unparsable_passed",
        "no_member",
        "target_down",
        "redirect_failed",
        "tapped",
        "tap_failed",
        "fragments_tracked",
        "fragment_table_full",
        "path_unknown",
        "tunnel_sent",
        "tunnel_received",
        "tunnel_rejected_source",
        "tunnel_rejected_malformed",
        "tunnel_rejected_index",
        "tunnel_rejected_revision",
        "tunnel_rejected_target",
        "tunnel_too_big",
        "too_big_answered",
        "hop_skipped",
        "tunnel_fragmented",
    ];
}

/// Key of `sfc_v12_classify`: a packet's addresses, protocol and destination port, masked by
/// one tuple of its interface. The agent compiles every classifier to these keys; those of
/// IPv4 go into `sfc_v12_classify4` as [`ClassKey4`]. The source port is not in the key: it is checked against the
/// entry's ranges ([`ClassEntry`]), so that ranges on both ports need no product of shapes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    pub gen: u8,
    /// Index of the tuple (mask) that produced this key, so equal masked values of different
    /// masks never collide.
    pub tuple: u8,
    pub family: u8,
    pub proto: u8,
    /// Classification domain: a logical source port, or a group's egress side.
    pub domain: u32,
    /// The path the packet's flow entered by, in a domain where paths meet that would take
    /// its packets different ways (`PORT_BY_PATH`); 0 elsewhere, or when the flow's is not
    /// known.
    pub path: u32,
    pub dport: u16,
    pub _pad: u16,
    /// Addresses in network byte order, IPv4 in word 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// Key of `sfc_v12_classify4`: a [`ClassKey`] of an IPv4 packet, without the 24 bytes its
/// IPv6 addresses would take. The family is the map's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassKey4 {
    pub gen: u8,
    pub tuple: u8,
    pub proto: u8,
    pub _pad: u8,
    pub domain: u32,
    pub path: u32,
    pub dport: u16,
    pub _pad2: u16,
    /// Network byte order.
    pub src: u32,
    pub dst: u32,
}

impl ClassKey4 {
    /// The key of an IPv4 [`ClassKey`] (its address words past the first are zero).
    pub fn of(key: &ClassKey) -> Self {
        Self {
            gen: key.gen,
            tuple: key.tuple,
            proto: key.proto,
            _pad: 0,
            domain: key.domain,
            path: key.path,
            dport: key.dport,
            _pad2: 0,
            src: key.src[0],
            dst: key.dst[0],
        }
    }
}

/// One match shape. A packet is probed against a tuple by AND-ing its fields with the mask.
/// Destination ports are matched by blocks of 1, 16, 256 or 4096 aligned ports (masks
/// `0xffff`, `0xfff0`, `0xff00`, `0xf000`) or not at all, so that a domain has at most five
/// port shapes per address shape, whatever its ranges.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TupleMask {
    pub family: u8,
    /// 0xff when the protocol is part of the match, 0 for "any".
    pub proto: u8,
    /// 1 when the shape's classifiers match on L4 ports (the destination port under `dport`,
    /// or source-port ranges in their entries): never probed for a fragment whose ports are
    /// unknown.
    pub uses_ports: u8,
    pub _pad: u8,
    pub dport: u16,
    pub _pad2: u16,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// A verdict for the source ports `lo..=hi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourcePorts {
    pub lo: u16,
    pub hi: u16,
    pub verdict: Verdict,
}

impl SourcePorts {
    pub const ANY: (u16, u16) = (0, u16::MAX);
}

/// Value of `sfc_v12_classify`: what the key's packets get, by their source port. Most keys
/// have one range (`only`; `0..=65535` when the classifier has none). Where classifiers share
/// a key and differ by source port, `ranges` > 0 and the ranges are elements
/// `first .. first + ranges` of `sfc_v12_source_ports`, sorted and disjoint: a binary search
/// of at most 16 steps, however many there are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassEntry {
    pub only: SourcePorts,
    /// Absolute (generation base included).
    pub first: u32,
    pub ranges: u32,
}

/// Key of `sfc_v12_ports`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub ifindex: u32,
    pub gen: u32,
}

/// Value of `sfc_v12_ports`: the domain packets arriving on this interface are classified in and
/// the shapes to probe, most specific first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortValue {
    pub domain: u32,
    pub n_tuples: u16,
    /// `PORT_*` bits.
    pub flags: u16,
    /// Member counter slot of this interface as a pair's egress: what arrives here going
    /// forward left that pair. 0: none.
    pub slot: u16,
    /// Member counter slot of this interface as a pair's ingress: what arrives here in reverse
    /// (symmetric chains) left that pair. With crossed pairs that is another pair than `slot`'s.
    pub reverse_slot: u16,
    pub tuples: [TupleMask; MAX_TUPLES],
}

/// `PortValue::flags`: a logical port, where chains start. Only there may a flow move to a
/// newer generation; everywhere else it stays on the one it entered with.
pub const PORT_ENTRY: u16 = 1;
/// `PortValue::flags`: every classifier entering here asks for today's networking-sfc
/// behaviour, `unparsable: pass`: what cannot be parsed is passed on rather than dropped.
pub const PORT_PASS_UNPARSABLE: u16 = 2;
/// `PortValue::flags`: some classifier here matches L4 ports, so a fragment whose ports are
/// unknown is unparsable here.
pub const PORT_NEEDS_PORTS: u16 = 4;
/// `PortValue::flags`: paths meet here that would take some packets different ways (chains
/// sharing a group, classifiers of one chain entering and ending at different ports, both
/// directions through one interface): keys carry the path of the packet's flow.
pub const PORT_BY_PATH: u16 = 8;

/// Value of `sfc_v12_classify`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Verdict {
    pub chain_id: u16,
    /// Hop the packet is sent to (for `STEER`), or the number of hops (after the last one).
    pub hop: u8,
    pub action: u8,
    /// Group table of that hop (absolute: generation base included); ring entries
    /// `slot * RING_SIZE ..`.
    pub slot: u32,
    /// Stable key of that hop's group (the same in every generation), for flow pins.
    pub group: u32,
    /// Per-chain counter (absolute: generation base included); 0 counts nothing.
    pub counter: u32,
    pub deliver_ifindex: u32,
    pub deliver_mac: [u8; 6],
    pub lb_fields: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// A tap SF that gets a copy first (0: none).
    pub tap_ifindex: u32,
    pub tap_mac: [u8; 6],
    /// Member counter slot of the tap's interface, 0: none.
    pub tap_slot: u16,
    /// Where a flow enters a chain (`FLAG_ENTRY`): its path, recorded with the flow, so that
    /// where the paths of several chains (or of one chain's classifiers that end at
    /// different ports, or of both directions) meet, its packets go its own way.
    pub path: u32,
}

/// `Verdict::flags`: the packet enters a chain here (at a logical port): remember its
/// destination MAC for the end of the chain, and count it in flight.
pub const FLAG_ENTRY: u8 = 1;
/// `Verdict::flags`: the reverse direction of a symmetric chain: members are entered through
/// their egress side.
pub const FLAG_REVERSE: u8 = 2;
/// `Verdict::flags`: the logical destination port is a veth with its peer in another
/// namespace (see `SLOT_PEER`).
pub const FLAG_DELIVER_PEER: u8 = 4;
/// `Verdict::flags`: the classifier matches no L4 ports, so the member choice ignores them:
/// every packet of a flow, fragment or not, reaches the same member.
pub const FLAG_PORTLESS: u8 = 8;
/// `Verdict::flags`: the hop's group has one member, so no pin needs to be looked up there: a
/// pin could only name that member or one that left. (Pins are still written, for the day
/// the group grows.)
pub const FLAG_ONE_MEMBER: u8 = 16;
/// `Verdict::flags`: the verdict of the hop after one whose group has no live member and
/// fails open, given where that hop's verdict would be: count the skip (`stat::HOP_SKIPPED`).
pub const FLAG_SKIPPED: u8 = 32;
/// `Verdict::flags`, set by the datapath only, never in a map: the verdict of a tap's copy
/// on its way to the tap's node, sent with `TUNNEL_TAP`.
pub const FLAG_TAP_COPY: u8 = 64;

/// `Member::slot` bit: the interface is a veth whose peer is in another namespace: the packet
/// is redirected straight into the peer's ingress (`bpf_redirect_peer`: no second pass
/// through the host side and the backlog queue).
pub const SLOT_PEER: u16 = 0x8000;
/// `Member::slot` bits holding the counter slot.
pub const SLOT_MASK: u16 = 0x7fff;

/// One side of a group member. `ifindex == 0` marks an empty table (no live member).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Member {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// Member counter slot of this interface (0: none), and `SLOT_PEER`.
    pub slot: u16,
}

/// Entry of `sfc_v12_ring` and value of `sfc_v12_pins`: both sides of one member, so that the
/// two directions of a symmetric flow meet the same instance.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RingEntry {
    pub ingress: Member,
    pub egress: Member,
}

/// Key of `sfc_v12_members`: a member (by its ingress interface) of one group table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberKey {
    /// Group table (absolute: generation base included).
    pub slot: u32,
    pub ifindex: u32,
}

/// Key of `sfc_v12_pins` (whose value is the member's ingress ifindex): a flow (as its
/// member-choosing hash) in one group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PinKey {
    pub group: u32,
    pub hash: u32,
}

/// Value of `sfc_v12_flows`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowState {
    /// Destination MAC the flow had when it entered the chain.
    pub mac: [u8; 6],
    /// Generation steering the flow (`epoch & 1` when it last switched).
    pub gen: u8,
    /// 1 once a second packet of the flow entered: from then on its decisions are remembered
    /// past the entry too. (A pad byte before, always 0: an older datapath's entries read as
    /// flows seen once, which costs them one slow packet per hop, hence no new ABI version.)
    pub seen_twice: u8,
    /// The path it entered by (`Verdict::path`), of that generation.
    pub path: u32,
    pub _pad2: u32,
    /// Packets entered and not yet out of the chain (atomic; may drift when an SF drops).
    pub inflight: u64,
    /// The member (ingress ifindex, 0: none) that hop `i` chose for the flow while it was
    /// seen once: its pin until it is seen again and joins the established pins. Kept here,
    /// in the record every hop finds anyway, rather than in a pin table, so that a flow's
    /// first packet inserts into no table past its entry. Hops from `FLOW_PIN_HOPS` on pin in
    /// `sfc_v12_new_pins`.
    pub first_members: [u32; FLOW_PIN_HOPS],
    /// What was decided for the flow where it enters its chain (on `entry.ifindex`, valid
    /// while `entry.epoch` is the current one; a zeroed one names no interface). Kept here,
    /// in the record the entry looks up first anyway, instead of in `sfc_v12_decisions`: a
    /// decided packet entering a chain costs one hash lookup fewer.
    pub entry: Decision,
}

/// Hops whose first choice of member a flow keeps in its own state (`FlowState::first_members`).
pub const FLOW_PIN_HOPS: usize = 8;

/// Key of `sfc_v12_decisions`: a flow arriving on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecisionKey {
    pub ifindex: u32,
    pub tuple: FlowTuple,
}

/// Value of `sfc_v12_decisions`: what the program decided for a flow on an interface, valid
/// while the epoch is the same (any update makes every decision stale at once), so that the
/// next packets of the flow skip classification and member choice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decision {
    pub epoch: u64,
    /// `action` 0: no chain matched.
    pub verdict: Verdict,
    /// For `STEER`: the member chosen.
    pub member: Member,
    /// Member counter slot of the interface the flow arrives on.
    pub arrival_slot: u16,
    /// 1 when that interface is a logical port (chains start there).
    pub entry_port: u8,
    /// For `STEER`: 1 once the flow's pin is among the established ones (`MAP_PINS`).
    pub pinned: u8,
    /// For `STEER`: the flow's hash, the pin's key in its group.
    pub pin_hash: u32,
    /// For `STEER`: the pin's value, the ingress ifindex of the member.
    pub pin_member: u32,
    /// The interface the flow arrives on (in `sfc_v12_decisions` also the key's).
    pub ifindex: u32,
}

/// Element of `sfc_v12_member_counters` (per CPU): traffic we sent into an SF through one of its
/// interfaces, and traffic that came back out of it there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemberCounter {
    pub into_packets: u64,
    pub into_bytes: u64,
    pub from_packets: u64,
    pub from_bytes: u64,
}

/// Element of `sfc_v12_counters` (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `TraceFilter::fields`: which fields must match.
pub mod trace_field {
    pub const SRC: u8 = 1 << 0;
    pub const DST: u8 = 1 << 1;
    pub const PROTO: u8 = 1 << 2;
    pub const SPORT: u8 = 1 << 3;
    pub const DPORT: u8 = 1 << 4;
    pub const ID: u8 = 1 << 5;
}

/// The one entry of `sfc_v12_trace_filter`. A packet matches in either direction (source and
/// destination swapped), so one filter follows both directions of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceFilter {
    /// 0: tracing off (the datapath's only cost is this byte).
    pub enabled: u8,
    pub family: u8,
    pub proto: u8,
    /// `trace_field` bits.
    pub fields: u8,
    pub sport: u16,
    pub dport: u16,
    /// Tracking id (`tracking_id`).
    pub id: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// One packet's step through this node, sent to `sfc_v12_trace_events` while tracing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// Tracking id of the flow (`tracking_id`).
    pub id: u32,
    /// Where the packet arrived.
    pub ifindex: u32,
    /// Where it was sent (member or logical destination port); 0 when not redirected.
    pub target_ifindex: u32,
    pub chain_id: u16,
    pub hop: u8,
    /// A `stat` index: steered, delivered, forwarded, no_match, fragment, no_member.
    pub outcome: u8,
    /// `Verdict::flags` (entry, reverse).
    pub flags: u8,
    pub gen: u8,
    pub family: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Destination MAC written (the member's).
    pub mac: [u8; 6],
    /// 1 when a copy went to a tap SF.
    pub tapped: u8,
    pub _pad: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// The stable tracking id of a flow: the symmetric 5-tuple hash, the same in both directions
/// (never 0).
#[inline(always)]
pub fn tracking_id(input: &HashInput) -> u32 {
    let id = flow_hash(input, 0);
    if id == 0 {
        1
    } else {
        id
    }
}

/// Key of `sfc_v12_flows4`: an IPv4 flow (directional 5-tuple) in 16 bytes rather than 40.
/// IPv4 flows have their own tables because the key is hashed on every packet: a decided flow
/// costs a third less with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple4 {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: u8,
    /// VLAN id of the outermost tag (0: untagged).
    pub vlan: u16,
}

/// Key of `sfc_v12_decisions4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecisionKey4 {
    pub ifindex: u32,
    pub tuple: FlowTuple4,
}

/// Key of `sfc_v12_flows` (directional 5-tuple; IPv6, and anything not IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub family: u8,
    pub proto: u8,
    /// VLAN id of the outermost tag (0: untagged).
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// Key of `sfc_v12_fragments`: one IP datagram arriving on one interface (each hop of a chain
/// sees the whole datagram again, in its own order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub family: u8,
    pub proto: u8,
    pub vlan: u16,
    /// The IPv4 identification or the IPv6 fragment header's.
    pub id: u32,
    pub ifindex: u32,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// Value of `sfc_v12_fragments`: what the first fragment told of its datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentState {
    pub sport: u16,
    pub dport: u16,
    /// Payload bytes of the datagram (known once its last fragment was seen; 0 before).
    pub total: u32,
    /// Payload bytes seen so far (atomic): the entry goes when it reaches `total`.
    pub seen: u64,
    /// CLOCK_MONOTONIC of the first fragment.
    pub first_ns: u64,
}

/// Key of `sfc_v12_remotes` and `sfc_v12_landing`: a member side or chain end of a cluster
/// ([`remote_id`]) in one generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteKey {
    pub gen: u32,
    pub id: u32,
}

/// Value of `sfc_v12_remotes` and key of `sfc_v12_tunnel_peers`: a node's tunnel address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelPeer {
    pub family: u8,
    pub _pad: [u8; 3],
    /// Network byte order, IPv4 in word 0.
    pub addr: [u32; 4],
}

/// `TunnelOption::flags`: the packet goes to a chain end (delivered there), not into a member.
pub const TUNNEL_DELIVER: u8 = 1;
/// `TunnelOption::flags`: the reverse direction of a symmetric chain.
pub const TUNNEL_REVERSE: u8 = 2;
/// `TunnelOption::flags`: a copy for a tap SF (the target), which itself goes nowhere after
/// it: it leaves no flow state on the receiving node. The service path and index are those
/// of the packet it copies, sent on from the copying node.
pub const TUNNEL_TAP: u8 = 4;

/// The one Geneve option of a packet between nodes: what the receiving node needs to go on
/// with the chain without classifying it again. Every multi-byte field is in network byte
/// order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelOption {
    /// [`GENEVE_OPT_CLASS`].
    pub class: u16,
    /// [`GENEVE_OPT_TYPE`].
    pub kind: u8,
    /// Length of the rest, in 4-byte words (5 bits).
    pub length: u8,
    /// RFC 8300's service path header: the service path identifier (`chain id << 1 |
    /// reverse`) in the high 24 bits, the service index in the low 8 ([`SERVICE_INDEX_START`]
    /// minus the hop the packet goes to).
    pub service: u32,
    /// The revision of the state the packet is steered by (`CONFIG_REVISION`).
    pub revision: u32,
    /// The member side or chain end it goes to ([`remote_id`]).
    pub target: u32,
    /// The path its flow entered by (`Verdict::path`).
    pub path: u32,
    /// The destination MAC the flow had where it entered the chain (put back if the chain
    /// ends in normal forwarding).
    pub mac: [u8; 6],
    /// `TUNNEL_*` bits.
    pub flags: u8,
    pub _pad: u8,
}

impl TunnelOption {
    /// [`TunnelOption::length`]: the words after the option's own 4-byte header.
    pub const WORDS: u8 = ((core::mem::size_of::<TunnelOption>() - 4) / 4) as u8;
}

/// The parts of a packet the member choice may hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct HashInput {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub proto: u8,
    /// VLAN id of the outermost tag (0: untagged): the same 5-tuple in two VLANs is two flows.
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    // murmur3 finalizer: cheap, and every input bit reaches every output bit.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
fn step(h: u32, w: u32) -> u32 {
    fmix(h ^ w).wrapping_add(0x9e37_79b9)
}

#[inline(always)]
fn endpoint(addr: &[u32; 4], port: u16) -> u32 {
    let mut h = step(0x5fc0_0001, addr[0]);
    h = step(h, addr[1]);
    h = step(h, addr[2]);
    h = step(h, addr[3]);
    step(h, port as u32)
}

#[inline(always)]
fn mac_word(mac: &[u8; 6]) -> (u32, u32) {
    (
        u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
        u32::from_ne_bytes([mac[4], mac[5], 0, 0]),
    )
}

/// The flow hash that picks a group member. The same function runs in the datapath and in the
/// agent's tests. With `fields == 0` it is the symmetric 5-tuple: both directions of a
/// connection hash the same.
#[inline(always)]
pub fn flow_hash(input: &HashInput, fields: u8) -> u32 {
    if fields == 0 {
        let a = endpoint(&input.src, input.sport);
        let b = endpoint(&input.dst, input.dport);
        return fmix(a.wrapping_add(b) ^ (input.proto as u32) ^ ((input.vlan as u32) << 8));
    }
    let mut h = step(0x5fc0_0002u32, input.vlan as u32);
    if fields & lb::ETH_SRC != 0 {
        let (x, y) = mac_word(&input.eth_src);
        h = step(step(h, x), y);
    }
    if fields & lb::ETH_DST != 0 {
        let (x, y) = mac_word(&input.eth_dst);
        h = step(step(h, x), y);
    }
    if fields & lb::IP_SRC != 0 {
        h = step(h, endpoint(&input.src, 0));
    }
    if fields & lb::IP_DST != 0 {
        h = step(h, endpoint(&input.dst, 0));
    }
    let tcp = input.proto == PROTO_TCP;
    let udp = input.proto == PROTO_UDP;
    if (tcp && fields & lb::TCP_SRC != 0) || (udp && fields & lb::UDP_SRC != 0) {
        h = step(h, input.sport as u32);
    }
    if (tcp && fields & lb::TCP_DST != 0) || (udp && fields & lb::UDP_DST != 0) {
        h = step(h, 0x1_0000 | input.dport as u32);
    }
    fmix(h)
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, and have no padding bytes.
    unsafe impl aya::Pod for ClassKey {}
    unsafe impl aya::Pod for ClassKey4 {}
    unsafe impl aya::Pod for TupleMask {}
    unsafe impl aya::Pod for SourcePorts {}
    unsafe impl aya::Pod for ClassEntry {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for PortValue {}
    unsafe impl aya::Pod for Verdict {}
    unsafe impl aya::Pod for Member {}
    unsafe impl aya::Pod for RingEntry {}
    unsafe impl aya::Pod for PinKey {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for MemberCounter {}
    unsafe impl aya::Pod for DecisionKey {}
    unsafe impl aya::Pod for Decision {}
    unsafe impl aya::Pod for TraceFilter {}
    unsafe impl aya::Pod for TraceEvent {}
    unsafe impl aya::Pod for FlowTuple {}
    unsafe impl aya::Pod for FlowTuple4 {}
    unsafe impl aya::Pod for DecisionKey4 {}
    unsafe impl aya::Pod for MemberKey {}
    unsafe impl aya::Pod for FragmentKey {}
    unsafe impl aya::Pod for FragmentState {}
    unsafe impl aya::Pod for RemoteKey {}
    unsafe impl aya::Pod for TunnelPeer {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<ClassKey>(), 4 + 4 + 4 + 4 + 32);
        assert_eq!(size_of::<ClassKey4>(), 4 + 4 + 4 + 4 + 8);
        assert_eq!(size_of::<TupleMask>(), 8 + 32);
        assert_eq!(size_of::<SourcePorts>(), 4 + 44);
        assert_eq!(size_of::<ClassEntry>(), 48 + 8);
        assert_eq!(size_of::<PortKey>(), 8);
        assert_eq!(size_of::<PortValue>(), 12 + 40 * MAX_TUPLES);
        assert_eq!(size_of::<MemberCounter>(), 32);
        assert_eq!(size_of::<DecisionKey>(), 44);
        assert_eq!(size_of::<Decision>(), 80);
        assert_eq!(size_of::<Verdict>(), 44);
        assert_eq!(size_of::<Member>(), 12);
        assert_eq!(size_of::<RingEntry>(), 24);
        assert_eq!(size_of::<PinKey>(), 8);
        assert_eq!(size_of::<FlowState>(), 24 + 4 * FLOW_PIN_HOPS + 80);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<TraceFilter>(), 12 + 32);
        assert_eq!(size_of::<TraceEvent>(), 40 + 32);
        assert_eq!(size_of::<FlowTuple>(), 40);
        assert_eq!(size_of::<FlowTuple4>(), 16);
        assert_eq!(size_of::<DecisionKey4>(), 20);
        assert_eq!(size_of::<MemberKey>(), 8);
        assert_eq!(size_of::<FragmentKey>(), 12 + 32);
        assert_eq!(size_of::<FragmentState>(), 24);
        assert_eq!(size_of::<RemoteKey>(), 8);
        assert_eq!(size_of::<TunnelPeer>(), 20);
        assert_eq!(size_of::<TunnelOption>(), 28);
    }

    /// Every field's offset and size of every map key and value, folded into one number.
    fn layout_fingerprint() -> u64 {
        use core::mem::offset_of;
        macro_rules! fields {
            ($t:ty: $($f:ident),+) => {
                [size_of::<$t>() as u64, $(offset_of!($t, $f) as u64),+]
            };
        }
        let layouts: [&[u64]; 28] = [
            &fields!(ClassKey: gen, tuple, family, proto, domain, path, dport, src, dst),
            &fields!(ClassKey4: gen, tuple, proto, domain, path, dport, src, dst),
            &fields!(TupleMask: family, proto, uses_ports, dport, src, dst),
            &fields!(SourcePorts: lo, hi, verdict),
            &fields!(ClassEntry: only, first, ranges),
            &fields!(PortKey: ifindex, gen),
            &fields!(PortValue: domain, n_tuples, flags, slot, reverse_slot, tuples),
            &fields!(Verdict: chain_id, hop, action, slot, group, counter, deliver_ifindex,
                deliver_mac, lb_fields, flags, tap_ifindex, tap_mac, tap_slot, path),
            &fields!(Member: ifindex, mac, slot),
            &fields!(RingEntry: ingress, egress),
            &fields!(MemberKey: slot, ifindex),
            &fields!(PinKey: group, hash),
            &fields!(FlowState: mac, gen, seen_twice, path, inflight, first_members, entry),
            &fields!(DecisionKey: ifindex, tuple),
            &fields!(DecisionKey4: ifindex, tuple),
            &fields!(Decision: epoch, verdict, member, arrival_slot, entry_port, pinned, pin_hash,
                pin_member, ifindex),
            &fields!(MemberCounter: into_packets, into_bytes, from_packets, from_bytes),
            &fields!(Counter: packets, bytes),
            &fields!(TraceFilter: enabled, family, proto, fields, sport, dport, id, src, dst),
            &fields!(TraceEvent: ts_ns, id, ifindex, target_ifindex, chain_id, hop, outcome,
                flags, gen, family, proto, sport, dport, mac, tapped, src, dst),
            &fields!(FlowTuple: family, proto, vlan, sport, dport, src, dst),
            &fields!(FlowTuple4: src, dst, sport, dport, proto, vlan),
            &fields!(FragmentKey: family, proto, vlan, id, ifindex, src, dst),
            &fields!(FragmentState: sport, dport, total, seen, first_ns),
            &fields!(RemoteKey: gen, id),
            &fields!(TunnelPeer: family, addr),
            &fields!(ProbePayload: token, seq),
            &fields!(TunnelOption: class, kind, length, service, revision, target, path, mac,
                flags),
        ];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for word in layouts.iter().flat_map(|l| l.iter()).chain(&[
            MAX_TUPLES as u64,
            RING_SIZE as u64,
            SLOTS_PER_GEN as u64,
            COUNTERS_PER_GEN as u64,
            SOURCE_PORTS_PER_GEN as u64,
            MEMBER_SLOTS as u64,
            stat::COUNT as u64,
            CONFIG_ENTRIES as u64,
        ]) {
            h = (h ^ word).wrapping_mul(0x100_0000_01b3);
        }
        h
    }

    /// A layout change must come with a new ABI version (new map names), or a new daemon
    /// would read the pinned maps of an old one with the wrong layout. Changed a layout? Bump
    /// `abi_version!` and write the new pair here.
    #[test]
    fn layout_fingerprint_matches_the_abi_version() {
        assert_eq!(
            (ABI_VERSION, layout_fingerprint()),
            (12, 1344415267123512491),
            "the map layouts changed: bump abi_version! in sfc-common and record the new pair"
        );
    }

    #[test]
    fn default_hash_is_symmetric_and_spreads() {
        let fwd = HashInput {
            proto: PROTO_TCP,
            sport: 40000,
            dport: 80,
            src: [0x0a00_0001, 0, 0, 0],
            dst: [0x0a00_0002, 0, 0, 0],
            ..Default::default()
        };
        let rev = HashInput {
            sport: fwd.dport,
            dport: fwd.sport,
            src: fwd.dst,
            dst: fwd.src,
            ..fwd
        };
        assert_eq!(flow_hash(&fwd, 0), flow_hash(&rev, 0));
        let other = HashInput {
            sport: 40001,
            ..fwd
        };
        assert_ne!(flow_hash(&fwd, 0), flow_hash(&other, 0));
        // Directional fields are not symmetric.
        assert_ne!(
            flow_hash(&fwd, lb::IP_SRC | lb::TCP_SRC),
            flow_hash(&rev, lb::IP_SRC | lb::TCP_SRC)
        );
    }
}
