//! Coexistence with other TC programs (issue 11, item 3). CNIs such as Cilium and Calico attach
//! their own TCX programs to the same pod interfaces as ours. Whatever the steering program does
//! not steer (no classifier matches, not IP, handed back to normal forwarding after the last hop)
//! must go on to the next program on the interface (`TCX_NEXT`), not straight to the stack.
//!
//! The real daemon steers the demo chain; a test-only program (sfc-ebpf/src/test_probe.rs, a
//! counter per interface that hands every packet on) is attached with TCX after the steering
//! program on every interface the daemon attached it to, as a CNI's program would be.

use std::{fs, thread, time::Duration};

use aya::{
    maps::PerCpuArray,
    programs::{
        tc::{TcAttachOptions, TcAttachType},
        LinkOrder, SchedClassifier,
    },
    Ebpf,
};
use sfc_lab::{
    demo::{example_chain, Demo, DST_V4, SRC_V4},
    frames,
    lab::{script, Lab, Stats},
};

/// Where the daemon attaches the steering program for the demo chain: the logical source port
/// and each SF's egress (what leaves an SF is classified again there).
const STEERED_FROM: [&str; 4] = ["vm-src", "sf1-out", "sf2-out", "sf3-out"];
/// The probe's interfaces: [`STEERED_FROM`], and a control without the steering program (the
/// destination's port, where replies enter): there the probe must see everything.
const PROBED: [&str; 5] = ["vm-src", "sf1-out", "sf2-out", "sf3-out", "vm-dst"];

/// The demo chain (PG1 = {PP1, PP2}, then PG2 = {PP3}) for UDP to port 9000.
fn udp_chain() -> String {
    let chain = fs::read_to_string(example_chain())
        .unwrap()
        .replace("  protocol: tcp\n", "  protocol: udp\n")
        .replace(
            "  destinationPortRange: \"80\"",
            "  destinationPortRange: \"9000\"",
        );
    assert!(chain.contains("9000") && chain.contains("udp"), "{chain}");
    chain
}

/// The test-only counting program, attached after the steering program.
struct Probe {
    ebpf: Ebpf,
    /// The ifindexes of [`PROBED`], in the node namespace.
    ifindexes: Vec<u32>,
}

impl Probe {
    /// Loads the probe and attaches it with TCX at ingress, last (after the steering program the
    /// daemon attached first), to every interface of [`PROBED`]. Detached when dropped.
    fn attach_after_steering(lab: &Lab) -> Self {
        let mut ebpf = Ebpf::load(sfc_daemon::TEST_PROBE_OBJECT).expect("loading the probe");
        let program: &mut SchedClassifier = ebpf
            .program_mut("sfc_test_probe")
            .expect("no program sfc_test_probe")
            .try_into()
            .unwrap();
        program.load().expect("verifying the probe");
        lab.run_in("node", || {
            for iface in PROBED {
                program.attach_with_options(
                    iface,
                    TcAttachType::Ingress,
                    TcAttachOptions::TcxOrder(LinkOrder::last()),
                )?;
            }
            Ok(())
        })
        .expect("attaching the probe after the steering program");
        let ifindexes = PROBED
            .iter()
            .map(|i| lab.ifindex("node", i).unwrap())
            .collect();
        Self { ebpf, ifindexes }
    }

    /// Packets the probe saw on each interface of [`PROBED`].
    fn seen(&self) -> Vec<u64> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("sfc_test_probe_seen").unwrap()).unwrap();
        self.ifindexes
            .iter()
            .map(|&i| map.get(&i, 0).unwrap().iter().sum())
            .collect()
    }
}

/// The counters that matter here, read while the interfaces were quiet, so that they agree.
struct Snapshot {
    /// Frames that entered each interface of [`PROBED`] (its rx_packets).
    entered: Vec<u64>,
    /// Of those, what the probe after the steering program saw.
    seen: Vec<u64>,
    stats: Stats,
}

/// Reads the interface counters, the probe and the daemon's stats, and again the first two: if
/// they moved (a neighbour solicitation, say), it tries again (at most 40 times).
fn snapshot(lab: &Lab, probe: &Probe) -> Snapshot {
    let entered = || lab.link_counters("node", &PROBED, "rx_packets").unwrap();
    for _ in 0..40 {
        let (entered_before, seen_before) = (entered(), probe.seen());
        // `stats` samples the counters afresh when its last sample is over 100 ms old: this
        // one is taken while the interfaces are watched.
        thread::sleep(Duration::from_millis(150));
        let stats = lab.stats().unwrap();
        let (entered_after, seen_after) = (entered(), probe.seen());
        if entered_before == entered_after && seen_before == seen_after {
            return Snapshot {
                entered: entered_after,
                seen: seen_after,
                stats,
            };
        }
    }
    panic!("the probed interfaces never stayed quiet for 150 ms in 40 tries");
}

/// An ARP request from the source VM for the destination's address, broadcast.
fn arp_request(src_mac: [u8; 6]) -> Vec<u8> {
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&src_mac);
    arp.extend_from_slice(&ip(SRC_V4));
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&ip(DST_V4));
    frames::eth([0xff; 6], src_mac, 0x0806, &arp)
}

#[test]
fn a_tcx_program_after_ours_sees_every_packet_we_do_not_steer_and_none_we_do() {
    let demo = Demo::build("coexist").unwrap();
    let lab = &demo.lab;
    demo.apply(&udp_chain());
    // The steering program is on every interface of STEERED_FROM (one pinned link each)
    // before the probe goes after it.
    let mut links: Vec<String> = fs::read_dir(lab.dir.join("bpffs/links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    links.sort();
    for iface in STEERED_FROM {
        assert!(
            links.iter().any(|l| l.ends_with(&format!("_{iface}"))),
            "no steering link on {iface}: {links:?}"
        );
    }
    let probe = Probe::attach_after_steering(lab);

    const STEERED: u64 = 300;
    const OTHER_PORT: u64 = 200;
    const PINGS: u64 = 20;
    const ARPS: u64 = 20;
    let before = snapshot(lab, &probe);
    // Steered: the classifier's traffic, through PG1 and then SF3, handed back to normal
    // forwarding after the last hop (at sf3-out).
    let udp = |port: u16, count: u64, sport: u16| {
        lab.sh(
            "src",
            &format!(
                "python3 {} send {DST_V4} {port} {count} 2000 {sport}",
                script("udp_stream.py")
            ),
        )
        .unwrap();
    };
    udp(9000, STEERED, 40100);
    // Not steered at vm-src: another destination port, ICMP, ARP.
    udp(9001, OTHER_PORT, 40101);
    lab.sh("src", &format!("ping -q -c {PINGS} -i 0.01 -W 1 {DST_V4}"))
        .unwrap();
    let src_mac = lab.mac("src", "eth0").unwrap();
    let arps = vec![arp_request(src_mac); ARPS as usize];
    lab.send_frames("src", "eth0", &arps, 1000).unwrap();
    let after = snapshot(lab, &probe);

    let d = |f: fn(&Snapshot) -> &Vec<u64>| -> Vec<u64> {
        f(&after)
            .iter()
            .zip(f(&before))
            .map(|(a, b)| a - b)
            .collect()
    };
    let (entered, seen) = (d(|s| &s.entered), d(|s| &s.seen));
    let counter = |name: &str| after.stats.counter(name) - before.stats.counter(name);
    let into = |pair: &str| after.stats.into_pair(pair) - before.stats.into_pair(pair);
    let into_pg1 = into("PP1") + into("PP2");
    let into_pp3 = into("PP3");
    // What the steering program handed on rather than steering, delivering or dropping.
    let handed_on: u64 = ["no_match", "not_ip", "forwarded", "unparsable_passed"]
        .iter()
        .map(|n| counter(n))
        .sum();
    println!("interface   entered  seen by the probe after ours");
    for (i, iface) in PROBED.iter().enumerate() {
        println!("{iface:<10} {:>8} {:>8}", entered[i], seen[i]);
    }
    println!(
        "steered {} (into PG1 {into_pg1}, into PP3 {into_pp3}), forwarded {}, no_match {}, \
         not_ip {}; handed on in all {handed_on}",
        counter("steered"),
        counter("forwarded"),
        counter("no_match"),
        counter("not_ip"),
    );

    // The traffic did what it should: every datagram of the chain crossed both hops; the
    // rest was seen and not matched.
    assert_eq!(into_pg1, STEERED, "datagrams steered into PG1");
    assert_eq!(into_pp3, STEERED, "datagrams steered into PP3");
    assert!(counter("steered") >= 2 * STEERED);
    assert!(counter("forwarded") >= STEERED, "after the last hop");
    assert!(counter("no_match") >= OTHER_PORT + PINGS);
    assert!(counter("not_ip") >= ARPS);
    assert!(entered[0] >= STEERED + OTHER_PORT + PINGS + ARPS);

    // The control: where no steering program runs, the probe sees every packet that enters
    // (the echo replies, at least).
    assert!(entered[4] >= PINGS, "vm-dst: {} entered", entered[4]);
    assert_eq!(seen[4], entered[4], "vm-dst, without the steering program");

    // vm-src: everything that entered and was not steered into PG1 reached the next program;
    // nothing that was steered did.
    assert_eq!(
        seen[0],
        entered[0] - into_pg1,
        "vm-src: {} packets entered, {into_pg1} were steered into PG1, so the program after \
         ours must see the other {} (at least the {} sent to another port, pinged or ARPed); \
         it saw {}",
        entered[0],
        entered[0] - into_pg1,
        OTHER_PORT + PINGS + ARPS,
        seen[0]
    );
    // PG1's egresses: what came back out of SF1 and SF2 was steered into SF3, and nothing
    // else (the SFs' own neighbour discovery, say) was held back from the next program.
    assert_eq!(
        seen[1] + seen[2],
        entered[1] + entered[2] - into_pp3,
        "sf1-out and sf2-out: {} packets entered, {into_pp3} steered into PP3",
        entered[1] + entered[2]
    );
    // sf3-out: past the last hop the chain hands its traffic back to normal forwarding, which
    // on an interface shared with a CNI starts with the CNI's program.
    assert!(entered[3] >= STEERED);
    assert_eq!(
        seen[3], entered[3],
        "sf3-out: every packet is handed on (forwarded after the last hop, or not matched)"
    );
    // And the daemon's counters say the same.
    assert_eq!(
        seen[..4].iter().sum::<u64>(),
        handed_on,
        "packets the probe saw on all four interfaces vs packets counted no_match, not_ip, \
         forwarded or unparsable_passed"
    );
}
