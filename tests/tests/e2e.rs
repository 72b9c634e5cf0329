//! End-to-end: the real daemon, real programs, real traffic (curl, ping) through namespaces,
//! veths and a bridge that each test builds and always removes.

use std::{collections::BTreeSet, fs, os::unix::fs::PermissionsExt, thread, time::Duration};

use aya::{
    maps::{HashMap, Map, MapData},
    programs::{
        tc::{self, TcAttachOptions},
        SchedClassifier, TcAttachType,
    },
};
use sfc_common::{ClassEntry, ClassKey, ClassKey4, MAP_CLASSIFY, MAP_CLASSIFY4};
use sfc_lab::{
    demo::{
        assert_through_one_pg1_member_then_sf3, example_chain, symmetric_chain, symmetric_request,
        Crossing, Demo, DST_V4, DST_V6,
    },
    lab::{script, wait_for, Lab},
    yaml::block_doc,
};

/// Source ports for a test's requests: fixed, so that the flows (and the members they hash
/// to) are the same on every run, and never reused within a test, so that no request meets
/// its predecessor's TIME_WAIT.
struct Flows(u16);

impl Flows {
    fn new() -> Self {
        Flows(41000)
    }

    fn next(&mut self) -> std::ops::Range<u16> {
        self.0 += 12;
        self.0 - 12..self.0
    }

    fn one(&mut self) -> u16 {
        self.0 += 1;
        self.0 - 1
    }
}

fn requests(demo: &Demo, dst: &str, flows: &mut Flows) -> Vec<Crossing> {
    flows
        .next()
        .map(|p| demo.request_from(dst, Some(p)).expect("request"))
        .collect()
}

/// Every request answered, each through exactly one PG1 member and then SF3, and both PG1
/// members used.
fn assert_demo_path(results: &[Crossing], what: &str) {
    assert_through_one_pg1_member_then_sf3(results, what);
    assert!(
        results.iter().any(|c| c.forwarded[0] > 0),
        "{what}: SF1 never used"
    );
    assert!(
        results.iter().any(|c| c.forwarded[1] > 0),
        "{what}: SF2 never used"
    );
}

fn chain_file() -> String {
    fs::read_to_string(example_chain()).unwrap()
}

/// The demo's chain for ICMP from the source VM to the destination, so that ping is steered.
fn icmp_chain() -> String {
    let icmp = chain_file().replace("protocol: tcp\n  sourceIpPrefix: 198.18.0.10/32\n  destinationIpPrefix: 198.18.0.100/32\n  destinationPortRange: \"80\"", "protocol: icmp\n  sourceIpPrefix: 198.18.0.10/32\n  destinationIpPrefix: 198.18.0.100/32");
    assert_ne!(icmp, chain_file());
    icmp
}

/// Whether `iface` in the node namespace has a clsact qdisc.
fn has_clsact(lab: &Lab, iface: &str) -> bool {
    lab.sh("node", &format!("tc qdisc show dev {iface}"))
        .unwrap()
        .contains("clsact")
}

/// The tc filters on `iface`'s ingress in the node namespace, as `tc filter show` lists them.
fn tc_filters(lab: &Lab, iface: &str) -> String {
    lab.sh("node", &format!("tc filter show dev {iface} ingress"))
        .unwrap()
}

/// What a daemon killed between a chain's tc filter and its TCX link leaves on `iface`: the
/// link, and a filter running the same program (on the clsact qdisc the caller added).
fn leave_a_filter(lab: &Lab, iface: &str) {
    let pinned_link = fs::read_dir(lab.dir.join("bpffs/links"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&format!("_{iface}")))
        .expect("a pinned link");
    let info = lab
        .sh(
            "node",
            &format!("bpftool -j link show pinned {}", pinned_link.display()),
        )
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let program = lab.dir.join("bpffs/left-behind");
    lab.sh(
        "node",
        &format!(
            "bpftool prog pin id {} {}",
            info["prog_id"],
            program.display()
        ),
    )
    .unwrap();
    lab.run_in("node", || {
        let mut steering = SchedClassifier::from_pin(&program)?;
        let id = steering.attach_with_options(
            iface,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(Default::default()),
        )?;
        // Like the killed daemon, nobody detaches it.
        std::mem::forget(steering.take_link(id)?);
        Ok(())
    })
    .unwrap();
    fs::remove_file(&program).unwrap();
    assert!(tc_filters(lab, iface).contains("sfc_tc"));
}

#[test]
fn demo_chain_steers_ipv4_and_ipv6_through_one_pg1_member_then_sf3() {
    let demo = Demo::build("e2e").unwrap();
    let mut flows = Flows::new();
    // Before any chain: traffic goes straight to the destination.
    let direct = demo.request_from(DST_V4, Some(flows.one())).unwrap();
    assert_eq!(direct.status, 200);
    assert_eq!(direct.forwarded, [0, 0, 0]);

    demo.lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    assert_demo_path(&requests(&demo, DST_V4, &mut flows), "IPv4");
    assert_demo_path(&requests(&demo, DST_V6, &mut flows), "IPv6");
}

#[test]
fn traffic_that_matches_no_classifier_is_untouched() {
    let demo = Demo::build("nomatch").unwrap();
    demo.lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    let before = demo.forwarded(false).unwrap();
    // ICMP does not match the tcp/80 classifier; neither does traffic in the other direction.
    demo.lab
        .sh("src", &format!("ping -c 3 -i 0.2 -W 2 {DST_V4}"))
        .expect("ping through the bridge");
    demo.lab
        .sh("dst", "ping -c 3 -i 0.2 -W 2 198.18.0.10")
        .expect("ping back");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        demo.forwarded(false).unwrap(),
        before,
        "an SF saw unclassified traffic"
    );
}

#[test]
fn live_updates_from_the_blog_take_effect() {
    let demo = Demo::build("live").unwrap();
    let mut flows = Flows::new();
    let full = chain_file();
    demo.apply(&full);
    assert_demo_path(&requests(&demo, DST_V4, &mut flows), "initial");

    // The classifier removed from the chain: the SFs go quiet.
    demo.apply(&block_doc(
        "PortChain",
        "PC1",
        "  portPairGroups: [PG1, PG2]\n  flowClassifiers: []",
    ));
    for c in requests(&demo, DST_V4, &mut flows) {
        assert_eq!(c.status, 200);
        assert_eq!(
            c.forwarded,
            [0, 0, 0],
            "steered without a classifier: {c:?}"
        );
    }

    // Chain = PG1 only: one of SF1/SF2, never SF3.
    demo.apply(&block_doc(
        "PortChain",
        "PC1",
        "  portPairGroups: [PG1]\n  flowClassifiers: [FC1, FC1-v6]",
    ));
    for c in requests(&demo, DST_V4, &mut flows) {
        assert_eq!(c.status, 200);
        assert_eq!(c.forwarded[2], 0, "SF3 used by a PG1-only chain: {c:?}");
        assert!((c.forwarded[0] > 0) != (c.forwarded[1] > 0), "{c:?}");
    }

    // PG1 = {PP2} only, full chain again: SF2 then SF3, every time.
    demo.apply(
        &(block_doc("PortPairGroup", "PG1", "  portPairs: [PP2]")
            + &block_doc(
                "PortChain",
                "PC1",
                "  portPairGroups: [PG1, PG2]\n  flowClassifiers: [FC1, FC1-v6]",
            )),
    );
    for c in requests(&demo, DST_V4, &mut flows) {
        assert_eq!(c.status, 200);
        assert_eq!(c.crossed(), vec!["sf2", "sf3"], "{c:?}");
    }

    // Restored.
    demo.apply(&full);
    assert_demo_path(&requests(&demo, DST_V4, &mut flows), "restored");
}

#[test]
fn an_invalid_apply_changes_nothing() {
    let demo = Demo::build("invalid").unwrap();
    let mut flows = Flows::new();
    let lab = &demo.lab;
    lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    let kinds = [
        "portpairs",
        "portpairgroups",
        "flowclassifiers",
        "portchains",
    ];
    let snapshot: Vec<String> = kinds
        .iter()
        .map(|k| lab.sfcctl(&["get", k, "-o", "yaml"]).unwrap())
        .collect();
    // A valid change and an invalid one in the same file: neither may land.
    let bad = lab
        .file(
            "bad.yaml",
            &(block_doc("PortPairGroup", "PG1", "  portPairs: [PP2]")
                + &block_doc(
                    "PortChain",
                    "PC1",
                    "  portPairGroups: [PG1, PG9]\n  flowClassifiers: [FC1]",
                )),
        )
        .unwrap();
    let err = lab.sfcctl(&["apply", "-f", &bad]).unwrap_err();
    assert!(
        err.contains("bad.yaml: PortChain \"PC1\": spec.portPairGroups[1]"),
        "{err}"
    );
    assert!(err.contains("PG9"), "{err}");
    for (k, before) in kinds.iter().zip(&snapshot) {
        assert_eq!(
            &lab.sfcctl(&["get", k, "-o", "yaml"]).unwrap(),
            before,
            "{k} changed"
        );
    }
    assert_demo_path(
        &requests(&demo, DST_V4, &mut flows),
        "after a rejected apply",
    );

    // The same checks offline.
    let err = lab.sfcctl(&["validate", "-f", &bad]).unwrap_err();
    assert!(err.contains("spec.portPairGroups[1]"), "{err}");
    assert!(lab.sfcctl(&["validate", "-f", &example_chain()]).is_ok());
}

#[test]
fn kill_9_and_restart_keep_steering_and_state() {
    let mut demo = Demo::build("restart").unwrap();
    demo.apply(&icmp_chain());
    let state_before = demo
        .lab
        .sfcctl(&["get", "portchains", "-o", "json"])
        .unwrap();

    // The clsact qdisc for the filter left below, added before the ping: adding (grafting) a
    // qdisc deactivates the device for a moment, and a packet it sends then is dropped.
    demo.lab
        .run_in("node", || Ok(tc::qdisc_add_clsact("vm-src")?))
        .unwrap();
    // A steady ping, steered through the chain, runs across the kill and the restart.
    let before = demo.forwarded(false).unwrap();
    let ping = {
        let mut cmd = demo.lab.cmd("src", "ping");
        cmd.args(["-c", "300", "-i", "0.01", "-W", "1", "-q", DST_V4]);
        cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    thread::sleep(Duration::from_millis(600));
    demo.lab.kill_daemon().unwrap();
    leave_a_filter(&demo.lab, "vm-src");
    thread::sleep(Duration::from_millis(600));
    demo.lab.start_daemon("node").unwrap();
    assert_eq!(
        tc_filters(&demo.lab, "vm-src"),
        "",
        "the filter an earlier daemon left"
    );
    let out = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("300 received"),
        "echoes lost across the restart: {summary}"
    );
    let after = demo.forwarded(false).unwrap();
    assert!(
        after[2] - before[2] >= 300,
        "echo requests bypassed SF3: {before:?} -> {after:?}"
    );

    assert_eq!(
        demo.lab
            .sfcctl(&["get", "portchains", "-o", "json"])
            .unwrap(),
        state_before
    );
    assert!(demo.lab.daemon_log().contains("adopted pinned link"));
    // The restarted daemon controls the dataplane: a new update takes effect.
    demo.apply(&block_doc("PortPairGroup", "PG1", "  portPairs: [PP2]"));
    let before = demo.forwarded(false).unwrap();
    demo.lab
        .sh("src", &format!("ping -c 5 -i 0.05 -W 1 -q {DST_V4}"))
        .unwrap();
    let after = demo.forwarded(false).unwrap();
    assert_eq!(after[0], before[0], "SF1 still used after PG1 = {{PP2}}");
    assert!(after[1] - before[1] >= 5 && after[2] - before[2] >= 5);

    // The clsacts the daemon before added for its filters are this one's to delete.
    demo.lab.sfcctl(&["delete", "pc", "PC1"]).unwrap();
    assert_clsacts_go(&demo.lab, "after a restart");
}

/// Waits until the SF interfaces have no clsact qdisc (each had none before the chain).
fn assert_clsacts_go(lab: &Lab, when: &str) {
    for sf in ["sf1-out", "sf2-out", "sf3-out"] {
        assert!(
            wait_for(Duration::from_secs(5), || (!has_clsact(lab, sf))
                .then_some(()))
            .is_some(),
            "{sf}: the clsact added for its filter outlived its steering ({when})"
        );
    }
}

/// The TX and RX drops of `iface` in namespace `ns`.
fn drops(lab: &Lab, ns: &str, iface: &str) -> [u64; 2] {
    let out = lab
        .sh(ns, &format!("ip -j -s link show dev {iface}"))
        .unwrap();
    let link: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stats = &link[0]["stats64"];
    [&stats["tx"], &stats["rx"]].map(|s| s["dropped"].as_u64().unwrap())
}

/// Packets the node dropped on their way into the source VM's port, other than those the VM's
/// side dropped for want of room in its backlog (a veth counts those as TX drops too).
fn dropped_into_vm_src(lab: &Lab) -> i64 {
    drops(lab, "node", "vm-src")[0] as i64 - drops(lab, "src", "eth0")[1] as i64
}

/// A first apply grafts no qdisc onto a logical port, which carries its VM's traffic before
/// any chain: a graft deactivates the device for a moment, and what the node sends into it
/// then is dropped. Across the apply, a stream of 64-byte datagrams from the destination VM
/// into the source VM's port loses none there, and a flood ping from the source VM, steered
/// once the chain is in effect, loses no echo. The clsact qdisc added for an SF interface's
/// filter stays while the chain sends packets into the SF, and goes when it leaves steering.
#[test]
fn a_first_apply_drops_nothing_sent_into_a_logical_port() {
    first_apply_under_traffic(false);
}

/// The same where the logical port has a clsact qdisc already (another tc-based tool on the
/// host): a tc filter there grafts nothing, so the port gets one first, as SF interfaces do,
/// and the chain takes effect before its TCX link. That clsact is not ours to delete.
#[test]
fn a_first_apply_onto_a_logical_port_with_a_clsact_uses_a_filter_first() {
    first_apply_under_traffic(true);
}

fn first_apply_under_traffic(port_has_clsact: bool) {
    let demo = Demo::build(if port_has_clsact { "busy-qd" } else { "busy" }).unwrap();
    let lab = &demo.lab;
    if port_has_clsact {
        lab.run_in("node", || Ok(tc::qdisc_add_clsact("vm-src")?))
            .unwrap();
    }
    let steered_before = demo.forwarded(false).unwrap();
    let dropped_before = dropped_into_vm_src(lab);
    // About 2 s of each; the apply comes in their midst.
    let stream = lab
        .cmd("dst", "python3")
        .args([script("udp_stream.py"), "send".into()])
        .args(["198.18.0.10", "9", "200000", "100000", "40000", "50", "64"])
        .spawn()
        .unwrap();
    let ping = {
        let mut cmd = lab.cmd("src", "ping");
        cmd.args(["-f", "-c", "20000", "-w", "30", "-q", DST_V4]);
        cmd.stdout(std::process::Stdio::piped()).spawn().unwrap()
    };
    thread::sleep(Duration::from_millis(300));
    demo.apply(&icmp_chain());
    let sent = stream.wait_with_output().unwrap();
    assert!(sent.status.success(), "the stream's sender failed");
    let out = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("20000 received"),
        "echoes lost across the first apply: {summary}"
    );
    let steered_after = demo.forwarded(false).unwrap();
    assert!(
        steered_after[2] > steered_before[2],
        "the chain never steered the ping: {steered_before:?} -> {steered_after:?}"
    );
    assert_eq!(
        dropped_into_vm_src(lab) - dropped_before,
        0,
        "packets sent into the logical port dropped across the first apply"
    );
    assert_eq!(
        has_clsact(lab, "vm-src"),
        port_has_clsact,
        "a qdisc on the logical port"
    );
    assert_eq!(
        lab.daemon_log()
            .lines()
            .any(|l| l.contains("attached as a tc filter") && l.contains("vm-src")),
        port_has_clsact,
        "the logical port's first attach"
    );
    assert_eq!(
        tc_filters(lab, "vm-src"),
        "",
        "a filter left on the logical port"
    );
    for sf in ["sf1-out", "sf2-out", "sf3-out"] {
        assert!(
            has_clsact(lab, sf),
            "{sf}: the clsact of its filter went early"
        );
    }

    lab.sfcctl(&["delete", "pc", "PC1"]).unwrap();
    assert_clsacts_go(lab, "one daemon");
    assert_eq!(
        has_clsact(lab, "vm-src"),
        port_has_clsact,
        "the logical port's own clsact"
    );
}

/// The destination ports of the classifier entries in both classify maps (IPv4, IPv6).
fn classified_ports(lab: &mut Lab) -> (BTreeSet<u16>, BTreeSet<u16>) {
    let maps = lab.bpffs().unwrap().join("maps");
    let open = |name: &str| Map::HashMap(MapData::from_pin(maps.join(name)).unwrap());
    let v4: HashMap<MapData, ClassKey4, ClassEntry> =
        HashMap::try_from(open(MAP_CLASSIFY4)).unwrap();
    let v6: HashMap<MapData, ClassKey, ClassEntry> = HashMap::try_from(open(MAP_CLASSIFY)).unwrap();
    (
        v4.keys().map(|k| k.unwrap().dport).collect(),
        v6.keys().map(|k| k.unwrap().dport).collect(),
    )
}

/// A restarted agent does not know what the one before wrote into the generation it
/// overwrites: it walks both classify maps for it, so no classifier of an apply before the
/// restart is left behind to steer.
#[test]
fn a_restarted_agent_leaves_no_classifier_entry_of_the_one_before() {
    let mut demo = Demo::build("reclass").unwrap();
    let on_port =
        |port: u16| chain_file().replace("PortRange: \"80\"", &format!("PortRange: \"{port}\""));
    demo.apply(&on_port(8080));
    demo.apply(&on_port(8081));
    demo.lab.kill_daemon().unwrap();
    demo.lab.start_daemon("node").unwrap();
    // Each overwrites one of the two generations written before the restart.
    demo.apply(&on_port(8082));
    demo.apply(&on_port(8083));
    let (v4, v6) = classified_ports(&mut demo.lab);
    let now = BTreeSet::from([8082, 8083]);
    assert_eq!(v4, now, "IPv4 classifier entries by destination port");
    assert_eq!(v6, now, "IPv6 classifier entries by destination port");
}

#[test]
fn interfaces_that_come_and_go_are_attached_and_cleaned_up() {
    let demo = Demo::build("ifaces").unwrap();
    let mut flows = Flows::new();
    let lab = &demo.lab;
    lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    let links = lab.dir.join("bpffs/links");
    let pinned = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&links)
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .split_once('_')
                    .unwrap()
                    .1
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(pinned(), ["sf1-out", "sf2-out", "sf3-out", "vm-src"]);
    // The SFs' interfaces steered by a tc filter until their TCX links were in place: none is
    // left. The logical port got its link at once.
    for iface in pinned() {
        assert_eq!(tc_filters(lab, &iface), "", "{iface}");
    }

    // SF1 goes away: its link is cleaned up and PG1 steers to SF2 only.
    lab.sh("node", "ip link del sf1-in && ip link del sf1-out")
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || (!pinned()
            .contains(&"sf1-out".to_string()))
        .then_some(()))
        .is_some(),
        "link of a deleted interface still pinned: {:?}",
        pinned()
    );
    for c in requests(&demo, DST_V4, &mut flows) {
        assert_eq!(c.crossed(), vec!["sf2", "sf3"], "{c:?}");
    }
    // The clsact qdisc added for its filter went with it: nothing to delete, nothing to warn of.
    let log = lab.daemon_log();
    assert!(!log.contains("removing the clsact qdiscs"), "{log}");

    // SF1 comes back: attached again, and both members share the flows once more.
    lab.veth("node", "sf1-in", "sf1", "eth-in").unwrap();
    lab.veth("node", "sf1-out", "sf1", "eth-out").unwrap();
    lab.sh(
        "node",
        "ip link set sf1-in master br0 && ip link set sf1-out master br0",
    )
    .unwrap();
    lab.sh(
        "sf1",
        &format!("ip addr add 198.18.0.11/24 dev eth-in && ip addr add 198.18.0.12/32 dev eth-out && ip route add {DST_V4}/32 dev eth-out"),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || pinned()
            .contains(&"sf1-out".to_string())
            .then_some(()))
        .is_some(),
        "re-created interface not attached"
    );
    assert_demo_path(&requests(&demo, DST_V4, &mut flows), "after SF1 came back");
}

#[test]
fn cli_contract() {
    let demo = Demo::build("cli").unwrap();
    let mut flows = Flows::new();
    let lab = &demo.lab;
    let mode = fs::metadata(lab.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        lab.sfcctl(&["get", "pc"]).unwrap().lines().count(),
        1,
        "empty list is not an error"
    );
    lab.sfcctl(&["apply", "-f", &example_chain()]).unwrap();
    // Deterministic output: two reads print the same bytes; aliases agree.
    for output in ["table", "yaml", "json"] {
        let a = lab
            .sfcctl(&["get", "flowclassifiers", "-o", output])
            .unwrap();
        assert_eq!(a, lab.sfcctl(&["get", "fc", "-o", output]).unwrap());
    }
    let one = lab
        .sfcctl(&["get", "portpair", "PP1", "-o", "json"])
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(parsed[0]["spec"]["ingress"], "sf1-in");
    assert!(lab
        .sfcctl(&["get", "pp", "nope"])
        .unwrap_err()
        .contains("not found"));
    // A group still in use cannot be deleted alone; with its chain it can.
    let err = lab.sfcctl(&["delete", "portpairgroup", "PG2"]).unwrap_err();
    assert!(
        err.contains("PG2") && err.contains("does not exist"),
        "{err}"
    );
    lab.sfcctl(&["delete", "pc", "PC1"]).unwrap();
    lab.sfcctl(&["delete", "ppg", "PG2"]).unwrap();
    lab.sfcctl(&["delete", "-f", &example_chain()]).unwrap();
    for kind in ["pp", "ppg", "fc", "pc"] {
        assert_eq!(
            lab.sfcctl(&["get", kind]).unwrap().lines().count(),
            1,
            "{kind} left"
        );
    }
    let c = demo.request_from(DST_V4, Some(flows.one())).unwrap();
    assert_eq!((c.status, c.forwarded), (200, [0, 0, 0]));
}

fn counter(demo: &Demo, name: &str) -> u64 {
    let out = demo.lab.sfcctl(&["stats"]).unwrap();
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no counter {name} in:\n{out}"))
}

#[test]
fn after_the_last_hop_traffic_goes_to_the_logical_destination_port() {
    let demo = Demo::build("deliver").unwrap();
    let mut flows = Flows::new();
    let chain = chain_file().replace(
        "  logicalSourcePort: vm-src\n",
        "  logicalSourcePort: vm-src\n  logicalDestinationPort: vm-dst\n",
    );
    assert_ne!(chain, chain_file());
    demo.apply(&chain);
    let before = counter(&demo, "delivered");
    assert_demo_path(&requests(&demo, DST_V4, &mut flows), "IPv4, delivered");
    assert_demo_path(&requests(&demo, DST_V6, &mut flows), "IPv6, delivered");
    // Every packet that left SF3 was redirected straight to vm-dst by us.
    let delivered = counter(&demo, "delivered") - before;
    assert!(delivered >= 24 * 5, "only {delivered} packets delivered");
}

#[test]
fn a_symmetric_chain_sends_replies_back_through_the_same_instances() {
    let demo = Demo::build("sym").unwrap();
    let mut flows = Flows::new();
    demo.apply(&symmetric_chain());
    let mut used = [false; 2];
    for port in flows.next() {
        used[symmetric_request(&demo.lab, port)] = true;
    }
    assert_eq!(
        used,
        [true, true],
        "both PG1 members should carry connections"
    );
}
