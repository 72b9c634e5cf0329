//! The steering datapath: one TC ingress program on every host-side interface the agent manages
//! (logical source ports and SF egress ports).
//!
//! Per packet: read the active generation, look up the interface, parse the headers once, probe
//! the interface's tuples (one hash lookup each, most specific first; the number of tuples is
//! bounded and independent of the number of classifiers), then either pick a group member from
//! its Maglev table and redirect into it, or deliver after the last hop. Anything we cannot parse
//! or do not match is returned to the stack untouched.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect,
    macros::{classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use sfc_common::{
    action, stat, ClassKey, FlowTuple, HashInput, Member, PortKey, PortValue, Verdict,
    CLASSIFY_CAPACITY, CONFIG_ENTRIES, CONFIG_EPOCH, FLAG_ENTRY, FLOWS_CAPACITY, MAX_TUPLES,
    PORTS_CAPACITY, RING_SIZE, SLOTS_PER_GEN,
};

use crate::parse::{parse, Packet, ParseError};

const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "sfc_v1_config")]
static CONFIG: Array<u64> = Array::pinned(CONFIG_ENTRIES, 0);

#[map(name = "sfc_v1_ports")]
static PORTS: HashMap<PortKey, PortValue> = HashMap::pinned(PORTS_CAPACITY, 0);

#[map(name = "sfc_v1_classify")]
static CLASSIFY: HashMap<ClassKey, Verdict> = HashMap::pinned(CLASSIFY_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v1_ring")]
static RING: Array<Member> = Array::pinned(2 * SLOTS_PER_GEN * RING_SIZE, 0);

#[map(name = "sfc_v1_flows")]
static FLOWS: LruHashMap<FlowTuple, [u8; 8]> = LruHashMap::pinned(FLOWS_CAPACITY, 0);

#[map(name = "sfc_v1_stats")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stat::COUNT, 0);

#[classifier]
pub fn sfc_tc(ctx: TcContext) -> i32 {
    steer(&ctx)
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // Per-CPU slot: a plain add, no atomics on the hot path.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn steer(ctx: &TcContext) -> i32 {
    let gen = match CONFIG.get(CONFIG_EPOCH) {
        Some(epoch) => (*epoch & 1) as u32,
        None => return TC_ACT_OK,
    };
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let port = match unsafe { PORTS.get(PortKey { ifindex, gen }) } {
        Some(port) => port,
        None => return TC_ACT_OK,
    };
    let pkt = match parse(ctx) {
        Ok(pkt) => pkt,
        Err(ParseError::NotIp) => {
            count(stat::NOT_IP);
            return TC_ACT_OK;
        }
        Err(ParseError::Malformed) => {
            count(stat::MALFORMED);
            return TC_ACT_OK;
        }
    };
    let verdict = match classify(port, gen as u8, &pkt) {
        Some(verdict) => verdict,
        None => {
            count(if pkt.fragment {
                stat::FRAGMENT
            } else {
                stat::NO_MATCH
            });
            return TC_ACT_OK;
        }
    };
    match verdict.action {
        action::STEER => to_member(ctx, &pkt, verdict),
        action::DELIVER => {
            if verdict.deliver_mac != [0; 6] && ctx.store(0, &verdict.deliver_mac, 0).is_err() {
                count(stat::MALFORMED);
                return TC_ACT_OK;
            }
            redirect(verdict.deliver_ifindex, stat::DELIVERED)
        }
        _ => {
            restore_destination_mac(ctx, &pkt);
            count(stat::FORWARDED);
            TC_ACT_OK
        }
    }
}

/// Probes the interface's tuples, most specific first; the first hit wins. Classifiers of
/// different chains never overlap (the agent rejects it), so the order only matters between
/// classifiers of one chain.
#[inline(always)]
fn classify(port: &PortValue, gen: u8, pkt: &Packet) -> Option<Verdict> {
    let n = port.n_tuples as usize;
    for i in 0..MAX_TUPLES {
        if i >= n {
            break;
        }
        let mask = &port.tuples[i];
        if mask.family != pkt.family || (pkt.fragment && mask.uses_ports != 0) {
            continue;
        }
        let key = ClassKey {
            gen,
            tuple: i as u8,
            family: pkt.family,
            proto: pkt.proto & mask.proto,
            domain: port.domain,
            sport: pkt.sport & mask.sport,
            dport: pkt.dport & mask.dport,
            src: [
                pkt.src[0] & mask.src[0],
                pkt.src[1] & mask.src[1],
                pkt.src[2] & mask.src[2],
                pkt.src[3] & mask.src[3],
            ],
            dst: [
                pkt.dst[0] & mask.dst[0],
                pkt.dst[1] & mask.dst[1],
                pkt.dst[2] & mask.dst[2],
                pkt.dst[3] & mask.dst[3],
            ],
        };
        if let Some(verdict) = unsafe { CLASSIFY.get(&key) } {
            return Some(*verdict);
        }
    }
    None
}

#[inline(always)]
fn flow_tuple(pkt: &Packet) -> FlowTuple {
    FlowTuple {
        family: pkt.family,
        proto: pkt.proto,
        _pad: [0; 2],
        sport: pkt.sport,
        dport: pkt.dport,
        src: pkt.src,
        dst: pkt.dst,
    }
}

fn to_member(ctx: &TcContext, pkt: &Packet, verdict: Verdict) -> i32 {
    let input = HashInput {
        eth_src: pkt.eth_src,
        eth_dst: pkt.eth_dst,
        proto: pkt.proto,
        sport: pkt.sport,
        dport: pkt.dport,
        src: pkt.src,
        dst: pkt.dst,
    };
    let bucket = sfc_common::flow_hash(&input, verdict.lb_fields) % RING_SIZE;
    let member = match RING.get(verdict.slot * RING_SIZE + bucket) {
        Some(member) if member.ifindex != 0 => *member,
        _ => {
            count(stat::NO_MEMBER);
            return TC_ACT_SHOT;
        }
    };
    if verdict.flags & FLAG_ENTRY != 0 {
        remember_destination_mac(pkt);
    }
    if ctx.store(0, &member.mac, 0).is_err() {
        count(stat::MALFORMED);
        return TC_ACT_OK;
    }
    redirect(member.ifindex, stat::STEERED)
}

#[inline(always)]
fn redirect(ifindex: u32, counter: u32) -> i32 {
    let verdict = unsafe { bpf_redirect(ifindex, 0) } as i32;
    if verdict == TC_ACT_REDIRECT {
        count(counter);
    } else {
        count(stat::REDIRECT_FAILED);
    }
    verdict
}

/// On entry to a chain, remembers the frame's destination MAC so that it can be put back after
/// the last hop. Written only when it changed, so a steady flow costs one lookup.
#[inline(always)]
fn remember_destination_mac(pkt: &Packet) {
    let key = flow_tuple(pkt);
    let mac = pkt.eth_dst;
    let value = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0];
    if let Some(known) = unsafe { FLOWS.get(&key) } {
        if *known == value {
            return;
        }
    }
    let _ = FLOWS.insert(&key, &value, 0);
}

#[inline(always)]
fn restore_destination_mac(ctx: &TcContext, pkt: &Packet) {
    if let Some(mac) = unsafe { FLOWS.get(&flow_tuple(pkt)) } {
        let mac = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]];
        if mac != pkt.eth_dst {
            let _ = ctx.store(0, &mac, 0);
        }
    }
}

#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
