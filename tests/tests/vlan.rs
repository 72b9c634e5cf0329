//! VLAN-aware flow keys (issue 11, item 7), with tagged traffic through real veths. The source
//! VM sends 802.1Q-tagged frames out of its NIC (an AF_PACKET socket: this kernel is built
//! without VLAN interfaces, CONFIG_VLAN_8021Q); they cross the veth tagged, and at the host
//! side's TC ingress, where the steering program runs, the kernel has already moved the tag out
//! of the frame into the skb (`skb_vlan_untag` on receive). The very same 5-tuple on several
//! VLANs is several flows: each VLAN's packets go to one member of the group, and the VLANs
//! spread over the members.

use std::{collections::BTreeMap, time::Duration};

use sfc_common::{flow_hash, HashInput, PROTO_UDP, RING_SIZE};
use sfc_config::compile::maglev;
use sfc_lab::{
    demo::{Demo, DST_V4, SRC_V4},
    frames,
    lab::wait_for,
    yaml::one_group_udp_chain,
};

const SPORT: u16 = 40000;
const DPORT: u16 = 9000;
/// The VLANs the one 5-tuple is sent on. The inputs are fixed, so the outcome is the same on
/// every run: by the datapath's hash and the group's Maglev table, 5 of them go to PP1 and 11
/// to PP2 (were the VLAN an independent draw between the two members, all 16 on one would have
/// a probability of 2^-15, 3e-5).
const VLANS: std::ops::RangeInclusive<u16> = 101..=116;
/// Frames sent per VLAN.
const FRAMES: u64 = 20;

/// PG1 = {PP1, PP2}, one hop, for UDP from the source to the destination's port 9000: a
/// classifier with no VLAN in it, which tagged traffic matches by its addresses and ports.
fn chain() -> String {
    one_group_udp_chain("PP1, PP2", &DPORT.to_string())
}

fn ipv4(text: &str) -> [u8; 4] {
    text.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// The member PG1's table gives the test's 5-tuple on VLAN `vlan` (0: untagged): the hash the
/// datapath computes, over the default symmetric 5-tuple and the VLAN, into the Maglev table
/// the agent builds.
fn expected_member(vlan: u16) -> &'static str {
    let word = |a: [u8; 4]| [u32::from_ne_bytes(a), 0, 0, 0];
    let hash = flow_hash(
        &HashInput {
            proto: PROTO_UDP,
            vlan,
            sport: SPORT,
            dport: DPORT,
            src: word(ipv4(SRC_V4)),
            dst: word(ipv4(DST_V4)),
            ..Default::default()
        },
        0,
    );
    let table = maglev::table(&[("PP1", 1), ("PP2", 1)], RING_SIZE);
    ["PP1", "PP2"][table[(hash % RING_SIZE) as usize]]
}

/// Sends `FRAMES` copies of `frame` out of the source VM's NIC; the member PG1 sent them into
/// (all of them into one, or the test fails).
fn member_for(demo: &Demo, frame: &[u8]) -> &'static str {
    let lab = &demo.lab;
    let what = if frame[12..14] == [0x81, 0x00] {
        format!(
            "VLAN {}",
            u16::from_be_bytes([frame[14], frame[15]]) & 0xfff
        )
    } else {
        "untagged".to_string()
    };
    let before = lab.stats().unwrap();
    lab.send_frames("src", "eth0", &vec![frame.to_vec(); FRAMES as usize], 1000)
        .unwrap();
    let (pp1, pp2) = wait_for(Duration::from_secs(3), || {
        let now = lab.stats().ok()?;
        let d = |p: &str| now.into_pair(p) - before.into_pair(p);
        (d("PP1") + d("PP2") >= FRAMES).then(|| (d("PP1"), d("PP2")))
    })
    .unwrap_or_else(|| {
        panic!(
            "the {FRAMES} frames sent {what} were not all steered into PG1:\n{}",
            lab.sfcctl(&["stats"]).unwrap()
        )
    });
    match (pp1, pp2) {
        (n, 0) if n == FRAMES => "PP1",
        (0, n) if n == FRAMES => "PP2",
        split => panic!("{what}: one flow's {FRAMES} frames went into PP1 and PP2: {split:?}"),
    }
}

#[test]
fn one_five_tuple_on_several_vlans_is_several_flows_spread_over_the_members() {
    let demo = Demo::build("vlan").unwrap();
    let lab = &demo.lab;
    demo.apply(&chain());
    let (src_mac, dst_mac) = (
        lab.mac("src", "eth0").unwrap(),
        lab.mac("dst", "eth0").unwrap(),
    );
    let mut packet = frames::ipv4(
        PROTO_UDP,
        ipv4(SRC_V4),
        ipv4(DST_V4),
        &[],
        0,
        &frames::udp(SPORT, DPORT, &[0; 18]),
    );
    frames::ipv4_checksum(&mut packet);
    // First the flow untagged, where the member is known: the harness measures what it should.
    let untagged = member_for(&demo, &frames::eth(dst_mac, src_mac, 0x0800, &packet));
    assert_eq!(untagged, expected_member(0), "the untagged flow");
    // Then the very same packet on each VLAN.
    let mut by_vlan: BTreeMap<u16, &str> = BTreeMap::new();
    for vid in VLANS {
        let tagged = frames::eth(
            dst_mac,
            src_mac,
            0x8100,
            &frames::vlan(vid, 0x0800, &packet),
        );
        by_vlan.insert(vid, member_for(&demo, &tagged));
    }
    println!("untagged: {untagged}; by VLAN: {by_vlan:?}");
    let on_pp1 = by_vlan.values().filter(|m| **m == "PP1").count();
    let n = by_vlan.len();
    assert!(
        on_pp1 > 0 && on_pp1 < n,
        "all {n} VLANs went to one member ({on_pp1} on PP1): the VLAN is not part of the \
         flow key and member hash; by VLAN: {by_vlan:?}"
    );
    // Each VLAN's flow went where the hash with its VLAN says: its own flow key, its own pin.
    let expected: BTreeMap<u16, &str> = VLANS.map(|v| (v, expected_member(v))).collect();
    assert_eq!(by_vlan, expected, "members by VLAN");
}
