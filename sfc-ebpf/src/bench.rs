//! Programs for `cargo xtask bench`, built as their own object (`sfc-bench`) so that loading
//! them never touches the steering program's maps.
//!
//! - `sfc_bench_redirect`: the "upper-bound" system, the least a TC steering program can do:
//!   one array read keyed by the ingress ifindex, a destination-MAC rewrite straight in packet
//!   memory and the redirect the steering program uses into an SF's veth (straight into the
//!   peer's ingress).
//! - `sfc_bench_redirect_flows`: the "upper-bound-flows" system, the least a TC steering
//!   program that keeps per-flow state can do: the same, plus a flow table (LRU, as large as
//!   the steering program's) that the chain's entry looks the 5-tuple up in and inserts it into
//!   when it is new, and every later hop looks up. A dataplane that keeps a flow on its
//!   members (and on its generation) cannot do less for a flow's first packet.
//! - `sfc_bench_redirect_xdp`: the "upper-bound-xdp" system, the same in native XDP (as
//!   `sfc-xdp` redirects: `bpf_redirect` into the SF's veth, whose peer takes XDP frames).
//! - `sfc_bench_lookup`: the baseline for the classifier's cost, one hash lookup keyed by the
//!   IPv4 destination address, whatever its result.
//! - `sfc_bench_tx`: the frame source of the XDP-frame packet rate: run through
//!   BPF_PROG_TEST_RUN with live frames on the source's NIC, it sends each frame out of it, so
//!   that frames reach the node as XDP frames, as they would from a NIC.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_PASS, XDP_TX},
        TC_ACT_OK,
    },
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_change_type},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap},
    programs::{TcContext, XdpContext},
};

/// Where a frame arriving on an interface goes next (0: not steered).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Next {
    pub ifindex: u32,
    pub mac: [u8; 6],
    /// 1 where the chain starts (the flow table is written there), else 0.
    pub entry: u8,
    pub _pad: u8,
}

/// Key of the flow table: an IPv4 5-tuple.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub ports: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Indexed by ingress ifindex; namespaces made by the bench have small ifindexes.
#[map(name = "sfc_bench_next")]
static NEXT: Array<Next> = Array::with_max_entries(4096, 0);

/// As large as the steering program's IPv4 flow table by default.
#[map(name = "sfc_bench_flows")]
static FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(65536, 0);

#[map(name = "sfc_bench_hash")]
static HASH: HashMap<u32, u32> = HashMap::with_max_entries(1 << 17, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_HLEN: usize = 14;

/// Where an IPv4 frame at `start..end` that arrived on `ifindex` goes, its destination MAC
/// already rewritten; None for anything else (ARP among it), which is left to the stack.
/// Packet memory is read and written directly, as the steering program does (not through
/// the load/store helpers): an upper bound must not pay what the measured program avoids.
#[inline(always)]
fn next_hop(start: usize, end: usize, ifindex: u32) -> Option<u32> {
    next_of(start, end, ifindex).map(|next| rewrite(start, next))
}

/// Gives the frame at `start` (whose Ethernet header [`next_of`] checked) `next`'s destination
/// MAC; returns where it goes.
#[inline(always)]
fn rewrite(start: usize, next: &Next) -> u32 {
    // SAFETY: the caller found `next` with `next_of`, which checked the header's bounds.
    unsafe { *(start as *mut [u8; 6]) = next.mac };
    next.ifindex
}

/// Redirects the frame straight into the ingress of `ifindex`'s veth peer, as the steering
/// program does. That ingress skips eth_type_trans, so the frame is first marked as addressed
/// to that host (PACKET_HOST).
#[inline(always)]
fn into_peer(ctx: &TcContext, ifindex: u32) -> i32 {
    unsafe {
        bpf_skb_change_type(ctx.skb.skb, 0);
        bpf_redirect_peer(ifindex, 0) as i32
    }
}

/// Where an IPv4 frame at `start..end` that arrived on `ifindex` goes; None for anything else.
#[inline(always)]
fn next_of(start: usize, end: usize, ifindex: u32) -> Option<&'static Next> {
    if start + ETH_HLEN > end {
        return None;
    }
    // SAFETY: the bound above covers the Ethernet header.
    let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
    if u16::from_be_bytes(ethertype) != ETH_P_IPV4 {
        return None;
    }
    NEXT.get(ifindex).filter(|n| n.ifindex != 0)
}

/// The 5-tuple of the IPv4 packet after the Ethernet header at `start` (the first 4 bytes of
/// its L4 header as its ports), read straight from packet memory.
#[inline(always)]
fn flow_key(start: usize, end: usize) -> Option<FlowKey> {
    let ip = start + ETH_HLEN;
    if ip + 20 > end {
        return None;
    }
    // SAFETY: the bound above covers the fixed IPv4 header; the one below the L4 ports.
    let ihl = (unsafe { *(ip as *const u8) } & 0x0f) as usize * 4;
    let l4 = ip + ihl;
    if ihl < 20 || l4 + 4 > end {
        return None;
    }
    unsafe {
        Some(FlowKey {
            src: *((ip + 12) as *const u32),
            dst: *((ip + 16) as *const u32),
            ports: *(l4 as *const u32),
            proto: *((ip + 9) as *const u8),
            _pad: [0; 3],
        })
    }
}

#[classifier]
pub fn sfc_bench_redirect(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match next_hop(ctx.data(), ctx.data_end(), ifindex) {
        Some(next) => into_peer(&ctx, next),
        None => TC_ACT_OK,
    }
}

#[classifier]
pub fn sfc_bench_redirect_flows(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let (start, end) = (ctx.data(), ctx.data_end());
    let Some(next) = next_of(start, end, ifindex) else {
        return TC_ACT_OK;
    };
    let Some(key) = flow_key(start, end) else {
        return TC_ACT_OK;
    };
    let known = unsafe { FLOWS.get(&key) }.is_some();
    if next.entry != 0 && !known {
        let _ = FLOWS.insert(&key, &1, 0);
    }
    core::hint::black_box(known);
    into_peer(&ctx, rewrite(start, next))
}

#[xdp]
pub fn sfc_bench_redirect_xdp(ctx: XdpContext) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match next_hop(ctx.data(), ctx.data_end(), ifindex) {
        Some(next) => unsafe { bpf_redirect(next, 0) as u32 },
        None => XDP_PASS,
    }
}

#[classifier]
pub fn sfc_bench_lookup(ctx: TcContext) -> i32 {
    let dst = match ctx.load::<u32>(ETH_HLEN + 16) {
        Ok(dst) => dst,
        Err(_) => return TC_ACT_OK,
    };
    // The result is irrelevant: the lookup itself is what is measured.
    let hit = unsafe { HASH.get(&dst) }.is_some();
    core::hint::black_box(hit);
    TC_ACT_OK
}

#[xdp]
pub fn sfc_bench_tx(_ctx: XdpContext) -> u32 {
    XDP_TX
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
