//! An IPv4 packet for another node that would not fit the underlay once encapsulated, and that
//! may be fragmented (DF clear), is fragmented as a router on its path would fragment it: cut
//! into fragments that fit, sent in order back into the ingress of the interface it arrived
//! on. There the program takes each like any fragment arriving there: the first records its
//! datagram's ports, the later ones follow it, so all of them go the way the packet was going,
//! and now fit.
//!
//! Nothing is copied. The packet's header is rewritten into its first fragment's and a clone
//! is sent, which still carries the rest of the payload past its IP packet (cut off before it
//! is encapsulated: `tunnel::cut_to_ip_packet`); then that payload is cut out from behind the
//! header, and so on; the last fragment is the packet itself.
//!
//! Not fragmented (dropped and counted `tunnel_too_big`, as a packet with DF): IPv4 with
//! options (which fragments copy selectively), and a packet that would take more than
//! `MAX_FRAGMENTS` fragments of at least `MIN_FRAGMENT_PAYLOAD` bytes.

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_NET, BPF_F_INGRESS},
    helpers::bpf_redirect,
    programs::TcContext,
};
use sfc_common::stat;

use crate::{
    count,
    frame::Frame,
    replaced_by_fragments,
    too_big::{fold, sum},
};

const ETH_HLEN: usize = 14;
const IP4_HLEN: usize = 20;
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;
/// Payload bytes per fragment at most: what one `bpf_skb_adjust_room` may cut (0xfff), less
/// what keeps it a multiple of 8. A jumbo underlay gets fragments smaller than it could carry.
const MAX_FRAGMENT_PAYLOAD: u32 = 4088;
/// Fragments of one packet at most (each is a pass of the loop below, which the verifier
/// walks through): a 9000-byte jumbo frame over a 1500-byte underlay takes 7.
const MAX_FRAGMENTS: u32 = 8;
/// The least payload per fragment: an underlay that leaves less would cut a packet into too
/// many fragments.
const MIN_FRAGMENT_PAYLOAD: u32 = 1024;

/// The IPv4 header of the packet about to be sent, if it may be fragmented: an untagged IPv4
/// packet without options and without DF.
#[inline(always)]
pub fn fragmentable(ctx: &TcContext) -> Option<[u8; IP4_HLEN]> {
    let ethertype: [u8; 2] = ctx.load(12).ok()?;
    let ip: [u8; IP4_HLEN] = ctx.load(ETH_HLEN).ok()?;
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    (ethertype == [0x08, 0x00] && ip[0] == 0x45 && flags & IP_DF == 0).then_some(ip)
}

/// Cuts the packet (whose IPv4 header is `ip`, see [`fragmentable`]) into fragments of at
/// most `usable` bytes of IP and sends them back into its interface's ingress. `at_entry`:
/// the packet entered its chain here just now; `leaving`: it was leaving its chain (see
/// [`replaced_by_fragments`]). None when it cannot be fragmented.
#[inline(always)]
pub fn split(
    ctx: &TcContext,
    ifindex: u32,
    mut ip: [u8; IP4_HLEN],
    usable: u32,
    at_entry: bool,
    leaving: bool,
) -> Option<i32> {
    let total = u16::from_be_bytes([ip[2], ip[3]]) as u32;
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    let payload = total.checked_sub(IP4_HLEN as u32)?;
    let step = (usable.saturating_sub(IP4_HLEN as u32) & !7).min(MAX_FRAGMENT_PAYLOAD);
    if step < MIN_FRAGMENT_PAYLOAD || payload <= step {
        return None;
    }
    let pieces = payload.div_ceil(step);
    if pieces > MAX_FRAGMENTS {
        return None;
    }
    let offset = (flags & OFFSET_MASK) as u32;
    let more = flags & IP_MF;
    replaced_by_fragments(at_entry, leaving, pieces, offset * 8, more != 0, payload);
    count(stat::TUNNEL_FRAGMENTED);
    let mut sent = 0u32;
    for _ in 0..MAX_FRAGMENTS {
        let left = payload - sent;
        let last = left <= step;
        let len = if last { left } else { step };
        let units = offset + sent / 8;
        let frag = (units as u16 & OFFSET_MASK) | if last { more } else { IP_MF };
        ip[2..4].copy_from_slice(&((IP4_HLEN as u32 + len) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let check = fold(sum(&ip, 0));
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        if ctx.store(ETH_HLEN, &ip, 0).is_err() {
            count(stat::REDIRECT_FAILED);
            return Some(TcContext::DROP);
        }
        if last {
            return Some(unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) } as i32);
        }
        let cut = ctx.clone_redirect(ifindex, BPF_F_INGRESS as u64).is_ok()
            && ctx.adjust_room(-(step as i32), BPF_ADJ_ROOM_NET, 0).is_ok();
        if !cut {
            count(stat::REDIRECT_FAILED);
            return Some(TcContext::DROP);
        }
        sent += step;
    }
    Some(TcContext::DROP)
}
