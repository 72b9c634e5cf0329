//! XDP mode with real traffic: the daemon started with `--mode xdp --xdp-on-veth` steers the
//! demo chain (both directions, IPv4 and IPv6, short requests and a bulk TCP transfer) with the
//! XDP program in the veth driver; started again without `--xdp-on-veth` it takes XDP off the
//! veths and says why, and in TC mode it leaves no XDP program behind.

use std::time::Duration;

use sfc_lab::{
    demo::{
        assert_through_one_pg1_member_then_sf3, symmetric_chain, Crossing, Demo, DST_V4, DST_V6,
        SFS,
    },
    lab::wait_for,
};

/// What XDP on veths needs from the namespaces behind them: every sender computes its own
/// checksums (a redirected frame loses the skb's offload state), and every receiver accepts
/// XDP frames (a veth does with GRO on).
fn prepare_for_xdp_on_veth(demo: &Demo) {
    for ns in ["src", "dst"] {
        demo.lab.sh(ns, "ethtool -K eth0 gro on tx off").unwrap();
    }
    for sf in SFS {
        demo.lab
            .sh(
                sf,
                "ethtool -K eth-in gro on tx off && ethtool -K eth-out gro on tx off",
            )
            .unwrap();
    }
}

/// Frames the veth driver's XDP program redirected on the node's `iface` (ethtool -S).
fn xdp_redirects(demo: &Demo, iface: &str) -> u64 {
    let text = demo.lab.sh("node", &format!("ethtool -S {iface}")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter(|(name, _)| name.ends_with("xdp_redirect"))
        .map(|(_, n)| n.trim().parse::<u64>().unwrap())
        .sum()
}

fn xdp_attached(demo: &Demo, iface: &str) -> bool {
    let text = demo
        .lab
        .sh("node", &format!("ip -d link show {iface}"))
        .unwrap();
    text.contains("prog/xdp")
}

/// Waits (the kernel lets go of a link's last reference asynchronously) until no steered
/// interface has an XDP program.
fn assert_no_xdp(demo: &Demo, when: &str) {
    for iface in ["vm-src", "vm-dst", "sf1-out", "sf3-out"] {
        let gone = wait_for(Duration::from_secs(2), || {
            (!xdp_attached(demo, iface)).then_some(())
        });
        assert!(gone.is_some(), "{when}: XDP still on {iface}");
    }
}

fn requests(demo: &Demo, dst: &str, ports: std::ops::Range<u16>) -> Vec<Crossing> {
    let results: Vec<Crossing> = ports
        .map(|p| demo.request_from(dst, Some(p)).expect("request"))
        .collect();
    assert_through_one_pg1_member_then_sf3(&results, dst);
    results
}

/// A 20 MB TCP transfer through the chain (iperf3, bounded by a timeout: it fails when the
/// transfer stalls): the bytes sent and those the destination reported received (its last
/// interval may be cut short).
fn bulk_tcp(demo: &Demo) -> (u64, u64) {
    let out = demo
        .lab
        .sh(
            "src",
            // A small window bounds the bytes still in flight when the sender is done (the
            // receiver's count stops there): on a busy machine several MB of a large one were.
            &format!(
                "timeout 20 iperf3 -4 -c {DST_V4} -p 81 -n 20M -w 256K -J --connect-timeout 3000"
            ),
        )
        .expect("iperf3 through the chain");
    let json: serde_json::Value = serde_json::from_str(&out).expect("iperf3 -J");
    let bytes = |what: &str| json["end"][what]["bytes"].as_u64().unwrap_or(0);
    (bytes("sum_sent"), bytes("sum_received"))
}

#[test]
fn xdp_mode_steers_in_the_driver_and_leaves_veths_to_tc_unless_allowed() {
    let mut demo = Demo::build_with("xmode", &["--mode", "xdp", "--xdp-on-veth"]).unwrap();
    prepare_for_xdp_on_veth(&demo);
    demo.lab
        .spawn("dst", &format!("iperf3 -s -p 81 -B {DST_V4}"))
        .unwrap();
    // The demo chain, symmetric, for the web server (80) and iperf3 (81) alike.
    demo.apply(&symmetric_chain().replace("\"80\"", "\"80:81\""));
    for iface in [
        "vm-src", "vm-dst", "sf1-out", "sf2-out", "sf3-out", "sf3-in",
    ] {
        assert!(xdp_attached(&demo, iface), "no XDP program on {iface}");
    }
    let describe = demo.lab.sfcctl(&["describe", "portpair", "PP3"]).unwrap();
    assert!(describe.contains("(XDP and TC)"), "{describe}");

    let entries = || xdp_redirects(&demo, "vm-src") + xdp_redirects(&demo, "vm-dst");
    let before = entries();
    let mut crossed = 0;
    for (dst, ports) in [(DST_V4, 42000..42012), (DST_V6, 42100..42112)] {
        crossed += requests(&demo, dst, ports)
            .iter()
            .map(|c| c.forwarded[2])
            .sum::<u64>();
    }
    // Requests entered the chain at vm-src, replies at vm-dst: all redirected by XDP.
    let redirected = entries() - before;
    assert!(
        redirected >= crossed,
        "XDP redirected {redirected} frames at the chain entries, {crossed} crossed SF3"
    );
    let (sent, received) = bulk_tcp(&demo);
    // (iperf3 -n may round up to its next 128 KB block.)
    assert!(sent >= 20 << 20, "bulk TCP through XDP: {sent} bytes sent");
    assert!(
        received >= 18 << 20,
        "bulk TCP through XDP: {received} bytes received"
    );

    // --mode xdp alone: veths keep TC only, and describe says why.
    demo.lab.kill_daemon().unwrap();
    demo.lab.daemon_args = vec!["--mode".into(), "xdp".into()];
    demo.lab.start_daemon("node").unwrap();
    demo.apply(&symmetric_chain().replace("\"80\"", "\"80:81\""));
    assert_no_xdp(&demo, "--mode xdp on veths");
    let describe = demo.lab.sfcctl(&["describe", "portpair", "PP3"]).unwrap();
    assert!(
        describe.contains("TC only, no XDP: a veth"),
        "describe should say why: {describe}"
    );
    requests(&demo, DST_V4, 42200..42206);

    // TC mode: the next daemon takes any XDP program off.
    demo.lab.kill_daemon().unwrap();
    demo.lab.daemon_args = vec!["--mode".into(), "xdp".into(), "--xdp-on-veth".into()];
    demo.lab.start_daemon("node").unwrap();
    demo.apply(&symmetric_chain());
    assert!(
        xdp_attached(&demo, "vm-src"),
        "XDP back on with --xdp-on-veth"
    );
    demo.lab.kill_daemon().unwrap();
    demo.lab.daemon_args.clear();
    demo.lab.start_daemon("node").unwrap();
    assert_no_xdp(&demo, "TC mode");
    requests(&demo, DST_V4, 42300..42306);
}
