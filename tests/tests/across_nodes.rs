//! Chains whose hops are on different nodes: three node namespaces on an underlay bridge, a
//! real etcd, an agent per node, SFs that route, and real traffic (curl, TCP and UDP) from a
//! source VM on one node to a destination VM on another. Between nodes, packets travel in
//! Geneve; a capture of the underlay shows the service path and index they carry.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use sfc_lab::{
    cluster::ClusterLab,
    demo::{
        assert_through_one_pg1_member_then_sf3, example_chain, forwarded, request_from,
        symmetric_chain, symmetric_request, Crossing, DST_V4, DST_V6, SRC_V4,
    },
    lab::{script, wait_for, Lab},
    spread::Spread,
    stream::Stream,
};

/// Short, so that a lost node shows quickly.
const TTL: u64 = 3;

/// One Geneve packet seen on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Geneve {
    /// The outer addresses: 4 bytes over IPv4, 16 over IPv6.
    from: Vec<u8>,
    to: Vec<u8>,
    vni: u32,
    /// Our option: (option class, type, service path id, service index, target).
    option: Option<(u16, u8, u32, u8, u32)>,
}

/// The Ethernet frames of a pcap file.
fn frames(pcap: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 24; // global header
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(&pcap[at + 16..(at + 16 + caplen).min(pcap.len())]);
        at += 16 + caplen;
    }
    out
}

/// The UDP datagrams over IPv4 on Ethernet of a pcap file: (IP header, UDP header and payload).
fn udp_datagrams(pcap: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    for frame in frames(pcap) {
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        out.push((&ip[..ihl], &ip[ihl..]));
    }
    out
}

/// The UDP datagrams over IPv4, or over IPv6 without extension headers, on Ethernet of a pcap
/// file: (source address, destination address, UDP header and payload).
fn udp_over_either(pcap: &[u8]) -> Vec<(&[u8], &[u8], &[u8])> {
    let mut out: Vec<_> = udp_datagrams(pcap)
        .into_iter()
        .map(|(ip, udp)| (&ip[12..16], &ip[16..20], udp))
        .collect();
    for frame in frames(pcap) {
        if frame.len() >= 14 + 40 + 8 && frame[12..14] == [0x86, 0xdd] && frame[14 + 6] == 17 {
            let ip = &frame[14..];
            out.push((&ip[8..24], &ip[24..40], &ip[40..]));
        }
    }
    out
}

/// The Geneve packets (UDP 6081 over IPv4 or IPv6 on Ethernet) of a pcap file.
fn geneve_packets(pcap: &[u8]) -> Vec<Geneve> {
    let mut out = Vec::new();
    for (from, to, udp) in udp_over_either(pcap) {
        if u16::from_be_bytes([udp[2], udp[3]]) != 6081 || udp.len() < 16 {
            continue;
        }
        let g = &udp[8..];
        let options = (g[0] & 0x3f) as usize * 4;
        let vni = u32::from_be_bytes([0, g[4], g[5], g[6]]);
        let option = (options >= 20 && g.len() >= 8 + 20).then(|| {
            let o = &g[8..];
            let service = u32::from_be_bytes(o[4..8].try_into().unwrap());
            (
                u16::from_be_bytes([o[0], o[1]]),
                o[2],
                service >> 8,
                (service & 0xff) as u8,
                u32::from_be_bytes(o[12..16].try_into().unwrap()),
            )
        });
        out.push(Geneve {
            from: from.to_vec(),
            to: to.to_vec(),
            vni,
            option,
        });
    }
    out
}

/// (from, to, service path id, service index) of every Geneve packet seen, each checked to
/// carry our option and the path id as its VNI.
fn service_paths(seen: &[Geneve]) -> BTreeSet<(Vec<u8>, Vec<u8>, u32, u8)> {
    seen.iter()
        .map(|g| {
            let (class, kind, path, index, _) =
                g.option.unwrap_or_else(|| panic!("no option: {g:?}"));
            assert_eq!((class, kind), (0xfff5, 0x81), "{g:?}");
            assert_eq!(g.vni, path, "the VNI is the service path id: {g:?}");
            (g.from.clone(), g.to.clone(), path, index)
        })
        .collect()
}

/// Starts tcpdump on `iface` in namespace `ns`, writing what `filter` takes to `file`; returns
/// once it captures.
fn capture(lab: &Lab, ns: &str, iface: &str, filter: &[&str], file: &Path) -> Child {
    let _ = std::fs::remove_file(file);
    let child = lab
        .cmd(ns, "tcpdump")
        .args([
            "-i",
            iface,
            "--immediate-mode",
            "-U",
            "-n",
            "-s",
            "128",
            "-w",
        ])
        .arg(file)
        .args(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // tcpdump opens its file once the capture and its filter are in place; with -U the file's
    // header is written at once. A fixed wait was too short on a loaded machine.
    let capturing = wait_for(Duration::from_secs(30), || {
        (std::fs::metadata(file).ok()?.len() >= 24).then_some(())
    });
    assert!(capturing.is_some(), "tcpdump on {ns}/{iface} did not start");
    child
}

/// The target id of the Geneve packets the capture saw going to `node`.
fn target_of(seen: &[Geneve], node: &[u8]) -> u32 {
    seen.iter()
        .find(|g| g.to == node)
        .and_then(|g| g.option)
        .map(|o| o.4)
        .expect("a Geneve packet to that node")
}

/// A Geneve payload (as a Python bytes expression) as a node would send it: our option for
/// service path `spi`, index `index`, `target`, and an inner UDP packet.
fn geneve_payload(spi: u32, index: u8, target: u32) -> String {
    format!(
        "bytes([0x07, 0x40, 0x65, 0x58]) + ({spi} << 8).to_bytes(4, 'big') \
         + bytes([0xff, 0xf5, 0x81, 6]) + (({spi} << 8) | {index}).to_bytes(4, 'big') \
         + bytes(4) + ({target}).to_bytes(4, 'big') + bytes(12) \
         + bytes(12) + bytes([0x08, 0x00]) \
         + bytes([0x45, 0, 0, 29, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 10, 198, 18, 0, 100]) \
         + bytes([0x30, 0x39, 0, 80, 0, 9, 0, 0, 0x21])"
    )
}

/// A shell command that sends `payload` (a Python bytes expression) in one UDP datagram to the
/// Geneve port of `to`.
fn send_geneve(to: &str, payload: &str) -> String {
    format!(
        "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.sendto({payload}, ('{to}', 6081))\""
    )
}

/// The chain id the cluster gave PortChain `name`.
fn chain_id(spread: &Spread, name: &str) -> u32 {
    let out = spread
        .cluster
        .sfcctl(1, &["get", "portchain", name, "-o", "json"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = |v: &serde_json::Value| v["spec"]["chainId"].as_u64();
    found(&v)
        .or_else(|| v.as_array().and_then(|a| a.first()).and_then(found))
        .unwrap_or_else(|| panic!("no chain id in {out}")) as u32
}

/// An HTTP request from the source VM from port `sport`, while `sfcctl trace` on node `node`
/// follows it: the request's crossing, and the trace as printed and as JSON rows.
fn traced_request(
    spread: &Spread,
    node: usize,
    sport: u16,
) -> (Crossing, String, Vec<serde_json::Value>) {
    let lab = spread.lab();
    let port = sport.to_string();
    let (crossing, trace) = thread::scope(|s| {
        let trace = s.spawn(|| {
            spread.cluster.sfcctl(
                node,
                &[
                    "trace",
                    "--src",
                    SRC_V4,
                    "--dst",
                    DST_V4,
                    "--proto",
                    "tcp",
                    "--sport",
                    &port,
                    "--duration",
                    "4",
                    "-o",
                    "json",
                ],
            )
        });
        thread::sleep(Duration::from_millis(1500));
        let crossing = request_from(lab, DST_V4, Some(sport)).unwrap();
        (crossing, trace.join().unwrap().unwrap())
    });
    let steps = trace
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (crossing, trace, steps)
}

#[test]
fn a_chain_crosses_three_nodes_in_geneve_and_foreign_tunnel_packets_are_dropped() {
    let spread = Spread::build("xn", TTL).unwrap();
    let lab = spread.lab();
    let chain = std::fs::read_to_string(example_chain()).unwrap();
    spread.apply(1, &chain).unwrap();
    let pcap = lab.dir.join("underlay.pcap");
    let mut capture = capture(lab, "u", "br0", &["udp", "port", "6081"], &pcap);

    // Every request crosses one PG1 member (SF1 on n1, SF2 on n2) and then SF3 on n3; both
    // members take a share.
    let mut results = Vec::new();
    for port in 0..16u16 {
        results.push(request_from(lab, DST_V4, Some(42000 + port)).unwrap());
    }
    assert_through_one_pg1_member_then_sf3(&results, "IPv4 across nodes");
    let via_sf2 = results.iter().filter(|c| c.forwarded[1] > 0).count();
    assert!(
        via_sf2 > 0 && via_sf2 < results.len(),
        "PG1's members on n1 and n2 must share the flows: {results:?}"
    );
    let v6: Vec<_> = (0..4)
        .map(|p| request_from(lab, DST_V6, Some(43000 + p)).unwrap())
        .collect();
    assert_through_one_pg1_member_then_sf3(&v6, "IPv6 across nodes");

    thread::sleep(Duration::from_millis(300));
    let _ = capture.kill();
    let _ = capture.wait();
    let seen = geneve_packets(&std::fs::read(&pcap).unwrap());
    let id = chain_id(&spread, "PC1");
    let spi = id << 1;
    let kinds = service_paths(&seen);
    let n = |i: u8| vec![10, 99, 0, 10 + i];
    // To hop 0 (SF2 on n2) from the entry on n1: index 255; to hop 1 (SF3 on n3) from either
    // member's node: index 254. Nothing else.
    let expected: BTreeSet<_> = [
        (n(1), n(2), spi, 255),
        (n(1), n(3), spi, 254),
        (n(2), n(3), spi, 254),
    ]
    .into();
    assert_eq!(kinds, expected, "Geneve on the underlay: {seen:?}");

    let sent: Vec<u64> = (1..=3)
        .map(|i| spread.cluster.stats(i).unwrap().counter("tunnel_sent"))
        .collect();
    let received: Vec<u64> = (1..=3)
        .map(|i| spread.cluster.stats(i).unwrap().counter("tunnel_received"))
        .collect();
    assert!(sent[0] > 0 && sent[1] > 0 && sent[2] == 0, "sent {sent:?}");
    assert!(
        received[0] == 0 && received[1] > 0 && received[2] > 0,
        "received {received:?}"
    );

    // One command on any node shows every node's counters, side by side and summed: each
    // node's own, asked of its agent through etcd.
    let all: serde_json::Value =
        serde_json::from_str(&spread.cluster.sfcctl(3, &["stats", "-o", "json"]).unwrap()).unwrap();
    let nodes = all["nodes"].as_array().expect("per-node counters");
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["n1", "n2", "n3"], "{all:#}");
    let per_node: Vec<u64> = nodes
        .iter()
        .map(|n| {
            assert_eq!(n["error"], "", "{n:#}");
            n["counters"]["tunnel_sent"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(per_node, sent, "each node's own counters");
    assert_eq!(
        all["counters"]["tunnel_sent"].as_u64(),
        Some(sent.iter().sum::<u64>()),
        "the sums"
    );
    let table = spread.cluster.sfcctl(2, &["stats"]).unwrap();
    let header = table.lines().find(|l| l.starts_with("OUTCOME")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["OUTCOME", "n1", "n2", "n3", "TOTAL"],
        "{table}"
    );
    // PC1's hops cross nodes: no node judges them alone (no false black hole where the packets
    // leave on another node); the `all` rows judge them on every node's counters.
    let hop_rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 9 && f[1] == "PC1")
        .collect();
    for f in &hop_rows {
        match f[0] {
            "all" => assert_ne!(f[8], "across-nodes", "{table}"),
            _ => assert_eq!(f[8], "across-nodes", "{table}"),
        }
    }
    assert_eq!(
        hop_rows.iter().filter(|f| f[0] == "all").count(),
        2,
        "one `all` row per hop:\n{table}"
    );
    // Each SF's counters come from the node it is on, in a NODE column.
    for (node, pair) in [("n1", "PP1"), ("n2", "PP2"), ("n3", "PP3")] {
        assert!(
            table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[0] == node && f[1] == pair && f[2] != "0"
            }),
            "no {pair} row of {node} with traffic:\n{table}"
        );
    }
    // One trace, on n2, follows a request through every node it crosses: each step with its
    // node, the same tracking id, in time order.
    let (crossing, trace, steps) = traced_request(&spread, 2, 42300);
    let on: BTreeSet<&str> = steps.iter().map(|r| r["node"].as_str().unwrap()).collect();
    let member_node = if crossing.forwarded[1] > 0 {
        "n2"
    } else {
        "n1"
    };
    let expected: BTreeSet<&str> = ["n1", member_node, "n3"].into();
    assert_eq!(on, expected, "{trace}");
    let ids: BTreeSet<u64> = steps.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one tracking id: {trace}");
    let times: Vec<u64> = steps
        .iter()
        .map(|r| r["time_ns"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {trace}"
    );
    assert!(
        steps
            .iter()
            .any(|r| r["node"] == "n3" && r["verdict"] == "tunnel_received"),
        "{trace}"
    );

    // `describe` on n1 shows SF2's counters as n2 counts them, and the chain's on each node.
    let described = spread
        .cluster
        .sfcctl(1, &["describe", "portpair", "PP2"])
        .unwrap();
    let row = described
        .lines()
        .find(|l| l.trim_start().starts_with("n2\tPP2\tin "))
        .unwrap_or_else(|| panic!("no counters of PP2 from n2:\n{described}"));
    assert!(!row.contains("in 0 "), "{described}");
    let chain = spread
        .cluster
        .sfcctl(3, &["describe", "portchain", "PC1"])
        .unwrap();
    for node in ["n1", "n2", "n3"] {
        assert!(
            chain
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{node}\thop "))),
            "no hop counters of {node}:\n{chain}"
        );
    }

    // Geneve from an address that is no registered node's (the underlay's own, where etcd
    // runs) is dropped and counted, however well formed; so is a datagram to the Geneve port
    // from a registered node that is not our Geneve.
    let before = spread.cluster.stats(3).unwrap();
    let target = target_of(&seen, &n(3));
    lab.sh(
        "u",
        &send_geneve("10.99.0.13", &geneve_payload(spi, 254, target)),
    )
    .unwrap();
    lab.sh("n2", &send_geneve("10.99.0.13", "b'not geneve at all'"))
        .unwrap();
    let rejected = |name: &str| {
        wait_for(Duration::from_secs(3), || {
            let after = spread.cluster.stats(3).ok()?;
            (after.counter(name) > before.counter(name)).then_some(())
        })
        .is_some()
    };
    assert!(
        rejected("tunnel_rejected_source"),
        "n3 took Geneve from 10.99.0.1"
    );
    assert!(
        rejected("tunnel_rejected_malformed"),
        "n3 took a malformed datagram"
    );
    assert_eq!(
        spread.cluster.stats(3).unwrap().counter("tunnel_received"),
        before.counter("tunnel_received"),
        "a rejected tunnel packet went on"
    );
    // Each node's /metrics carries its name and its tunnel counters.
    let metrics = lab
        .sh("n3", "curl -s http://127.0.0.1:9464/metrics")
        .unwrap();
    let value = |family: &str, label: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{family}{{"))
                    && l.contains(label)
                    && l.contains("node=\"n3\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {family} {label} for n3 in\n{metrics}"))
    };
    assert!(value("sfc_tunnel_packets_total", "direction=\"received\"") > 0);
    assert!(value("sfc_tunnel_rejected_packets_total", "reason=\"source\"") >= 1);
    assert!(value("sfc_tunnel_rejected_packets_total", "reason=\"malformed\"") >= 1);

    // And steering goes on.
    let again = request_from(lab, DST_V4, Some(42100)).unwrap();
    assert_through_one_pg1_member_then_sf3(&[again], "after the foreign packets");
}

#[test]
fn a_symmetric_chain_sends_replies_back_through_the_same_instances_across_nodes() {
    let spread = Spread::build("xs", TTL).unwrap();
    let lab = spread.lab();
    spread.apply(2, &symmetric_chain()).unwrap();
    let mut used = [false; 2];
    for port in 46000..46012u16 {
        // Both directions cross one PG1 member (on n1 or n2) and SF3 (on n3), and the replies
        // reach the source VM on n1 from whichever node the member is on.
        used[symmetric_request(lab, port)] = true;
    }
    assert_eq!(
        used,
        [true, true],
        "both PG1 members should carry connections"
    );
}

/// One group of three members, one on each node: a chain of one hop for UDP from the source
/// VM to port 5000.
fn one_group_on_three_nodes() -> String {
    let mut docs = Vec::new();
    for k in 1..=3 {
        docs.push(format!(
            "kind: PortPair\nmetadata: {{name: pp{k}}}\nspec: {{ingress: sf{k}-in, egress: sf{k}-out}}"
        ));
    }
    docs.push(
        "kind: PortPairGroup\nmetadata: {name: g}\nspec: {portPairs: [pp1, pp2, pp3]}".into(),
    );
    docs.push(
        "kind: FlowClassifier\nmetadata: {name: udp}\nspec: {ethertype: IPv4, protocol: udp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: \"5000\", logicalSourcePort: vm-src}".into(),
    );
    docs.push(
        "kind: PortChain\nmetadata: {name: c}\nspec: {portPairGroups: [g], flowClassifiers: [udp]}"
            .into(),
    );
    docs.iter()
        .map(|d| format!("apiVersion: sfc.dataplane.dev/v1alpha1\n{d}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The SF (0, 1, 2) that forwarded one UDP datagram sent from the source VM's port `sport` to
/// the destination's port 5000; `None` if none did (or more than one).
fn member_of(lab: &Lab, sport: u16) -> Option<usize> {
    member_of_sized(lab, sport, 1)
}

/// The same with a datagram of `payload` bytes (sent with don't-fragment).
fn member_of_sized(lab: &Lab, sport: u16, payload: usize) -> Option<usize> {
    which_member(lab, sport, payload, || forwarded(lab, false).ok())
}

/// The member (0, 1, 2) whose count (of `counts`) one datagram of `payload` bytes, sent from
/// the source VM's port `sport` to the destination's port 5000, raised; `None` if none did (or
/// more than one).
fn which_member(
    lab: &Lab,
    sport: u16,
    payload: usize,
    counts: impl Fn() -> Option<[u64; 3]>,
) -> Option<usize> {
    let before = counts()?;
    lab.sh(
        "src",
        &format!(
            "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
             s.setsockopt(socket.IPPROTO_IP, 10, 2); s.bind(('', {sport})); \
             s.sendto(bytes({payload}), ('{DST_V4}', 5000))\""
        ),
    )
    .unwrap();
    let raised = wait_for(Duration::from_secs(1), || {
        let after = counts()?;
        let raised: Vec<usize> = (0..3).filter(|&i| after[i] > before[i]).collect();
        (!raised.is_empty()).then_some(raised)
    })?;
    match raised.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[test]
fn a_lost_node_s_members_are_left_out_within_its_ttl_and_other_flows_stay() {
    let mut spread = Spread::build("xl", TTL).unwrap();
    spread.apply(1, &one_group_on_three_nodes()).unwrap();
    let ports: Vec<u16> = (44000..44030).collect();
    let before: Vec<usize> = ports
        .iter()
        .map(|&p| member_of(spread.lab(), p).unwrap_or_else(|| panic!("port {p}: no member")))
        .collect();
    for sf in 0..3 {
        assert!(before.contains(&sf), "every member takes flows: {before:?}");
    }

    // Path MTU: 78 bytes of encapsulation on a 1500-byte underlay leave 1422 (shown by
    // `get nodes`); a datagram that fills it crosses to another node's member, one byte more
    // is dropped and counted (and answered with ICMP: see the path MTU test).
    let yaml = spread
        .cluster
        .sfcctl(1, &["get", "nodes", "-o", "yaml"])
        .unwrap();
    assert_eq!(yaml.matches("usableMtu: 1422").count(), 3, "{yaml}");
    let remote = ports[before.iter().position(|&m| m != 0).unwrap()];
    let member = before[ports.iter().position(|&p| p == remote).unwrap()];
    assert_eq!(
        member_of_sized(spread.lab(), remote, 1422 - 28),
        Some(member)
    );
    let too_big = || spread.cluster.stats(1).unwrap().counter("tunnel_too_big");
    let dropped = too_big();
    assert_eq!(member_of_sized(spread.lab(), remote, 1422 - 28 + 1), None);
    assert_eq!(too_big(), dropped + 1);
    // n2's agent dies (its datapath goes on): n2 is lost once its lease expires, and n1
    // stops sending to SF2 on n2.
    spread.cluster.kill_agent(2).unwrap();
    let killed = Instant::now();
    let on_sf2 = ports[before.iter().position(|&m| m == 1).unwrap()];
    let moved = wait_for(Duration::from_secs(TTL + 5), || {
        let member = member_of(spread.lab(), on_sf2)?;
        (member != 1).then(|| killed.elapsed())
    })
    .expect("flows still go to the lost node's member");
    eprintln!(
        "n2's member left out {:.2} s after its agent died",
        moved.as_secs_f64()
    );
    assert!(
        moved <= Duration::from_secs(TTL + 2),
        "left out after {moved:?}, more than TTL + 2 s"
    );
    let rows = spread.cluster.node_rows(1).unwrap();
    assert!(
        rows.iter()
            .any(|r| r["name"] == "n2" && r["state"] == "lost"),
        "{rows:#?}"
    );
    // `stats` shows the other nodes' counters, and says why n2 has none.
    let table = spread.cluster.sfcctl(1, &["stats"]).unwrap();
    assert!(
        table.contains("n2: lost (its agent no longer renews its lease): no counters"),
        "{table}"
    );
    // Only the flows that were on SF2 moved.
    for (port, b) in ports.iter().zip(&before) {
        let a = member_of(spread.lab(), *port).unwrap_or_else(|| panic!("port {port}: no member"));
        if *b == 1 {
            assert_ne!(a, 1, "port {port} still on the lost node's member");
        } else {
            assert_eq!(a, *b, "port {port} moved from a surviving member");
        }
    }
}

/// The member (0, 1, 2 for pp1..pp3, each on its own node) one UDP datagram from the source
/// VM's port `sport` to the destination's port 5000 was sent into, as the nodes' counters say
/// (the SFs' own counters count the health checks' probes too; the datapath's never do).
fn sent_into(spread: &Spread, sport: u16) -> Option<usize> {
    which_member(spread.lab(), sport, 1, || {
        let into = |k: usize| Some(spread.cluster.stats(k).ok()?.into_pair(&format!("pp{k}")));
        Some([into(1)?, into(2)?, into(3)?])
    })
}

/// Health checks across nodes (issue 15, item 7): SF2, on n2, stops forwarding. n2 probes it,
/// finds it down and says so in its node record; n1, where the flows enter, leaves it out too,
/// by the same Maglev table: only the flows that were on SF2 move. Once SF2 forwards again, n2
/// takes its word back.
#[test]
fn a_member_its_own_node_finds_down_is_left_out_on_every_node() {
    let spread = Spread::build("xh", TTL).unwrap();
    let lab = spread.lab();
    spread
        .apply(
            1,
            &one_group_on_three_nodes().replace(
                "spec: {portPairs: [pp1, pp2, pp3]}",
                "spec: {portPairs: [pp1, pp2, pp3], healthCheck: {source: 198.18.0.10, \
                 destination: 198.18.0.100, intervalMs: 200, timeoutMs: 100}}",
            ),
        )
        .unwrap();
    let ports: Vec<u16> = (45000..45030).collect();
    let before: Vec<usize> = ports
        .iter()
        .map(|&p| sent_into(&spread, p).unwrap_or_else(|| panic!("port {p}: no member")))
        .collect();
    let on_sf2 = ports[before.iter().position(|&m| m == 1).expect("no flow on SF2")];
    lab.sh("sf2", "sysctl -qw net.ipv4.ip_forward=0").unwrap();
    let broke = Instant::now();
    let moved = wait_for(Duration::from_secs(10), || {
        let member = sent_into(&spread, on_sf2)?;
        (member != 1).then(|| broke.elapsed())
    })
    .expect("flows entering on n1 still go to SF2, down on n2");
    eprintln!(
        "SF2's flows left it {:.2} s after it stopped forwarding",
        moved.as_secs_f64()
    );
    assert!(moved <= Duration::from_secs(5), "left out after {moved:?}");
    let nodes = spread
        .cluster
        .sfcctl(3, &["get", "nodes", "-o", "json"])
        .unwrap();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&nodes).unwrap();
    let down = &nodes.iter().find(|n| n["name"] == "n2").unwrap()["down"];
    assert!(
        down["pp2"]
            .as_str()
            .is_some_and(|why| why.contains("did not come back")),
        "n2 does not say pp2 is down: {nodes:#?}"
    );
    let described = spread
        .cluster
        .sfcctl(1, &["describe", "portpair", "pp2"])
        .unwrap();
    assert!(
        described.contains("DOWN, out of its group: on node n2"),
        "{described}"
    );
    for (port, b) in ports.iter().zip(&before) {
        let a = sent_into(&spread, *port).unwrap_or_else(|| panic!("port {port}: no member"));
        if *b == 1 {
            assert_ne!(a, 1, "port {port} still on SF2");
        } else {
            assert_eq!(a, *b, "port {port} moved from a member that stayed");
        }
    }
    // SF2 forwards again: n2's record no longer has it.
    lab.sh("sf2", "sysctl -qw net.ipv4.ip_forward=1").unwrap();
    let back = wait_for(Duration::from_secs(5), || {
        let nodes = spread
            .cluster
            .sfcctl(1, &["get", "nodes", "-o", "json"])
            .ok()?;
        let nodes: Vec<serde_json::Value> = serde_json::from_str(&nodes).ok()?;
        nodes.iter().all(|n| n.get("down").is_none()).then_some(())
    });
    assert!(back.is_some(), "n2 still says pp2 is down");
}

/// Three one-member groups, one on each node (SF1 on n1, SF2 on n2, SF3 on n3), crossed in
/// `order` (say `g1, g2, g3`) by what `classifiers` (FlowClassifier specs, from the source VM)
/// match.
fn three_hops(order: &str, classifiers: &[&str]) -> String {
    let mut docs = Vec::new();
    for k in 1..=3 {
        docs.push(format!(
            "kind: PortPair\nmetadata: {{name: pp{k}}}\nspec: {{ingress: sf{k}-in, egress: sf{k}-out}}"
        ));
        docs.push(format!(
            "kind: PortPairGroup\nmetadata: {{name: g{k}}}\nspec: {{portPairs: [pp{k}]}}"
        ));
    }
    let mut names = Vec::new();
    for (i, spec) in classifiers.iter().enumerate() {
        docs.push(format!(
            "kind: FlowClassifier\nmetadata: {{name: fc{i}}}\nspec: {{{spec}, logicalSourcePort: vm-src}}"
        ));
        names.push(format!("fc{i}"));
    }
    docs.push(format!(
        "kind: PortChain\nmetadata: {{name: c}}\nspec: {{portPairGroups: [{order}], flowClassifiers: [{}]}}",
        names.join(", ")
    ));
    docs.iter()
        .map(|d| format!("apiVersion: sfc.dataplane.dev/v1alpha1\n{d}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

const UDP_9000: &str = "ethertype: IPv4, protocol: udp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: \"9000\"";

/// Sequence number → TTL of each datagram of the UDP stream (port 9000) a capture saw.
fn stream_ttls(pcap: &[u8]) -> BTreeMap<u32, Vec<u8>> {
    let mut out: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    for (ip, udp) in udp_datagrams(pcap) {
        if u16::from_be_bytes([udp[2], udp[3]]) == 9000 && udp.len() >= 12 {
            let seq = u32::from_be_bytes(udp[8..12].try_into().unwrap());
            out.entry(seq).or_default().push(ip[8]);
        }
    }
    out
}

#[test]
fn a_chain_across_three_nodes_flips_twenty_times_under_udp_and_no_packet_is_lost_or_mixed() {
    let spread = Spread::build("xf", TTL).unwrap();
    let lab = spread.lab();
    let forward = three_hops("g1, g2, g3", &[UDP_9000]);
    let backward = three_hops("g3, g2, g1", &[UDP_9000]);
    spread.apply(1, &forward).unwrap();
    // Each SF routes, so the TTL a datagram has at an SF's ingress says which hop that SF was
    // for it: the first hop sees the TTL the source sent, the last one two less.
    let pcaps: Vec<_> = (1..=3)
        .map(|k| lab.dir.join(format!("sf{k}.pcap")))
        .collect();
    let mut captures: Vec<Child> = (1..=3)
        .map(|k| {
            capture(
                lab,
                &format!("sf{k}"),
                "eth-in",
                &["udp", "dst", "port", "9000"],
                &pcaps[k - 1],
            )
        })
        .collect();
    let stream = Stream {
        count: 6000,
        rate: 500,
        burst: 5,
        size: 64,
        port: 9000,
        // Many flows, each with a datagram every second: a flow between two datagrams has
        // none inside the chain, so it takes the new revision as soon as its entry node
        // flips, while the others may still be on the old one.
        flows: 500,
    };
    // The flips are applied from every node in turn, each one waited for on all three.
    let mut flips = 0;
    let mut settle = Vec::new();
    let received = stream
        .run(lab, "flips", || {
            for i in 0..20 {
                thread::sleep(Duration::from_millis(150));
                let yaml = if i % 2 == 0 { &backward } else { &forward };
                let started = Instant::now();
                spread.apply(1 + i % 3, yaml).unwrap();
                settle.push(started.elapsed().as_millis());
                flips += 1;
            }
        })
        .unwrap();
    settle.sort_unstable();
    eprintln!(
        "apply until all three nodes steer it: median {} ms, max {} ms",
        settle[settle.len() / 2],
        settle[settle.len() - 1]
    );
    let warned: Vec<usize> = (1..=3)
        .filter(|&i| spread.cluster.agent_log(i).contains("gave up waiting"))
        .collect();
    assert!(
        warned.is_empty(),
        "nodes {warned:?} gave up waiting for others"
    );
    thread::sleep(Duration::from_millis(300));
    for c in &mut captures {
        let _ = c.kill();
        let _ = c.wait();
    }
    let seen: Vec<BTreeMap<u32, Vec<u8>>> = pcaps
        .iter()
        .map(|p| stream_ttls(&std::fs::read(p).unwrap()))
        .collect();
    let rejected: Vec<u64> = (1..=3)
        .map(|i| {
            let stats = spread.cluster.stats(i).unwrap();
            stats.counter("tunnel_rejected_revision") + stats.counter("tunnel_rejected_target")
        })
        .collect();
    eprintln!(
        "{flips} flips: {received} of {} datagrams arrived; rejected by revision or target per node: {rejected:?}",
        stream.count
    );
    assert_eq!(
        rejected,
        [0, 0, 0],
        "packets landed on a node without their revision"
    );
    assert_eq!(
        received,
        u64::from(stream.count),
        "datagrams lost across the flips"
    );

    // Every datagram crossed each SF once, in one of the two orders: never a mix of both.
    let mut orders = [0u32; 2];
    let mut switches = 0;
    let mut last = None;
    for seq in 0..stream.count {
        let ttls: Vec<u8> = seen
            .iter()
            .map(|s| match s.get(&seq).map(Vec::as_slice) {
                Some([ttl]) => *ttl,
                other => panic!("datagram {seq} crossed this SF as {other:?} (TTLs seen)"),
            })
            .collect();
        let order = match (
            ttls[0] as i16 - ttls[1] as i16,
            ttls[1] as i16 - ttls[2] as i16,
        ) {
            (1, 1) => 0,
            (-1, -1) => 1,
            _ => panic!("datagram {seq} crossed the SFs in neither order: TTLs {ttls:?}"),
        };
        orders[order] += 1;
        switches += usize::from(last.is_some_and(|l| l != order));
        last = Some(order);
    }
    eprintln!(
        "forward {}, backward {}, {switches} switches",
        orders[0], orders[1]
    );
    assert!(
        switches >= 10,
        "the stream switched order only {switches} times across {flips} flips"
    );
}

/// `ping` from the source VM with path MTU discovery option `pmtu` (`do`: don't fragment;
/// `dont`: may be fragmented): its output, and whether every echo came back.
fn ping(lab: &Lab, pmtu: &str, args: &str) -> (String, bool) {
    let out = lab
        .cmd("src", "sh")
        .args([
            "-c",
            &format!("ping -n -M {pmtu} -c 2 -i 0.3 -W 2 {args} 2>&1"),
        ])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// Starts a sink for one TCP upload on the destination's port 9100.
fn start_sink(spread: &mut Spread) {
    spread
        .cluster
        .lab
        .spawn(
            "dst",
            &format!("python3 {} sink 9100", script("tcp_echo.py")),
        )
        .unwrap();
}

/// Uploads `size` bytes over TCP from the source to the sink on the destination's port 9100,
/// and checks that the sink counted them all.
fn upload(lab: &Lab, size: usize) {
    let got = lab
        .sh(
            "src",
            &format!(
                "timeout 60 python3 {} upload {DST_V4} 9100 {size}",
                script("tcp_echo.py")
            ),
        )
        .unwrap();
    assert_eq!(got.trim(), size.to_string(), "the sink's count");
}

/// Packets node n1 cut into fragments for the underlay.
fn fragmented(spread: &Spread) -> u64 {
    spread
        .cluster
        .stats(1)
        .unwrap()
        .counter("tunnel_fragmented")
}

/// Applies chain g1, g2, g3 (SF1 on n1, SF2 on n2, SF3 on n3) for TCP to a sink on the
/// destination's port 9100, ICMP and ICMPv6, and checks path MTU discovery through it, where
/// `usable` bytes of IP fit the underlay once encapsulated: an upload of `size` bytes without
/// segmentation offload (1500-byte packets) is answered with ICMP, learns the path MTU and
/// completes through the three SFs; the first hop to another node leaves from SF1's egress
/// on n1, so the answers go back into SF1, which routes them to the source like any reply.
/// Then ping at the limit passes and one byte over is answered, over IPv4 and IPv6.
fn path_mtu_discovery_works(spread: &mut Spread, usable: usize, size: usize) {
    start_sink(spread);
    let chain = three_hops(
        "g1, g2, g3",
        &[
            "ethertype: IPv4, protocol: tcp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: \"9100\"",
            "ethertype: IPv4, protocol: icmp, destinationIpPrefix: 198.18.0.100/32",
            "ethertype: IPv6, protocol: icmpv6, destinationIpPrefix: fd00:5fc::100/128",
        ],
    );
    spread.apply(1, &chain).unwrap();
    let lab = spread.lab();
    let answered = || spread.cluster.stats(1).unwrap().counter("too_big_answered");
    lab.sh("src", "ethtool -K eth0 tso off gso off").unwrap();
    let before = (answered(), forwarded(lab, false).unwrap());
    upload(lab, size);
    let after = (answered(), forwarded(lab, false).unwrap());
    eprintln!(
        "{size} bytes uploaded across three nodes; ICMP answers sent: {}",
        after.0 - before.0
    );
    assert!(after.0 > before.0, "no ICMP answer was sent");
    for sf in 0..3 {
        assert!(
            after.1[sf] - before.1[sf] >= (size / usable) as u64,
            "the transfer did not cross SF{}: {before:?} -> {after:?}",
            sf + 1
        );
    }
    let pmtu = lab.sh("src", &format!("ip route get {DST_V4}")).unwrap();
    assert!(
        pmtu.contains(&format!("mtu {usable}")),
        "the source's path MTU: {pmtu}"
    );
    // The learnt path MTU forgotten first; IPv4 and ICMP headers take 28 bytes of the usable
    // MTU, IPv6 and ICMPv6 headers 48.
    lab.sh("src", "ip route flush cache").unwrap();
    for (v, dst, headers, answer) in [
        (
            "",
            DST_V4,
            28,
            format!("Frag needed and DF set (mtu = {usable})"),
        ),
        ("-6 ", DST_V6, 48, format!("Packet too big: mtu={usable}")),
    ] {
        let (out, ok) = ping(lab, "do", &format!("{v}-s {} {dst}", usable - headers));
        assert!(ok, "ping {v}at the limit: {out}");
        let before = answered();
        let (out, ok) = ping(lab, "do", &format!("{v}-s {} {dst}", usable - headers + 1));
        assert!(!ok && out.contains(&answer), "ping {v}one byte over: {out}");
        assert!(answered() > before);
    }
}

#[test]
fn packets_too_big_for_the_underlay_are_fragmented_or_answered_with_icmp_and_path_mtu_discovery_works(
) {
    let mut spread = Spread::build("xm", TTL).unwrap();
    // 1500 bytes of underlay less 78 of encapsulation.
    path_mtu_discovery_works(&mut spread, 1422, 4 << 20);
    let lab = spread.lab();
    let answered = || spread.cluster.stats(1).unwrap().counter("too_big_answered");

    // Without DF, IPv4 is fragmented where it leaves for another node, as a router on the
    // path would fragment it: 1500 bytes of IP (1472 of payload, a pattern ping checks in the
    // echo) become fragments of 1420 and 100 bytes at SF1's egress, which take the chain on
    // through SF2 and SF3, and the destination puts them together. Nothing is answered.
    lab.sh("src", "ip route flush cache").unwrap();
    let before = (
        fragmented(&spread),
        answered(),
        forwarded(lab, false).unwrap(),
    );
    let (out, ok) = ping(lab, "dont", &format!("-s 1472 -p 5fc0ffee {DST_V4}"));
    assert!(
        ok && !out.contains("wrong data byte"),
        "ping without DF, 78 bytes over: {out}"
    );
    let after = (
        fragmented(&spread),
        answered(),
        forwarded(lab, false).unwrap(),
    );
    assert!(
        after.0 >= before.0 + 2,
        "2 echoes fragmented: {before:?} -> {after:?}"
    );
    assert_eq!(after.1, before.1, "no ICMP answer for packets without DF");
    // SF1 forwards the two echoes whole; SF2 and SF3, past the crossing, both fragments of each.
    for (sf, least) in [(0, 2), (1, 4), (2, 4)] {
        assert!(
            after.2[sf] - before.2[sf] >= least,
            "SF{} forwarded fewer than {least} packets: {before:?} -> {after:?}",
            sf + 1
        );
    }

    // The same where the chain enters: its first hop (SF2) is on n2, so the echoes are cut at
    // the source's port, and their fragments enter the chain there.
    let icmp = "ethertype: IPv4, protocol: icmp, destinationIpPrefix: 198.18.0.100/32";
    spread.apply(1, &three_hops("g2, g3", &[icmp])).unwrap();
    // The pings' flow (ICMP has no ports) is held on the chain it entered for one lease
    // after the flip.
    std::thread::sleep(Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS));
    let before = (fragmented(&spread), forwarded(lab, false).unwrap());
    let (out, ok) = ping(lab, "dont", &format!("-s 1472 -p 5fc0ffee {DST_V4}"));
    assert!(
        ok && !out.contains("wrong data byte"),
        "ping without DF into a chain that starts on another node: {out}"
    );
    let after = (fragmented(&spread), forwarded(lab, false).unwrap());
    assert!(after.0 >= before.0 + 2, "{before:?} -> {after:?}");
    for (sf, least) in [(1, 4), (2, 4)] {
        assert!(
            after.1[sf] - before.1[sf] >= least,
            "SF{} forwarded fewer than {least} packets: {before:?} -> {after:?}",
            sf + 1
        );
    }
}

#[test]
fn a_chain_crosses_nodes_over_an_ipv6_underlay_with_its_path_mtu() {
    let mut spread = Spread::build_on("x6", TTL, ClusterLab::node_addr6, &[]).unwrap();
    // Over IPv6 the outer header is 20 bytes longer: 1500 - 98 = 1402 bytes of IP fit.
    let yaml = spread
        .cluster
        .sfcctl(2, &["get", "nodes", "-o", "yaml"])
        .unwrap();
    for i in 1..=3 {
        assert!(
            yaml.contains(&format!("tunnelAddress: fd99::1{i}")),
            "{yaml}"
        );
    }
    assert_eq!(yaml.matches("usableMtu: 1402").count(), 3, "{yaml}");
    let pcap = spread.lab().dir.join("underlay6.pcap");
    let mut capture = capture(spread.lab(), "u", "br0", &["udp", "port", "6081"], &pcap);
    path_mtu_discovery_works(&mut spread, 1402, 1 << 20);
    let lab = spread.lab();
    // Without DF, IPv4 is cut into fragments that fit, which cross the rest of the chain.
    lab.sh("src", "ip route flush cache").unwrap();
    let before = fragmented(&spread);
    let (out, ok) = ping(lab, "dont", &format!("-s 1472 -p 5fc0ffee {DST_V4}"));
    assert!(
        ok && !out.contains("wrong data byte"),
        "ping without DF, over the usable MTU: {out}"
    );
    assert!(fragmented(&spread) >= before + 2, "2 echoes fragmented");

    // The underlay carried Geneve over IPv6 only, between the nodes' tunnel addresses, with
    // the chain's service path and the index of each hop.
    thread::sleep(Duration::from_millis(300));
    let _ = capture.kill();
    let _ = capture.wait();
    let seen = geneve_packets(&std::fs::read(&pcap).unwrap());
    assert!(
        seen.iter().all(|g| g.from.len() == 16),
        "Geneve over IPv4 on an IPv6 underlay: {seen:?}"
    );
    let spi = chain_id(&spread, "c") << 1;
    let n = |i: usize| {
        ClusterLab::node_addr6(i)
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec()
    };
    let expected: BTreeSet<_> = [(n(1), n(2), spi, 254), (n(2), n(3), spi, 253)].into();
    assert_eq!(
        service_paths(&seen),
        expected,
        "Geneve on the underlay: {seen:?}"
    );
    let received: Vec<u64> = (1..=3)
        .map(|i| spread.cluster.stats(i).unwrap().counter("tunnel_received"))
        .collect();
    assert!(received[1] > 0 && received[2] > 0, "received {received:?}");
}

/// (TPID, VLAN id, UDP source port) of every tagged IPv4 UDP datagram to port 9000 in
/// `frames`, each an Ethernet frame (untagged ones as TPID 0, VLAN 0).
fn tagged_udp_9000<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<(u16, u16, u16)> {
    let mut out = Vec::new();
    for f in frames {
        let tpid = u16::from_be_bytes([f[12], f[13]]);
        let (tag, vid, ip) = match tpid {
            0x8100 | 0x88a8 if f.len() >= 18 => (
                tpid,
                u16::from_be_bytes([f[14], f[15]]) & 0xfff,
                (u16::from_be_bytes([f[16], f[17]]) == 0x0800).then(|| &f[18..]),
            ),
            0x0800 => (0, 0, Some(&f[14..])),
            _ => continue,
        };
        if let Some(ip) = ip.filter(|ip| ip.len() >= 28 && ip[0] == 0x45 && ip[9] == 17) {
            if u16::from_be_bytes([ip[22], ip[23]]) == 9000 {
                out.push((tag, vid, u16::from_be_bytes([ip[20], ip[21]])));
            }
        }
    }
    out.sort_unstable();
    out
}

/// (outer VLAN id, inner VLAN id, UDP source port) of the double-tagged (QinQ) IPv4 UDP
/// datagrams to port 9000 among `frames`, sorted.
fn qinq_udp_9000<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<(u16, u16, u16)> {
    let mut out = Vec::new();
    for f in frames {
        let at = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        if f.len() < 22 + 28 || ![0x8100, 0x88a8].contains(&at(12)) || at(16) != 0x8100 {
            continue;
        }
        let ip = &f[22..];
        if at(20) == 0x0800 && ip[0] == 0x45 && ip[9] == 17 && at(22 + 22) == 9000 {
            out.push((at(14) & 0xfff, at(18) & 0xfff, at(22 + 20)));
        }
    }
    out.sort_unstable();
    out
}

#[test]
fn tagged_tenant_traffic_crosses_nodes_with_its_tag_inside_the_tunnel() {
    use sfc_lab::frames;
    let spread = Spread::build("xv", TTL).unwrap();
    let lab = spread.lab();
    // The first hop is SF2 on n2: every datagram crosses the underlay where it enters, at the
    // source's port on n1.
    spread.apply(1, &three_hops("g2, g3", &[UDP_9000])).unwrap();
    let (src_mac, dst_mac) = (
        lab.mac("src", "eth0").unwrap(),
        lab.mac("dst", "eth0").unwrap(),
    );
    let ip = |a: &str| a.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let datagram = |sport: u16, payload: usize| {
        let mut p = frames::ipv4(
            17,
            ip(SRC_V4),
            ip(DST_V4),
            &[],
            0x4000, // DF
            &frames::udp(sport, 9000, &vec![0; payload]),
        );
        frames::ipv4_checksum(&mut p);
        p
    };
    let tagged = |tpid: u16, vid: u16, packet: &[u8]| {
        frames::eth(dst_mac, src_mac, tpid, &frames::vlan(vid, 0x0800, packet))
    };
    // 802.1Q VLAN 101, 802.1ad VLAN 300 and untagged, 10 datagrams each (one flow per source
    // port); then 4 with two tags (QinQ: VLAN 7 inside VLAN 101), and with two tags one
    // datagram as large as fits once both travel inside (1414 bytes of IP) and one a byte
    // larger; then, on VLAN 101, one datagram as large as fits once the tag travels inside
    // (1418 bytes of IP) and one a byte larger; all with DF.
    let mut sent = Vec::new();
    let mut to_send = Vec::new();
    for (tpid, vid, base) in [(0x8100, 101, 41000), (0x88a8, 300, 42000), (0, 0, 43000)] {
        for k in 0..10 {
            let p = datagram(base + k, 18);
            to_send.push(if tpid == 0 {
                frames::eth(dst_mac, src_mac, 0x0800, &p)
            } else {
                tagged(tpid, vid, &p)
            });
            sent.push((tpid, vid, base + k));
        }
    }
    let mut sent_qinq = Vec::new();
    for (sport, payload) in [(44000, 18), (44001, 18), (44002, 18), (44003, 18)]
        .into_iter()
        .chain([(44010, 1414 - 28), (44011, 1415 - 28)])
    {
        let inner = frames::vlan(7, 0x0800, &datagram(sport, payload));
        to_send.push(frames::eth(
            dst_mac,
            src_mac,
            0x8100,
            &frames::vlan(101, 0x8100, &inner),
        ));
        if sport != 44011 {
            sent_qinq.push((101, 7, sport));
        }
    }
    to_send.push(tagged(0x8100, 101, &datagram(45000, 1418 - 28)));
    sent.push((0x8100, 101, 45000));
    to_send.push(tagged(0x8100, 101, &datagram(45001, 1419 - 28)));
    sent.sort_unstable();

    let pcaps = ["tagged-underlay", "tagged-sf2", "tagged-src"].map(|n| lab.dir.join(n));
    let mut captures = [
        capture(lab, "u", "br0", &["udp", "port", "6081"], &pcaps[0]),
        capture(lab, "sf2", "eth-in", &[], &pcaps[1]),
        capture(lab, "src", "eth0", &["icmp"], &pcaps[2]),
    ];
    let before = spread.cluster.stats(1).unwrap();
    lab.send_frames("src", "eth0", &to_send, 1000).unwrap();
    thread::sleep(Duration::from_millis(700));
    for c in &mut captures {
        let _ = c.kill();
        let _ = c.wait();
    }
    let after = spread.cluster.stats(1).unwrap();
    let read = |i: usize| std::fs::read(&pcaps[i]).unwrap();

    // Into SF2 on n2, each datagram with the tags it was sent with; none of those too big.
    let (sf2, underlay) = (read(1), read(0));
    assert_eq!(tagged_udp_9000(frames(&sf2)), sent, "into SF2");
    assert_eq!(qinq_udp_9000(frames(&sf2)), sent_qinq, "QinQ into SF2");
    // On the underlay from n1 to n2: untagged outer frames (the parser takes no other), the
    // tag in the inner Ethernet header. (SF2 routes the untagged ones on to SF3 on n3.)
    let inner: Vec<&[u8]> = udp_over_either(&underlay)
        .into_iter()
        .filter(|(from, _, udp)| {
            *from == [10, 99, 0, 11] && u16::from_be_bytes([udp[2], udp[3]]) == 6081
        })
        .map(|(_, _, udp)| &udp[8 + 8 + 28..])
        .collect();
    assert_eq!(tagged_udp_9000(inner.clone()), sent, "inside Geneve");
    assert_eq!(qinq_udp_9000(inner), sent_qinq, "QinQ inside Geneve");
    let delta = |name: &str| after.counter(name) - before.counter(name);
    assert_eq!(delta("redirect_failed"), 0);
    assert_eq!(
        (delta("tunnel_too_big"), delta("too_big_answered")),
        (2, 1),
        "the two datagrams a byte too big are dropped, one answered"
    );
    // The one on VLAN 101 a byte too big is answered with ICMP "fragmentation needed", on its
    // VLAN, with the MTU left once the tag travels inside; the QinQ one is not (the answer
    // would have to be built behind the tag still in the frame).
    let src = read(2);
    let answers: Vec<(u16, u16)> = frames(&src)
        .into_iter()
        .filter(|f| f.len() >= 18 + 20 + 8 && f[12..14] == [0x81, 0x00])
        .filter(|f| f[16..18] == [0x08, 0x00] && f[18 + 9] == 1 && f[18 + 20] == 3)
        .map(|f| {
            (
                u16::from_be_bytes([f[14], f[15]]) & 0xfff,
                u16::from_be_bytes([f[18 + 26], f[18 + 27]]),
            )
        })
        .collect();
    assert_eq!(answers, [(101, 1418)], "ICMP answers to the source");
}

/// Packets and bytes SF `sf` received on its ingress NIC.
fn received_by(lab: &Lab, sf: &str) -> (u64, u64) {
    let read = |what: &str| {
        lab.sh(sf, &format!("cat /sys/class/net/eth-in/statistics/{what}"))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (read("rx_packets"), read("rx_bytes"))
}

#[test]
fn tcp_with_segmentation_offload_crosses_nodes_twice_when_stripped_in_xdp() {
    let mut spread = Spread::build_on("xg", TTL, ClusterLab::node_addr, &["--tunnel-xdp"]).unwrap();
    start_sink(&mut spread);
    let lab = spread.lab();
    // GRO on the underlay interfaces (a NIC has it on; a veth does not by default).
    for i in 1..=3 {
        lab.sh(&format!("n{i}"), "ethtool -K uplink gro on")
            .unwrap();
    }
    let tcp = "ethertype: IPv4, protocol: tcp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: \"9100\"";
    spread.apply(1, &three_hops("g1, g2, g3", &[tcp])).unwrap();
    let failed = || -> u64 {
        (1..=3)
            .map(|i| spread.cluster.stats(i).unwrap().counter("redirect_failed"))
            .sum()
    };
    let before = (failed(), received_by(lab, "sf2"), received_by(lab, "sf3"));
    // The source sends with segmentation offload (its default): each crossing carries large
    // packets, cut to fit as they are encapsulated and merged again by GRO where the next
    // node strips them in XDP. Stripped in TC, they would keep their tunnel mark and could
    // not cross a second time (SF2 on n2 to SF3 on n3): dropped, the upload crawling on
    // retransmissions.
    let size = 8 << 20;
    let started = Instant::now();
    upload(lab, size);
    let took = started.elapsed();
    let after = (failed(), received_by(lab, "sf2"), received_by(lab, "sf3"));
    assert_eq!(after.0, before.0, "packets dropped where they would cross");
    for (sf, (b, a)) in [("SF2", (before.1, after.1)), ("SF3", (before.2, after.2))] {
        let (packets, bytes) = (a.0 - b.0, a.1 - b.1);
        eprintln!("{sf} received {packets} packets, {bytes} bytes, in {took:?}");
        assert!(bytes >= size as u64, "{sf} received {bytes} bytes");
        assert!(
            bytes / packets > 1500,
            "{sf} received packets of {} bytes on average: not merged",
            bytes / packets
        );
    }
}

#[test]
fn a_tap_sf_on_another_node_gets_its_copies_in_geneve_and_the_original_goes_on() {
    let spread = Spread::build("xt", TTL).unwrap();
    let lab = spread.lab();
    // SF2 on n2 becomes a passive tap between SF1 (n1) and SF3 (n3): it must not forward the
    // copies it gets.
    lab.sh(
        "sf2",
        "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0",
    )
    .unwrap();
    let tcp_80 = "ethertype: IPv4, protocol: tcp, destinationIpPrefix: 198.18.0.100/32, destinationPortRange: \"80\"";
    let untapped = "spec: {portPairs: [pp2]}";
    let yaml = three_hops("g1, g2, g3", &[UDP_9000, tcp_80]);
    assert!(yaml.contains(untapped));
    let yaml = yaml.replace(untapped, "spec: {portPairs: [pp2], tapEnabled: true}");
    spread.apply(1, &yaml).unwrap();
    let spi = chain_id(&spread, "c") << 1;

    // An HTTP request crosses SF1 then SF3, every packet of it, and SF2 forwards nothing.
    let c = request_from(lab, DST_V4, Some(43100)).unwrap();
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(c.forwarded[1], 0, "{c:?}");
    assert!(c.forwarded[0] >= 4, "{c:?}");
    assert_eq!(c.forwarded[0], c.forwarded[2], "{c:?}");

    // 20 datagrams, one flow each: copied by n1 to the tap on n2 as they leave SF1, sent on
    // from n1 into SF3 on n3; both with the service path and index of hop 1.
    let node = |i: u8| vec![10, 99, 0, 10 + i];
    let tap_paths = tap_copies(&spread, 41000, 1);
    assert_eq!(
        tap_paths,
        [(node(1), node(2), spi, 254), (node(1), node(3), spi, 254)].into()
    );
    // A trace on n1 shows the copies: sent from n1 (`tapped`) and received on n2, with the
    // originals' tracking id.
    let (crossing, trace, steps) = traced_request(&spread, 1, 43101);
    assert_eq!(crossing.status, 200, "{crossing:?}");
    let seen = |node: &str, verdict: &str| {
        steps
            .iter()
            .any(|r| r["node"] == node && r["verdict"] == verdict)
    };
    assert!(
        seen("n1", "tapped") && seen("n2", "tunnel_received"),
        "{trace}"
    );
    let ids: BTreeSet<u64> = steps.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one tracking id: {trace}");

    // The tap after the last hop: n3 copies what leaves SF3 (the chain's end, index 253).
    let yaml = yaml.replace("[g1, g2, g3]", "[g1, g3, g2]");
    spread.apply(1, &yaml).unwrap();
    let tap_paths = tap_copies(&spread, 42000, 3);
    assert_eq!(
        tap_paths,
        [(node(1), node(3), spi, 254), (node(3), node(2), spi, 253)].into()
    );

    // Symmetric: the replies are copied too, by n3 as they leave SF3 on their way back to
    // SF1 (the reverse path id, the index of the replies sent on to SF1).
    let symmetric = yaml
        .replace("[g1, g3, g2]", "[g1, g2, g3]")
        .replace(
            "logicalSourcePort: vm-src}",
            "logicalSourcePort: vm-src, logicalDestinationPort: vm-dst}",
        )
        .replace("fc1]}", "fc1], chainParameters: {symmetric: true}}");
    assert!(symmetric.contains("symmetric: true") && symmetric.contains("vm-dst"));
    spread.apply(1, &symmetric).unwrap();
    let pcaps = ["underlay", "sf2"].map(|n| lab.dir.join(format!("tap-symmetric-{n}")));
    let mut captures = [
        capture(lab, "u", "br0", &["udp", "port", "6081"], &pcaps[0]),
        capture(lab, "sf2", "eth-in", &["tcp", "port", "80"], &pcaps[1]),
    ];
    let tapped = || -> u64 {
        [1, 3]
            .map(|i| spread.cluster.stats(i).unwrap().counter("tapped"))
            .iter()
            .sum()
    };
    let before = tapped();
    let c = request_from(lab, DST_V4, Some(43200)).unwrap();
    for c in &mut captures {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(c.forwarded[1], 0, "{c:?}");
    assert_eq!(c.forwarded[0], c.forwarded[2], "{c:?}");
    // Every packet past SF1 going forward and past SF3 coming back was copied once: as many
    // as SF3 forwarded both ways.
    let copies = frames(&std::fs::read(&pcaps[1]).unwrap()).len() as u64;
    let (forward, back) = frames(&std::fs::read(&pcaps[1]).unwrap())
        .into_iter()
        .filter(|f| f.len() >= 14 + 24 && f[12..14] == [0x08, 0x00])
        .fold((0, 0), |(f, b), frame| match frame[34..36] == [0, 80] {
            true => (f, b + 1),
            false => (f + 1, b),
        });
    assert!(
        forward >= 4 && back >= 4,
        "copies: {forward} forward, {back} back"
    );
    assert_eq!(copies, c.forwarded[2], "copies into the tap, {c:?}");
    assert_eq!(tapped() - before, copies, "counted tapped on n1 and n3");
    let reverse: Vec<(Vec<u8>, Vec<u8>, u32, u8)> =
        service_paths(&geneve_packets(&std::fs::read(&pcaps[0]).unwrap()))
            .into_iter()
            .filter(|(_, _, path, _)| *path == spi | 1)
            .collect();
    let index = reverse.first().map(|r| r.3).unwrap_or_default();
    assert_eq!(
        reverse,
        [
            (node(3), node(1), spi | 1, index),
            (node(3), node(2), spi | 1, index)
        ],
        "replies to SF1 and their copies to the tap"
    );
}

/// Sends 20 UDP datagrams (one flow each, from source port `base` on) from the source VM
/// into [`Spread`]'s chain, where the tap SF2 on n2 gets copies from node `copier`; checks
/// that each arrives once in the tap (addressed to its NIC) and once in SF3, that `copier`
/// counted 20 copies and no failure, and that the Geneve packets to the tap carry its id.
/// The service paths of the Geneve packets seen.
fn tap_copies(spread: &Spread, base: u16, copier: usize) -> BTreeSet<(Vec<u8>, Vec<u8>, u32, u8)> {
    use sfc_lab::frames;
    let lab = spread.lab();
    let (src_mac, dst_mac) = (
        lab.mac("src", "eth0").unwrap(),
        lab.mac("dst", "eth0").unwrap(),
    );
    let ip = |a: &str| a.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let sent: Vec<u16> = (base..base + 20).collect();
    let to_send: Vec<Vec<u8>> = sent
        .iter()
        .map(|&sport| {
            let mut p = frames::ipv4(
                17,
                ip(SRC_V4),
                ip(DST_V4),
                &[],
                0,
                &frames::udp(sport, 9000, &[0; 18]),
            );
            frames::ipv4_checksum(&mut p);
            frames::eth(dst_mac, src_mac, 0x0800, &p)
        })
        .collect();
    let pcaps = ["underlay", "sf2", "sf3"].map(|n| lab.dir.join(format!("tap-{base}-{n}")));
    let mut captures = [
        capture(lab, "u", "br0", &["udp", "port", "6081"], &pcaps[0]),
        capture(lab, "sf2", "eth-in", &["udp", "port", "9000"], &pcaps[1]),
        capture(lab, "sf3", "eth-in", &["udp", "port", "9000"], &pcaps[2]),
    ];
    let stats = || spread.cluster.stats(copier).unwrap();
    let before = stats();
    lab.send_frames("src", "eth0", &to_send, 1000).unwrap();
    thread::sleep(Duration::from_millis(700));
    for c in &mut captures {
        let _ = c.kill();
        let _ = c.wait();
    }
    let after = stats();
    let read = |i: usize| std::fs::read(&pcaps[i]).unwrap();
    let delta = |name: &str| after.counter(name) - before.counter(name);
    assert_eq!(
        (delta("tapped"), delta("tap_failed")),
        (20, 0),
        "on n{copier}"
    );
    let source_ports = |pcap: &[u8], mac: Option<[u8; 6]>| {
        let mut ports: Vec<u16> = frames(pcap)
            .into_iter()
            .filter(|f| f.len() >= 14 + 28 && f[12..14] == [0x08, 0x00])
            .inspect(|f| {
                if let Some(mac) = mac {
                    assert_eq!(f[..6], mac, "destination MAC of a copy");
                }
            })
            .map(|f| u16::from_be_bytes([f[34], f[35]]))
            .collect();
        ports.sort_unstable();
        ports
    };
    let tap_mac = lab.mac("sf2", "eth-in").unwrap();
    assert_eq!(source_ports(&read(1), Some(tap_mac)), sent, "into the tap");
    assert_eq!(source_ports(&read(2), None), sent, "into SF3");
    let seen = geneve_packets(&read(0));
    let to_tap: Vec<&Geneve> = seen.iter().filter(|g| g.to == [10, 99, 0, 12]).collect();
    assert_eq!(to_tap.len(), 20, "Geneve packets to n2: {seen:?}");
    assert!(
        to_tap.iter().all(|g| g
            .option
            .is_some_and(|o| o.4 == sfc_common::remote_id("n2/sf2-in"))),
        "{to_tap:?}"
    );
    service_paths(&seen)
}
