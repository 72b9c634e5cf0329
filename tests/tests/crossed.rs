//! Crossed port pairs (networking-sfc allows them): one SF with two NICs, `a` and `b`, that
//! forwards bump-in-the-wire both ways (tc mirred: what comes in on one NIC goes out of the
//! other; `ip link` reads a NIC named `a` as `address`, hence `nic-a`), used by two pairs: PP-AB goes in at the host's `sf-a` and comes out at `sf-b`, PP-BA
//! the other way. A chain crossing PG1 = {PP-AB} then PG2 = {PP-BA} sends every packet through
//! the SF twice. The host interface `sf-a` is PP-AB's ingress and PP-BA's egress: forward
//! traffic leaving PP-BA and reverse traffic leaving PP-AB both arrive there, classified in one
//! domain, and each pair's counters must get its own packets. A routing SF could not do this:
//! its route would pick the same NIC for both hops. Real daemon, real traffic, namespaces the
//! test builds and always removes.
//!
//! ```text
//!            node namespace: bridge br0 + sfc-daemon
//!   src ── vm-src ┤                                   ├ vm-dst ── dst
//!                 sf-a ── nic-a [SF: nic-a ⇄ nic-b, tc mirred] nic-b ── sf-b
//! ```

use std::time::Duration;

use serde_json::Value;
use sfc_lab::{
    lab::{script, wait_for, Lab},
    stream,
};

const SRC: &str = "10.77.0.1";
const DST: &str = "10.77.0.2";
/// A second address of the source, whose traffic a second chain takes through PG1 only.
const SRC2: &str = "10.77.0.3";
/// Echo requests per ping run.
const PINGS: u64 = 10;
/// Datagrams of the one-way UDP stream.
const DATAGRAMS: u64 = 30;

/// The topology above, with the daemon started in the node namespace (no chain yet).
fn build(tag: &str) -> Lab {
    let mut lab = Lab::new(tag).unwrap();
    for ns in ["node", "src", "dst", "sf"] {
        lab.add_ns(ns).unwrap();
    }
    // No traffic of the namespaces' own (IPv6 neighbour discovery, MLD) in the counts.
    for ns in ["node", "sf"] {
        lab.sh(
            ns,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        )
        .unwrap();
    }
    lab.sh("node", "ip link add br0 type bridge && ip link set br0 up")
        .unwrap();
    lab.veth("node", "vm-src", "src", "eth0").unwrap();
    lab.veth("node", "vm-dst", "dst", "eth0").unwrap();
    lab.sh(
        "node",
        "ip link set vm-src master br0 && ip link set vm-dst master br0",
    )
    .unwrap();
    lab.veth("node", "sf-a", "sf", "nic-a").unwrap();
    lab.veth("node", "sf-b", "sf", "nic-b").unwrap();
    lab.sh(
        "src",
        &format!("ip addr add {SRC}/24 dev eth0 && ip addr add {SRC2}/24 dev eth0"),
    )
    .unwrap();
    lab.sh("dst", &format!("ip addr add {DST}/24 dev eth0"))
        .unwrap();
    // The SF: IPv4 in on one NIC goes out of the other, untouched (MACs included).
    lab.sh(
        "sf",
        "for pair in 'nic-a nic-b' 'nic-b nic-a'; do set -- $pair; \
           tc qdisc add dev $1 clsact && \
           tc filter add dev $1 ingress protocol ip prio 1 u32 match u32 0 0 \
             action mirred egress redirect dev $2 || exit 1; \
         done",
    )
    .unwrap();
    // Without a chain the bridge carries the traffic (and ARP, which no chain takes).
    let direct = wait_for(Duration::from_secs(10), || {
        lab.sh(
            "src",
            &format!("ping -c 1 -W 1 {DST} >/dev/null && echo up"),
        )
        .ok()
        .filter(|s| s.contains("up"))
    });
    assert!(direct.is_some(), "src cannot reach dst through the bridge");
    lab.start_daemon("node").unwrap();
    lab
}

/// The crossed chain: PG1 = {PP-AB: sf-a → sf-b}, PG2 = {PP-BA: sf-b → sf-a}, for IPv4 from
/// src to dst (and, symmetric, its replies back through PG2 then PG1).
fn chain(symmetric: bool) -> String {
    let doc = |kind: &str, name: &str, spec: &str| {
        format!("apiVersion: sfc.dataplane.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n---\n")
    };
    [
        doc("PortPair", "PP-AB", "{ingress: sf-a, egress: sf-b}"),
        doc("PortPair", "PP-BA", "{ingress: sf-b, egress: sf-a}"),
        doc("PortPairGroup", "PG1", "{portPairs: [PP-AB]}"),
        doc("PortPairGroup", "PG2", "{portPairs: [PP-BA]}"),
        doc(
            "FlowClassifier",
            "FC",
            &format!("{{ethertype: IPv4, sourceIpPrefix: {SRC}/32, destinationIpPrefix: {DST}/32, logicalSourcePort: vm-src, logicalDestinationPort: vm-dst}}"),
        ),
        doc(
            "PortChain",
            "PC",
            &format!("{{portPairGroups: [PG1, PG2], flowClassifiers: [FC], chainParameters: {{symmetric: {symmetric}}}}}"),
        ),
    ]
    .concat()
}

fn apply(lab: &Lab, yaml: &str) {
    if let Err(e) = lab.sfcctl_stdin(&["apply", "-f", "-"], Some(yaml)) {
        panic!("apply failed: {e}\n{}", lab.daemon_log());
    }
}

/// What the test checks, read at once: per pair (into, from) from `sfcctl stats`, per
/// (direction, hop) of PC (into, from), and the packets the SF's NICs passed on (a → b, b → a).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    pairs: [(u64, u64); 2],
    /// forward hop 1, forward hop 2, reverse hop 1, reverse hop 2.
    hops: [(u64, u64); 4],
    sf: [u64; 2],
}

impl Counts {
    fn read(lab: &Lab) -> Counts {
        let text = lab.sfcctl(&["stats", "PC", "-o", "json"]).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let io = |row: &Value| {
            (
                row["into_packets"].as_u64().unwrap_or(0),
                row["from_packets"].as_u64().unwrap_or(0),
            )
        };
        let pair = |name: &str| {
            v["pairs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["pair"] == name)
                .map(io)
                .unwrap_or_default()
        };
        let hop = |direction: &str, hop: u64| {
            v["hops"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| h["chain"] == "PC" && h["direction"] == direction && h["hop"] == hop)
                .map(io)
                .unwrap_or_default()
        };
        Counts {
            pairs: [pair("PP-AB"), pair("PP-BA")],
            hops: [
                hop("forward", 1),
                hop("forward", 2),
                hop("reverse", 1),
                hop("reverse", 2),
            ],
            sf: [mirred(lab, "nic-a"), mirred(lab, "nic-b")],
        }
    }

    /// What was counted since `before`.
    fn since(&self, before: &Counts) -> Counts {
        let d = |(a, b): (u64, u64), (c, e): (u64, u64)| (a - c, b - e);
        Counts {
            pairs: [0, 1].map(|i| d(self.pairs[i], before.pairs[i])),
            hops: [0, 1, 2, 3].map(|i| d(self.hops[i], before.hops[i])),
            sf: [0, 1].map(|i| self.sf[i] - before.sf[i]),
        }
    }
}

/// Packets the SF's mirred action on `nic`'s ingress passed to the other NIC.
fn mirred(lab: &Lab, nic: &str) -> u64 {
    let out = lab
        .sh("sf", &format!("tc -s filter show dev {nic} ingress"))
        .unwrap();
    // "Sent 1234 bytes 12 pkt (dropped 0, overlimits 0 requeues 0)"
    out.lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                ["Sent", _, "bytes", n, "pkt", ..] => n.parse().ok(),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no mirred counter on {nic}:\n{out}"))
}

/// Waits (bounded: the daemon samples its counters every second) until the counts since
/// `before` are `expected`; fails with both, and `sfcctl stats`, when they never are.
fn expect_counts(lab: &Lab, before: &Counts, expected: &Counts, what: &str) {
    let mut last = Counts::default();
    let reached = wait_for(Duration::from_secs(5), || {
        last = Counts::read(lab).since(before);
        (last == *expected).then_some(())
    });
    assert!(
        reached.is_some(),
        "{what}: counted {last:?}, expected {expected:?}\n{}",
        lab.sfcctl(&["stats", "PC"]).unwrap_or_default()
    );
}

/// `PINGS` echo requests from src's address `from` to dst; all must be answered.
fn ping(lab: &Lab, from: &str) {
    let out = lab
        .sh(
            "src",
            &format!(
                "ping -c {PINGS} -i 0.05 -W 2 -I {from} {DST} | grep 'packets transmitted' || true"
            ),
        )
        .unwrap();
    assert!(
        out.contains(&format!("{PINGS} packets transmitted, {PINGS} received")),
        "ping through the crossed chain: {out:?}\n{}",
        lab.sfcctl(&["stats", "PC"]).unwrap_or_default()
    );
}

/// `DATAGRAMS` UDP datagrams from src to dst, one way; all must arrive.
fn udp_one_way(lab: &mut Lab) {
    let out = lab.dir.join("udp.out").to_string_lossy().into_owned();
    lab.spawn(
        "dst",
        &format!("python3 {} receive 9000 {out} 1", script("udp_stream.py")),
    )
    .unwrap();
    stream::wait_bound(&out, 9000).unwrap();
    lab.sh(
        "src",
        &format!(
            "python3 {} send {DST} 9000 {DATAGRAMS} 500 40000",
            script("udp_stream.py")
        ),
    )
    .unwrap();
    let received = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(&out).ok()
    })
    .expect("the UDP receiver wrote no result");
    assert_eq!(received.trim(), DATAGRAMS.to_string(), "datagrams received");
}

/// A TCP echo exchange from src to dst; every round trip must succeed. Returns them.
fn tcp_exchange(lab: &mut Lab) -> u64 {
    lab.spawn(
        "dst",
        &format!("python3 {} serve 7000", script("tcp_echo.py")),
    )
    .unwrap();
    let listening = wait_for(Duration::from_secs(10), || {
        lab.sh("dst", "ss -ltn | grep -q ':7000 ' && echo up")
            .ok()
            .filter(|s| s.contains("up"))
    });
    assert!(listening.is_some(), "the TCP echo server did not start");
    let out = lab.dir.join("tcp.out").to_string_lossy().into_owned();
    lab.sh(
        "src",
        &format!(
            "timeout 30 python3 {} talk {DST} 7000 45000 1 0.05 {out}",
            script("tcp_echo.py")
        ),
    )
    .unwrap();
    let result = std::fs::read_to_string(&out).expect("the TCP client wrote no result");
    let (ok, failed) = result.trim().split_once(' ').unwrap();
    let (ok, failed): (u64, u64) = (ok.parse().unwrap(), failed.parse().unwrap());
    assert!(
        ok >= 5 && failed == 0,
        "TCP round trips: {ok} ok, {failed} failed"
    );
    ok
}

#[test]
fn a_symmetric_chain_through_crossed_pairs_crosses_the_sf_twice_each_way() {
    let mut lab = build("crs");
    apply(&lab, &chain(true));

    // Echo requests forward through PP-AB then PP-BA, replies back through PP-BA then PP-AB:
    // the SF passes each packet twice, once each way between its NICs.
    let before = Counts::read(&lab);
    ping(&lab, SRC);
    let n = PINGS;
    expect_counts(
        &lab,
        &before,
        &Counts {
            // Each pair: the requests into it and out, and the replies into it and out.
            pairs: [(2 * n, 2 * n), (2 * n, 2 * n)],
            hops: [(n, n), (n, n), (n, n), (n, n)],
            sf: [2 * n, 2 * n],
        },
        "ping",
    );

    // A second chain through PG1 alone, from SRC2: its replies leave PP-AB in reverse at
    // `sf-a`, where forward traffic leaving PP-BA arrives too. They are PP-AB's: PP-BA, which
    // they never cross, counts nothing (were they taken for PP-BA's, PP-AB would seem to let
    // half its packets vanish and PP-BA to emit packets it never took).
    let second = chain(true)
        .replace("name: FC}", "name: FC2}")
        .replace("name: PC}", "name: PC2}")
        .replace(
            &format!("sourceIpPrefix: {SRC}/32"),
            &format!("sourceIpPrefix: {SRC2}/32"),
        )
        .replace(
            "portPairGroups: [PG1, PG2], flowClassifiers: [FC]",
            "portPairGroups: [PG1], flowClassifiers: [FC2]",
        );
    apply(&lab, &second);
    let before = Counts::read(&lab);
    ping(&lab, SRC2);
    expect_counts(
        &lab,
        &before,
        &Counts {
            pairs: [(2 * n, 2 * n), (0, 0)],
            hops: [(0, 0); 4],
            sf: [n, n],
        },
        "ping through PG1 alone",
    );

    // One way only: what leaves PP-BA's egress `sf-a` going forward is PP-BA's, although
    // `sf-a` is PP-AB's ingress too. Each pair counts each datagram once in and once out.
    let before = Counts::read(&lab);
    udp_one_way(&mut lab);
    let m = DATAGRAMS;
    expect_counts(
        &lab,
        &before,
        &Counts {
            pairs: [(m, m), (m, m)],
            hops: [(m, m), (m, m), (0, 0), (0, 0)],
            sf: [m, m],
        },
        "one-way UDP",
    );

    // A TCP exchange, both ways: whatever the stack sends, every packet crosses both hops and
    // each pair lets out what it took in.
    let before = Counts::read(&lab);
    tcp_exchange(&mut lab);
    let settled = wait_for(Duration::from_secs(5), || {
        let d = Counts::read(&lab).since(&before);
        let [(f1, _), (f2, _), (r1, _), (r2, _)] = d.hops;
        let balanced = d.hops.iter().all(|(i, o)| i == o)
            && d.pairs.iter().all(|(i, o)| i == o)
            && f1 == f2
            && r1 == r2;
        (balanced && f1 > 0 && r1 > 0 && d.pairs[0].0 == f1 + r1 && d.sf == [f1 + r1; 2])
            .then_some(d)
    });
    assert!(
        settled.is_some(),
        "TCP: counts since the exchange: {:?}\n{}",
        Counts::read(&lab).since(&before),
        lab.sfcctl(&["stats", "PC"]).unwrap_or_default()
    );
    // Both pairs are healthy: nothing went in that did not come back out.
    let described = lab.sfcctl(&["describe", "portchain", "PC"]).unwrap();
    assert!(!described.contains("black-hole"), "{described}");
}

#[test]
fn a_one_way_chain_through_crossed_pairs_crosses_the_sf_twice() {
    let mut lab = build("crw");
    apply(&lab, &chain(false));
    // Requests through PP-AB then PP-BA; replies straight back over the bridge.
    let before = Counts::read(&lab);
    ping(&lab, SRC);
    let n = PINGS;
    expect_counts(
        &lab,
        &before,
        &Counts {
            pairs: [(n, n), (n, n)],
            hops: [(n, n), (n, n), (0, 0), (0, 0)],
            sf: [n, n],
        },
        "ping, one way",
    );
    let before = Counts::read(&lab);
    udp_one_way(&mut lab);
    let m = DATAGRAMS;
    expect_counts(
        &lab,
        &before,
        &Counts {
            pairs: [(m, m), (m, m)],
            hops: [(m, m), (m, m), (0, 0), (0, 0)],
            sf: [m, m],
        },
        "one-way UDP, one-way chain",
    );
}
