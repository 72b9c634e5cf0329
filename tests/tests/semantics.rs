//! networking-sfc semantics end to end: tap groups, flows pinned to their member while the
//! group changes, and make-before-break updates under a steady UDP stream. Real daemon, real
//! traffic, namespaces that each test builds and always removes.

use std::{collections::BTreeMap, fs, thread, time::Duration};

use serde_json::Value;
use sfc_lab::{
    demo::{assert_through_one_pg1_member_then_sf3, example_chain, Demo, DST_V4},
    lab::{script, wait_for},
    stream::Stream,
};

/// `cat` of an interface counter inside an SF namespace.
fn iface_counter(demo: &Demo, ns: &str, iface: &str, counter: &str) -> u64 {
    demo.lab
        .sh(
            ns,
            &format!("cat /sys/class/net/{iface}/statistics/{counter}"),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn stats(demo: &Demo) -> Value {
    let text = demo.lab.sfcctl(&["stats", "-o", "json"]).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Waits (bounded) for a result file a background script writes when it is done.
fn result_file(path: &str, limit: Duration) -> String {
    wait_for(limit, || fs::read_to_string(path).ok())
        .unwrap_or_else(|| panic!("{path} never written"))
}

/// The example chain with PG1 holding `pairs` and the chain crossing `groups`.
fn chain(pairs: &str, groups: &str) -> String {
    let text = fs::read_to_string(example_chain()).unwrap();
    let out = text
        .replace(
            "  portPairs: [PP1, PP2]",
            &format!("  portPairs: [{pairs}]"),
        )
        .replace(
            "  portPairGroups: [PG1, PG2]",
            &format!("  portPairGroups: [{groups}]"),
        );
    assert!(out.contains(groups) && out.contains(pairs));
    out
}

/// Ranges on both ports, as networking-sfc's OVS driver classifiers have: with the example
/// chain's classifier given source ports 43001:43998 and destination ports 70:90 (27 match
/// shapes once, refused), requests from those source ports cross the chain, and from the
/// ports just outside they are routed straight to the destination.
#[test]
fn ranges_on_both_ports_steer_real_traffic_and_only_their_ports() {
    let demo = Demo::build("ranges").unwrap();
    let from = "  destinationPortRange: \"80\"\n  logicalSourcePort: vm-src";
    let text = fs::read_to_string(example_chain()).unwrap();
    assert!(text.contains(from));
    let yaml = text.replace(
        from,
        "  sourcePortRange: \"43001:43998\"\n  destinationPortRange: \"70:90\"\n  logicalSourcePort: vm-src",
    );
    demo.apply(&yaml);
    let inside: Vec<_> = [43001, 43500, 43998]
        .into_iter()
        .map(|port| demo.request_from(DST_V4, Some(port)).unwrap())
        .collect();
    assert_through_one_pg1_member_then_sf3(&inside, "source ports 43001:43998");
    for port in [43000, 43999] {
        let c = demo.request_from(DST_V4, Some(port)).unwrap();
        assert_eq!(c.status, 200, "from {port}: {c:?}");
        assert_eq!(
            c.forwarded,
            [0, 0, 0],
            "from {port}, outside the range: {c:?}"
        );
    }
}

#[test]
fn a_tap_sf_gets_a_copy_and_the_original_continues_unchanged() {
    let demo = Demo::build("tap").unwrap();
    // SF2 becomes a passive tap: it must not forward the copies it gets.
    demo.lab
        .sh(
            "sf2",
            "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0",
        )
        .unwrap();
    let yaml = chain("PP1", "PG1, TAP, PG2")
        + "---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {name: TAP}\nspec: {portPairs: [PP2], tapEnabled: true}\n";
    demo.apply(&yaml);
    let copies_before = iface_counter(&demo, "sf2", "eth-in", "rx_packets");
    for port in 43000..43010 {
        let c = demo.request_from(DST_V4, Some(port)).unwrap();
        assert_eq!(c.status, 200, "{c:?}");
        // The original crossed SF1 then SF3, every packet of it; the tap forwarded nothing.
        assert_eq!(c.forwarded[1], 0, "{c:?}");
        assert!(c.forwarded[0] >= 4, "{c:?}");
        assert_eq!(c.forwarded[0], c.forwarded[2], "{c:?}");
    }
    let copies = iface_counter(&demo, "sf2", "eth-in", "rx_packets") - copies_before;
    let tapped = stats(&demo)["counters"]["tapped"].as_u64().unwrap();
    let through_sf3 = stats(&demo)["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["direction"] == "forward" && r["position"] == 1)
        .map(|r| r["packets"].as_u64().unwrap())
        .unwrap();
    // Every packet that came out of SF1 (position 1: one hop crossed) was copied once.
    assert_eq!(tapped, through_sf3, "tap copies vs packets past hop 1");
    assert!(
        copies >= tapped && tapped >= 40,
        "tap SF received {copies} frames, {tapped} copies sent"
    );
}

#[test]
fn flows_stay_on_their_member_while_members_are_added_and_removed() {
    let demo = Demo::build("pin").unwrap();
    let mut demo = demo;
    demo.lab
        .spawn(
            "dst",
            &format!("python3 {} serve 7000", script("tcp_echo.py")),
        )
        .unwrap();
    let server_up = wait_for(Duration::from_secs(10), || {
        demo.lab
            .sh("dst", "ss -ltn | grep -q ':7000 ' && echo up")
            .ok()
            .filter(|s| s.contains("up"))
    });
    assert!(server_up.is_some(), "echo server did not start");
    let tcp = |groups: &str, pairs: &str| {
        chain(pairs, groups).replace(
            "  destinationPortRange: \"80\"",
            "  destinationPortRange: \"7000\"",
        )
    };
    // One member: every connection is on SF1.
    demo.apply(&tcp("PG1, PG2", "PP1"));
    let out = demo.lab.dir.join("talk.out").to_string_lossy().into_owned();
    let sports: Vec<String> = (44000..44016).map(|p| p.to_string()).collect();
    demo.lab
        .spawn(
            "src",
            &format!(
                "python3 {} talk {DST_V4} 7000 {} 6 0.1 {out}",
                script("tcp_echo.py"),
                sports.join(",")
            ),
        )
        .unwrap();
    thread::sleep(Duration::from_millis(1500));
    let sf = |demo: &Demo| demo.forwarded(false).unwrap();
    let before_add = sf(&demo);
    assert!(before_add[0] > 0, "connections not on SF1: {before_add:?}");
    // SF2 joins: a plain Maglev table would move about half of these flows to it.
    demo.apply(&tcp("PG1, PG2", "PP1, PP2"));
    thread::sleep(Duration::from_millis(1500));
    let after_add = sf(&demo);
    assert_eq!(
        after_add[1], before_add[1],
        "a flow moved to the new member: {before_add:?} -> {after_add:?}"
    );
    assert!(after_add[0] > before_add[0] + 50, "{after_add:?}");
    // SF2 leaves again: nothing of ours was on it, nothing changes.
    demo.apply(&tcp("PG1, PG2", "PP1"));
    thread::sleep(Duration::from_millis(1000));
    let after_remove = sf(&demo);
    assert_eq!(after_remove[1], after_add[1], "{after_remove:?}");
    let talk = result_file(&out, Duration::from_secs(15));
    let counts: Vec<u64> = talk
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts[1], 0, "round trips failed: {talk}");
    assert!(counts[0] > 16 * 30, "too few round trips: {talk}");

    // New flows, meanwhile, do use a new member; and when a flow's own member leaves, it
    // must move (to the survivor) and keeps working.
    demo.apply(&tcp("PG1, PG2", "PP1, PP2"));
    let used: Vec<[u64; 3]> = (45000..45012)
        .map(|p| {
            let before = sf(&demo);
            let status = demo
                .lab
                .sh(
                    "src",
                    &format!(
                        "python3 -c \"import socket;s=socket.socket();s.bind(('',{p}));s.settimeout(3);s.connect(('{DST_V4}',7000));s.sendall(b'hi');print(s.recv(2))\""
                    ),
                )
                .unwrap();
            assert!(status.contains("hi"), "{status}");
            thread::sleep(Duration::from_millis(100));
            let after = sf(&demo);
            [0, 1, 2].map(|i| after[i] - before[i])
        })
        .collect();
    assert!(
        used.iter().any(|u| u[1] > 0),
        "new flows never use SF2: {used:?}"
    );
}

/// The example chain for UDP to port 9000 through `groups`, with every SF sending at
/// 4 Mbit/s: a burst spends ~10 ms inside the chain, so most updates happen while packets are
/// in flight between two hops.
fn slow_udp_chain(demo: &Demo) -> impl Fn(&str) -> String {
    for sf in ["sf1", "sf2", "sf3"] {
        demo.lab
            .sh(
                sf,
                "tc qdisc add dev eth-out root tbf rate 4mbit burst 1600 latency 500ms",
            )
            .unwrap();
    }
    |groups: &str| {
        chain("PP1, PP2", groups)
            .replace("  protocol: tcp\n", "  protocol: udp\n")
            .replace(
                "  destinationPortRange: \"80\"",
                "  destinationPortRange: \"9000\"",
            )
    }
}

const FLIP_STREAM: Stream = Stream {
    count: 2400,
    rate: 600,
    burst: 12,
    size: 400,
    port: 9000,
    flows: 1,
};

/// Runs [`FLIP_STREAM`] once without updates and once while the chain is applied as `a` and
/// `b` in turn, 16 times: nothing may be lost, and every packet that entered the chain on a
/// generation left it on that generation.
fn flip_under_a_stream(demo: &Demo, a: &str, b: &str) {
    demo.apply(a);
    let stream = FLIP_STREAM;
    // Control: the same stream, no update.
    let control = stream.run(&demo.lab, "control", || {}).unwrap();
    let mut flips = 0;
    let flipped = stream
        .run(&demo.lab, "flips", || {
            for i in 0..16 {
                thread::sleep(Duration::from_millis(37));
                demo.apply(if i % 2 == 0 { b } else { a });
                flips += 1;
            }
        })
        .unwrap();
    let lost_control = stream.count as u64 - control;
    let lost_flipping = stream.count as u64 - flipped;
    println!(
        "UDP stream of {} datagrams at {}/s: lost {lost_control} without updates, {lost_flipping} across {flips} updates",
        stream.count, stream.rate
    );
    assert_eq!(
        lost_flipping, 0,
        "packets lost across updates (control lost {lost_control})"
    );

    // Per generation: every packet that entered the chain on it left the chain on it.
    let stats = stats(demo);
    let mut by_generation: BTreeMap<(u64, String), (u64, u64)> = BTreeMap::new();
    let mut generations = 0;
    for g in stats["generations"].as_array().unwrap() {
        let epoch = g["epoch"].as_u64().unwrap();
        for row in g["rows"].as_array().unwrap() {
            let key = (epoch, row["direction"].as_str().unwrap().to_string());
            let entry = by_generation.entry(key).or_default();
            let packets = row["packets"].as_u64().unwrap();
            if row["position"] == 0 {
                entry.0 += packets;
            }
            if row["position"] == row["hops"] {
                entry.1 += packets;
            }
        }
        generations += 1;
    }
    assert!(generations >= 16, "only {generations} generations reported");
    let used = by_generation
        .values()
        .filter(|(entered, _)| *entered > 0)
        .count();
    assert!(
        used >= 8,
        "the stream was steered by only {used} generations: {by_generation:?}"
    );
    for ((epoch, direction), (entered, left)) in &by_generation {
        assert_eq!(
            entered, left,
            "generation {epoch} ({direction}): {entered} packets entered, {left} left on it"
        );
    }
    let total: u64 = by_generation.values().map(|(e, _)| e).sum();
    assert_eq!(
        total,
        2 * stream.count as u64,
        "every datagram counted once per run"
    );
}

#[test]
fn updates_are_make_before_break_and_never_mix_generations() {
    let demo = Demo::build("flip").unwrap();
    let udp = slow_udp_chain(&demo);
    // The chain flips between two orders of its groups.
    flip_under_a_stream(&demo, &udp("PG1, PG2"), &udp("PG2, PG1"));
}

/// An update that leaves a group out of the chain takes the program off its SFs' egress only
/// once the generation before is retired: packets still inside those SFs come out on the old
/// generation and are steered through the rest of their chain, not routed around it.
#[test]
fn packets_inside_an_sf_that_an_update_leaves_out_finish_their_chain() {
    let demo = Demo::build("leave").unwrap();
    let udp = slow_udp_chain(&demo);
    flip_under_a_stream(&demo, &udp("PG1, PG2"), &udp("PG2"));
}

#[test]
fn a_shared_group_serves_several_chains_and_each_packet_continues_on_its_own() {
    let demo = Demo::build("shared").unwrap();
    // Two chains from one source port share PG1: web traffic (two classifiers, IPv4 and
    // IPv6) goes on to SF3, the UDP stream ends after PG1.
    let yaml = fs::read_to_string(example_chain()).unwrap()
        + "---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {name: FC-udp}\nspec: {protocol: udp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: '9000', logicalSourcePort: vm-src}\n---\napiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortChain\nmetadata: {name: PC-udp}\nspec: {portPairGroups: [PG1], flowClassifiers: [FC-udp]}\n";
    demo.apply(&yaml);
    for (port, dst) in (46000..46006).zip([DST_V4, sfc_lab::demo::DST_V6].iter().cycle()) {
        let c = demo.request_from(dst, Some(port)).unwrap();
        assert_eq!(c.status, 200, "{c:?}");
        assert!(c.forwarded[2] > 0, "web traffic skipped SF3: {c:?}");
        assert_eq!(c.forwarded[0] + c.forwarded[1], c.forwarded[2], "{c:?}");
    }
    let before = demo.forwarded(false).unwrap();
    let stream = Stream {
        count: 300,
        rate: 1000,
        burst: 1,
        size: 64,
        port: 9000,
        flows: 1,
    };
    let received = stream.run(&demo.lab, "udp", || {}).unwrap();
    let after = demo.forwarded(false).unwrap();
    assert_eq!(received, 300);
    let through_pg1 = after[0] + after[1] - before[0] - before[1];
    assert!(
        through_pg1 >= 300,
        "UDP datagrams did not cross PG1: {before:?} -> {after:?}"
    );
    assert_eq!(
        after[2], before[2],
        "UDP datagrams continued to SF3: {before:?} -> {after:?}"
    );
}
