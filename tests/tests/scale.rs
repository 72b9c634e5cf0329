//! Apply at scale: 1000 PortChains with 10 000 FlowClassifiers in total, against the real
//! daemon, with real interfaces in namespaces, must take under a second end to end.

use std::time::{Duration, Instant};

use sfc_lab::{lab::Lab, yaml};

/// Groups (one SF each); chains are distinct ordered lists of them. Each SF interface costs
/// the first apply one TCX attach, about 12 ms (the kernel waits for an RCU grace period under
/// RTNL), so 16 SFs keep that part near 200 ms.
const GROUPS: usize = 16;
const CHAINS: usize = 1000;
const CLASSIFIERS_PER_CHAIN: usize = 10;
/// The end-to-end budget for one apply of the whole file.
const BUDGET: Duration = Duration::from_secs(1);

fn doc(out: &mut String, kind: &str, name: &str, spec: &str) {
    out.push_str(&yaml::doc(kind, name, spec));
}

/// The hops of chain `k`: the first `GROUPS` chains have one group each, the next the ordered
/// pairs of distinct groups, the rest ordered triples; so no two chains have the same list.
fn hops(k: usize) -> Vec<usize> {
    let mut lists = (0..GROUPS)
        .map(|a| vec![a])
        .chain((0..GROUPS * GROUPS).map(|p| vec![p / GROUPS, p % GROUPS]))
        .chain(
            (0..GROUPS.pow(3)).map(|t| vec![t / GROUPS / GROUPS, t / GROUPS % GROUPS, t % GROUPS]),
        )
        .filter(|l| (1..l.len()).all(|i| !l[..i].contains(&l[i])));
    lists.nth(k).expect("enough distinct lists")
}

/// Classifier `j` of chain `k` matches one destination: 10.0.0.0 + 16k + j (10.128.0.0 + ...
/// in the second version of the file), so classifiers of different chains never overlap.
fn destination(k: usize, j: usize, second: bool) -> String {
    let n = (k * 16 + j) as u32 | if second { 0x80_0000 } else { 0 };
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// The whole configuration; the second version has other classifiers (other names, other
/// destinations) on the same chains.
fn big_file(second: bool) -> String {
    let mut out = String::with_capacity(4 << 20);
    for g in 0..GROUPS {
        doc(
            &mut out,
            "PortPair",
            &format!("pp{g}"),
            &format!("{{ingress: sf{g}, egress: sf{g}}}"),
        );
        doc(
            &mut out,
            "PortPairGroup",
            &format!("pg{g}"),
            &format!("{{portPairs: [pp{g}]}}"),
        );
    }
    for k in 0..CHAINS {
        let mut names = Vec::new();
        for j in 0..CLASSIFIERS_PER_CHAIN {
            let name = format!("fc{k}-{j}{}", if second { "b" } else { "" });
            doc(
                &mut out,
                "FlowClassifier",
                &name,
                &format!(
                    "{{destinationIpPrefix: {}/32, logicalSourcePort: vm-src}}",
                    destination(k, j, second)
                ),
            );
            names.push(name);
        }
        let groups: Vec<String> = hops(k).iter().map(|g| format!("pg{g}")).collect();
        doc(
            &mut out,
            "PortChain",
            &format!("pc{k}"),
            &format!(
                "{{portPairGroups: [{}], flowClassifiers: [{}]}}",
                groups.join(", "),
                names.join(", ")
            ),
        );
    }
    out
}

/// The node with a logical source port and one veth per SF, the SFs' ends in another
/// namespace; IPv6 off so that the SFs' counters see only what the chains send them.
fn lab() -> Lab {
    let mut lab = Lab::new("scale").unwrap();
    for ns in ["node", "src", "sfs"] {
        lab.add_ns(ns).unwrap();
        lab.sh(
            ns,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
        )
        .unwrap();
    }
    lab.veth("node", "vm-src", "src", "eth0").unwrap();
    lab.sh(
        "node",
        &format!(
            "for i in $(seq 0 {}); do ip link add sf$i type veth peer name p$i netns {} && ip link set sf$i up || exit 1; done",
            GROUPS - 1,
            lab.ns("sfs")
        ),
    )
    .unwrap();
    lab.sh(
        "sfs",
        &format!(
            "for i in $(seq 0 {}); do ip link set p$i up || exit 1; done",
            GROUPS - 1
        ),
    )
    .unwrap();
    // The source reaches 10.0.0.0/8 through a gateway that is never asked for its MAC.
    lab.sh(
        "src",
        "ip addr add 192.168.0.1/24 dev eth0 && \
         ip neigh add 192.168.0.254 lladdr 02:00:00:00:00:fe dev eth0 nud permanent && \
         ip route add 10.0.0.0/8 via 192.168.0.254 dev eth0",
    )
    .unwrap();
    lab.start_daemon("node").unwrap();
    lab
}

fn rx_packets(lab: &Lab, group: usize) -> u64 {
    lab.sh(
        "sfs",
        &format!("cat /sys/class/net/p{group}/statistics/rx_packets"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

fn timed_apply(lab: &Lab, path: &str) -> (Duration, String) {
    let start = Instant::now();
    let out = lab.sfcctl(&["apply", "-f", path]);
    let took = start.elapsed();
    match out {
        Ok(out) => (took, out),
        Err(e) => panic!("apply failed: {e}\n{}", lab.daemon_log()),
    }
}

#[test]
fn a_thousand_chains_with_ten_thousand_classifiers_apply_in_under_a_second() {
    let lab = lab();
    let text = big_file(false);
    let path = lab.file("big.yaml", &text).unwrap();
    let (first, out) = timed_apply(&lab, &path);
    println!(
        "apply of {CHAINS} chains, {} classifiers ({} KiB of YAML): {:.1} ms",
        CHAINS * CLASSIFIERS_PER_CHAIN,
        text.len() / 1024,
        first.as_secs_f64() * 1e3
    );
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        2 * GROUPS + CHAINS * (CLASSIFIERS_PER_CHAIN + 1),
        "{}",
        out.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    let chains = lab.sfcctl(&["get", "pc", "-o", "json"]).unwrap();
    let chains: serde_json::Value = serde_json::from_str(&chains).unwrap();
    assert_eq!(chains.as_array().unwrap().len(), CHAINS);

    // The same file again: nothing to do.
    let (again, out) = timed_apply(&lab, &path);
    println!("re-apply, unchanged: {:.1} ms", again.as_secs_f64() * 1e3);
    assert!(
        !out.contains(" created") && !out.contains(" changed"),
        "{out}"
    );

    // Every chain gets other classifiers: 10 000 created, every classifier entry replaced.
    let renamed = lab.file("big2.yaml", &big_file(true)).unwrap();
    let (changed, _) = timed_apply(&lab, &renamed);
    println!(
        "apply replacing every classifier of every chain: {:.1} ms",
        changed.as_secs_f64() * 1e3
    );

    // The dataplane holds all of it: a packet for a chain's classifier reaches that chain's
    // first SF and no other.
    for k in [0, GROUPS + 1, CHAINS / 2, CHAINS - 1] {
        let first = hops(k)[0];
        let other = (first + 1) % GROUPS;
        let before = (rx_packets(&lab, first), rx_packets(&lab, other));
        lab.sh(
            "src",
            &format!(
                "ping -c 2 -i 0.05 -W 0.2 {} || true",
                destination(k, 7, true)
            ),
        )
        .unwrap();
        let after = (rx_packets(&lab, first), rx_packets(&lab, other));
        assert_eq!(
            after.0 - before.0,
            2,
            "chain pc{k}: its first SF (pg{first}) did not get the packets"
        );
        assert_eq!(after.1, before.1, "chain pc{k}: pg{other} got packets");
    }

    for (what, took) in [
        ("first apply", first),
        ("unchanged re-apply", again),
        ("replacing apply", changed),
    ] {
        assert!(
            took < BUDGET,
            "{what} took {:.1} ms; the budget is {} ms",
            took.as_secs_f64() * 1e3,
            BUDGET.as_millis()
        );
    }
}
