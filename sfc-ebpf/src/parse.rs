//! Header parsing, once per packet. The common cases (untagged IPv4 without options and IPv6
//! without extension headers, TCP or UDP) are read straight from packet memory; everything else
//! with the hook's load-bytes helper (works on non-linear skbs, no packet-pointer arithmetic for the
//! verifier). Every read is bounded by the skb length. A frame that is IP but cannot be fully
//! parsed (short or inconsistent headers, more VLAN tags or IPv6 extension headers than walked,
//! a first fragment too short to hold its L4 header) is an error with its reason: the caller
//! decides whether it may pass (by default it may not: the stack would route it around the SFs).

use sfc_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

use crate::frame::Frame;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

pub enum ParseError {
    NotIp,
    Malformed,
    TooManyVlans,
    TooManyExtensionHeaders,
}

/// `Packet::fragment`.
pub const NOT_FRAGMENT: u8 = 0;
/// Offset 0 and more to come: carries the L4 header.
pub const FIRST_FRAGMENT: u8 = 1;
/// Any later fragment: no L4 header.
pub const LATER_FRAGMENT: u8 = 2;

pub struct Packet {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub family: u8,
    pub proto: u8,
    /// `NOT_FRAGMENT`, `FIRST_FRAGMENT` or `LATER_FRAGMENT` (an IPv6 atomic fragment, offset 0
    /// and no more, is a whole datagram). A later fragment has ports 0 until the caller finds
    /// those of its first fragment.
    pub fragment: u8,
    /// Of a fragment: the datagram's identification, whether more fragments follow, and the
    /// datagram payload bytes this one carries, from `frag_offset`.
    pub frag_id: u32,
    pub frag_more: bool,
    pub frag_offset: u32,
    pub frag_len: u32,
    /// VLAN id of the outermost tag, 0 when untagged.
    pub vlan: u16,
    pub sport: u16,
    pub dport: u16,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn load<T, C: Frame>(ctx: &C, offset: usize) -> Result<T, ParseError> {
    ctx.load::<T>(offset).map_err(|_| ParseError::Malformed)
}

/// The common case read straight from packet memory: an untagged IPv4 TCP or UDP packet
/// without options, not a fragment, whole. Anything else (or anything doubtful) is left to the
/// general parser, which decides what is malformed.
#[inline(always)]
fn common_ipv4<C: Frame>(ctx: &C, pkt: &mut Packet) -> bool {
    const HEAD: usize = ETH_HLEN + 20 + 4;
    let start = ctx.data();
    if start + HEAD > ctx.data_end() {
        return false;
    }
    // SAFETY: the verifier-checked bound above covers these HEAD bytes.
    let b = unsafe { &*(start as *const [u8; HEAD]) };
    if b[12] != 0x08 || b[13] != 0x00 || b[14] != 0x45 {
        return false;
    }
    let proto = b[23];
    let l4_min = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return false,
    };
    let total_len = u16::from_be_bytes([b[16], b[17]]) as usize;
    let fragment = u16::from_be_bytes([b[20], b[21]]) & 0x3fff != 0;
    if fragment || total_len < 20 + l4_min || ETH_HLEN + total_len > ctx.len() as usize {
        return false;
    }
    pkt.eth_dst = [b[0], b[1], b[2], b[3], b[4], b[5]];
    pkt.eth_src = [b[6], b[7], b[8], b[9], b[10], b[11]];
    pkt.family = FAMILY_V4;
    pkt.proto = proto;
    pkt.fragment = NOT_FRAGMENT;
    pkt.vlan = ctx.vlan();
    pkt.src = [word(b, 26), 0, 0, 0];
    pkt.dst = [word(b, 30), 0, 0, 0];
    pkt.sport = u16::from_be_bytes([b[34], b[35]]);
    pkt.dport = u16::from_be_bytes([b[36], b[37]]);
    true
}

/// The same for an untagged IPv6 TCP or UDP packet without extension headers.
#[inline(always)]
fn common_ipv6<C: Frame>(ctx: &C, pkt: &mut Packet) -> bool {
    const HEAD: usize = ETH_HLEN + 40 + 4;
    let start = ctx.data();
    if start + HEAD > ctx.data_end() {
        return false;
    }
    // SAFETY: the verifier-checked bound above covers these HEAD bytes.
    let b = unsafe { &*(start as *const [u8; HEAD]) };
    if b[12] != 0x86 || b[13] != 0xdd || b[14] >> 4 != 6 {
        return false;
    }
    let proto = b[20];
    let l4_min = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return false,
    };
    let payload_len = u16::from_be_bytes([b[18], b[19]]) as usize;
    if payload_len < l4_min || ETH_HLEN + 40 + payload_len > ctx.len() as usize {
        return false;
    }
    pkt.eth_dst = [b[0], b[1], b[2], b[3], b[4], b[5]];
    pkt.eth_src = [b[6], b[7], b[8], b[9], b[10], b[11]];
    pkt.family = FAMILY_V6;
    pkt.proto = proto;
    pkt.fragment = NOT_FRAGMENT;
    pkt.vlan = ctx.vlan();
    for i in 0..4 {
        pkt.src[i] = word(b, 22 + 4 * i);
        pkt.dst[i] = word(b, 38 + 4 * i);
    }
    pkt.sport = u16::from_be_bytes([b[54], b[55]]);
    pkt.dport = u16::from_be_bytes([b[56], b[57]]);
    true
}

/// Fills `pkt` (per-CPU scratch memory: a packet does not fit the stack beside the rest).
#[inline(always)]
pub fn parse<C: Frame>(ctx: &C, pkt: &mut Packet) -> Result<(), ParseError> {
    if common_ipv4(ctx, pkt) || common_ipv6(ctx, pkt) {
        return Ok(());
    }
    let eth: [u8; ETH_HLEN] = ctx.load(0).map_err(|_| ParseError::NotIp)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut offset = ETH_HLEN;
    // The outermost non-zero VLAN id: already in the skb's metadata at TC ingress, else in the
    // frame (id 0 is a priority tag, not a VLAN).
    let mut vlan = ctx.vlan();
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: [u8; VLAN_HLEN] = load(ctx, offset)?;
        if vlan == 0 {
            vlan = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
        }
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        offset += VLAN_HLEN;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(ParseError::TooManyVlans);
    }
    pkt.eth_dst = [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]];
    pkt.eth_src = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    pkt.family = 0;
    pkt.proto = 0;
    pkt.fragment = NOT_FRAGMENT;
    pkt.frag_id = 0;
    pkt.frag_more = false;
    pkt.frag_offset = 0;
    pkt.frag_len = 0;
    pkt.vlan = vlan;
    pkt.sport = 0;
    pkt.dport = 0;
    pkt.src = [0; 4];
    pkt.dst = [0; 4];
    let len = ctx.len() as usize;
    // The L4 header's offset and the end of the IP packet (the frame may carry padding).
    let (l4, end) = match ethertype {
        ETH_P_IP => ipv4(ctx, offset, len, pkt)?,
        ETH_P_IPV6 => ipv6(ctx, offset, len, pkt)?,
        _ => return Err(ParseError::NotIp),
    };
    if pkt.fragment == LATER_FRAGMENT {
        return Ok(());
    }
    let min_header = match pkt.proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return Ok(()),
    };
    // A first fragment too short for its L4 header is refused too: its ports could not be
    // trusted (the tiny-fragment attack of RFC 1858).
    if l4 + min_header > end {
        return Err(ParseError::Malformed);
    }
    let ports: [u8; 4] = load(ctx, l4)?;
    pkt.sport = u16::from_be_bytes([ports[0], ports[1]]);
    pkt.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(())
}

/// Returns the offsets of the L4 header and of the end of the IP packet.
#[inline(always)]
fn ipv4<C: Frame>(
    ctx: &C,
    offset: usize,
    len: usize,
    pkt: &mut Packet,
) -> Result<(usize, usize), ParseError> {
    let ip: [u8; 20] = load(ctx, offset)?;
    let header_len = ((ip[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip[0] >> 4 != 4 || header_len < 20 || total_len < header_len || offset + total_len > len {
        return Err(ParseError::Malformed);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    pkt.family = FAMILY_V4;
    pkt.proto = ip[9];
    pkt.src[0] = word(&ip, 12);
    pkt.dst[0] = word(&ip, 16);
    let more = frag & 0x2000 != 0;
    let frag_offset = ((frag & 0x1fff) as u32) * 8;
    if more || frag_offset != 0 {
        pkt.fragment = if frag_offset == 0 {
            FIRST_FRAGMENT
        } else {
            LATER_FRAGMENT
        };
        pkt.frag_id = u16::from_be_bytes([ip[4], ip[5]]) as u32;
        pkt.frag_more = more;
        pkt.frag_offset = frag_offset;
        pkt.frag_len = (total_len - header_len) as u32;
    }
    Ok((offset + header_len, offset + total_len))
}

#[inline(always)]
fn ipv6<C: Frame>(
    ctx: &C,
    offset: usize,
    len: usize,
    pkt: &mut Packet,
) -> Result<(usize, usize), ParseError> {
    let ip: [u8; 40] = load(ctx, offset)?;
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let end = offset + 40 + payload_len;
    if ip[0] >> 4 != 6 || end > len {
        return Err(ParseError::Malformed);
    }
    pkt.family = FAMILY_V6;
    for i in 0..4 {
        pkt.src[i] = word(&ip, 8 + 4 * i);
        pkt.dst[i] = word(&ip, 24 + 4 * i);
    }
    let mut next = ip[6];
    let mut at = offset + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if at > end {
            return Err(ParseError::Malformed);
        }
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: [u8; 2] = load(ctx, at)?;
                next = ext[0];
                at += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                let ext: [u8; 2] = load(ctx, at)?;
                next = ext[0];
                at += (ext[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let ext: [u8; 8] = load(ctx, at)?;
                next = ext[0];
                at += 8;
                let field = u16::from_be_bytes([ext[2], ext[3]]);
                let more = field & 1 != 0;
                let frag_offset = (field & 0xfff8) as u32;
                // Offset 0 and no more: an atomic fragment, a whole datagram.
                if more || frag_offset != 0 {
                    if at > end {
                        return Err(ParseError::Malformed);
                    }
                    pkt.fragment = if frag_offset == 0 {
                        FIRST_FRAGMENT
                    } else {
                        LATER_FRAGMENT
                    };
                    pkt.frag_id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                    pkt.frag_more = more;
                    pkt.frag_offset = frag_offset;
                    pkt.frag_len = (end - at) as u32;
                    if frag_offset != 0 {
                        // What follows is the middle of the datagram, not headers.
                        pkt.proto = next;
                        return Ok((at, end));
                    }
                }
            }
            _ => return upper_layer(pkt, next, at, end),
        }
    }
    match next {
        // More extension headers than we walk: we cannot know the upper layer, so do not
        // guess.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT => {
            Err(ParseError::TooManyExtensionHeaders)
        }
        _ => upper_layer(pkt, next, at, end),
    }
}

#[inline(always)]
fn upper_layer(
    pkt: &mut Packet,
    next: u8,
    at: usize,
    end: usize,
) -> Result<(usize, usize), ParseError> {
    if at > end {
        return Err(ParseError::Malformed);
    }
    pkt.proto = next;
    Ok((at, end))
}
