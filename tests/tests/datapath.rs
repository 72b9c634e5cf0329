//! Packet cases through BPF_PROG_TEST_RUN: the real program, with maps filled by the real
//! agent code, in a network namespace private to the test's thread.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use aya::programs::{TestRun, TestRunOptions};
use common::{apply, ifindex, peer_mac, run_on, run_xdp_on, stat, stats, Sandbox};
use sfc_config::{model::State, plan::plan};
use sfc_daemon::dataplane::{netlink::read_interfaces, tables::Tables, Mode};
use sfc_lab::{
    frames::{self, l4, opts8},
    lab::run,
    yaml::{bulk_chain, doc},
};

/// TC_ACT_UNSPEC (TCX_NEXT): on to the next program, or the stack.
const TC_ACT_NEXT: u32 = -1i32 as u32;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const SRC: [u8; 4] = [198, 18, 0, 10];
const DST: [u8; 4] = [198, 18, 1, 1];
const UDP_DST: [u8; 4] = [198, 18, 9, 9];
const SRC6: [u8; 16] = [0xfd, 0, 0x05, 0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const DST6: [u8; 16] = [0xfd, 0, 0x05, 0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const ORIGINAL_DST_MAC: [u8; 6] = [0x02, 0xdd, 0, 0, 0, 1];
const SRC_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 1];

fn chain_yaml() -> String {
    let pp = |name: &str, port: &str| {
        doc(
            "PortPair",
            name,
            &format!("{{ingress: {port}-in, egress: {port}-out}}"),
        )
    };
    let group =
        |name: &str, pairs: &str| doc("PortPairGroup", name, &format!("{{portPairs: [{pairs}]}}"));
    let fc = |name: &str, spec: &str| {
        doc(
            "FlowClassifier",
            name,
            &format!("{{logicalSourcePort: lo, {spec}}}"),
        )
    };
    let chain = |name: &str, groups: &str, fcs: &str| {
        doc(
            "PortChain",
            name,
            &format!("{{portPairGroups: [{groups}], flowClassifiers: [{fcs}]}}"),
        )
    };
    [
        pp("A", "sfa"),
        pp("B", "sfb"),
        pp("Z", "sfz"),
        pp("C", "sfc"),
        group("G", "A, B"),
        group("GZ", "Z"),
        group("GC", "C"),
        fc("web", "protocol: tcp, destinationIpPrefix: 198.18.1.0/24, destinationPortRange: '80'"),
        fc("web6", "ethertype: IPv6, protocol: tcp, destinationIpPrefix: 'fd00:5fc::100/128', destinationPortRange: '80'"),
        fc("udp", "protocol: udp, destinationIpPrefix: 198.18.9.9/32"),
        chain("C1", "G, GZ", "web, web6"),
        chain("C2", "GC", "udp"),
    ]
    .concat()
}

/// The SF interfaces of [`chain_yaml`]: each a veth whose peer (`NAME-p`) stands for the SF.
const SF_VETHS: [&str; 8] = [
    "sfa-in", "sfa-out", "sfb-in", "sfb-out", "sfz-in", "sfz-out", "sfc-in", "sfc-out",
];

fn sandbox(yaml: &str) -> Sandbox {
    sandbox_in(yaml, Mode::Tc)
}

fn sandbox_in(yaml: &str, mode: Mode) -> Sandbox {
    common::sandbox(yaml, mode, &SF_VETHS)
}

/// A named namespace holding the SF ends of the sandbox's veths, as SFs in namespaces of
/// their own have them; deleted (with those veths) on drop.
struct PeerNamespace(String);

impl PeerNamespace {
    fn take_sf_ends() -> Self {
        let name = format!("sfc-dp-peers-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name])).unwrap();
        let ns = PeerNamespace(name);
        // No IPv6 there: the SF ends' neighbour discovery would reach the program and move
        // the counters the tests compare.
        run(Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
            .args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]))
        .unwrap();
        for sf in ["sfa", "sfb", "sfz", "sfc"] {
            for side in ["in", "out"] {
                let peer = format!("{sf}-{side}-p");
                run(Command::new("ip").args(["link", "set", &peer, "netns", &ns.0])).unwrap();
                run(Command::new("ip").args(["-n", &ns.0, "link", "set", &peer, "up"])).unwrap();
            }
        }
        ns
    }
}

impl Drop for PeerNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// The PG member (of A and B) a steered frame went to, by its new destination MAC.
fn member_of(steered: &[u8]) -> &'static str {
    if steered[0..6] == peer_mac("sfa-in") {
        "sfa"
    } else {
        "sfb"
    }
}

/// `frame` as an SF sends it back out: with some other destination MAC.
fn as_sent_back_by_the_sf(frame: &[u8]) -> Vec<u8> {
    let mut from_sf = frame.to_vec();
    from_sf[0..6].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 7]);
    from_sf
}

// ---- frames (sfc_lab::frames, from SRC_MAC to ORIGINAL_DST_MAC, SRC to DST) ----

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    frames::eth(ORIGINAL_DST_MAC, SRC_MAC, ethertype, payload)
}

/// A frame with a VLAN tag (VLAN 100).
fn vlan(tpid: u16, inner_type: u16, payload: &[u8]) -> Vec<u8> {
    eth(tpid, &frames::vlan(100, inner_type, payload))
}

fn ipv4(proto: u8, dst: [u8; 4], options: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
    frames::ipv4(proto, SRC, dst, options, frag, payload)
}

fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
    eth(0x0800, &ipv4(6, DST, &[], 0, &l4(sport, dport, 20)))
}

/// An IPv6 frame from SRC6 to DST6 (see [`frames::ipv6`]).
fn ipv6(exts: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
    eth(0x86dd, &frames::ipv6(SRC6, DST6, exts, proto, payload))
}

#[test]
fn steers_matching_packets_through_every_encapsulation() {
    let mut sb = sandbox(&chain_yaml());
    let members: BTreeSet<[u8; 6]> = [peer_mac("sfa-in"), peer_mac("sfb-in")].into();
    let payload = ipv4(6, DST, &[], 0, &l4(40000, 80, 20));
    let options = [1u8, 1, 1, 1, 0x44, 8, 5, 0, 0, 0, 0, 0]; // NOPs and a timestamp option
    let cases = [
        ("plain", tcp4(40000, 80)),
        ("802.1Q", vlan(0x8100, 0x0800, &payload)),
        (
            "QinQ",
            vlan(
                0x88a8,
                0x8100,
                &[&[0x00, 0x65, 0x08, 0x00][..], &payload].concat(),
            ),
        ),
        (
            "IPv4 options",
            eth(0x0800, &ipv4(6, DST, &options, 0, &l4(40000, 80, 20))),
        ),
        ("IPv6", ipv6(&[], 6, &l4(40000, 80, 20))),
        (
            "IPv6 hop-by-hop + destination options",
            ipv6(&[(0, opts8()), (60, opts8())], 6, &l4(40000, 80, 20)),
        ),
        (
            "IPv6 routing header",
            ipv6(&[(43, vec![0, 0, 0, 0, 0, 0, 0, 0])], 6, &l4(40000, 80, 20)),
        ),
    ];
    for (what, frame) in cases {
        let (verdict, out) = run_on(&mut sb, &frame, 0);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        let mac: [u8; 6] = out[0..6].try_into().unwrap();
        assert!(
            members.contains(&mac),
            "{what}: destination MAC {mac:02x?} is not a PG member"
        );
        assert_eq!(
            out[6..],
            frame[6..],
            "{what}: only the destination MAC may change"
        );
    }
}

/// Flows (by source port) that the sandbox's chain puts on each member of G.
fn flows_by_member(
    sb: &mut Sandbox,
    ports: std::ops::Range<u16>,
) -> BTreeMap<&'static str, Vec<u16>> {
    let mut by_member: BTreeMap<&'static str, Vec<u16>> = BTreeMap::new();
    for sport in ports {
        let (verdict, out) = run_on(sb, &tcp4(sport, 80), 0);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        by_member.entry(member_of(&out)).or_default().push(sport);
    }
    by_member
}

/// A member taken out of its group by an apply loses its flows, even those still inside the
/// chain at the flip (which finish on the old tables, and must not pin themselves back to it
/// from there); the other member keeps every one of its own.
#[test]
fn a_member_removed_from_its_group_loses_its_flows_and_only_those() {
    let mut sb = sandbox(&chain_yaml());
    // The packets never come back from the SFs: every flow stays "inside the chain".
    let before = flows_by_member(&mut sb, 40000..40032);
    assert_eq!(before.len(), 2, "32 flows should use both members");
    apply(
        &mut sb,
        &chain_yaml().replace("portPairs: [A, B]", "portPairs: [B]"),
    );
    // Within the lease the flows finish on the old tables (A's may already move, on a
    // machine slow enough to outlast the lease here); B's stay on B throughout.
    let during = flows_by_member(&mut sb, 40000..40032);
    assert!(
        before["sfb"].iter().all(|f| during["sfb"].contains(f)),
        "{during:?}"
    );
    // ...then every one moves to the new ones: all on B, B's own never moved.
    std::thread::sleep(Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS));
    let after = flows_by_member(&mut sb, 40000..40032);
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), ["sfb"]);
    // And back: A's return takes no flow from B (B's pins hold them).
    apply(&mut sb, &chain_yaml());
    std::thread::sleep(Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS));
    assert_eq!(flows_by_member(&mut sb, 40000..40032), after);
}

/// A flood of new flows, four times what each pin table holds, must not evict the pins of
/// established flows (seen twice): when their group then changes (A's weight goes from 1 to
/// 4, which moves some of B's flows to A in the Maglev table), every one stays on its member.
/// Flows seen once are pinned apart, in the table the flood churns.
#[test]
fn a_flood_of_new_flows_leaves_established_flows_on_their_members() {
    let tables = Tables {
        pins: 1024,
        ..Tables::default()
    };
    let mut sb = common::sandbox_with(&chain_yaml(), Mode::Tc, &SF_VETHS, tables);
    let established = 40000..40128;
    let before = flows_by_member(&mut sb, established.clone());
    assert_eq!(
        flows_by_member(&mut sb, established.clone()),
        before,
        "seen twice"
    );
    assert_eq!(before.len(), 2, "128 flows should use both members");
    for sport in 1000..1000 + 4 * 1024 {
        assert_eq!(run_on(&mut sb, &tcp4(sport, 80), 0).0, TC_ACT_REDIRECT);
    }
    let heavier_a = chain_yaml().replace(
        "{ingress: sfa-in, egress: sfa-out}",
        "{ingress: sfa-in, egress: sfa-out, weight: 4}",
    );
    assert_ne!(heavier_a, chain_yaml());
    apply(&mut sb, &heavier_a);
    std::thread::sleep(Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS));
    assert_eq!(flows_by_member(&mut sb, established), before);
    // The change is real: of flows never seen, A now takes about four in five.
    let fresh = flows_by_member(&mut sb, 50000..50200);
    let on_a = fresh.get("sfa").map_or(0, Vec::len);
    assert!(on_a > 140, "{on_a} of 200 new flows on A");
}

/// A flow seen once keeps the member each hop chose for it when groups grow before its second
/// packet, one-member groups included: a stateful SF must not see the rest of a connection
/// whose first packet went elsewhere. The first hops keep that choice in the flow's own state,
/// hops from `FLOW_PIN_HOPS` on in the table of new pins: the chain is long enough for both,
/// and the groups that grow are the first two and the two past that limit.
#[test]
fn a_flow_seen_once_stays_on_its_members_when_their_groups_grow() {
    let hops = sfc_common::FLOW_PIN_HOPS + 2;
    let growing = [0, 1, hops - 2, hops - 1];
    let sfs: Vec<String> = (0..hops)
        .map(|i| format!("s{i}"))
        .chain(growing.iter().map(|i| format!("g{i}")))
        .collect();
    let veths: Vec<String> = sfs
        .iter()
        .flat_map(|sf| [format!("{sf}-in"), format!("{sf}-out")])
        .collect();
    let yaml = |grown: bool| {
        let mut docs: Vec<String> = sfs
            .iter()
            .map(|sf| {
                doc(
                    "PortPair",
                    sf,
                    &format!("{{ingress: {sf}-in, egress: {sf}-out}}"),
                )
            })
            .collect();
        for i in 0..hops {
            let pairs = if grown && growing.contains(&i) {
                format!("s{i}, g{i}")
            } else {
                format!("s{i}")
            };
            docs.push(doc(
                "PortPairGroup",
                &format!("G{i}"),
                &format!("{{portPairs: [{pairs}]}}"),
            ));
        }
        let groups: Vec<String> = (0..hops).map(|i| format!("G{i}")).collect();
        docs.push(doc(
            "FlowClassifier",
            "web",
            "{logicalSourcePort: lo, protocol: tcp, destinationIpPrefix: 198.18.1.0/24, destinationPortRange: '80'}",
        ));
        docs.push(doc(
            "PortChain",
            "C1",
            &format!(
                "{{portPairGroups: [{}], flowClassifiers: [web]}}",
                groups.join(", ")
            ),
        ));
        docs.concat()
    };
    let veth_names: Vec<&str> = veths.iter().map(String::as_str).collect();
    let mut sb = common::sandbox(&yaml(false), Mode::Tc, &veth_names);
    let by_mac: BTreeMap<[u8; 6], &str> = sfs
        .iter()
        .map(|sf| (peer_mac(&format!("{sf}-in")), sf.as_str()))
        .collect();
    // The SF each hop sends the flow of source port `sport` into, in order.
    let path = |sb: &mut Sandbox, sport: u16| -> Vec<String> {
        let (mut frame, mut from) = (tcp4(sport, 80), 0);
        let mut path = Vec::new();
        for hop in 0..hops {
            let (verdict, out) = run_on(sb, &frame, from);
            assert_eq!(verdict, TC_ACT_REDIRECT, "flow {sport}, hop {hop}");
            let sf = by_mac[&<[u8; 6]>::try_from(&out[0..6]).unwrap()];
            path.push(sf.to_string());
            frame = as_sent_back_by_the_sf(&out);
            from = ifindex(&format!("{sf}-out"));
        }
        path
    };
    let seen_once = 40000..40048;
    let before: Vec<Vec<String>> = seen_once.clone().map(|p| path(&mut sb, p)).collect();
    let straight: Vec<String> = (0..hops).map(|i| format!("s{i}")).collect();
    assert!(before.iter().all(|p| *p == straight), "{before:?}");
    apply(&mut sb, &yaml(true));
    std::thread::sleep(Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS));
    let second: Vec<Vec<String>> = seen_once.clone().map(|p| path(&mut sb, p)).collect();
    assert_eq!(second, before, "their second packets");
    let third: Vec<Vec<String>> = seen_once.map(|p| path(&mut sb, p)).collect();
    assert_eq!(third, before, "their third packets (decided)");
    // The groups did grow: of flows never seen, some go to each new member.
    let fresh: Vec<Vec<String>> = (50000..50048).map(|p| path(&mut sb, p)).collect();
    for i in growing {
        assert!(
            fresh.iter().any(|p| p[i] == format!("g{i}")),
            "no new flow went to g{i}: {fresh:?}"
        );
    }
}

/// A member whose interface vanishes (or goes down) is not sent packets that would be lost
/// while the agent catches up: they are dropped and counted as such, never as steered.
#[test]
fn a_redirect_into_a_gone_or_down_interface_is_counted_as_target_down() {
    let mut sb = sandbox(&chain_yaml());
    let by_member = flows_by_member(&mut sb, 40000..40032);
    let on_a = by_member["sfa"][0];
    let on_b = by_member["sfb"][0];
    // Down: the agent follows the link (here by hand: no agent in the sandbox).
    run(Command::new("ip").args(["link", "set", "sfa-in-p", "down"])).unwrap();
    sb.dataplane.sync_live(&read_interfaces().unwrap()).unwrap();
    let before = stats(&sb);
    assert_eq!(run_on(&mut sb, &tcp4(on_a, 80), 0).0, TC_ACT_SHOT, "A down");
    assert_eq!(
        run_on(&mut sb, &tcp4(on_b, 80), 0).0,
        TC_ACT_REDIRECT,
        "B up"
    );
    assert_eq!(stat_delta(&before, &sb, "target_down"), 1);
    assert_eq!(stat_delta(&before, &sb, "steered"), 1);
    run(Command::new("ip").args(["link", "set", "sfa-in-p", "up"])).unwrap();
    sb.dataplane.sync_live(&read_interfaces().unwrap()).unwrap();
    assert_eq!(
        run_on(&mut sb, &tcp4(on_a, 80), 0).0,
        TC_ACT_REDIRECT,
        "A up again"
    );
    // Gone: the kernel itself takes it out of the liveness map, at once.
    run(Command::new("ip").args(["link", "del", "sfa-in"])).unwrap();
    let before = stats(&sb);
    assert_eq!(run_on(&mut sb, &tcp4(on_a, 80), 0).0, TC_ACT_SHOT, "A gone");
    assert_eq!(stat_delta(&before, &sb, "target_down"), 1);
    assert_eq!(stat_delta(&before, &sb, "steered"), 0);
}

/// The same 5-tuple in two VLANs is two flows: its own decision and its own member choice.
#[test]
fn the_vlan_is_part_of_a_flow() {
    let mut sb = sandbox(&chain_yaml());
    let full = tcp4(40000, 80);
    let members: BTreeSet<&str> = (1..=16u16)
        .map(|id| {
            let tagged = eth(0x8100, &frames::vlan(id, 0x0800, &full[14..]));
            let (verdict, out) = run_on(&mut sb, &tagged, 0);
            assert_eq!(verdict, TC_ACT_REDIRECT, "VLAN {id}");
            member_of(&out)
        })
        .collect();
    // All 16 on one member by chance: 2 in 65536.
    assert_eq!(members.len(), 2, "16 VLANs should use both members");
}

/// Traffic that matches nothing leaves no decision behind: a flood of such flows cannot evict
/// the decisions of steered ones.
/// networking-sfc's OVS driver classifier, ranges on both ports (refused before as 20 match
/// shapes), beside a chain whose classifier differs from it by source port alone: both keep
/// exactly their ports, the second through ranges stored for their shared keys.
#[test]
fn port_ranges_on_both_sides_steer_exactly_their_ports() {
    let ranges = |name: &str, sport: &str| {
        doc(
            "FlowClassifier",
            name,
            &format!("{{logicalSourcePort: lo, protocol: tcp, sourcePortRange: '{sport}', destinationPortRange: '300:400'}}"),
        )
    };
    let yaml = [
        doc("PortPair", "A", "{ingress: sfa-in, egress: sfa-out}"),
        doc("PortPair", "C", "{ingress: sfc-in, egress: sfc-out}"),
        doc("PortPairGroup", "GA", "{portPairs: [A]}"),
        doc("PortPairGroup", "GC", "{portPairs: [C]}"),
        ranges("low", "100:200"),
        ranges("high", "201:300"),
        doc(
            "PortChain",
            "R1",
            "{portPairGroups: [GA], flowClassifiers: [low]}",
        ),
        doc(
            "PortChain",
            "R2",
            "{portPairGroups: [GC], flowClassifiers: [high]}",
        ),
    ]
    .concat();
    let mut sb = sandbox(&yaml);
    for sport in [1, 99, 100, 101, 150, 199, 200, 201, 250, 300, 301, 65535] {
        for dport in [80, 299, 300, 301, 319, 320, 350, 399, 400, 401, 65535] {
            let (verdict, out) = run_on(&mut sb, &tcp4(sport, dport), 0);
            let expected = match (sport, dport) {
                (100..=200, 300..=400) => Some("sfa-in"),
                (201..=300, 300..=400) => Some("sfc-in"),
                _ => None,
            };
            match expected {
                Some(sf) => {
                    assert_eq!(verdict, TC_ACT_REDIRECT, "{sport} -> {dport}");
                    assert_eq!(out[0..6], peer_mac(sf), "{sport} -> {dport}");
                }
                None => assert_eq!(verdict, TC_ACT_NEXT, "{sport} -> {dport}"),
            }
        }
    }
}

/// Chains X (from lo) and Y (from sfz-in) take all UDP and share group G: as networking-sfc
/// allows, since their classifiers enter at different ports. Leaving G, a flow goes on along
/// the chain it entered, as recorded with it; a packet of a flow never seen entering is
/// dropped and counted there, never sent down either chain.
#[test]
fn chains_sharing_a_group_keep_each_flow_on_the_chain_it_entered() {
    let yaml = [
        doc("PortPair", "A", "{ingress: sfa-in, egress: sfa-out}"),
        doc("PortPair", "B", "{ingress: sfb-in, egress: sfb-out}"),
        doc("PortPair", "C", "{ingress: sfc-in, egress: sfc-out}"),
        doc("PortPairGroup", "G", "{portPairs: [A]}"),
        doc("PortPairGroup", "GB", "{portPairs: [B]}"),
        doc("PortPairGroup", "GC", "{portPairs: [C]}"),
        doc(
            "FlowClassifier",
            "fx",
            "{protocol: udp, logicalSourcePort: lo}",
        ),
        doc(
            "FlowClassifier",
            "fy",
            "{protocol: udp, logicalSourcePort: sfz-in}",
        ),
        doc(
            "PortChain",
            "X",
            "{portPairGroups: [G, GC], flowClassifiers: [fx]}",
        ),
        doc(
            "PortChain",
            "Y",
            "{portPairGroups: [G, GB], flowClassifiers: [fy]}",
        ),
    ]
    .concat();
    let mut sb = sandbox(&yaml);
    let udp = |sport| eth(0x0800, &ipv4(17, UDP_DST, &[], 0, &l4(sport, 53, 8)));
    for (sport, entry, next) in [(5000, 1, "sfc-in"), (5001, ifindex("sfz-in"), "sfb-in")] {
        let (verdict, out) = run_on(&mut sb, &udp(sport), entry);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{sport} enters");
        assert_eq!(out[0..6], peer_mac("sfa-in"), "{sport} into G");
        for _ in 0..3 {
            let (verdict, out) = run_on(
                &mut sb,
                &as_sent_back_by_the_sf(&udp(sport)),
                ifindex("sfa-out"),
            );
            assert_eq!(verdict, TC_ACT_REDIRECT, "{sport} leaves G");
            assert_eq!(out[0..6], peer_mac(next), "{sport} goes on to {next}");
        }
    }
    let before = stats(&sb);
    let (verdict, _) = run_on(
        &mut sb,
        &as_sent_back_by_the_sf(&udp(5002)),
        ifindex("sfa-out"),
    );
    assert_eq!(verdict, TC_ACT_SHOT, "a flow that never entered, leaving G");
    assert_eq!(stat_delta(&before, &sb, "path_unknown"), 1);
    // Once it enters (at X's port), it has a path.
    run_on(&mut sb, &udp(5002), 1);
    let (verdict, out) = run_on(
        &mut sb,
        &as_sent_back_by_the_sf(&udp(5002)),
        ifindex("sfa-out"),
    );
    assert_eq!(
        (verdict, &out[0..6]),
        (TC_ACT_REDIRECT, &peer_mac("sfc-in")[..])
    );
}

/// The IPv4 flow table of `sb`, as a map to read and write.
fn flows4(
    sb: &Sandbox,
) -> aya::maps::HashMap<aya::maps::MapData, sfc_common::FlowTuple4, sfc_common::FlowState> {
    let path = sb.bpffs.0.join("maps").join(sfc_common::MAP_FLOWS4);
    let map = aya::maps::MapData::from_pin(path).unwrap();
    aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(map)).unwrap()
}

/// Decisions remembered: in the decision table, and where flows enter, in their state.
fn decisions(sb: &Sandbox) -> (usize, usize) {
    let path = sb.bpffs.0.join("maps").join(sfc_common::MAP_DECISIONS4);
    let map = aya::maps::MapData::from_pin(path).unwrap();
    let table: aya::maps::HashMap<_, sfc_common::DecisionKey4, sfc_common::Decision> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(map)).unwrap();
    let at_entries = flows4(sb)
        .iter()
        .filter(|entry| entry.as_ref().unwrap().1.entry.ifindex != 0)
        .count();
    (table.keys().count(), at_entries)
}

#[test]
fn no_decision_is_remembered_for_traffic_that_matches_nothing_nor_for_a_first_packet() {
    let mut sb = sandbox(&chain_yaml());
    for sport in 40000..40100 {
        assert_eq!(run_on(&mut sb, &tcp4(sport, 81), 0).0, TC_ACT_NEXT);
    }
    assert_eq!(decisions(&sb), (0, 0));
    // Nor for a flow's first packet (a flood of new flows would evict the decided ones); its
    // second one is remembered, in the flow's state where it enters.
    assert_eq!(run_on(&mut sb, &tcp4(40000, 80), 0).0, TC_ACT_REDIRECT);
    assert_eq!(decisions(&sb), (0, 0));
    assert_eq!(run_on(&mut sb, &tcp4(40000, 80), 0).0, TC_ACT_REDIRECT);
    assert_eq!(decisions(&sb), (0, 1));
    // Past the entry, in the decision table.
    let back = as_sent_back_by_the_sf(&tcp4(40000, 80));
    for _ in 0..2 {
        assert_eq!(
            run_on(&mut sb, &back, ifindex("sfa-out")).0,
            TC_ACT_REDIRECT
        );
    }
    assert_eq!(decisions(&sb), (1, 1));
}

#[test]
fn a_chain_of_taps_only_is_decided_in_its_flows_state_from_the_second_packet() {
    let yaml = chain_yaml().replace(
        "spec: {portPairs: [C]}",
        "spec: {portPairs: [C], tapEnabled: true}",
    );
    assert_ne!(yaml, chain_yaml());
    let mut sb = sandbox(&yaml);
    let udp = eth(0x0800, &ipv4(17, [198, 18, 9, 9], &[], 0, &l4(5000, 53, 8)));
    let before = stats(&sb);
    let first = run_on(&mut sb, &udp, 0).0;
    assert_eq!(stat_delta(&before, &sb, "tapped"), 1, "copied to the tap");
    // Its state is made, though it never counts in flight, so that its next packet can keep
    // what was decided where it entered.
    assert_eq!(decisions(&sb), (0, 0));
    let state = flows4(&sb).iter().next().unwrap().unwrap().1;
    assert_eq!(state.inflight, 0);
    assert_eq!(run_on(&mut sb, &udp, 0).0, first);
    assert_eq!(decisions(&sb), (0, 1));
    assert_eq!(run_on(&mut sb, &udp, 0).0, first);
    assert_eq!(stat_delta(&before, &sb, "tapped"), 3);
}

#[test]
fn a_decided_flow_enters_by_the_decision_in_its_state_while_the_epoch_holds() {
    let mut sb = sandbox(&chain_yaml());
    let frame = tcp4(40000, 80);
    let member = run_on(&mut sb, &frame, 0).1[0..6].to_vec();
    assert_eq!(run_on(&mut sb, &frame, 0).1[0..6], member[..]);
    // The decision the second packet left in the flow's state steers the next ones: one
    // planted there with another MAC is followed.
    let mut flows = flows4(&sb);
    let (tuple, mut state) = flows.iter().next().unwrap().unwrap();
    assert_eq!(state.entry.ifindex, 1, "decided where it entered");
    let planted = [0x02, 0, 0, 0, 0, 0x99];
    state.entry.member.mac = planted;
    flows.insert(tuple, state, 0).unwrap();
    let (verdict, out) = run_on(&mut sb, &frame, 0);
    assert_eq!((verdict, &out[0..6]), (TC_ACT_REDIRECT, &planted[..]));
    // An apply that changes anything makes it stale: the flow is classified again, onto its
    // member.
    apply(
        &mut sb,
        &chain_yaml().replace("198.18.9.9/32", "198.18.9.8/32"),
    );
    let (verdict, out) = run_on(&mut sb, &frame, 0);
    assert_eq!((verdict, &out[0..6]), (TC_ACT_REDIRECT, &member[..]));
}

#[test]
fn a_flow_stays_on_one_member_and_flows_spread() {
    let mut sb = sandbox(&chain_yaml());
    let first = run_on(&mut sb, &tcp4(40000, 80), 0).1[0..6].to_vec();
    for _ in 0..50 {
        assert_eq!(run_on(&mut sb, &tcp4(40000, 80), 0).1[0..6], first[..]);
    }
    let used: BTreeSet<Vec<u8>> = (0..64)
        .map(|i| run_on(&mut sb, &tcp4(40000 + i, 80), 0).1[0..6].to_vec())
        .collect();
    assert_eq!(used.len(), 2, "64 flows should use both members");
}

#[test]
fn continues_from_an_sf_egress_and_restores_the_mac_after_the_last_hop() {
    let mut sb = sandbox(&chain_yaml());
    let frame = tcp4(40001, 80);
    let (verdict, out) = run_on(&mut sb, &frame, 0);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let member = member_of(&out);
    let from_sf = as_sent_back_by_the_sf(&frame);
    let (verdict, out) = run_on(&mut sb, &from_sf, ifindex(&format!("{member}-out")));
    assert_eq!(verdict, TC_ACT_REDIRECT, "hop 2 from {member}-out");
    assert_eq!(out[0..6], peer_mac("sfz-in"), "hop 2 is SF Z");
    // After the last hop, normal forwarding with the original destination MAC.
    let (verdict, out) = run_on(&mut sb, &from_sf, ifindex("sfz-out"));
    assert_eq!(verdict, TC_ACT_NEXT);
    assert_eq!(out[0..6], ORIGINAL_DST_MAC);
}

/// XDP mode: the XDP program steers and delivers exactly as TC would, and leaves everything
/// else to TC without touching the packet, a counter or a flow's state.
#[test]
fn xdp_finishes_steering_and_leaves_the_rest_to_tc() {
    let mut sb = sandbox(&chain_yaml());
    let frame = tcp4(40002, 80);
    let before = stats(&sb);
    let (verdict, out) = run_xdp_on(&mut sb, &frame, 0);
    assert_eq!(verdict, XDP_REDIRECT, "a matching packet at the entry");
    let after = stats(&sb);
    assert_eq!(stat(&after, "steered") - stat(&before, "steered"), 1);
    let (_, by_tc) = run_on(&mut sb, &frame, 0);
    assert_eq!(out, by_tc, "XDP and TC pick the same member, same rewrite");
    let member = member_of(&out);
    let from_sf = as_sent_back_by_the_sf(&frame);
    let (verdict, out) = run_xdp_on(&mut sb, &from_sf, ifindex(&format!("{member}-out")));
    assert_eq!(verdict, XDP_REDIRECT, "hop 2 from {member}-out");
    assert_eq!(out[0..6], peer_mac("sfz-in"), "hop 2 is SF Z");

    // Handing back to the stack after the last hop, no match, not IP, malformed: passed to TC
    // unchanged, nothing counted.
    let arp = eth(0x0806, &[0u8; 28]);
    let truncated = tcp4(40000, 80)[..40].to_vec();
    let cases = [
        ("after the last hop", from_sf.clone(), ifindex("sfz-out")),
        ("no match", tcp4(40000, 81), 0),
        ("ARP", arp, 0),
        ("truncated", truncated, 0),
    ];
    for (what, frame, ifindex) in cases {
        let before = stats(&sb);
        let (verdict, out) = run_xdp_on(&mut sb, &frame, ifindex);
        assert_eq!((verdict, &out), (XDP_PASS, &frame), "{what}");
        assert_eq!(stats(&sb), before, "{what}: XDP counted something");
    }
    // TC then does it: the original MAC back, the packet to the stack, counted once.
    let before = stats(&sb);
    let (verdict, out) = run_on(&mut sb, &from_sf, ifindex("sfz-out"));
    assert_eq!(verdict, TC_ACT_NEXT);
    assert_eq!(out[0..6], ORIGINAL_DST_MAC);
    assert_eq!(
        stat(&stats(&sb), "forwarded") - stat(&before, "forwarded"),
        1
    );
}

/// A veth whose peer is in another namespace takes XDP frames only when that peer has GRO on
/// (or an XDP program): unless the agent was told so (`--xdp-on-veth`), XDP leaves packets for
/// such members to TC, which redirects them straight into the peer.
#[test]
fn xdp_redirects_into_veth_peers_only_when_allowed() {
    for (on_veth, expected) in [(false, XDP_PASS), (true, XDP_REDIRECT)] {
        let mut sb = sandbox_in(&chain_yaml(), Mode::Xdp { on_veth });
        let _peers = PeerNamespace::take_sf_ends();
        apply(&mut sb, &chain_yaml());
        let frame = tcp4(40003, 80);
        let before = stats(&sb);
        let (verdict, out) = run_xdp_on(&mut sb, &frame, 0);
        assert_eq!(verdict, expected, "--xdp-on-veth {on_veth}");
        if !on_veth {
            assert_eq!(out, frame, "passed to TC untouched");
            assert_eq!(stats(&sb), before, "nothing counted by XDP");
        }
        let (verdict, _) = run_on(&mut sb, &frame, 0);
        assert_eq!(verdict, TC_ACT_REDIRECT, "TC steers it either way");
    }
}

#[test]
fn non_matching_packets_are_untouched() {
    let mut sb = sandbox(&chain_yaml());
    let arp = eth(0x0806, &[0u8; 28]);
    let cases = [
        ("other port", tcp4(40000, 81)),
        (
            "other destination",
            eth(
                0x0800,
                &ipv4(6, [198, 18, 2, 1], &[], 0, &l4(40000, 80, 20)),
            ),
        ),
        (
            "udp to the tcp classifier",
            eth(0x0800, &ipv4(17, DST, &[], 0, &l4(40000, 80, 8))),
        ),
        ("ARP", arp),
        ("LLDP", eth(0x88cc, &[0u8; 32])),
    ];
    for (what, frame) in cases {
        let (verdict, out) = run_on(&mut sb, &frame, 0);
        assert_eq!((verdict, &out), (TC_ACT_NEXT, &frame), "{what}");
    }
    // Arriving on an interface we do not manage: untouched even if it matches.
    let (verdict, out) = run_on(&mut sb, &tcp4(40000, 80), ifindex("sfa-in"));
    assert_eq!((verdict, out), (TC_ACT_NEXT, tcp4(40000, 80)));
}

/// An IPv4 fragment of datagram `id` (`frag`: the flags and offset field).
fn fragment4(proto: u8, dst: [u8; 4], id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = eth(0x0800, &ipv4(proto, dst, &[], frag, payload));
    frame[18..20].copy_from_slice(&id.to_be_bytes());
    frame
}

/// An IPv6 fragment header: offset (in bytes, a multiple of 8), more fragments, id.
fn fragment_header6(offset: u16, more: bool, id: u32) -> (u8, Vec<u8>) {
    let field = offset | more as u16;
    let mut h = vec![0, 0];
    h.extend_from_slice(&field.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    (44, h)
}

fn stat_delta(before: &[u64], sb: &Sandbox, name: &str) -> u64 {
    stat(&stats(sb), name) - stat(before, name)
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut sb = sandbox(&chain_yaml());
    let before = stats(&sb);
    // TCP to port 80 in three fragments: the first carries the ports, the rest take its path.
    let first = fragment4(6, DST, 7, 0x2000, &l4(40000, 80, 24));
    let middle = fragment4(6, DST, 7, 0x2003, &[0u8; 16]);
    let last = fragment4(6, DST, 7, 0x0005, &[0u8; 8]);
    let (verdict, out) = run_on(&mut sb, &first, 0);
    assert_eq!(verdict, TC_ACT_REDIRECT, "first fragment");
    let member = out[0..6].to_vec();
    for (what, frame) in [("middle", &middle), ("last", &last)] {
        let (verdict, out) = run_on(&mut sb, frame, 0);
        assert_eq!(
            (verdict, &out[0..6]),
            (TC_ACT_REDIRECT, &member[..]),
            "{what}"
        );
    }
    assert_eq!(stat_delta(&before, &sb, "fragments_tracked"), 1);
    // Every byte went by: the datagram is forgotten, so a straggler is of unknown ports,
    // dropped here where a classifier matches on them, like one whose first fragment never
    // came.
    let unknown = fragment4(6, DST, 8, 0x0010, &[0u8; 24]);
    for (what, frame) in [("after the last", &middle), ("unknown", &unknown)] {
        let (verdict, out) = run_on(&mut sb, frame, 0);
        assert_eq!((verdict, &out), (TC_ACT_SHOT, frame), "{what}");
    }
    assert_eq!(stat_delta(&before, &sb, "fragment_unknown"), 2);

    // IPv6: the fragment header's datagram id ties the pieces together the same way.
    let first6 = ipv6(&[fragment_header6(0, true, 9)], 6, &l4(40000, 80, 24));
    let last6 = ipv6(&[fragment_header6(24, false, 9)], 6, &[0u8; 16]);
    let (verdict, out) = run_on(&mut sb, &first6, 0);
    assert_eq!(verdict, TC_ACT_REDIRECT, "IPv6 first fragment");
    let (verdict, out6) = run_on(&mut sb, &last6, 0);
    assert_eq!(
        (verdict, &out6[0..6]),
        (TC_ACT_REDIRECT, &out[0..6]),
        "IPv6 last"
    );

    // A first fragment too short for its TCP header: its ports cannot be trusted.
    let tiny = fragment4(6, DST, 10, 0x2000, &l4(40000, 80, 8));
    assert_eq!(
        run_on(&mut sb, &tiny, 0).0,
        TC_ACT_SHOT,
        "tiny first fragment"
    );
}

/// The fragment table is bounded: past its size a datagram is not tracked (and counted), and
/// a datagram whose fragments stopped coming is ignored, then swept away.
#[test]
fn the_fragment_table_is_bounded_and_forgets_stale_datagrams() {
    let tables = Tables {
        fragments: 1024,
        ..Tables::default()
    };
    let mut sb = common::sandbox_with(&chain_yaml(), Mode::Tc, &SF_VETHS, tables);
    let entries = |sb: &Sandbox| -> usize {
        let path = sb.bpffs.0.join("maps").join(sfc_common::MAP_FRAGMENTS);
        let map = aya::maps::MapData::from_pin(&path).unwrap();
        let map: aya::maps::HashMap<_, sfc_common::FragmentKey, sfc_common::FragmentState> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map)).unwrap();
        map.keys().count()
    };
    let first = |id: u16| fragment4(6, DST, id, 0x2000, &l4(40000, 80, 24));
    let later = |id: u16| fragment4(6, DST, id, 0x0003, &[0u8; 8]);
    let before = stats(&sb);
    for id in 0..1025 {
        assert_eq!(
            run_on(&mut sb, &first(id), 0).0,
            TC_ACT_REDIRECT,
            "first {id}"
        );
    }
    assert_eq!(stat_delta(&before, &sb, "fragments_tracked"), 1024);
    assert_eq!(stat_delta(&before, &sb, "fragment_table_full"), 1);
    assert_eq!(entries(&sb), 1024);
    // The datagram that did not fit: its later fragments are of unknown ports.
    assert_eq!(run_on(&mut sb, &later(1024), 0).0, TC_ACT_SHOT);
    // Nothing more comes for the others: once too old they are ignored, then swept.
    std::thread::sleep(Duration::from_nanos(
        sfc_common::FRAGMENT_TIMEOUT_NS + 100_000_000,
    ));
    let before = stats(&sb);
    assert_eq!(run_on(&mut sb, &later(0), 0).0, TC_ACT_SHOT, "stale");
    assert_eq!(stat_delta(&before, &sb, "fragment_unknown"), 1);
    sb.dataplane.sweep_fragments().unwrap();
    assert_eq!(entries(&sb), 0);
    assert_eq!(run_on(&mut sb, &first(1024), 0).0, TC_ACT_REDIRECT);
    assert_eq!(run_on(&mut sb, &later(1024), 0).0, TC_ACT_REDIRECT);
}

/// A classifier without ports chooses members without them: the whole datagrams and the
/// fragments of one flow reach the same member, even fragments whose first one was not seen.
#[test]
fn a_portless_classifier_keeps_a_flow_on_one_member_fragmented_or_not() {
    // The UDP chain through the two-member group, and no classifier on ports at the port.
    let yaml = chain_yaml()
        .replace("portPairGroups: [GC]", "portPairGroups: [G]")
        .replace("flowClassifiers: [web, web6]", "flowClassifiers: []");
    assert_eq!(yaml.matches("flowClassifiers: []").count(), 1);
    let mut sb = sandbox(&yaml);
    for sport in 5000..5016u16 {
        let whole = eth(0x0800, &ipv4(17, UDP_DST, &[], 0, &l4(sport, 6000, 8)));
        let (verdict, out) = run_on(&mut sb, &whole, 0);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let member = out[0..6].to_vec();
        let later = fragment4(17, UDP_DST, sport, 0x0010, &[0u8; 16]);
        let (verdict, out) = run_on(&mut sb, &later, 0);
        assert_eq!(
            (verdict, &out[0..6]),
            (TC_ACT_REDIRECT, &member[..]),
            "{sport}"
        );
    }
}

#[test]
fn unparsable_headers_are_dropped_where_a_classifier_applies() {
    let full = tcp4(40000, 80);
    let mut short_total = full.clone();
    short_total[16..18].copy_from_slice(&200u16.to_be_bytes()); // total length beyond the frame
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44;
    let mut bad_version = full.clone();
    bad_version[14] = 0x65;
    let tcp_cut = eth(0x0800, &ipv4(6, DST, &[], 0, &l4(40000, 80, 4)));
    let ext = |n: usize| -> Vec<(u8, Vec<u8>)> { (0..n).map(|_| (60, opts8())).collect() };
    let three_tags = eth(
        0x88a8,
        &frames::vlan(
            1,
            0x8100,
            &frames::vlan(2, 0x8100, &frames::vlan(3, 0x0800, &full[14..])),
        ),
    );
    let cases = [
        // Inside a VLAN tag: the kernel's test runner itself refuses an untagged IPv4/IPv6
        // frame shorter than its IP header, but such frames do reach us tagged.
        (
            "IPv4 header cut",
            vlan(0x8100, 0x0800, &full[14..14 + 10]),
            "malformed",
        ),
        (
            "IPv4 total length beyond the frame",
            short_total,
            "malformed",
        ),
        ("IPv4 IHL < 5", bad_ihl, "malformed"),
        ("version 6 in an IPv4 frame", bad_version, "malformed"),
        ("TCP header cut", tcp_cut, "malformed"),
        ("VLAN tag cut", eth(0x8100, &[0x00]), "malformed"),
        (
            "IPv6 header cut",
            vlan(0x8100, 0x86dd, &[0x60, 0, 0, 0, 0, 8]),
            "malformed",
        ),
        (
            "IPv6 extension header cut",
            ipv6(&[(0, vec![0, 4])], 6, &[]),
            "malformed",
        ),
        (
            "more IPv6 extension headers than walked",
            ipv6(&ext(9), 6, &l4(40000, 80, 20)),
            "unparsable_ipv6_ext",
        ),
        ("three VLAN tags", three_tags, "unparsable_vlan"),
    ];
    // Dropped by default: passing them on would let the node route them around the SFs.
    let mut sb = sandbox(&chain_yaml());
    for (what, frame, reason) in &cases {
        let before = stats(&sb);
        let (verdict, out) = run_on(&mut sb, frame, 0);
        assert_eq!((verdict, &out), (TC_ACT_SHOT, frame), "{what}");
        assert_eq!(stat_delta(&before, &sb, reason), 1, "{what}");
    }
    // As many extension headers as are walked is fine.
    let (verdict, _) = run_on(&mut sb, &ipv6(&ext(8), 6, &l4(40000, 80, 20)), 0);
    assert_eq!(verdict, TC_ACT_REDIRECT, "8 extension headers");

    // `unparsable: pass` on every classifier at the port: untouched, as networking-sfc does.
    let passing = chain_yaml().replace(
        "{logicalSourcePort: lo,",
        "{logicalSourcePort: lo, unparsable: pass,",
    );
    let mut sb = sandbox(&passing);
    let before = stats(&sb);
    for (what, frame, _) in &cases {
        let (verdict, out) = run_on(&mut sb, frame, 0);
        assert_eq!(
            (verdict, &out),
            (TC_ACT_NEXT, frame),
            "{what} with unparsable: pass"
        );
    }
    assert_eq!(
        stat_delta(&before, &sb, "unparsable_passed"),
        cases.len() as u64
    );
    assert_eq!(stat_delta(&before, &sb, "steered"), 0);
    // One classifier at the port that wants them dropped decides for the port.
    let one_drops = passing.replacen("unparsable: pass,", "", 1);
    let mut sb = sandbox(&one_drops);
    assert_eq!(run_on(&mut sb, &cases[0].1, 0).0, TC_ACT_SHOT);
}

#[test]
fn a_group_without_live_members_fails_closed() {
    // Z's ingress is not a veth and has no ingressMac: refused at apply with a clear error.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
    run(Command::new("ip").args(["link", "add", "tapz-in", "type", "bridge"])).unwrap();
    let yaml = "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPair\nmetadata: {name: Z}\nspec: {ingress: tapz-in, egress: tapz-in}\n";
    let alone = plan(
        &State::default(),
        &[("z.yaml".into(), yaml.into())],
        &read_interfaces().unwrap(),
    );
    assert!(alone.is_ok(), "a pair in no chain needs no MAC yet");
    let yaml = format!("{yaml}---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {{name: G}}\nspec: {{portPairs: [Z]}}\n---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortChain\nmetadata: {{name: C}}\nspec: {{portPairGroups: [G]}}\n");
    let err = plan(
        &State::default(),
        &[("z.yaml".into(), yaml)],
        &read_interfaces().unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("z.yaml: PortPair \"Z\": spec.ingressMac"),
        "{err}"
    );

    // A member whose interface is gone: the group has no member, packets are dropped rather
    // than bypassing the SF.
    let mut sb = sandbox(&chain_yaml());
    run(Command::new("ip").args(["link", "del", "sfc-in"])).unwrap();
    let interfaces = read_interfaces().unwrap();
    let (_, _, image) = plan(
        &State::default(),
        &[("chain.yaml".into(), chain_yaml())],
        &interfaces,
    )
    .unwrap();
    sb.dataplane.apply(&image, &interfaces).unwrap();
    let frame = eth(0x0800, &ipv4(17, UDP_DST, &[], 0, &l4(5000, 6000, 8)));
    assert_eq!(run_on(&mut sb, &frame, 0).0, TC_ACT_SHOT);
    assert!(stat(&stats(&sb), "no_member") >= 1);
}

/// The classifier's cost per packet at 1 and 100k classifiers (hit and miss). A measurement,
/// not a pass/fail test: `cargo test -p sfc-tests --test datapath -- --ignored --nocapture`.
#[test]
#[ignore]
fn classifier_cost() {
    for n in [1usize, 100_000] {
        let yaml = chain_yaml() + &bulk_chain(n, "bulk", "lo", "GZ");
        // GZ is used by C1 and bulk: make C1 go through G only so the paths differ.
        let yaml = yaml.replace("portPairGroups: [G, GZ]", "portPairGroups: [G]");
        let started = std::time::Instant::now();
        let mut sb = sandbox(&yaml);
        let setup = started.elapsed();
        let hit = eth(
            0x0800,
            &ipv4(
                6,
                [10, 0, 0, (n - 1).min(255) as u8],
                &[],
                0,
                &l4(40000, 443, 20),
            ),
        );
        let miss = eth(
            0x0800,
            &ipv4(6, [10, 255, 255, 255], &[], 0, &l4(40000, 443, 20)),
        );
        let measure = |sb: &mut Sandbox, case: &str, frame: &[u8]| {
            let mut out = vec![0u8; frame.len() + 64];
            let program = sb.dataplane.program().unwrap();
            let r = program
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat: 1_000_000,
                    ..TestRunOptions::new()
                })
                .unwrap();
            println!(
                "classifiers {n:>6}  {case:<28}  verdict {}  {:>5.1} ns/packet",
                r.return_value,
                r.duration.as_nanos() as f64
            );
        };
        measure(&mut sb, "hit", &hit);
        measure(&mut sb, "miss", &miss);
        if n == 1 {
            // What tracing costs: nothing installed (above), a filter that selects nothing,
            // and one that selects the packet (an event per packet).
            let path = sb.bpffs.0.join("maps").join(sfc_common::MAP_TRACE_FILTER);
            let mut filters: aya::maps::Array<_, sfc_common::TraceFilter> =
                aya::maps::Array::try_from(aya::maps::Map::Array(
                    aya::maps::MapData::from_pin(path).unwrap(),
                ))
                .unwrap();
            let mut filter = sfc_common::TraceFilter {
                enabled: 1,
                fields: sfc_common::trace_field::DPORT,
                dport: 1,
                ..Default::default()
            };
            filters.set(0, filter, 0).unwrap();
            measure(&mut sb, "hit, trace selects nothing", &hit);
            filter.dport = 443;
            filters.set(0, filter, 0).unwrap();
            measure(&mut sb, "hit, traced", &hit);
            filters
                .set(0, sfc_common::TraceFilter::default(), 0)
                .unwrap();
        }
        println!(
            "classifiers {n:>6}  set-up (parse, validate, compile, write) {:?}",
            setup
        );
        drop(sb);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn weights_share_flows_in_proportion() {
    let yaml = chain_yaml()
        .replace(
            "spec: {ingress: sfa-in, egress: sfa-out}",
            "spec: {ingress: sfa-in, egress: sfa-out, weight: 1}",
        )
        .replace(
            "spec: {ingress: sfb-in, egress: sfb-out}",
            "spec: {ingress: sfb-in, egress: sfb-out, weight: 3}",
        );
    assert_ne!(yaml, chain_yaml());
    let mut sb = sandbox(&yaml);
    let a = peer_mac("sfa-in");
    let flows = 1000u16;
    let on_a = (0..flows)
        .filter(|i| run_on(&mut sb, &tcp4(20000 + i, 80), 0).1[0..6] == a)
        .count() as f64;
    let share_a = on_a / flows as f64;
    println!(
        "weight 1 member: {share_a:.3} of {flows} flows; weight 3 member: {:.3}",
        1.0 - share_a
    );
    // Within ±10% of each member's weight share (25% and 75%).
    assert!(
        (share_a - 0.25).abs() <= 0.025,
        "weight-1 member got {share_a:.3} of the flows"
    );
}

/// The fields a group may hash, one packet's worth.
#[derive(Clone, Copy)]
struct Fields {
    proto: u8,
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
}

impl Fields {
    fn frame(&self) -> Vec<u8> {
        let len = if self.proto == 6 { 20 } else { 8 };
        let ip = frames::ipv4(
            self.proto,
            self.src,
            self.dst,
            &[],
            0,
            &l4(self.sport, self.dport, len),
        );
        frames::eth(self.eth_dst, self.eth_src, 0x0800, &ip)
    }

    /// This packet with field `name` set to its `i`-th other value.
    fn with(mut self, name: &str, i: u8) -> Self {
        match name {
            "eth_src" => self.eth_src[5] = i,
            "eth_dst" => self.eth_dst[5] = i,
            "ip_src" => self.src[3] = i,
            "ip_dst" => self.dst[3] = i,
            "tcp_src" | "udp_src" => self.sport = 30000 + i as u16,
            "tcp_dst" | "udp_dst" => self.dport = 30000 + i as u16,
            other => panic!("unknown field {other}"),
        }
        self
    }
}

#[test]
fn lb_fields_are_honoured_field_by_field() {
    const FIELDS: [&str; 8] = [
        "eth_src", "eth_dst", "ip_src", "ip_dst", "tcp_src", "tcp_dst", "udp_src", "udp_dst",
    ];
    for field in FIELDS {
        // Every packet to 198.18.1.0/24 enters C1, whatever its protocol and ports.
        let yaml = chain_yaml()
            .replace(
                "protocol: tcp, destinationIpPrefix: 198.18.1.0/24, destinationPortRange: '80'",
                "destinationIpPrefix: 198.18.1.0/24",
            )
            .replace(
                "spec: {portPairs: [A, B]}",
                &format!("spec: {{portPairs: [A, B], lbFields: [{field}]}}"),
            );
        assert!(yaml.contains("lbFields"));
        let mut sb = sandbox(&yaml);
        let proto = if field.starts_with("udp") { 17 } else { 6 };
        let base = Fields {
            proto,
            eth_src: SRC_MAC,
            eth_dst: ORIGINAL_DST_MAC,
            src: SRC,
            dst: DST,
            sport: 40000,
            dport: 80,
        };
        let mut member = |f: Fields| {
            let (verdict, out) = run_on(&mut sb, &f.frame(), 0);
            assert_eq!(verdict, TC_ACT_REDIRECT, "{field}");
            out[0..6].to_vec()
        };
        // The hashed field spreads flows over both members...
        let used: BTreeSet<Vec<u8>> = (1..=64).map(|i| member(base.with(field, i))).collect();
        assert_eq!(
            used.len(),
            2,
            "lbFields [{field}]: varying it should use both members"
        );
        // ...and every other field is ignored (tcp_x and udp_x are the same bytes: skipped).
        let l4 = |f: &str| f.starts_with("tcp") || f.starts_with("udp");
        let alias = |o: &str| l4(o) && l4(field) && o[3..] == field[3..];
        for other in FIELDS.iter().filter(|o| **o != field && !alias(o)) {
            let used: BTreeSet<Vec<u8>> = (1..=32).map(|i| member(base.with(other, i))).collect();
            assert_eq!(
                used.len(),
                1,
                "lbFields [{field}]: varying {other} moved the flow"
            );
        }
        // A UDP field does not apply to TCP packets (nor the reverse): their port is ignored.
        if l4(field) {
            let cross = Fields {
                proto: 23 - proto, // 6 <-> 17
                ..base
            };
            let used: BTreeSet<Vec<u8>> = (1..=32).map(|i| member(cross.with(field, i))).collect();
            assert_eq!(
                used.len(),
                1,
                "lbFields [{field}] applied to the other protocol"
            );
        }
        drop(sb);
    }
}

/// A health probe (IPv4 or IPv6) that comes back out of an SF (here: into the program on C's
/// egress) carrying the agent's token is recorded under that interface and dropped, counted as
/// nothing; the same packet without the token is traffic like any other.
#[test]
fn a_probe_back_out_of_an_sf_is_recorded_and_dropped_and_a_forged_one_is_traffic() {
    use sfc_common::{ProbePayload, PROBE_PORT};
    let mut sb = sandbox(&chain_yaml());
    let token = 0x5eed_0000_0000_0001_u64;
    let returned = sb.dataplane.probes(token).unwrap();
    let egress = ifindex("sfc-out");
    let probe = |token: u64, seq: u64| {
        let payload = ProbePayload { token, seq };
        let mut bytes = payload.token.to_ne_bytes().to_vec();
        bytes.extend(payload.seq.to_ne_bytes());
        let mut ip = ipv4(
            17,
            UDP_DST,
            &[],
            0,
            &frames::udp(PROBE_PORT, PROBE_PORT, &bytes),
        );
        frames::ipv4_checksum(&mut ip);
        eth(0x0800, &ip)
    };
    let probe6 = |token: u64, seq: u64| {
        let mut bytes = token.to_ne_bytes().to_vec();
        bytes.extend(seq.to_ne_bytes());
        ipv6(&[], 17, &frames::udp(PROBE_PORT, PROBE_PORT, &bytes))
    };
    let before = stats(&sb);
    let (verdict, _) = run_on(&mut sb, &probe(token, 41), egress);
    assert_eq!(verdict, TC_ACT_SHOT, "a probe goes no further than the SF");
    assert_eq!(returned.get(&egress, 0).unwrap(), 41);
    let after = stats(&sb);
    assert_eq!(after, before, "a probe is counted as nothing");
    // Forged: another token. Steered as the traffic it looks like, and not recorded.
    let (verdict, _) = run_on(&mut sb, &probe(token + 1, 42), egress);
    assert_ne!(
        verdict, TC_ACT_SHOT,
        "a packet to the probe port without the token is traffic"
    );
    assert_eq!(returned.get(&egress, 0).unwrap(), 41);
    assert_ne!(stats(&sb), after, "that packet is counted as traffic");
    // IPv6 probes alike.
    let before = stats(&sb);
    let (verdict, _) = run_on(&mut sb, &probe6(token, 43), egress);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "an IPv6 probe goes no further than the SF"
    );
    assert_eq!(returned.get(&egress, 0).unwrap(), 43);
    assert_eq!(stats(&sb), before, "an IPv6 probe is counted as nothing");
    let (verdict, _) = run_on(&mut sb, &probe6(token + 1, 44), egress);
    assert_ne!(verdict, TC_ACT_SHOT, "without the token it is traffic");
    assert_eq!(returned.get(&egress, 0).unwrap(), 43);
}
