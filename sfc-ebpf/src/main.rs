//! The steering datapath: one TC ingress program on every host-side interface the agent manages
//! (logical ports and SF egress ports), and in XDP mode an XDP program beside it that carries
//! out in the driver what it can (see frame.rs).
//!
//! Per packet: parse the headers once and find the flow's state; if the flow was seen before
//! and already has a decision on this interface for the current epoch, carry it out (where it
//! enters, the decision is in its state; elsewhere one more lookup, which a flow without state
//! or seen once, having none, skips). Otherwise find the flow's generation (a
//! flow keeps the one it entered with while its packets are inside the chain), look up the
//! interface, probe its tuples (one hash lookup each, most specific first; bounded, and
//! independent of the number of classifiers), pick a member (the flow's pin, or the group's
//! Maglev table) and remember the decision. Carrying it out: counters, a copy to a tap SF,
//! the destination MAC rewritten, a redirect into the member or to the logical destination
//! port after the last hop. What we do not match, and non-IP frames, go on untouched to the
//! next program on the interface (or the stack). What is IP but cannot be fully parsed is
//! dropped where a classifier applies, unless its classifiers ask for it to pass: passing it
//! would let the stack route it around the SFs.
#![no_std]
#![no_main]
// The BPF target has atomic add but no compare-and-swap, so core's atomic types lack fetch_add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod frame;
mod parse;
mod probe;
mod split;
mod too_big;
mod tunnel;

use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    ptr::null_mut,
};

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use sfc_common::{
    action, lb, stat, trace_field, ClassEntry, ClassKey, ClassKey4, Counter, Decision, DecisionKey,
    DecisionKey4, FlowState, FlowTuple, FlowTuple4, FragmentKey, FragmentState, HashInput, Member,
    MemberCounter, MemberKey, PinKey, PortKey, PortValue, RemoteKey, RingEntry, SourcePorts,
    TraceEvent, TraceFilter, TunnelPeer, TupleMask, Verdict, CLASSIFY_CAPACITY, CONFIG_ENTRIES,
    CONFIG_EPOCH, CONFIG_FLIP_NS, COUNTERS_PER_GEN, DECISIONS_CAPACITY, FAMILY_V4,
    FLAG_DELIVER_PEER, FLAG_ENTRY, FLAG_ONE_MEMBER, FLAG_PORTLESS, FLAG_REVERSE, FLAG_SKIPPED,
    FLOWS_CAPACITY, FLOW_PIN_HOPS, FRAGMENTS_CAPACITY, FRAGMENT_TIMEOUT_NS, GENERATION_LEASE_NS,
    LIVE_CAPACITY, MAX_TUPLES, MEMBERS_CAPACITY, MEMBER_SLOTS, PINS_CAPACITY, PORTS_CAPACITY,
    PORT_BY_PATH, PORT_ENTRY, PORT_NEEDS_PORTS, PORT_PASS_UNPARSABLE, PROBE_PORT, PROTO_UDP,
    REMOTE, REMOTES_CAPACITY, RING_SIZE, SLOTS_PER_GEN, SLOT_MASK, SLOT_PEER, SOURCE_PORTS_PER_GEN,
    TRACE_EVENTS_BYTES, TUNNEL_PEERS_CAPACITY,
};

use crate::{
    frame::Frame,
    parse::{parse, Packet, ParseError, FIRST_FRAGMENT, LATER_FRAGMENT, NOT_FRAGMENT},
};

const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "sfc_v12_config")]
static CONFIG: Array<u64> = Array::pinned(CONFIG_ENTRIES, 0);

#[map(name = "sfc_v12_ports")]
static PORTS: HashMap<PortKey, PortValue> = HashMap::pinned(PORTS_CAPACITY, 0);

#[map(name = "sfc_v12_classify")]
static CLASSIFY: HashMap<ClassKey, ClassEntry> =
    HashMap::pinned(CLASSIFY_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v12_classify4")]
static CLASSIFY4: HashMap<ClassKey4, ClassEntry> =
    HashMap::pinned(CLASSIFY_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v12_source_ports")]
static SOURCE_PORTS: Array<SourcePorts> = Array::pinned(2 * SOURCE_PORTS_PER_GEN, 0);

#[map(name = "sfc_v12_ring")]
static RING: Array<RingEntry> = Array::pinned(2 * SLOTS_PER_GEN * RING_SIZE, 0);

#[map(name = "sfc_v12_members")]
static MEMBERS: HashMap<MemberKey, RingEntry> =
    HashMap::pinned(MEMBERS_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v12_live")]
static LIVE: DevMapHash = DevMapHash::pinned(LIVE_CAPACITY, 0);

#[map(name = "sfc_v12_remotes")]
static REMOTES: HashMap<RemoteKey, TunnelPeer> =
    HashMap::pinned(REMOTES_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v12_landing")]
static LANDING: HashMap<RemoteKey, Member> = HashMap::pinned(REMOTES_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "sfc_v12_tunnel_peers")]
static TUNNEL_PEERS: HashMap<TunnelPeer, u32> = HashMap::pinned(TUNNEL_PEERS_CAPACITY, 0);

#[map(name = "sfc_v12_fragments")]
static FRAGMENTS: HashMap<FragmentKey, FragmentState> = HashMap::pinned(FRAGMENTS_CAPACITY, 0);

#[map(name = "sfc_v12_flows")]
static FLOWS: LruHashMap<FlowTuple, FlowState> = LruHashMap::pinned(FLOWS_CAPACITY, 0);

#[map(name = "sfc_v12_flows4")]
static FLOWS4: LruHashMap<FlowTuple4, FlowState> = LruHashMap::pinned(FLOWS_CAPACITY, 0);

#[map(name = "sfc_v12_pins")]
static PINS: LruHashMap<PinKey, u32> = LruHashMap::pinned(PINS_CAPACITY, 0);

#[map(name = "sfc_v12_new_pins")]
static NEW_PINS: LruHashMap<PinKey, u32> = LruHashMap::pinned(PINS_CAPACITY, 0);

#[map(name = "sfc_v12_decisions")]
static DECISIONS: LruHashMap<DecisionKey, Decision> = LruHashMap::pinned(DECISIONS_CAPACITY, 0);

#[map(name = "sfc_v12_decisions4")]
static DECISIONS4: LruHashMap<DecisionKey4, Decision> = LruHashMap::pinned(DECISIONS_CAPACITY, 0);

/// Per-CPU scratch space for the decision keys and value (too big for the 512-byte stack
/// beside the parsed packet). An IPv4 packet uses `key4`, any other `key`.
#[repr(C)]
struct Scratch {
    key: DecisionKey,
    key4: DecisionKey4,
    decision: Decision,
    pkt: Packet,
    fragment: FragmentKey,
    /// The outer headers of a packet sent to another node, over an IPv4 or an IPv6 underlay.
    encap: tunnel::Encapsulation,
    encap6: tunnel::Encapsulation6,
    /// What a trace's tracking id is hashed from.
    trace_hash: HashInput,
    /// The ICMP answer to a packet too big for the underlay.
    answer: too_big::Answer,
    /// A new flow's state, before it is inserted ([`insert_flow`]).
    flow: FlowState,
}

impl Scratch {
    #[inline(always)]
    fn set_keys(&mut self, ifindex: u32) {
        if self.pkt.family == FAMILY_V4 {
            self.key4.ifindex = ifindex;
            self.key4.tuple = flow_tuple4(&self.pkt);
        } else {
            self.key.ifindex = ifindex;
            self.key.tuple = flow_tuple(&self.pkt);
        }
    }

    #[inline(always)]
    fn v4(&self) -> bool {
        self.pkt.family == FAMILY_V4
    }

    #[inline(always)]
    fn decided(&self) -> Option<*mut Decision> {
        if self.v4() {
            DECISIONS4.get_ptr_mut(&self.key4)
        } else {
            DECISIONS.get_ptr_mut(&self.key)
        }
    }

    #[inline(always)]
    fn remember_decision(&self) {
        let _ = if self.v4() {
            DECISIONS4.insert(&self.key4, &self.decision, 0)
        } else {
            DECISIONS.insert(&self.key, &self.decision, 0)
        };
    }

    #[inline(always)]
    fn flow_state(&self) -> Option<*mut FlowState> {
        if self.v4() {
            FLOWS4.get_ptr_mut(&self.key4.tuple)
        } else {
            FLOWS.get_ptr_mut(&self.key.tuple)
        }
    }
}

#[map(name = "sfc_v12_xdp_into_veth")]
static XDP_INTO_VETH: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "sfc_v12_scratch")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "sfc_v12_stats")]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stat::COUNT, 0);

#[map(name = "sfc_v12_counters")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(2 * COUNTERS_PER_GEN, 0);

#[map(name = "sfc_v12_member_counters")]
static MEMBER_COUNTERS: PerCpuArray<MemberCounter> = PerCpuArray::pinned(MEMBER_SLOTS, 0);

/// Never read here: the agent's record of `MEMBER_COUNTERS` slots, pinned beside them.
#[map(name = "sfc_v12_member_slots")]
static MEMBER_SLOT_OF: HashMap<u32, u32> = HashMap::pinned(MEMBER_SLOTS, 0);

#[map(name = "sfc_v12_trace_filter")]
static TRACE_FILTER: Array<TraceFilter> = Array::pinned(1, 0);

#[map(name = "sfc_v12_trace_events")]
static TRACE_EVENTS: RingBuf = RingBuf::pinned(TRACE_EVENTS_BYTES, 0);

#[classifier]
pub fn sfc_tc(ctx: TcContext) -> i32 {
    steer(&ctx)
}

#[xdp]
pub fn sfc_xdp(ctx: XdpContext) -> u32 {
    steer(&ctx) as u32
}

/// On this node's Geneve device: packets other nodes send on along their chains.
#[classifier]
pub fn sfc_tunnel(ctx: TcContext) -> i32 {
    tunnel::arrive(&ctx)
}

/// XDP on the underlay interface, ahead of `sfc_tunnel` (`--tunnel-xdp`): strips the outer
/// headers of other nodes' packets before GRO.
#[xdp]
pub fn sfc_tunnel_xdp(ctx: XdpContext) -> u32 {
    tunnel::strip_early(&ctx)
}

/// The active trace filter, if a trace is running: one array read when none is.
#[inline(always)]
fn trace_filter() -> Option<&'static TraceFilter> {
    match TRACE_FILTER.get(0) {
        Some(filter) if filter.enabled != 0 => Some(filter),
        _ => None,
    }
}

#[inline(always)]
fn hash_input(pkt: &Packet) -> HashInput {
    HashInput {
        eth_src: pkt.eth_src,
        eth_dst: pkt.eth_dst,
        proto: pkt.proto,
        vlan: pkt.vlan,
        sport: pkt.sport,
        dport: pkt.dport,
        src: pkt.src,
        dst: pkt.dst,
    }
}

/// Whether `filter` selects this packet, in either direction.
#[inline(always)]
fn trace_matches(filter: &TraceFilter, pkt: &Packet, id: u32) -> bool {
    let f = filter.fields;
    if (filter.family != 0 && filter.family != pkt.family)
        || (f & trace_field::PROTO != 0 && filter.proto != pkt.proto)
        || (f & trace_field::ID != 0 && filter.id != id)
    {
        return false;
    }
    let one_way = |src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16| {
        (f & trace_field::SRC == 0 || filter.src == *src)
            && (f & trace_field::DST == 0 || filter.dst == *dst)
            && (f & trace_field::SPORT == 0 || filter.sport == sport)
            && (f & trace_field::DPORT == 0 || filter.dport == dport)
    };
    one_way(&pkt.src, &pkt.dst, pkt.sport, pkt.dport)
        || one_way(&pkt.dst, &pkt.src, pkt.dport, pkt.sport)
}

/// Reports one step of a traced packet, if a trace is running and selects it.
#[inline(always)]
fn emit<C: Frame>(
    ctx: &C,
    pkt: &Packet,
    gen: u32,
    verdict: Option<&Verdict>,
    outcome: u32,
    target: Option<&Member>,
) {
    let Some(filter) = trace_filter() else {
        return;
    };
    // The hash input and the event are built in map memory, not on the stack: they are
    // inlined where the stack has no room left for them.
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let input = unsafe { &mut (*scratch).trace_hash };
    *input = hash_input(pkt);
    let id = sfc_common::tracking_id(input);
    if !trace_matches(filter, pkt, id) {
        return;
    }
    let Some(mut slot) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        return;
    };
    // SAFETY: every field is written before the event is submitted.
    let e = unsafe { &mut *slot.as_mut_ptr() };
    e.ts_ns = unsafe { bpf_ktime_get_ns() };
    e.id = id;
    e.ifindex = ctx.ifindex();
    e.target_ifindex = target.map(|m| m.ifindex).unwrap_or(0);
    e.chain_id = verdict.map(|v| v.chain_id).unwrap_or(0);
    e.hop = verdict.map(|v| v.hop).unwrap_or(0);
    e.outcome = outcome as u8;
    e.flags = verdict.map(|v| v.flags).unwrap_or(0);
    e.gen = gen as u8;
    e.family = pkt.family;
    e.proto = pkt.proto;
    e.sport = pkt.sport;
    e.dport = pkt.dport;
    e.mac = target.map(|m| m.mac).unwrap_or([0; 6]);
    e.tapped = verdict.map(|v| (v.tap_ifindex != 0) as u8).unwrap_or(0);
    e._pad = 0;
    e.src = pkt.src;
    e.dst = pkt.dst;
    slot.submit(0);
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // Per-CPU slot: a plain add, no atomics on the hot path.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn count_chain(index: u32, bytes: u32) {
    if index == 0 {
        return;
    }
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

/// Traffic into an SF (`into`) or back out of it, per member interface.
#[inline(always)]
fn count_member(slot: u16, into: bool, bytes: u32) {
    let slot = slot & SLOT_MASK;
    if slot == 0 {
        return;
    }
    if let Some(c) = MEMBER_COUNTERS.get_ptr_mut(slot as u32) {
        unsafe {
            if into {
                (*c).into_packets += 1;
                (*c).into_bytes += bytes as u64;
            } else {
                (*c).from_packets += 1;
                (*c).from_bytes += bytes as u64;
            }
        }
    }
}

#[inline(always)]
fn port(ifindex: u32, gen: u32) -> Option<&'static PortValue> {
    unsafe { PORTS.get(PortKey { ifindex, gen }) }
}

#[inline(always)]
fn steer<C: Frame>(ctx: &C) -> i32 {
    let epoch = match CONFIG.get(CONFIG_EPOCH) {
        Some(epoch) => *epoch,
        None => return C::PASS,
    };
    let current = (epoch & 1) as u32;
    let ifindex = ctx.ifindex();
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return C::PASS;
    };
    let scratch = unsafe { &mut *scratch };
    let reason = match parse(ctx, &mut scratch.pkt) {
        Ok(()) => None,
        Err(ParseError::NotIp) => {
            if !C::DEFERS {
                count(stat::NOT_IP);
            }
            return C::PASS;
        }
        Err(ParseError::Malformed) => Some(stat::MALFORMED),
        Err(ParseError::TooManyVlans) => Some(stat::UNPARSABLE_VLAN),
        Err(ParseError::TooManyExtensionHeaders) => Some(stat::UNPARSABLE_IPV6_EXT),
    };
    if let Some(reason) = reason {
        return unparsable::<C>(ifindex, current, reason);
    }
    if scratch.pkt.fragment != NOT_FRAGMENT {
        if C::DEFERS {
            return C::PASS;
        }
        if !follow_datagram(&mut scratch.pkt, &mut scratch.fragment, ifindex)
            && port(ifindex, current).is_some_and(|p| p.flags & PORT_NEEDS_PORTS != 0)
        {
            return unparsable::<C>(ifindex, current, stat::FRAGMENT_UNKNOWN);
        }
    }
    if scratch.pkt.dport == PROBE_PORT
        && scratch.pkt.proto == PROTO_UDP
        && probe::came_out(ctx, ifindex, scratch.pkt.family)
    {
        return C::DROP;
    }
    scratch.set_keys(ifindex);
    let pkt = &scratch.pkt;
    // The flow's state first: past the entry this very packet touched it a moment ago, so it
    // is in cache, and it tells whether the flow can have a decision at all. A flow seen only
    // once has none (its first packet remembers none, see `first_packet`): for a new flow the
    // decision look-up would be a miss far out in a large table at every hop.
    let flow = scratch.flow_state();
    // Fast path: this flow was decided on this interface under the current epoch. Such a
    // decision exists only if the flow was on the current generation then, and a flow never
    // goes back to an older one, so its generation needs no look-up. Where the flow enters,
    // the decision is in its state; elsewhere it is looked up, but only for a flow seen twice:
    // a flow without state (new, matching nothing, or evicted) has none.
    let decided = match flow.and_then(|f| entry_decision(f, ifindex, epoch)) {
        Some(d) => Some(d),
        None if flow.is_some_and(|f| unsafe { (*f).seen_twice } != 0) => scratch
            .decided()
            .filter(|d| unsafe { (**d).epoch } == epoch),
        None => None,
    };
    if let Some(d) = decided {
        let d = unsafe { &mut *d };
        if d.verdict.action == action::STEER && d.pinned == 0 {
            establish(d);
        }
        let flow = flow.unwrap_or(null_mut());
        let verdict = act(ctx, pkt, flow, current, d);
        return to_node(ctx, verdict, d, flow, current);
    }
    let current_port = port(ifindex, current);
    let entry_port = current_port.is_some_and(|p| p.flags & PORT_ENTRY != 0);
    let gen = generation(flow, current, entry_port);
    let found = if gen == current {
        current_port
    } else {
        port(ifindex, gen)
    };
    let Some(port) = found else {
        return C::PASS;
    };
    let decision = &mut scratch.decision;
    // Only what is read before it is set: the verdict is copied in below, and the member and
    // its pin are written by `choose_member` when it finds one (whole-struct resets here cost
    // a byte-wise memset on every undecided packet).
    decision.epoch = epoch;
    decision.member.ifindex = 0;
    decision.pinned = 0;
    decision.entry_port = entry_port as u8;
    decision.ifindex = ifindex;
    // Where paths meet that would take this packet different ways, its flow's path decides
    // (0 when unknown: then only a key no path disputes is found).
    let path = match flow {
        Some(flow) if port.flags & PORT_BY_PATH != 0 => unsafe { (*flow).path },
        _ => 0,
    };
    let Some(verdict) = classify(port, gen as u8, path, pkt) else {
        // Not remembered: a flood of flows that match nothing must not evict decided ones.
        if !C::DEFERS {
            count(stat::NO_MATCH);
            emit(ctx, pkt, gen, None, stat::NO_MATCH, None);
        }
        return C::PASS;
    };
    decision.verdict = *verdict;
    decision.arrival_slot = arrival_slot(port, verdict);
    let first = first_packet(verdict, flow);
    if verdict.action == action::STEER {
        choose_member(pkt, verdict, gen == current, first, flow, decision);
    }
    // Only what the current generation decided, never "no member" (one may come back), and
    // not a choice that hashed MAC addresses (the key is the 5-tuple).
    let no_member = decision.verdict.action == action::STEER && decision.member.ifindex == 0;
    // Nor a flow whose path was not known: its next packet may know it.
    let path_unknown = decision.verdict.action == action::PATH_UNKNOWN;
    let by_mac = decision.verdict.lb_fields & (lb::ETH_SRC | lb::ETH_DST) != 0;
    if gen == current && !no_member && !path_unknown && !by_mac && !first {
        match flow {
            Some(flow) if decision.verdict.flags & FLAG_ENTRY != 0 => {
                remember_entry_decision(flow, decision)
            }
            Some(_) => scratch.remember_decision(),
            None => {}
        }
    }
    let flow = flow.unwrap_or(null_mut());
    let verdict = act(ctx, pkt, flow, gen, &scratch.decision);
    to_node(ctx, verdict, &scratch.decision, flow, gen)
}

/// The decision kept in the flow's state for where it enters its chain, if that is here and
/// it is of the current epoch.
#[inline(always)]
fn entry_decision(flow: *mut FlowState, ifindex: u32, epoch: u64) -> Option<*mut Decision> {
    let d = unsafe { &raw mut (*flow).entry };
    let valid = unsafe {
        (*d).ifindex == ifindex && core::ptr::read_volatile(&raw const (*d).epoch) == epoch
    };
    valid.then_some(d)
}

// `remember_entry_decision` stores `Decision` field by field. The struct has no padding, so a
// field added to it changes its size and stops the build here until it is stored there too.
const _: () = assert!(core::mem::size_of::<Decision>() == 80);

/// Keeps `decision` in the flow's state, for its next packets where it enters. Other CPUs
/// may read the record meanwhile: it is marked stale first and valid (its epoch) last, each
/// store in program order.
#[inline(always)]
fn remember_entry_decision(flow: *mut FlowState, decision: &Decision) {
    unsafe {
        let d = &raw mut (*flow).entry;
        core::ptr::write_volatile(&raw mut (*d).epoch, 0);
        core::ptr::write_volatile(&raw mut (*d).verdict, decision.verdict);
        core::ptr::write_volatile(&raw mut (*d).member, decision.member);
        core::ptr::write_volatile(&raw mut (*d).arrival_slot, decision.arrival_slot);
        core::ptr::write_volatile(&raw mut (*d).entry_port, decision.entry_port);
        core::ptr::write_volatile(&raw mut (*d).pinned, decision.pinned);
        core::ptr::write_volatile(&raw mut (*d).pin_hash, decision.pin_hash);
        core::ptr::write_volatile(&raw mut (*d).pin_member, decision.pin_member);
        core::ptr::write_volatile(&raw mut (*d).ifindex, decision.ifindex);
        core::ptr::write_volatile(&raw mut (*d).epoch, decision.epoch);
    }
}

/// What [`act`] decided, unless that is [`TO_NODE`]: then the packet is sent to another node,
/// outside `act`, whose frame leaves no stack for it.
#[inline(always)]
fn to_node<C: Frame>(
    ctx: &C,
    verdict: i32,
    decision: *const Decision,
    flow: *mut FlowState,
    gen: u32,
) -> i32 {
    if C::DEFERS || verdict != TO_NODE {
        return verdict;
    }
    match tunnel::send(ctx, decision, flow, gen) {
        tunnel::TOO_BIG => ctx.too_big(),
        sent => sent,
    }
}

/// [`act`]'s answer for a packet to be sent to another node, its bookkeeping done.
const TO_NODE: i32 = i32::MIN;

/// Whether this is the first packet of a flow that enters a chain (then its flow state is
/// made now, or was made by this very packet where it entered). Its decisions are not
/// remembered: a flood of flows that send one packet each would otherwise write a decision at
/// every hop and evict the decided flows; the flow's second packet remembers them. (Nor is
/// anything remembered for a flow without state past its entry, whose state was evicted: it
/// is classified until its next packet enters and makes it again.)
#[inline(always)]
fn first_packet(verdict: &Verdict, flow: Option<*mut FlowState>) -> bool {
    if verdict.flags & FLAG_ENTRY != 0 {
        flow.is_none()
    } else {
        flow.is_some_and(|f| unsafe { (*f).seen_twice } == 0)
    }
}

/// The member counter slot a packet arriving on `port` counts as "back out of an SF" in: the
/// side of the pair it left. Going forward it left a pair through that pair's egress (`slot`),
/// in reverse through that pair's ingress (`reverse_slot`): with crossed pairs an interface is
/// one pair's egress and another's ingress, and only the direction tells them apart.
#[inline(always)]
fn arrival_slot(port: &PortValue, verdict: &Verdict) -> u16 {
    if verdict.flags & FLAG_REVERSE != 0 {
        port.reverse_slot
    } else {
        port.slot
    }
}

/// Whether the XDP program can finish this decision itself (see frame.rs): not a tap, not a
/// hand-back to the stack, not a redirect that cannot succeed, and not a redirect into a veth
/// peer unless those take XDP frames.
#[inline(always)]
fn finishes_in_xdp(decision: &Decision, target_live: bool) -> bool {
    let v = &decision.verdict;
    let into_veth_peer = match v.action {
        action::STEER => decision.member.slot & SLOT_PEER != 0,
        action::DELIVER => v.flags & FLAG_DELIVER_PEER != 0,
        _ => return false,
    };
    let to_node = (decision.member.ifindex | v.deliver_ifindex) & REMOTE != 0;
    target_live
        && !to_node
        && v.tap_ifindex == 0
        && (!into_veth_peer || XDP_INTO_VETH.get(0).is_some_and(|on| *on != 0))
}

/// Whether `ifindex` can take a redirect: it exists and is up. The kernel deletes a vanished
/// interface from the map at once; the agent removes one that goes down.
#[inline(always)]
fn live(ifindex: u32) -> bool {
    LIVE.get_ifindex(ifindex).is_some()
}

/// Carries out a decision: counters, tap copy, flow bookkeeping, MAC rewrite, redirect.
#[inline(never)]
fn act<C: Frame>(
    ctx: &C,
    pkt: &Packet,
    flow: *mut FlowState,
    gen: u32,
    decision: &Decision,
) -> i32 {
    let verdict = &decision.verdict;
    let member = &decision.member;
    // Where the packet goes next; "no member" is not a dead target but a drop of its own. A
    // target on another node is live while its node is.
    let target = match verdict.action {
        action::STEER => member.ifindex,
        action::DELIVER => verdict.deliver_ifindex,
        _ => 0,
    };
    let node = if target & REMOTE != 0 {
        tunnel::node_of(gen, target)
    } else {
        None
    };
    let target_live = target == 0 || node.is_some() || (target & REMOTE == 0 && live(target));
    if C::DEFERS && !finishes_in_xdp(decision, target_live) {
        return C::PASS;
    }
    // (A raw pointer, null for none: an Option of one takes two argument registers.)
    let flow = (!flow.is_null()).then_some(flow);
    // Back out of an SF, on its chain (what the SF itself sends is not counted).
    count_member(decision.arrival_slot, false, ctx.len());
    count_chain(verdict.counter, ctx.len());
    if verdict.flags & FLAG_SKIPPED != 0 {
        count(stat::HOP_SKIPPED);
    }
    if !target_live {
        count(stat::TARGET_DOWN);
        let shown = match verdict.action {
            action::STEER => *member,
            _ => Member {
                ifindex: verdict.deliver_ifindex,
                mac: verdict.deliver_mac,
                slot: 0,
            },
        };
        emit(
            ctx,
            pkt,
            gen,
            Some(verdict),
            stat::TARGET_DOWN,
            Some(&shown),
        );
        // Its packets in flight are lost with the interface: nothing holds the flow on an
        // older generation any more, so its next packet takes the newest one.
        if let Some(flow) = flow.or_else(|| flow_of(pkt)) {
            unsafe { core::ptr::write_volatile(&raw mut (*flow).inflight, 0) };
        }
        return C::DROP;
    }
    if verdict.tap_ifindex != 0 {
        tap(ctx, pkt, gen, verdict);
    }
    match verdict.action {
        action::STEER => {
            if member.ifindex == 0 {
                count(stat::NO_MEMBER);
                emit(ctx, pkt, gen, Some(verdict), stat::NO_MEMBER, None);
                return C::DROP;
            }
            if verdict.flags & FLAG_ENTRY != 0 {
                enter(flow, pkt, gen as u8, verdict, decision.pin_member);
            }
            if node.is_some() {
                return TO_NODE;
            }
            if ctx.set_destination_mac(&member.mac).is_err() {
                count(stat::MALFORMED);
                return C::DROP;
            }
            count_member(member.slot, true, ctx.len());
            emit(ctx, pkt, gen, Some(verdict), stat::STEERED, Some(member));
            redirect(
                ctx,
                member.ifindex,
                member.slot & SLOT_PEER != 0,
                stat::STEERED,
            )
        }
        action::PATH_UNKNOWN => {
            count(stat::PATH_UNKNOWN);
            emit(ctx, pkt, gen, Some(verdict), stat::PATH_UNKNOWN, None);
            C::DROP
        }
        action::DELIVER => {
            leave(flow, pkt, gen, verdict);
            if node.is_some() {
                return TO_NODE;
            }
            if verdict.deliver_mac != [0; 6]
                && ctx.set_destination_mac(&verdict.deliver_mac).is_err()
            {
                count(stat::MALFORMED);
                return C::DROP;
            }
            let target = Member {
                ifindex: verdict.deliver_ifindex,
                mac: verdict.deliver_mac,
                slot: 0,
            };
            emit(ctx, pkt, gen, Some(verdict), stat::DELIVERED, Some(&target));
            let peer = verdict.flags & FLAG_DELIVER_PEER != 0;
            redirect(ctx, verdict.deliver_ifindex, peer, stat::DELIVERED)
        }
        _ => {
            leave(flow, pkt, gen, verdict);
            restore_destination_mac(ctx, pkt, flow);
            count(stat::FORWARDED);
            emit(ctx, pkt, gen, Some(verdict), stat::FORWARDED, None);
            C::PASS
        }
    }
}

/// What cannot be fully parsed, where `reason` says why: counted, then dropped at a port where
/// a classifier applies (the stack would route it straight to its destination, around the
/// SFs) unless all of that port's classifiers ask for it to pass. Elsewhere it passes.
#[inline(always)]
fn unparsable<C: Frame>(ifindex: u32, current: u32, reason: u32) -> i32 {
    if C::DEFERS {
        return C::PASS;
    }
    count(reason);
    match port(ifindex, current) {
        Some(port) if port.flags & PORT_PASS_UNPARSABLE == 0 => C::DROP,
        _ => {
            count(stat::UNPARSABLE_PASSED);
            C::PASS
        }
    }
}

/// Gives a fragment the ports of its datagram, so that all of it takes the path of its first
/// fragment: a first fragment records them, a later one looks them up (and the record goes
/// once every byte of the datagram went by). Returns whether the ports are known; when they
/// are, the packet is steered as a whole one from here on.
#[inline(always)]
fn follow_datagram(pkt: &mut Packet, key: &mut FragmentKey, ifindex: u32) -> bool {
    key.family = pkt.family;
    key.proto = pkt.proto;
    key.vlan = pkt.vlan;
    key.id = pkt.frag_id;
    key.ifindex = ifindex;
    key.src = pkt.src;
    key.dst = pkt.dst;
    let now = unsafe { bpf_ktime_get_ns() };
    if pkt.fragment == FIRST_FRAGMENT {
        let state = FragmentState {
            sport: pkt.sport,
            dport: pkt.dport,
            total: 0,
            seen: pkt.frag_len as u64,
            first_ns: now,
        };
        // Replaces a record of the same id: a new datagram, or the same first fragment again.
        count(if FRAGMENTS.insert(&*key, &state, 0).is_ok() {
            stat::FRAGMENTS_TRACKED
        } else {
            stat::FRAGMENT_TABLE_FULL
        });
        pkt.fragment = NOT_FRAGMENT;
        return true;
    }
    let Some(state) = FRAGMENTS.get_ptr_mut(&*key) else {
        return false;
    };
    // Too old: a datagram whose first fragment came long ago, or an identification reused.
    if now.wrapping_sub(unsafe { (*state).first_ns }) > FRAGMENT_TIMEOUT_NS {
        return false;
    }
    unsafe {
        pkt.sport = (*state).sport;
        pkt.dport = (*state).dport;
        if !pkt.frag_more {
            (*state).total = pkt.frag_offset + pkt.frag_len;
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            &raw mut (*state).seen,
            pkt.frag_len as u64,
        );
        let total = core::ptr::read_volatile(&raw const (*state).total) as u64;
        if total != 0 && core::ptr::read_volatile(&raw const (*state).seen) >= total {
            let _ = FRAGMENTS.remove(key);
        }
    }
    pkt.fragment = NOT_FRAGMENT;
    true
}

/// Bookkeeping for the packet parsed into the scratch space, cut into `pieces` fragments that
/// arrive again where it arrived ([`split`]): they, not it, are counted where they go.
/// - In flight: at the chain's entry each fragment is counted as it enters again, so the
///   packet's own count goes; past the entry each leaves the chain on its own, so all but one
///   are added (all of them where the packet was leaving, and so has left already; a packet
///   that entered and left at once, a chain of taps only, was never counted).
/// - Of a later fragment (from datagram byte `offset`, `more` after it) whose datagram's ports
///   are known: its `payload` bytes are taken back from the datagram's record, where its
///   fragments count them again; if it completed the datagram, the record is made again.
#[inline(always)]
fn replaced_by_fragments(
    at_entry: bool,
    leaving: bool,
    pieces: u32,
    offset: u32,
    more: bool,
    payload: u32,
) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let pkt = unsafe { &(*scratch).pkt };
    if let Some(flow) = flow_of(pkt) {
        match (at_entry, leaving) {
            (true, true) => {}
            (true, false) => {
                if unsafe { core::ptr::read_volatile(&raw const (*flow).inflight) } != 0 {
                    add_inflight(flow, u64::MAX); // wrapping: minus one
                }
            }
            (false, false) => add_inflight(flow, (pieces - 1) as u64),
            (false, true) => add_inflight(flow, pieces as u64),
        }
    }
    if offset == 0 || pkt.fragment != NOT_FRAGMENT {
        return; // not a later fragment, or one whose datagram is not followed
    }
    let key = unsafe { &(*scratch).fragment };
    match FRAGMENTS.get_ptr_mut(key) {
        Some(state) => unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*state).seen,
                (payload as u64).wrapping_neg(),
            );
        },
        None => {
            // It completed the datagram: every byte but its own went by.
            let total = if more { 0 } else { offset + payload };
            let state = FragmentState {
                sport: pkt.sport,
                dport: pkt.dport,
                total,
                seen: if more { 0 } else { offset as u64 },
                first_ns: unsafe { bpf_ktime_get_ns() },
            };
            let _ = FRAGMENTS.insert(key, &state, 0);
        }
    }
}

/// The generation that steers this packet. A packet is steered entirely by one generation:
/// past the entry, a flow follows the generation it entered with; at the entry it moves to
/// the active one once none of its packets is still inside the chain (or the lease ran out,
/// for packets an SF dropped).
#[inline(always)]
fn generation(flow: Option<*mut FlowState>, current: u32, entry_port: bool) -> u32 {
    let Some(flow) = flow else {
        return current;
    };
    let flow_gen = unsafe { (*flow).gen } as u32;
    if flow_gen == current || !entry_port {
        return flow_gen;
    }
    let inflight = unsafe { core::ptr::read_volatile(&raw const (*flow).inflight) };
    if inflight == 0 {
        return current;
    }
    let flipped = CONFIG.get(CONFIG_FLIP_NS).copied().unwrap_or(0);
    if unsafe { bpf_ktime_get_ns() }.wrapping_sub(flipped) >= GENERATION_LEASE_NS {
        current
    } else {
        flow_gen
    }
}

/// Probes the interface's tuples, most specific first; the first hit wins. Classifiers of
/// different chains never overlap (the agent rejects it), so the order only matters between
/// classifiers of one chain. A hit whose source-port ranges leave the packet out is no hit:
/// a less specific tuple may still take it.
#[inline(always)]
fn classify(port: &PortValue, gen: u8, path: u32, pkt: &Packet) -> Option<&'static Verdict> {
    // An IPv4 key is half as long, and every probe hashes its whole key. One loop per family:
    // a family test inside the loop would double the paths the verifier walks per shape.
    if pkt.family == FAMILY_V4 {
        probe_tuples(port, pkt, |i, mask| {
            let key = ClassKey4 {
                gen,
                tuple: i,
                proto: pkt.proto & mask.proto,
                _pad: 0,
                domain: port.domain,
                path,
                dport: pkt.dport & mask.dport,
                _pad2: 0,
                src: pkt.src[0] & mask.src[0],
                dst: pkt.dst[0] & mask.dst[0],
            };
            unsafe { CLASSIFY4.get(&key) }
        })
    } else {
        probe_tuples(port, pkt, |i, mask| {
            let key = ClassKey {
                gen,
                tuple: i,
                family: pkt.family,
                proto: pkt.proto & mask.proto,
                domain: port.domain,
                path,
                dport: pkt.dport & mask.dport,
                _pad: 0,
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
            unsafe { CLASSIFY.get(&key) }
        })
    }
}

/// The tuples of the packet's family in order, each looked up by `lookup` (the tuple's index
/// and mask); the first entry whose source-port ranges hold the packet wins.
#[inline(always)]
fn probe_tuples(
    port: &PortValue,
    pkt: &Packet,
    lookup: impl Fn(u8, &TupleMask) -> Option<&'static ClassEntry>,
) -> Option<&'static Verdict> {
    let n = port.n_tuples as usize;
    for i in 0..MAX_TUPLES {
        if i >= n {
            break;
        }
        let mask = &port.tuples[i];
        // A later fragment whose ports are unknown never matches on ports.
        if mask.family != pkt.family || (pkt.fragment == LATER_FRAGMENT && mask.uses_ports != 0) {
            continue;
        }
        if let Some(entry) = lookup(i as u8, mask) {
            if let Some(verdict) = by_source_port(entry, pkt.sport) {
                return Some(verdict);
            }
        }
    }
    None
}

/// The verdict of `entry` for source port `sport`, if one of its ranges holds it. Several
/// ranges are sorted and disjoint: the last that starts at or below `sport` is the only
/// candidate, found by halving (17 steps cover the 65 536 ports; the agent never writes more
/// ranges for one key than there are ports).
#[inline(always)]
fn by_source_port(entry: &'static ClassEntry, sport: u16) -> Option<&'static Verdict> {
    let candidate = if entry.ranges == 0 {
        &entry.only
    } else {
        let mut base = entry.first;
        let mut len = entry.ranges;
        for _ in 0..17 {
            if len <= 1 {
                break;
            }
            let half = len / 2;
            let middle = SOURCE_PORTS.get(base + half)?;
            if middle.lo <= sport {
                base += half;
            }
            len -= half;
        }
        SOURCE_PORTS.get(base)?
    };
    (candidate.lo <= sport && sport <= candidate.hi).then_some(&candidate.verdict)
}

#[inline(always)]
fn flow_tuple4(pkt: &Packet) -> FlowTuple4 {
    FlowTuple4 {
        src: pkt.src[0],
        dst: pkt.dst[0],
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: 0,
        vlan: pkt.vlan,
    }
}

#[inline(always)]
fn flow_tuple(pkt: &Packet) -> FlowTuple {
    FlowTuple {
        family: pkt.family,
        proto: pkt.proto,
        vlan: pkt.vlan,
        sport: pkt.sport,
        dport: pkt.dport,
        src: pkt.src,
        dst: pkt.dst,
    }
}

/// Sends a copy to the tap SF (on this node, or on another: [`tunnel::copy_to_node`]), then
/// puts the destination MAC back for the original.
#[inline(always)]
fn tap<C: Frame>(ctx: &C, pkt: &Packet, gen: u32, verdict: &Verdict) {
    if verdict.tap_ifindex & REMOTE != 0 {
        if !tunnel::copy_to_node(ctx, gen, verdict) {
            count(stat::TAP_FAILED);
        }
        let _ = ctx.set_destination_mac(&pkt.eth_dst);
        return;
    }
    if !live(verdict.tap_ifindex) || ctx.set_destination_mac(&verdict.tap_mac).is_err() {
        count(stat::TAP_FAILED);
        return;
    }
    if ctx.clone_into(verdict.tap_ifindex) {
        count(stat::TAPPED);
        count_member(verdict.tap_slot, true, ctx.len());
    } else {
        count(stat::TAP_FAILED);
    }
    let _ = ctx.set_destination_mac(&pkt.eth_dst);
}

/// Picks the member into `decision`: the flow's pin if it has one and its member is still in
/// the group (so a surviving member never loses a flow when the group changes, and a removed
/// one keeps none), otherwise the Maglev table; the choice is pinned, from the active
/// generation only (an older one may still hold members that are gone). A flow's first pin
/// is kept with its flow state (see [`FirstPin`]); seen again, it joins the established ones
/// (here, or by [`establish`] on the decided path). A group of one member looks no pin up.
/// Member `ifindex` 0: the group has no live member.
#[inline(always)]
fn choose_member(
    pkt: &Packet,
    verdict: &Verdict,
    active: bool,
    first: bool,
    flow: Option<*mut FlowState>,
    decision: &mut Decision,
) {
    let mut input = hash_input(pkt);
    if verdict.flags & FLAG_PORTLESS != 0 && verdict.lb_fields == 0 {
        // The classifier ignores ports: so does the default choice, or fragments whose first
        // one was not seen could part ways. (Explicit `lbFields` are honoured as given.)
        input.sport = 0;
        input.dport = 0;
    }
    let hash = sfc_common::flow_hash(&input, verdict.lb_fields);
    let pin = PinKey {
        group: verdict.group,
        hash,
    };
    // A pin counts only while its member is still in the group's table.
    let member_of = |ifindex: &u32| unsafe {
        MEMBERS.get(&MemberKey {
            slot: verdict.slot,
            ifindex: *ifindex,
        })
    };
    let ring = || match RING.get(verdict.slot * RING_SIZE + hash % RING_SIZE) {
        Some(entry) if entry.ingress.ifindex != 0 => Some(entry),
        _ => None,
    };
    // A pin could only name the one member, or one that left: none is looked up. Pins are
    // still written, as in any group, for the day the group grows (not so for a choice that
    // hashes MAC addresses: such flows take this path at every packet, and look pins up).
    let one_member = verdict.flags & FLAG_ONE_MEMBER != 0
        && verdict.lb_fields & (lb::ETH_SRC | lb::ETH_DST) == 0;
    let first_pin = FirstPin::of(flow, verdict);
    let (entry, pinned) = if one_member {
        let Some(entry) = ring() else { return };
        if active {
            if first {
                first_pin.write(&pin, entry.ingress.ifindex);
            } else {
                let _ = PINS.insert(&pin, &entry.ingress.ifindex, 0);
            }
        }
        (*entry, active && !first)
    } else if let Some(entry) = unsafe { PINS.get(&pin) }.and_then(member_of) {
        (*entry, true)
    } else if let Some(entry) = first_pin.read(&pin).as_ref().and_then(member_of) {
        // Seen before: established now.
        if active {
            let _ = PINS.insert(&pin, &entry.ingress.ifindex, 0);
        }
        (*entry, active)
    } else {
        let Some(entry) = ring() else { return };
        if active {
            first_pin.write(&pin, entry.ingress.ifindex);
        }
        (*entry, false)
    };
    decision.member = if verdict.flags & FLAG_REVERSE != 0 {
        entry.egress
    } else {
        entry.ingress
    };
    decision.pinned = pinned as u8;
    decision.pin_hash = hash;
    decision.pin_member = entry.ingress.ifindex;
}

/// Where a flow seen once keeps the member a hop chose for it. In its flow state (found at
/// every hop anyway) for the first `FLOW_PIN_HOPS` hops: a new flow then inserts into no pin
/// table, only into the flow table where it enters. Past those hops, for a flow without state
/// past its entry, or for a choice that hashes MAC addresses (which a flow's state, keyed by
/// its 5-tuple, does not tell apart), in the table of new pins.
enum FirstPin {
    /// The flow state's slot for this hop.
    Slot(*mut u32),
    /// The flow enters here and has no state yet: [`enter`] writes it with the choice.
    Entering,
    Table,
}

impl FirstPin {
    #[inline(always)]
    fn of(flow: Option<*mut FlowState>, verdict: &Verdict) -> Self {
        let hop = verdict.hop as usize;
        if verdict.lb_fields & (lb::ETH_SRC | lb::ETH_DST) != 0 {
            return FirstPin::Table;
        }
        match flow {
            Some(flow) if hop < FLOW_PIN_HOPS => {
                FirstPin::Slot(unsafe { (&raw mut (*flow).first_members).cast::<u32>().add(hop) })
            }
            None if hop < FLOW_PIN_HOPS && verdict.flags & FLAG_ENTRY != 0 => FirstPin::Entering,
            _ => FirstPin::Table,
        }
    }

    #[inline(always)]
    fn read(&self, pin: &PinKey) -> Option<u32> {
        match *self {
            FirstPin::Slot(slot) => Some(unsafe { *slot }).filter(|m| *m != 0),
            FirstPin::Entering => None,
            FirstPin::Table => unsafe { NEW_PINS.get(pin) }.copied(),
        }
    }

    #[inline(always)]
    fn write(&self, pin: &PinKey, member: u32) {
        match *self {
            FirstPin::Slot(slot) => unsafe {
                if *slot != member {
                    *slot = member;
                }
            },
            FirstPin::Entering => {}
            FirstPin::Table => {
                let _ = NEW_PINS.insert(pin, &member, 0);
            }
        }
    }
}

/// The second packet of a decided flow: its pin joins the established ones, where a flood of
/// new flows (which never get there) cannot evict it.
#[inline(always)]
fn establish(decision: &mut Decision) {
    let pin = PinKey {
        group: decision.verdict.group,
        hash: decision.pin_hash,
    };
    let _ = PINS.insert(&pin, &decision.pin_member, 0);
    decision.pinned = 1;
}

/// The flow state of this packet's flow, if it has one.
#[inline(always)]
fn flow_of(pkt: &Packet) -> Option<*mut FlowState> {
    if pkt.family == FAMILY_V4 {
        FLOWS4.get_ptr_mut(&flow_tuple4(pkt))
    } else {
        FLOWS.get_ptr_mut(&flow_tuple(pkt))
    }
}

/// Into `ifindex`, or with `peer` straight into its veth peer (in the SF's namespace).
#[inline(always)]
fn redirect<C: Frame>(ctx: &C, ifindex: u32, peer: bool, counter: u32) -> i32 {
    let verdict = ctx.redirect(ifindex, peer);
    if verdict == C::REDIRECTED {
        count(counter);
    } else {
        count(stat::REDIRECT_FAILED);
    }
    verdict
}

/// On entry to a chain: the flow's generation, one more packet in flight, and its destination
/// MAC to put back after the last hop. Plain writes only when something changed. A new flow's
/// state starts with the member its first hop chose (`member`, see [`FirstPin`]).
#[inline(always)]
fn enter(flow: Option<*mut FlowState>, pkt: &Packet, gen: u8, verdict: &Verdict, member: u32) {
    let path = verdict.path;
    match flow {
        Some(flow) => unsafe {
            if (*flow).gen != gen {
                (*flow).gen = gen;
            }
            if (*flow).path != path {
                (*flow).path = path;
            }
            if (*flow).mac != pkt.eth_dst {
                (*flow).mac = pkt.eth_dst;
            }
            if (*flow).seen_twice == 0 {
                (*flow).seen_twice = 1;
            }
            add_inflight(flow, 1);
        },
        None => insert_flow(pkt, pkt.eth_dst, gen, path, 1, Some((verdict.hop, member))),
    }
}

/// Makes the state of the packet's flow: its destination MAC at the entry, generation, path,
/// packets in flight and, as `first`, the member one hop chose (`(hop, member)`). Built in the
/// scratch space: it is too big for the stack of the programs that make one. Its entry
/// decision stays zeroed there, naming no interface.
#[inline(always)]
fn insert_flow(
    pkt: &Packet,
    mac: [u8; 6],
    gen: u8,
    path: u32,
    inflight: u64,
    first: Option<(u8, u32)>,
) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let state = unsafe { &mut (*scratch).flow };
    state.mac = mac;
    state.gen = gen;
    state.seen_twice = 0;
    state.path = path;
    state.inflight = inflight;
    state.first_members = [0; FLOW_PIN_HOPS];
    if let Some((hop, member)) = first {
        if let Some(slot) = state.first_members.get_mut(hop as usize) {
            *slot = member;
        }
    }
    let _ = if pkt.family == FAMILY_V4 {
        FLOWS4.insert(&flow_tuple4(pkt), state, 0)
    } else {
        FLOWS.insert(&flow_tuple(pkt), state, 0)
    };
}

/// After the last hop: one packet fewer in flight.
#[inline(always)]
fn leave(flow: Option<*mut FlowState>, pkt: &Packet, gen: u32, verdict: &Verdict) {
    if verdict.flags & FLAG_ENTRY != 0 {
        // Entered and left at once (a chain of taps only): never counted in flight. Its state
        // is made all the same, to keep what is decided for it where it enters.
        if flow.is_none() {
            insert_flow(pkt, pkt.eth_dst, gen as u8, verdict.path, 0, None);
        }
        return;
    }
    if let Some(flow) = flow {
        if unsafe { core::ptr::read_volatile(&raw const (*flow).inflight) } != 0 {
            add_inflight(flow, u64::MAX); // wrapping: minus one
        }
    }
}

/// An atomic add (several CPUs may carry packets of one flow); its result is not used, so it
/// compiles to the BPF atomic add every kernel supports.
#[inline(always)]
fn add_inflight(flow: *mut FlowState, delta: u64) {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*flow).inflight, delta)
    };
}

#[inline(always)]
fn restore_destination_mac<C: Frame>(ctx: &C, pkt: &Packet, flow: Option<*mut FlowState>) {
    if let Some(flow) = flow {
        let mac = unsafe { (*flow).mac };
        if mac != pkt.eth_dst {
            let _ = ctx.set_destination_mac(&mac);
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
