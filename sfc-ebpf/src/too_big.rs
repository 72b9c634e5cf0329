//! A packet for another node that would not fit the underlay once encapsulated is fragmented
//! if it may be (IPv4 without DF: [`crate::split`]); if it may not, it is answered as a router
//! answers it: ICMP "fragmentation needed"
//! (IPv4, DF set) or ICMPv6 "packet too big", carrying the usable MTU (the underlay's less the
//! encapsulation), so that its sender's path MTU discovery shrinks what it sends.
//!
//! The packet itself is turned into the answer in place: cut to its headers and the first
//! bytes of its payload, given new IP and ICMP headers in front, and sent back out of the
//! interface it arrived on (into the source VM, or back into the SF it left, which routes it
//! on to the source like any reply). It comes from the packet's destination address, as
//! from a device on the path that has no address of its own.
//!
//! Never answered (dropped and counted only): ICMP errors (an error about an error), fragments
//! past the first, IPv4 with options, multicast sources, frames with a tag still in them
//! (QinQ: the kernel took the first).

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::{
        bpf_redirect, bpf_skb_adjust_room, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    programs::TcContext,
};
use sfc_common::{stat, CONFIG_TUNNEL_USABLE_MTU, FAMILY_V4};

use crate::{count, frame::Frame, parse::LATER_FRAGMENT, split, CONFIG, SCRATCH};

const ETH_HLEN: usize = 14;
/// Bytes of the packet's payload (past its IP header) quoted in the answer: a TCP header
/// without options, so that a checksum left to offload (which the kernel finishes at the
/// checksum field's offset) lies inside what is kept.
const QUOTED: usize = 28;
const IP4_HLEN: usize = 20;
const IP6_HLEN: usize = 40;
const ICMP_HLEN: usize = 8;
/// The answers' sizes, Ethernet header included.
const REPLY4: usize = ETH_HLEN + IP4_HLEN + ICMP_HLEN + IP4_HLEN + QUOTED;
const REPLY6: usize = ETH_HLEN + IP6_HLEN + ICMP_HLEN + IP6_HLEN + QUOTED;
/// The frame's first bytes, as read, and the answer built from them: in the per-CPU scratch
/// space (the stack has no room for them).
pub struct Answer {
    head: [u8; ETH_HLEN + IP6_HLEN + QUOTED],
    reply: [u8; REPLY6],
    /// Set by `tunnel::send`: the packet entered its chain here, just now.
    pub at_entry: bool,
    /// Set by `tunnel::send`: the packet leaves its chain (it is delivered on another node).
    pub leaving: bool,
}

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const IP_DF: u8 = 0x40;
const REPLY_TTL: u8 = 64;

/// Answers the packet parsed into the scratch space, which does not fit the underlay once
/// encapsulated: redirected back as ICMP, or dropped when it is not to be answered (see the
/// module's text). Called from the program's top level: the stack below `tunnel::send`
/// has no room for it.
#[inline(never)]
pub fn answer(ctx: &TcContext) -> i32 {
    // Read before any helper changes the packet: the verifier allows context reads only at
    // fixed offsets.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // A tagged packet carries its tag inside the tunnel: 4 bytes less for its IP packet.
    let tagged = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    let usable = (CONFIG.get(CONFIG_TUNNEL_USABLE_MTU).copied().unwrap_or(0) as u32)
        .saturating_sub(if tagged { 4 } else { 0 });
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return TcContext::DROP;
    };
    let (family, fragment) = unsafe { ((*scratch).pkt.family, (*scratch).pkt.fragment) };
    if family == FAMILY_V4 && usable != 0 {
        if let Some(ip) = split::fragmentable(ctx) {
            let (at_entry, leaving) =
                unsafe { ((*scratch).answer.at_entry, (*scratch).answer.leaving) };
            if let Some(verdict) = split::split(ctx, ifindex, ip, usable, at_entry, leaving) {
                return verdict;
            }
        }
    }
    count(stat::TUNNEL_TOO_BIG);
    if fragment == LATER_FRAGMENT || usable == 0 {
        return TcContext::DROP;
    }
    let a = unsafe { &mut (*scratch).answer };
    let built = if family == FAMILY_V4 {
        build_v4(ctx, a, usable)
    } else {
        build_v6(ctx, a, usable)
    };
    if !built {
        return TcContext::DROP;
    }
    count(stat::TOO_BIG_ANSWERED);
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// ICMP type 3 code 4 to the sender of an IPv4 packet with DF set.
#[inline(always)]
fn build_v4(ctx: &TcContext, a: &mut Answer, usable: u32) -> bool {
    const IP: usize = ETH_HLEN;
    const L4: usize = IP + IP4_HLEN;
    const HEAD: usize = L4 + QUOTED;
    if !load(ctx, &mut a.head[..HEAD]) {
        return false;
    }
    let f = &a.head;
    let may_fragment = f[IP + 6] & IP_DF == 0;
    let options = f[IP] != 0x45;
    // Echo request and reply are the only ICMP messages that may be answered with an error.
    let icmp_error = f[IP + 9] == PROTO_ICMP && f[L4] != 0 && f[L4] != 8;
    let multicast = f[IP + 12] >= 224;
    // A tag still in the frame (QinQ): the IP header is not where the answer is built from.
    let tag_in_frame = f[12..14] != [0x08, 0x00];
    if may_fragment || options || icmp_error || multicast || tag_in_frame {
        return false;
    }
    let r = &mut a.reply;
    ethernet(r, f, [0x08, 0x00]);
    let h = ETH_HLEN;
    let total = (IP4_HLEN + ICMP_HLEN + IP4_HLEN + QUOTED) as u16;
    r[h] = 0x45;
    r[h + 1] = 0xc0; // internetwork control, as the kernel's own ICMP errors
    r[h + 2..h + 4].copy_from_slice(&total.to_be_bytes());
    r[h + 4..h + 8].copy_from_slice(&[0, 0, 0, 0]);
    r[h + 8] = REPLY_TTL;
    r[h + 9] = PROTO_ICMP;
    r[h + 10..h + 12].copy_from_slice(&[0, 0]);
    r[h + 12..h + 16].copy_from_slice(&f[IP + 16..IP + 20]);
    r[h + 16..h + 20].copy_from_slice(&f[IP + 12..IP + 16]);
    let ip_check = fold(sum(&r[h..h + IP4_HLEN], 0));
    r[h + 10..h + 12].copy_from_slice(&ip_check.to_be_bytes());
    let i = h + IP4_HLEN;
    let mtu = usable.min(u16::MAX as u32) as u16;
    r[i] = 3;
    r[i + 1] = 4;
    r[i + 2..i + 6].copy_from_slice(&[0, 0, 0, 0]);
    r[i + 6..i + 8].copy_from_slice(&mtu.to_be_bytes());
    r[i + ICMP_HLEN..REPLY4].copy_from_slice(&f[IP..HEAD]);
    let icmp_check = fold(sum(&r[i..REPLY4], 0));
    r[i + 2..i + 4].copy_from_slice(&icmp_check.to_be_bytes());
    reshape(ctx, r, HEAD, REPLY4)
}

/// ICMPv6 type 2 (packet too big) to the sender of an IPv6 packet.
#[inline(always)]
fn build_v6(ctx: &TcContext, a: &mut Answer, usable: u32) -> bool {
    const IP: usize = ETH_HLEN;
    const L4: usize = IP + IP6_HLEN;
    const HEAD: usize = L4 + QUOTED;
    if !load(ctx, &mut a.head[..HEAD]) {
        return false;
    }
    let f = &a.head;
    // Informational ICMPv6 messages have types from 128 on.
    let icmp_error = f[IP + 6] == PROTO_ICMPV6 && f[L4] < 128;
    let multicast = f[IP + 8] == 0xff;
    let tag_in_frame = f[12..14] != [0x86, 0xdd];
    if icmp_error || multicast || tag_in_frame {
        return false;
    }
    let r = &mut a.reply;
    ethernet(r, f, [0x86, 0xdd]);
    let h = ETH_HLEN;
    let payload = (ICMP_HLEN + IP6_HLEN + QUOTED) as u16;
    r[h..h + 4].copy_from_slice(&[0x60, 0, 0, 0]);
    r[h + 4..h + 6].copy_from_slice(&payload.to_be_bytes());
    r[h + 6] = PROTO_ICMPV6;
    r[h + 7] = REPLY_TTL;
    r[h + 8..h + 24].copy_from_slice(&f[IP + 24..IP + 40]);
    r[h + 24..h + 40].copy_from_slice(&f[IP + 8..IP + 24]);
    let i = h + IP6_HLEN;
    r[i] = 2;
    r[i + 1] = 0;
    r[i + 2..i + 4].copy_from_slice(&[0, 0]);
    r[i + 4..i + 8].copy_from_slice(&usable.to_be_bytes());
    r[i + ICMP_HLEN..REPLY6].copy_from_slice(&f[IP..HEAD]);
    // The pseudo-header: addresses, upper-layer length, next header.
    let pseudo = sum(&r[h + 8..h + 40], payload as u32 + PROTO_ICMPV6 as u32);
    let icmp_check = fold(sum(&r[i..REPLY6], pseudo));
    r[i + 2..i + 4].copy_from_slice(&icmp_check.to_be_bytes());
    reshape(ctx, r, HEAD, REPLY6)
}

/// The frame's first `dst.len()` bytes (the packet is far longer: it did not fit).
#[inline(always)]
fn load(ctx: &TcContext, dst: &mut [u8]) -> bool {
    unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            0,
            dst.as_mut_ptr() as *mut _,
            dst.len() as u32,
        ) == 0
    }
}

/// The answer's Ethernet header: back to where the frame `f` came from.
#[inline(always)]
fn ethernet(r: &mut [u8; REPLY6], f: &[u8], ethertype: [u8; 2]) {
    r[..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&f[..6]);
    r[12..14].copy_from_slice(&ethertype);
}

/// Cuts the packet to its first `kept` bytes (Ethernet header, IP header, quoted payload),
/// opens room for the new IP and ICMP headers between its Ethernet and IP headers, and writes
/// the answer's `len` bytes over it. Cutting first keeps the quoted bytes where they were, so a
/// checksum left to offload still points into them.
#[inline(always)]
fn reshape(ctx: &TcContext, r: &[u8; REPLY6], kept: usize, len: usize) -> bool {
    let skb = ctx.skb.skb;
    unsafe {
        bpf_skb_change_tail(skb, kept as u32, 0) == 0
            && bpf_skb_adjust_room(skb, (len - kept) as i32, BPF_ADJ_ROOM_MAC, 0) == 0
            && bpf_skb_store_bytes(skb as *mut _, 0, r.as_ptr() as *const _, len as u32, 0) == 0
    }
}

/// The one's complement sum of `bytes` (big-endian 16-bit words, an even count) onto `start`.
#[inline(always)]
pub fn sum(bytes: &[u8], start: u32) -> u32 {
    let mut s = start;
    let mut i = 0;
    while i + 1 < bytes.len() {
        s += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    s
}

#[inline(always)]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}
