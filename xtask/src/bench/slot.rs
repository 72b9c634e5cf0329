//! One system at one chain length: put the chain in place (timing the apply and the first
//! steered packet), measure packet rate, TCP throughput and latency, take the chain away.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use sfc_lab::lab::Lab;

use super::{
    check_interrupt, netns,
    report::Report,
    senders,
    systems::{self, Runner, System},
    topology::{self as topo, Topology},
    traffic, Plan,
};

/// One system at one chain length: prepare, apply (timed, with the first-packet probe), the
/// three traffic measurements, teardown (also when a step failed).
pub(super) fn run(
    topo: &mut Topology,
    runner: &mut Runner,
    plan: &Plan,
    report: &mut Report,
    order: usize,
    system: System,
    hops: usize,
) -> Result<String> {
    let result = runner
        .prepare(topo, system, hops)
        .and_then(|()| measure(topo, runner, plan, report, order, system, hops));
    // Also after a failed prepare: whatever part of it happened must not leak into the next
    // system's measurement.
    let down = runner.teardown(topo, system, hops);
    let line = result?;
    down.context("teardown")?;
    Ok(line)
}

fn measure(
    topo: &mut Topology,
    runner: &mut Runner,
    plan: &Plan,
    report: &mut Report,
    order: usize,
    system: System,
    hops: usize,
) -> Result<String> {
    let name = system.name();
    let (src, dst) = (topo.ns("src"), topo.ns("dst"));
    let mut line = String::new();
    if system != System::Plain {
        let topo_ref: &Topology = topo;
        let (apply_ms, first) =
            traffic::apply_and_probe(&src, &dst, Duration::from_secs(5), || {
                runner.apply(topo_ref, system, hops)
            })?;
        let first = first.context("no probe reached the destination within 5 s of the apply")?;
        report.add(order, name, hops, "apply_ms", apply_ms);
        report.add(order, name, hops, "first_packet_ms", first);
        line += &format!("apply {apply_ms:.1} ms, first packet {first:.1} ms  ");
    }
    if matches!(system, System::SfcTc | System::SfcXdp) {
        // An update where the program already runs: the chain narrowed to leave the probes
        // out, then the whole chain again, timed until the first probe follows it.
        let narrowed = systems::chain_yaml(hops).replace(topo::NET, topo::NET_WITHOUT_PROBE);
        systems::sfcctl_apply(topo, &topo.lab.file("narrowed.yaml", &narrowed)?)?;
        // An update rewrites the generation an earlier one retired, which packets may still
        // use for two leases after it (make-before-break); updates that come that fast wait
        // that long, and this one is timed as an update that came later.
        std::thread::sleep(
            Duration::from_nanos(2 * sfc_common::GENERATION_LEASE_NS) + Duration::from_millis(50),
        );
        let topo_ref: &Topology = topo;
        let (update_ms, first) =
            traffic::apply_and_probe(&src, &dst, Duration::from_secs(5), || {
                runner.apply(topo_ref, system, hops)
            })
            .context("the update")?;
        let first = first.context("no probe reached the destination within 5 s of the update")?;
        report.add(order, name, hops, "update_ms", update_ms);
        report.add(order, name, hops, "update_first_packet_ms", first);
        line += &format!("update {update_ms:.1} ms, first packet {first:.1} ms  ");
    }
    let pps = along_the_chain(&topo.lab, hops, plan.window, || {
        traffic::packet_rate(&src, &dst, senders(), plan.warmup, plan.window)
    })?;
    report.add(order, name, hops, "udp64_pps", pps);
    check_interrupt()?;
    line += &format!("{:.3} Mpps", pps / 1e6);
    for mix in traffic::MIXES {
        let pps = along_the_chain(&topo.lab, hops, plan.window, || {
            traffic::packet_rate_mix(&src, &dst, mix, senders(), plan.warmup, plan.window)
        })
        .with_context(|| format!("flow mix {mix:?}"))?;
        report.add(order, name, hops, mix.metric(), pps);
        line += &format!(" / {:.3}", pps / 1e6);
        check_interrupt()?;
    }
    // The same frames arriving as XDP frames: the source's veth end hands them over to NAPI on
    // the node's end, which takes them only with GRO on (or an XDP program attached).
    let object = runner.object()?;
    topo.node("ethtool -K vm-src gro on")?;
    let xdp_pps = along_the_chain(&topo.lab, hops, plan.window, || {
        traffic::packet_rate_xdp_frames(object, &src, &dst, senders(), plan.warmup, plan.window)
    });
    topo.node("ethtool -K vm-src gro off")?;
    let xdp_pps = xdp_pps?;
    report.add(order, name, hops, "udp64_xdp_pps", xdp_pps);
    check_interrupt()?;
    let gbps = traffic::tcp_throughput(&topo.lab, plan.tcp_seconds, plan.tcp_bytes)?;
    report.add(order, name, hops, "tcp_gbps", gbps);
    check_interrupt()?;
    let conns = along_the_chain(&topo.lab, hops, plan.window, || {
        traffic::connection_rate(&src, &dst, senders(), plan.warmup, plan.window)
    })
    .context("connection rate")?;
    report.add(order, name, hops, "tcp_conn_per_s", conns);
    check_interrupt()?;
    let (p50, p99) = percentiles(traffic::ping_rtts(&topo.lab, plan.pings)?);
    report.add(order, name, hops, "rtt_p50_us", p50);
    report.add(order, name, hops, "rtt_p99_us", p99);
    line += &format!(
        " ({:.3} from XDP frames)  {gbps:.2} Gbit/s  {conns:.0} conn/s  rtt p50 {p50:.0} µs p99 {p99:.0} µs",
        xdp_pps / 1e6
    );
    Ok(line)
}

/// The median and the 99th percentile of round-trip times (at least one).
pub(super) fn percentiles(mut rtts: Vec<f64>) -> (f64, f64) {
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99))
}

/// Runs a packet-rate measurement and checks that its traffic followed the chain: every SF of
/// it forwarded (nearly) all that the destination received, or the figure would be
/// meaningless.
pub(super) fn along_the_chain(
    lab: &Lab,
    hops: usize,
    window: std::time::Duration,
    rate: impl FnOnce() -> Result<f64>,
) -> Result<f64> {
    let dst = lab.ns("dst");
    let sf_tx = |k: usize| netns::counters(&lab.ns(&format!("sf{k}")), "eth-out").map(|c| c.1);
    let before: Vec<u64> = (1..=hops).map(sf_tx).collect::<Result<_>>()?;
    let dst_before = netns::counters(&dst, "eth0")?.0;
    let pps = rate()?;
    let received = netns::counters(&dst, "eth0")?.0 - dst_before;
    for (k, b) in (1..=hops).zip(&before) {
        let forwarded = sf_tx(k)? - b;
        if (forwarded as f64) < 0.9 * received as f64 {
            bail!("sf{k} forwarded {forwarded} packets but the destination received {received}: the traffic did not follow the chain");
        }
    }
    // Far below any real rate (500 packets a second of the window: 100 in the smoke's
    // 200 ms, where a slow peer's first connections take a good part of it): packets are
    // being lost on the way, not forwarded slowly.
    if (received as f64) < 500.0 * window.as_secs_f64() {
        bail!("the destination received only {received} packets");
    }
    Ok(pps)
}
