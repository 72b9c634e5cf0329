//! Hops between nodes, in Geneve (RFC 8926) over UDP 6081, over an IPv4 or an IPv6 underlay
//! (all nodes of a cluster on one family). A packet whose next member
//! (or chain end) is on another node gets the outer headers pushed in front of it here
//! (`bpf_skb_adjust_room`, marked as a UDP tunnel so that segmentation offload still works),
//! with one option ([`TunnelOption`]) saying where it goes and by which revision it is
//! steered, and is sent out of this node's underlay interface, the kernel filling in the
//! next hop's MAC (`bpf_redirect_neigh`). No tunnel device is needed: every kernel with TC
//! BPF can do this, and a packet takes no extra device hop.
//!
//! On the receiving node, `sfc_tunnel` on the underlay interface's ingress takes Geneve
//! addressed to this node from a registered node only, strips the outer headers and sends the
//! packet on into that member or chain end without classifying it again; past the member, the
//! node steers it as any other, by the revision it carried. Everything else on the underlay
//! passes untouched.
//!
//! A copy for a tap SF on another node cannot be encapsulated where it is made: the original
//! goes on from there, and a clone is sent as it is. So the clone goes round once, into this
//! node's underlay interface's ingress, marked, with where it goes in place of its
//! destination MAC ([`copy_to_node`]); `sfc_tunnel` there sends it on in Geneve
//! ([`send_copy`]). A packet from the wire never carries a mark.

use core::mem::size_of;

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, xdp_action, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
    },
    helpers::{
        bpf_redirect_neigh, bpf_skb_change_proto, bpf_skb_change_tail, bpf_skb_vlan_pop,
        bpf_skb_vlan_push, bpf_xdp_adjust_head, bpf_xdp_adjust_meta,
    },
    programs::{TcContext, XdpContext},
};
use sfc_common::{
    action, stat, Decision, FlowState, Member, RemoteKey, TunnelOption, TunnelPeer, Verdict,
    CONFIG_EPOCH, CONFIG_REVISION, CONFIG_TUNNEL_ADDRESS, CONFIG_TUNNEL_ADDRESS6,
    CONFIG_TUNNEL_IFINDEX, CONFIG_TUNNEL_USABLE_MTU, FAMILY_V4, FAMILY_V6, FLAG_ENTRY,
    FLAG_REVERSE, FLAG_TAP_COPY, GENEVE_OPT_CLASS, GENEVE_OPT_TYPE, GENEVE_PORT, MAX_HOPS,
    PROTO_UDP, REMOTE, SERVICE_INDEX_START, SLOT_PEER, TUNNEL_DELIVER, TUNNEL_OVERHEAD,
    TUNNEL_OVERHEAD_V6, TUNNEL_REVERSE, TUNNEL_TAP,
};

use crate::{
    count, count_member, emit, flow_of,
    frame::Frame,
    live,
    parse::{parse, Packet, LATER_FRAGMENT},
    redirect, trace_filter, CONFIG, LANDING, REMOTES, SCRATCH, TUNNEL_PEERS,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_IP_U16: u16 = 0x0800;
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const ETH_P_IPV6_U16: u16 = 0x86dd;
const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];
const VLAN_HLEN: usize = 4;
/// Geneve's protocol type for an Ethernet frame inside.
const ETH_P_TEB: u16 = 0x6558;
const TUNNEL_TTL: u8 = 64;
/// IPv4's "don't fragment": what does not fit is dropped, never sent in fragments that the
/// receiving node's TC would see one by one.
const IP_DF: u16 = 0x4000;

/// What follows the outer IP header, over either family, in wire order: UDP, Geneve, our
/// option, and the packet's own Ethernet header again (the inner one).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GeneveHeaders {
    udp_sport: u16,
    udp_dport: u16,
    udp_len: u16,
    udp_check: u16,
    /// Version (2 bits, 0) and options length in 4-byte words.
    geneve_version_options: u8,
    /// O and C bits: C, as our option is critical.
    geneve_flags: u8,
    geneve_protocol: u16,
    /// VNI in the high 24 bits.
    geneve_vni: u32,
    option: TunnelOption,
    /// The inner Ethernet header; of a tagged frame, with the tag's TPID as its type, and
    /// `tag_rest` after it on the wire.
    inner_eth: [u8; ETH_HLEN],
    /// A tagged frame's TCI and inner type.
    tag_rest: [u8; VLAN_HLEN],
    _pad: [u8; 2],
}

/// Bytes of [`GeneveHeaders`] on the wire.
const GENEVE_LEN: usize = 8 + 8 + size_of::<TunnelOption>() + ETH_HLEN;

/// Everything pushed between a packet's Ethernet header (which becomes the outer one) and its
/// IP header over an IPv4 underlay: outer IPv4, then [`GeneveHeaders`]. `ENCAP_LEN` bytes of
/// it are on the wire.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Encapsulation {
    ip_version_ihl: u8,
    ip_tos: u8,
    ip_len: u16,
    ip_id: u16,
    ip_frag: u16,
    ip_ttl: u8,
    ip_proto: u8,
    ip_check: u16,
    ip_src: u32,
    ip_dst: u32,
    geneve: GeneveHeaders,
}

/// The same over an IPv6 underlay: outer IPv6, then [`GeneveHeaders`]; `ENCAP6_LEN` bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Encapsulation6 {
    /// Version 6, traffic class 0, and the flow's entropy as the flow label (RFC 6438).
    ip6_version_flow: u32,
    ip6_payload_len: u16,
    ip6_next: u8,
    ip6_hop_limit: u8,
    ip6_src: [u32; 4],
    ip6_dst: [u32; 4],
    geneve: GeneveHeaders,
}

/// The outer headers of a packet for another node, of the underlay's family.
pub enum Headers<'a> {
    V4(&'a Encapsulation),
    V6(&'a Encapsulation6),
}

pub const ENCAP_LEN: usize = TUNNEL_OVERHEAD as usize;
pub const ENCAP6_LEN: usize = TUNNEL_OVERHEAD_V6 as usize;
const _: () = assert!(ENCAP_LEN == 20 + GENEVE_LEN && ENCAP6_LEN == 40 + GENEVE_LEN);
const _: () = assert!(size_of::<GeneveHeaders>() == GENEVE_LEN + VLAN_HLEN + 2);
const GENEVE_CRITICAL: u8 = 0x40;

/// The revision of the state generation `gen` steers.
#[inline(always)]
fn revision(gen: u32) -> u32 {
    CONFIG
        .get(CONFIG_REVISION + gen)
        .map(|r| *r as u32)
        .unwrap_or(0)
}

/// The node a remote member side or chain end (`id`, with `REMOTE`) of generation `gen` is
/// on, while that node is alive.
#[inline(always)]
pub fn node_of(gen: u32, id: u32) -> Option<&'static TunnelPeer> {
    unsafe { REMOTES.get(&RemoteKey { gen, id }) }
}

/// The service index of a packet sent on `verdict` (RFC 8300: one less at every hop). Going
/// forward it is 255 minus the hops crossed; in reverse, hops are numbered as going forward
/// (counting down), so the index counts down from 255 minus `MAX_HOPS` less one.
#[inline(always)]
fn service_index(verdict: &Verdict) -> u8 {
    let crossed = if verdict.flags & FLAG_REVERSE == 0 {
        verdict.hop as u32
    } else if verdict.action == action::STEER {
        MAX_HOPS as u32 - 1 - verdict.hop as u32
    } else {
        MAX_HOPS as u32
    };
    SERVICE_INDEX_START - crossed.min(MAX_HOPS as u32) as u8
}

/// The outer UDP source port: entropy for the underlay's ECMP (RFC 8926), the same for every
/// packet of a flow, among the dynamic ports. (Folded from the 5-tuple in place: the stack
/// has no room for the member choice's hash input here.)
#[inline(always)]
fn entropy(pkt: &Packet) -> u16 {
    let mut h = pkt.src[0] ^ pkt.src[1] ^ pkt.src[2] ^ pkt.src[3];
    h = h.wrapping_mul(0x9e37_79b1) ^ pkt.dst[0] ^ pkt.dst[1] ^ pkt.dst[2] ^ pkt.dst[3];
    h = h.wrapping_mul(0x85eb_ca6b) ^ (((pkt.sport as u32) << 16) | pkt.dport as u32);
    h = h.wrapping_mul(0xc2b2_ae35) ^ pkt.proto as u32;
    h ^= h >> 16;
    0xc000 | (h as u16 & 0x3fff)
}

/// The IPv4 header checksum of `e`'s outer header.
#[inline(always)]
fn ip_checksum(e: &Encapsulation) -> u16 {
    // SAFETY: the first 20 bytes of a repr(C) struct of integers.
    let words = unsafe { &*(e as *const Encapsulation as *const [u16; 10]) };
    let mut sum: u32 = 0;
    for w in words {
        sum += *w as u32;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The mark of a tap copy on its way round ([`copy_to_node`]): these 22 bits, then the
/// generation (bit 9), the reverse direction (bit 8), whether the packet it copies is steered
/// into a member (bit 7, else it ends its chain) and the hop (bits 0-5) of that packet.
const COPY_MARK: u32 = 0x5fc0_b400;
const COPY_MARK_MASK: u32 = 0xffff_fc00;
const COPY_GEN: u32 = 1 << 9;
const COPY_REVERSE: u32 = 1 << 8;
const COPY_STEER: u32 = 1 << 7;
const COPY_HOP: u32 = 0x3f;
const _: () = assert!(MAX_HOPS as u32 <= COPY_HOP);

/// Sends a copy of the packet to the tap SF of `verdict` (of generation `gen`), which is on
/// another node: into this node's underlay interface's ingress, where [`send_copy`] sends it
/// on. The copy's destination MAC (put back for the original by the caller) carries the tap
/// (4 bytes) and the chain id, its mark the rest of what the Geneve option needs. Whether
/// the copy was made.
#[inline(always)]
pub fn copy_to_node<C: Frame>(ctx: &C, gen: u32, verdict: &Verdict) -> bool {
    let device = CONFIG.get(CONFIG_TUNNEL_IFINDEX).copied().unwrap_or(0) as u32;
    if device == 0 || node_of(gen, verdict.tap_ifindex).is_none() {
        return false;
    }
    let (t, c) = (
        verdict.tap_ifindex.to_be_bytes(),
        verdict.chain_id.to_be_bytes(),
    );
    let mark = COPY_MARK
        | (if gen != 0 { COPY_GEN } else { 0 })
        | (if verdict.flags & FLAG_REVERSE != 0 {
            COPY_REVERSE
        } else {
            0
        })
        | (if verdict.action == action::STEER {
            COPY_STEER
        } else {
            0
        })
        | (verdict.hop as u32 & COPY_HOP);
    ctx.set_destination_mac(&[t[0], t[1], t[2], t[3], c[0], c[1]])
        .is_ok()
        && ctx.clone_marked_into_ingress(device, mark)
}

/// A tap copy back from its way round ([`copy_to_node`]), marked `mark`: sent to the tap's
/// node in Geneve, as the packet it copies would be sent on from here (its service path and
/// index), flagged `TUNNEL_TAP`. Whatever happens, it goes no further on this node.
#[inline(never)]
fn send_copy(ctx: &TcContext, mark: u32) -> i32 {
    unsafe { (*ctx.skb.skb).mark = 0 };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return TcContext::DROP;
    };
    let Ok(to) = ctx.load::<[u8; 6]>(0) else {
        count(stat::TAP_FAILED);
        return TcContext::DROP;
    };
    let target = u32::from_be_bytes([to[0], to[1], to[2], to[3]]);
    let (pkt, decision) = unsafe { (&mut (*scratch).pkt, &mut (*scratch).decision) };
    if target & REMOTE == 0 || parse(ctx, pkt).is_err() {
        count(stat::TAP_FAILED);
        return TcContext::DROP;
    }
    decision.member = Member {
        ifindex: target,
        ..Member::default()
    };
    decision.verdict = Verdict {
        chain_id: u16::from_be_bytes([to[4], to[5]]),
        hop: (mark & COPY_HOP) as u8,
        action: if mark & COPY_STEER != 0 {
            action::STEER
        } else {
            action::DELIVER
        },
        flags: FLAG_TAP_COPY
            | if mark & COPY_REVERSE != 0 {
                FLAG_REVERSE
            } else {
                0
            },
        deliver_ifindex: target,
        ..Verdict::default()
    };
    let gen = (mark & COPY_GEN != 0) as u32;
    match send(ctx, decision, core::ptr::null_mut(), gen) {
        // Not answered: the original went on; the copy cannot cross whole.
        TOO_BIG => {
            count(stat::TAP_FAILED);
            TcContext::DROP
        }
        verdict => verdict,
    }
}

/// [`send`]'s answer for a packet that does not fit the underlay once encapsulated (counted):
/// the caller answers it (`Frame::too_big`), with a stack frame to spare.
pub const TOO_BIG: i32 = i32::MIN + 1;

/// Sends the packet (the one parsed into the scratch space) to the node of its member side or
/// chain end, as `decision` (of generation `gen`) says. `flow` is the flow's state here, or
/// null (the entry's destination MAC and path travel with the packet). A function of its own:
/// the stack of `act`, where this is decided, has no room left for it.
#[inline(never)]
pub fn send<C: Frame>(ctx: &C, decision: *const Decision, flow: *mut FlowState, gen: u32) -> i32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return C::DROP;
    };
    let pkt = unsafe { &(*scratch).pkt };
    let decision = unsafe { &*decision };
    let verdict = &decision.verdict;
    let deliver = verdict.action != action::STEER;
    let target = if deliver {
        verdict.deliver_ifindex
    } else {
        decision.member.ifindex
    };
    let Some(peer) = node_of(gen, target) else {
        count(stat::TARGET_DOWN);
        return C::DROP;
    };
    let flow = (!flow.is_null()).then_some(flow);
    let device = CONFIG.get(CONFIG_TUNNEL_IFINDEX).copied().unwrap_or(0) as u32;
    // (Values here are read again where they are used rather than kept: this function's
    // stack is at the limit.)
    let family = own_address().family;
    // A node is reached over the underlay's family only: a cluster's nodes share one.
    if device == 0 || family == 0 || peer.family != family {
        count(stat::TARGET_DOWN);
        return C::DROP;
    }
    // The tag the kernel took out of the frame travels in the inner Ethernet header, 4 bytes
    // more; a tag still in the frame (a second one, QinQ) is in the packet's length already.
    let tag_len = if ctx.vlan_tag().is_some() {
        VLAN_HLEN
    } else {
        0
    };
    let usable = CONFIG.get(CONFIG_TUNNEL_USABLE_MTU).copied().unwrap_or(0) as u32;
    // Where the flow entered, this packet says it all; further on, its flow's state does.
    let entry = verdict.flags & FLAG_ENTRY != 0;
    if !ctx.fits(usable.saturating_sub(tag_len as u32)) {
        unsafe {
            (*scratch).answer.at_entry = entry;
            (*scratch).answer.leaving = deliver;
        }
        return TOO_BIG;
    }
    let reverse = verdict.flags & FLAG_REVERSE != 0;
    let spi = ((verdict.chain_id as u32) << 1) | reverse as u32;
    let flow = if entry {
        None
    } else {
        flow.or_else(|| flow_of(pkt))
    };
    let (mac, path) = match flow {
        Some(f) => unsafe { ((*f).mac, (*f).path) },
        None if entry => (pkt.eth_dst, verdict.path),
        None => (pkt.eth_dst, 0),
    };
    let udp_len = (GENEVE_LEN + tag_len + ctx.len() as usize - ETH_HLEN) as u16;
    let sport = entropy(pkt);
    // Built in the per-CPU scratch space: too big for the stack beside the caller's.
    let v6 = family == FAMILY_V6;
    let g = unsafe {
        if v6 {
            &mut (*scratch).encap6.geneve
        } else {
            &mut (*scratch).encap.geneve
        }
    };
    g.udp_sport = sport.to_be();
    g.udp_dport = GENEVE_PORT.to_be();
    g.udp_len = udp_len.to_be();
    // Optional over IPv4; over IPv6 left out as RFC 6935 allows for tunnels (the receiving
    // node's program checks the headers, the inner packet has its own checksums).
    g.udp_check = 0;
    g.geneve_version_options = (size_of::<TunnelOption>() / 4) as u8;
    g.geneve_flags = GENEVE_CRITICAL;
    g.geneve_protocol = ETH_P_TEB.to_be();
    g.geneve_vni = (spi << 8).to_be();
    let o = &mut g.option;
    o.class = GENEVE_OPT_CLASS.to_be();
    o.kind = GENEVE_OPT_TYPE;
    o.length = TunnelOption::WORDS;
    o.service = ((spi << 8) | service_index(verdict) as u32).to_be();
    o.revision = revision(gen).to_be();
    o.target = target.to_be();
    o.path = path.to_be();
    o.mac = mac;
    o.flags = option_flags(verdict);
    o._pad = 0;
    g.inner_eth[..6].copy_from_slice(&pkt.eth_dst);
    g.inner_eth[6..12].copy_from_slice(&pkt.eth_src);
    // What follows the inner Ethernet header and the tag the kernel took out: the frame's own
    // type (of a tag still in the frame, the second of two, which stays where it is).
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        count(stat::REDIRECT_FAILED);
        return C::DROP;
    }
    // SAFETY: the verifier-checked bound above covers the Ethernet header.
    let next = unsafe { *((start + 12) as *const [u8; 2]) };
    // Tagged: the tag's TPID here, its TCI and the next type after it.
    match ctx.vlan_tag() {
        Some(t) => {
            g.inner_eth[12..].copy_from_slice(&[t[0], t[1]]);
            g.tag_rest = [t[2], t[3], next[0], next[1]];
        }
        None => g.inner_eth[12..].copy_from_slice(&next),
    }
    let headers = if v6 {
        let e = unsafe { &mut (*scratch).encap6 };
        e.ip6_version_flow = (0x6000_0000 | sport as u32).to_be();
        e.ip6_payload_len = udp_len.to_be();
        e.ip6_next = PROTO_UDP;
        e.ip6_hop_limit = TUNNEL_TTL;
        e.ip6_src = own_address().addr;
        e.ip6_dst = peer.addr;
        Headers::V6(e)
    } else {
        let e = unsafe { &mut (*scratch).encap };
        e.ip_version_ihl = 0x45;
        e.ip_tos = 0;
        e.ip_len = (20 + udp_len).to_be();
        e.ip_id = 0;
        e.ip_frag = IP_DF.to_be();
        e.ip_ttl = TUNNEL_TTL;
        e.ip_proto = PROTO_UDP;
        e.ip_check = 0;
        e.ip_src = own_address().addr[0];
        e.ip_dst = peer.addr[0];
        e.ip_check = ip_checksum(e);
        Headers::V4(e)
    };
    if !ctx.encapsulate(headers, pkt.family == FAMILY_V4, tag_len != 0) {
        count(stat::REDIRECT_FAILED);
        return C::DROP;
    }
    let shown = Member {
        ifindex: target,
        ..Member::default()
    };
    // (Worked out here, not kept from above: this function's stack is at the limit.)
    let outcome = if verdict.flags & FLAG_TAP_COPY != 0 {
        stat::TAPPED
    } else if verdict.action != action::STEER {
        stat::DELIVERED
    } else {
        stat::STEERED
    };
    emit(ctx, pkt, gen, Some(verdict), outcome, Some(&shown));
    let verdict = ctx.redirect_neigh(device);
    if verdict == C::REDIRECTED {
        count(outcome);
        count(stat::TUNNEL_SENT);
    } else {
        count(stat::REDIRECT_FAILED);
    }
    verdict
}

/// The `TUNNEL_*` flags of a packet sent on `verdict`.
#[inline(always)]
fn option_flags(verdict: &Verdict) -> u8 {
    let kind = if verdict.flags & FLAG_TAP_COPY != 0 {
        TUNNEL_TAP
    } else if verdict.action != action::STEER {
        TUNNEL_DELIVER
    } else {
        0
    };
    kind | if verdict.flags & FLAG_REVERSE != 0 {
        TUNNEL_REVERSE
    } else {
        0
    }
}

/// This node's tunnel address, of the underlay's family (family 0: no underlay).
#[inline(always)]
fn own_address() -> TunnelPeer {
    let word = |i: u32| CONFIG.get(i).copied().unwrap_or(0);
    let v4 = word(CONFIG_TUNNEL_ADDRESS) as u32;
    if v4 != 0 {
        return TunnelPeer {
            family: FAMILY_V4,
            addr: [v4, 0, 0, 0],
            ..TunnelPeer::default()
        };
    }
    let (high, low) = (
        word(CONFIG_TUNNEL_ADDRESS6),
        word(CONFIG_TUNNEL_ADDRESS6 + 1),
    );
    if high == 0 && low == 0 {
        return TunnelPeer::default();
    }
    let (h, l) = (high.to_ne_bytes(), low.to_ne_bytes());
    TunnelPeer {
        family: FAMILY_V6,
        addr: [
            u32::from_ne_bytes([h[0], h[1], h[2], h[3]]),
            u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
            u32::from_ne_bytes([l[0], l[1], l[2], l[3]]),
            u32::from_ne_bytes([l[4], l[5], l[6], l[7]]),
        ],
        ..TunnelPeer::default()
    }
}

/// Pushes `headers` in front of an skb's IP header, its Ethernet header becoming the outer
/// one, and marks the skb as a UDP tunnel packet, so that segmentation offload cuts it into
/// packets that each carry the outer headers. The kernel does not nest tunnel marks: a packet
/// that came out of a tunnel before (on this node's underlay, or an SF's veth) keeps its
/// mark, and is pushed into unmarked, which is all it needs unless it is a segmentation
/// offload packet (then it is refused).
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, headers: Headers<'_>, inner_v4: bool, tagged: bool) -> bool {
    // Read once, as a value: the verifier allows context reads only at fixed offsets, not
    // through a pointer kept across the helper calls below.
    let skb = ctx.skb.skb;
    let gso = unsafe { core::ptr::read_volatile(&raw const (*skb).gso_size) } != 0;
    let inner_type = if inner_v4 { ETH_P_IP } else { ETH_P_IPV6 };
    let start = ctx.data();
    if start + ETH_HLEN + VLAN_HLEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the verifier-checked bound above covers the Ethernet header and 4 bytes more.
    let eth = unsafe { &*(start as *const [u8; ETH_HLEN + VLAN_HLEN]) };
    // A tag left in the frame (the second of two, QinQ) goes inside too, after the first,
    // and must be the last one: its TCI and the IP type are kept here.
    let in_frame = eth[12..14] == ETH_P_8021Q || eth[12..14] == ETH_P_8021AD;
    let second = [eth[14], eth[15], eth[16], eth[17]];
    let carried = if in_frame {
        tagged && eth[16..18] == inner_type
    } else {
        eth[12..14] == inner_type
    };
    if !carried {
        return false;
    }
    // The tag leaves the skb's metadata (or the kernel would put it on the outer frame). The
    // kernel then moves a tag left in the frame into the metadata: it leaves it as well.
    let pops = tagged as u32 + in_frame as u32;
    for _ in 0..pops {
        if unsafe { bpf_skb_vlan_pop(skb) } != 0 {
            return false;
        }
    }
    let (headers_len, outer_l3, outer_type) = match headers {
        Headers::V4(_) => (ENCAP_LEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, ETH_P_IP),
        Headers::V6(_) => (ENCAP6_LEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, ETH_P_IPV6),
    };
    let tag_len = pops as usize * VLAN_HLEN;
    let len = headers_len + tag_len;
    let marked = (outer_l3 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        // The inner Ethernet header's length (with its tags), in the top byte
        // (BPF_F_ADJ_ROOM_ENCAP_L2): where segmentation offload finds the inner IP header.
        | (((ETH_HLEN + tag_len) as u64) << 56);
    let outer_v4 = outer_type == ETH_P_IP;
    let pushed = ctx
        .adjust_room(len as i32, BPF_ADJ_ROOM_MAC, marked)
        .is_ok()
        || (!gso && push_unmarked(ctx, len as i32, inner_v4, outer_v4));
    if !pushed {
        return false;
    }
    let (stored, tag_rest) = match headers {
        Headers::V4(e) => {
            let bytes = unsafe { &*(e as *const Encapsulation as *const [u8; ENCAP_LEN]) };
            (ctx.store(ETH_HLEN, bytes, 0).is_ok(), &e.geneve.tag_rest)
        }
        Headers::V6(e) => {
            let bytes = unsafe { &*(e as *const Encapsulation6 as *const [u8; ENCAP6_LEN]) };
            (ctx.store(ETH_HLEN, bytes, 0).is_ok(), &e.geneve.tag_rest)
        }
    };
    // A tag's TCI and the next type follow the TPID that ends `headers` on the wire; a second
    // tag's TCI and the IP type after that.
    let at = ETH_HLEN + headers_len;
    stored
        && (!tagged || ctx.store(at, tag_rest, 0).is_ok())
        && (!in_frame || ctx.store(at + VLAN_HLEN, &second, 0).is_ok())
        && ctx.store(12, &outer_type, 0).is_ok()
}

/// The room for `len` bytes of outer headers without the tunnel mark. The skb's protocol must
/// become the outer family's all the same (the kernel routes and resolves the next hop by
/// it); only the mark's flags change it, so where the families differ, the protocol change
/// makes up the 20 bytes between an IPv4 and an IPv6 header.
#[inline(always)]
fn push_unmarked(ctx: &TcContext, len: i32, inner_v4: bool, outer_v4: bool) -> bool {
    const V6_OVER_V4: i32 = 40 - 20;
    let (room, protocol) = match (inner_v4, outer_v4) {
        (false, true) => (len + V6_OVER_V4, ETH_P_IP_U16),
        (true, false) => (len - V6_OVER_V4, ETH_P_IPV6_U16),
        _ => (len, 0),
    };
    ctx.adjust_room(room, BPF_ADJ_ROOM_MAC, 0).is_ok()
        && (protocol == 0 || unsafe { bpf_skb_change_proto(ctx.skb.skb, protocol.to_be(), 0) } == 0)
}

/// Whether the packet still fits the underlay once encapsulated, `usable` being the largest
/// IP packet that does: a segmentation offload packet always does (its segments are cut
/// smaller to make room); 0: not known. What the frame carries past its IP packet is cut off
/// first ([`cut_to_ip_packet`]).
#[inline(always)]
pub fn fits(ctx: &TcContext, usable: u32) -> bool {
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    cut_to_ip_packet(ctx) && (gso || usable == 0 || TcContext::len(ctx) - ETH_HLEN as u32 <= usable)
}

/// Cuts what the frame carries past its IP packet: Ethernet padding, or the payload that a
/// fragment cut from a larger packet leaves to the fragments after it ([`crate::split`]).
/// Neither may cross the underlay (a fragment's would not fit). False if it cannot be cut.
#[inline(always)]
fn cut_to_ip_packet(ctx: &TcContext) -> bool {
    // The ethertype, then the IPv4 total length or the IPv6 payload length.
    let Ok(head) = ctx.load::<[u8; 8]>(12) else {
        return true; // too short to carry anything past an IP header
    };
    let ip_len = match [head[0], head[1]] {
        [0x08, 0x00] => u16::from_be_bytes([head[4], head[5]]) as u32,
        [0x86, 0xdd] => 40 + u16::from_be_bytes([head[6], head[7]]) as u32,
        _ => return true,
    };
    let end = ETH_HLEN as u32 + ip_len;
    end >= TcContext::len(ctx) || unsafe { bpf_skb_change_tail(ctx.skb.skb, end, 0) } == 0
}

/// Out of `ifindex`, its next hop's MAC filled in by the kernel's neighbour table.
#[inline(always)]
pub fn redirect_neigh(ifindex: u32) -> i32 {
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

#[inline(always)]
fn reject(reason: u32) -> i32 {
    count(reason);
    TcContext::DROP
}

/// The node a packet on the underlay comes from and the length of its outer IP header, if it
/// is Geneve addressed to this node: IPv4 without options or IPv6 without extension headers,
/// UDP to the Geneve port, to the tunnel address (`own`). Read straight from packet memory:
/// everything else on the underlay costs this and nothing more.
#[inline(always)]
fn addressed_here(start: usize, end: usize, own: &TunnelPeer) -> Option<(TunnelPeer, usize)> {
    if own.family == FAMILY_V4 {
        const HEAD: usize = ETH_HLEN + 20 + 4;
        if start + HEAD > end {
            return None;
        }
        // SAFETY: the verifier-checked bound above covers these HEAD bytes.
        let b = unsafe { &*(start as *const [u8; HEAD]) };
        let ours = b[12..14] == ETH_P_IP
            && b[14] == 0x45
            && b[23] == PROTO_UDP
            && u32::from_ne_bytes([b[30], b[31], b[32], b[33]]) == own.addr[0]
            && u16::from_be_bytes([b[36], b[37]]) == GENEVE_PORT;
        let from = [u32::from_ne_bytes([b[26], b[27], b[28], b[29]]), 0, 0, 0];
        return ours.then_some((peer(FAMILY_V4, from), 20));
    }
    const HEAD: usize = ETH_HLEN + 40 + 4;
    if own.family != FAMILY_V6 || start + HEAD > end {
        return None;
    }
    // SAFETY: the verifier-checked bound above covers these HEAD bytes.
    let b = unsafe { &*(start as *const [u8; HEAD]) };
    let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let ours = b[12..14] == ETH_P_IPV6
        && b[14] >> 4 == 6
        && b[20] == PROTO_UDP
        && [word(38), word(42), word(46), word(50)] == own.addr
        && u16::from_be_bytes([b[56], b[57]]) == GENEVE_PORT;
    let from = [word(22), word(26), word(30), word(34)];
    ours.then_some((peer(FAMILY_V6, from), 40))
}

#[inline(always)]
fn peer(family: u8, addr: [u32; 4]) -> TunnelPeer {
    TunnelPeer {
        family,
        addr,
        ..TunnelPeer::default()
    }
}

/// A packet on the underlay interface's ingress: a tap copy back from its way round
/// ([`copy_to_node`]) is sent to its node, anything else is for [`land`]. (Each of the two is
/// a function of its own: together, their stacks would not fit.)
#[inline(always)]
pub fn arrive(ctx: &TcContext) -> i32 {
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & COPY_MARK_MASK == COPY_MARK {
        return send_copy(ctx, mark);
    }
    land(ctx)
}

/// A packet on the underlay: Geneve from another node is checked (a registered node's, whole,
/// our option, an index that did not run out, a revision this node holds, a target it has),
/// stripped of its outer headers and sent on into its member or chain end; anything else
/// passes. A packet sent into a member leaves its flow's state here (revision, path, entry
/// MAC), so that when it comes back out of the SF it is steered on by that revision and path.
#[inline(never)]
fn land(ctx: &TcContext) -> i32 {
    if let Some(option) = stripped_early(ctx) {
        return go_on(ctx, &option, None);
    }
    let Some((from, outer)) = addressed_here(ctx.data(), ctx.data_end(), &own_address()) else {
        return TcContext::PASS;
    };
    // An IPv4 fragment's headers are not all there (an IPv6 one has a fragment header where
    // UDP is looked for, and passed above).
    let whole = outer == 40
        || ctx
            .load::<u16>(ETH_HLEN + 6)
            .is_ok_and(|frag| u16::from_be(frag) & 0x3fff == 0);
    let Ok(g) = ctx.load::<GeneveHeaders>(ETH_HLEN + outer) else {
        return reject(stat::TUNNEL_REJECTED_MALFORMED);
    };
    if unsafe { TUNNEL_PEERS.get(&from) }.is_none() {
        return reject(stat::TUNNEL_REJECTED_SOURCE);
    }
    let o = &g.option;
    // A tagged frame inside: its TCI and type follow the inner Ethernet header's TPID.
    let tpid = [g.inner_eth[12], g.inner_eth[13]];
    // (Plain values, not an Option: the verifier refuses the uninitialised payload of a
    // `None` that the compiler reads anyway.)
    let tagged = tpid == ETH_P_8021Q || tpid == ETH_P_8021AD;
    let mut rest = [0u8; VLAN_HLEN];
    if tagged {
        match ctx.load::<[u8; VLAN_HLEN]>(ETH_HLEN + outer + GENEVE_LEN) {
            Ok(r) => rest = r,
            Err(_) => return reject(stat::TUNNEL_REJECTED_MALFORMED),
        }
    }
    let inner_type = if tagged { [rest[2], rest[3]] } else { tpid };
    // A second tag (QinQ) follows in the frame, then the IP header.
    let second = tagged && (inner_type == ETH_P_8021Q || inner_type == ETH_P_8021AD);
    let mut ip_type = inner_type;
    if second {
        match ctx.load::<[u8; VLAN_HLEN]>(ETH_HLEN + outer + GENEVE_LEN + VLAN_HLEN) {
            Ok(t) => ip_type = [t[2], t[3]],
            Err(_) => return reject(stat::TUNNEL_REJECTED_MALFORMED),
        }
    }
    let inner_v4 = ip_type == ETH_P_IP;
    if !whole || !ours(&g) || !(inner_v4 || ip_type == ETH_P_IPV6) {
        return reject(stat::TUNNEL_REJECTED_MALFORMED);
    }
    let decap = Decap {
        outer,
        inner_eth: g.inner_eth,
        tagged,
        rest,
        inner_type,
        inner_v4,
        second,
    };
    go_on(ctx, o, Some(&decap))
}

/// What [`go_on`] strips from a packet `land` took whole: `outer` bytes of outer IP header,
/// then UDP, Geneve, the option and the inner Ethernet header (with its tag, `rest`), leaving
/// a frame of type `inner_type`: IPv4 (`inner_v4`) or IPv6, or a `second` tag before it.
struct Decap {
    outer: usize,
    inner_eth: [u8; ETH_HLEN],
    tagged: bool,
    rest: [u8; VLAN_HLEN],
    inner_type: [u8; 2],
    inner_v4: bool,
    second: bool,
}

/// Checks the option of a packet from a registered node (an index that did not run out, a
/// revision this node holds, a target it has), strips its outer headers (`decap`; none where
/// [`strip_early`] did) and sends it on into its member or chain end.
#[inline(always)]
fn go_on(ctx: &TcContext, o: &TunnelOption, decap: Option<&Decap>) -> i32 {
    let index = (u32::from_be(o.service) & 0xff) as u8;
    if SERVICE_INDEX_START - index > MAX_HOPS as u8 {
        return reject(stat::TUNNEL_REJECTED_INDEX);
    }
    let Some(epoch) = CONFIG.get(CONFIG_EPOCH) else {
        return TcContext::DROP;
    };
    let current = (*epoch & 1) as u32;
    let wanted = u32::from_be(o.revision);
    let gen = if revision(current) == wanted {
        current
    } else if revision(1 - current) == wanted {
        1 - current
    } else {
        return reject(stat::TUNNEL_REJECTED_REVISION);
    };
    let key = RemoteKey {
        gen,
        id: u32::from_be(o.target),
    };
    let Some(target) = (unsafe { LANDING.get(&key) }) else {
        return reject(stat::TUNNEL_REJECTED_TARGET);
    };
    let done = match decap {
        Some(d) => strip(ctx, d, &target.mac),
        // Stripped early: the frame is the inner one, its tag already in the skb's metadata.
        None => target.mac == [0; 6] || ctx.store(0, &target.mac, 0).is_ok(),
    };
    if !done {
        return reject(stat::TUNNEL_REJECTED_MALFORMED);
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return TcContext::DROP;
    };
    let pkt = unsafe { &mut (*scratch).pkt };
    if parse(ctx, pkt).is_err() {
        return reject(stat::TUNNEL_REJECTED_MALFORMED);
    }
    if !live(target.ifindex) {
        count(stat::TARGET_DOWN);
        emit(ctx, pkt, gen, None, stat::TARGET_DOWN, Some(target));
        return TcContext::DROP;
    }
    let deliver = o.flags & TUNNEL_DELIVER != 0;
    // (A later fragment's ports are not known here: its flow is the first fragment's. A tap's
    // copy goes nowhere after the tap.)
    if !deliver && o.flags & TUNNEL_TAP == 0 && pkt.fragment != LATER_FRAGMENT {
        remember_flow(pkt, gen, u32::from_be(o.path), o.mac);
    }
    if !deliver {
        count_member(target.slot, true, ctx.len());
    }
    if trace_filter().is_some() {
        // What the sender decided, as far as the packet tells, for the trace (built in the
        // scratch space: this program's stack is nearly full).
        let verdict = unsafe { &mut (*scratch).decision.verdict };
        *verdict = arrived(u32::from_be(o.service), o.flags);
        emit(
            ctx,
            pkt,
            gen,
            Some(verdict),
            stat::TUNNEL_RECEIVED,
            Some(target),
        );
    }
    // Not with a second tag through the peer shortcut, which skips `eth_type_trans`: the skb
    // would keep the IP protocol where its frame has a tag. Through the host side, the kernel
    // reads it from the frame.
    let peer = target.slot & SLOT_PEER != 0 && !decap.is_some_and(|d| d.second);
    redirect(ctx, target.ifindex, peer, stat::TUNNEL_RECEIVED)
}

/// Strips what `d` says from the packet, the inner Ethernet header taking `mac` as its
/// destination (unless zero) and its tag going back where the sending node's kernel had it:
/// into the skb's metadata.
#[inline(always)]
fn strip(ctx: &TcContext, d: &Decap, mac: &[u8; 6]) -> bool {
    let flags = if d.inner_v4 {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4
    } else {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6
    } as u64;
    let mut inner_eth = d.inner_eth;
    if *mac != [0; 6] {
        inner_eth[..6].copy_from_slice(mac);
    }
    inner_eth[12..].copy_from_slice(&d.inner_type);
    let tag_len = if d.tagged { VLAN_HLEN } else { 0 };
    let len = (d.outer + GENEVE_LEN + tag_len) as i32;
    if ctx.adjust_room(-len, BPF_ADJ_ROOM_MAC, flags).is_err()
        || ctx.store(0, &inner_eth, 0).is_err()
    {
        return false;
    }
    !d.tagged || {
        let tpid = u16::from_ne_bytes([d.inner_eth[12], d.inner_eth[13]]);
        let tci = u16::from_be_bytes([d.rest[0], d.rest[1]]);
        unsafe { bpf_skb_vlan_push(ctx.skb.skb, tpid, tci) == 0 }
    }
}

/// Whether these are our Geneve headers: no other options, an Ethernet frame inside, our
/// option.
#[inline(always)]
fn ours(g: &GeneveHeaders) -> bool {
    let o = &g.option;
    g.geneve_version_options == (size_of::<TunnelOption>() / 4) as u8
        && u16::from_be(g.geneve_protocol) == ETH_P_TEB
        && o.class == GENEVE_OPT_CLASS.to_be()
        && o.kind == GENEVE_OPT_TYPE
        && o.length & 0x1f == TunnelOption::WORDS
}

/// What [`strip_early`] leaves in front of a frame it stripped, in the XDP metadata that the
/// skb keeps: its [`seal`], then the packet's option. 32 bytes, the most XDP metadata holds.
/// GRO merges only packets with the same metadata, so only segments that go the same way.
#[repr(C)]
#[derive(Clone, Copy)]
struct EarlyMeta {
    seal: [u8; 4],
    option: TunnelOption,
}
const _: () = assert!(size_of::<EarlyMeta>() == 32);

/// Bytes of an untagged frame that [`seal`] reads: Ethernet, then the first 10 of IP.
const SEALED: usize = ETH_HLEN + 10;

/// What binds the metadata to this pass of the frame (`f`, untagged): a mark, then the inner
/// IP header's TTL (hop limit) and protocol, the same for every segment of a flow. A packet
/// that kept the metadata past an SF, which routed it (one TTL less), no longer matches;
/// `None`: not IP.
#[inline(always)]
fn seal(f: &[u8; SEALED]) -> Option<[u8; 4]> {
    let ip = &f[ETH_HLEN..];
    match [f[12], f[13]] {
        ETH_P_IP => Some([0x5f, 0xc0, ip[8], ip[9]]),
        ETH_P_IPV6 => Some([0x5f, 0xc6, ip[7], ip[6]]),
        _ => None,
    }
}

/// The option of a packet [`strip_early`] stripped, from its metadata; `None`: it took the
/// packet whole.
#[inline(always)]
fn stripped_early(ctx: &TcContext) -> Option<TunnelOption> {
    let skb = ctx.skb.skb;
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    if meta + size_of::<EarlyMeta>() > data || data + SEALED > ctx.data_end() {
        return None;
    }
    // SAFETY: the verifier-checked bounds above cover the metadata and these bytes.
    let (m, f) = unsafe {
        (
            &*(meta as *const EarlyMeta),
            &*(data as *const [u8; SEALED]),
        )
    };
    (seal(f) == Some(m.seal)).then_some(m.option)
}

/// `sfc_tunnel_xdp` (with `--tunnel-xdp`): strips Geneve to this node from a registered node
/// before the kernel builds an skb, leaving the option for [`land`] in the metadata. The
/// driver's GRO then merges the inner TCP segments, and the packet carries no tunnel mark
/// (which this kernel's TC programs cannot clear), so it can be sent on to another node with
/// segmentation offload. What it cannot vouch for passes whole, for `land` to judge and count.
#[inline(always)]
pub fn strip_early(ctx: &XdpContext) -> u32 {
    const PASS: u32 = xdp_action::XDP_PASS;
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some((from, outer)) = addressed_here(start, end, &own_address()) else {
        return PASS;
    };
    let at = start + ETH_HLEN + outer;
    // The Geneve headers, then the rest of the inner frame that `seal` reads.
    let inner = at + GENEVE_LEN - ETH_HLEN;
    if at + size_of::<GeneveHeaders>() > end || inner + SEALED > end {
        return PASS;
    }
    // SAFETY: the verifier-checked bounds above cover the outer headers and these.
    let (ip, g, f) = unsafe {
        (
            &*((start + ETH_HLEN) as *const [u8; 8]),
            &*(at as *const GeneveHeaders),
            &*(inner as *const [u8; SEALED]),
        )
    };
    let whole = outer == 40 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
    if !whole || !ours(g) || unsafe { TUNNEL_PEERS.get(&from) }.is_none() {
        return PASS;
    }
    // (A tagged inner frame is left to TC: its tag would be in the way.)
    let Some(seal) = seal(f) else {
        return PASS;
    };
    let meta = EarlyMeta {
        seal,
        option: g.option,
    };
    let raw = ctx.ctx;
    if unsafe { bpf_xdp_adjust_meta(raw, -(size_of::<EarlyMeta>() as i32)) } != 0 {
        return PASS;
    }
    let (meta_at, data) = (ctx.metadata(), ctx.data());
    if meta_at + size_of::<EarlyMeta>() > data {
        return PASS;
    }
    // SAFETY: the verifier-checked bound above covers the metadata.
    unsafe { *(meta_at as *mut EarlyMeta) = meta };
    let headers = ETH_HLEN + outer + 8 + 8 + size_of::<TunnelOption>();
    if unsafe { bpf_xdp_adjust_head(raw, headers as i32) } != 0 {
        // Whole after all: no metadata may claim otherwise.
        unsafe { bpf_xdp_adjust_meta(raw, size_of::<EarlyMeta>() as i32) };
    }
    PASS
}

/// The chain, hop and direction of a packet that arrived with service header `service` and
/// option flags `flags` (see [`service_index`]).
#[inline(always)]
fn arrived(service: u32, flags: u8) -> Verdict {
    let reverse = flags & TUNNEL_REVERSE != 0;
    let deliver = flags & TUNNEL_DELIVER != 0;
    let crossed = SERVICE_INDEX_START.wrapping_sub(service as u8);
    let hop = match (reverse, deliver) {
        (false, _) => crossed,
        (true, false) => (MAX_HOPS as u8 - 1).wrapping_sub(crossed),
        (true, true) => 0,
    };
    Verdict {
        chain_id: (service >> 9) as u16,
        hop,
        action: if deliver {
            action::DELIVER
        } else {
            action::STEER
        },
        flags: if reverse { FLAG_REVERSE } else { 0 },
        ..Verdict::default()
    }
}

/// The flow's state on this node, as the packet that just arrived says it: written only when
/// something changed (a flow's second packet marks it as seen twice).
#[inline(always)]
fn remember_flow(pkt: &Packet, gen: u32, path: u32, mac: [u8; 6]) {
    if let Some(flow) = flow_of(pkt) {
        unsafe {
            if (*flow).gen as u32 == gen && (*flow).path == path && (*flow).mac == mac {
                if (*flow).seen_twice == 0 {
                    (*flow).seen_twice = 1;
                }
                return;
            }
            (*flow).gen = gen as u8;
            (*flow).path = path;
            (*flow).mac = mac;
        }
        return;
    }
    crate::insert_flow(pkt, mac, gen as u8, path, 0, None);
}
