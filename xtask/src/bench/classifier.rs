//! The classifier's cost per packet through BPF_PROG_TEST_RUN, at growing numbers of
//! classifiers, for a packet that matches the last one (hit) and one that matches none (miss),
//! beside a program that does exactly one hash lookup (the bench's `sfc_bench_lookup`, with as
//! many keys) measured in the same run. The steering program is the one sfc-daemon attached to
//! the node's vm-src after `sfcctl apply -f` of the generated chain file: no daemon internals.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use sfc_lab::{
    frames,
    yaml::{bulk_address, bulk_chain, doc},
};

use super::{
    bpf, netns,
    systems::{sfcctl_apply, start_daemon, stop_daemon},
    topology::{self as topo, Topology},
};

pub struct Row {
    pub rules: usize,
    pub case: &'static str,
    pub ns: f64,
    pub baseline_ns: f64,
    pub apply_ms: f64,
}

/// One group (SF1) and `n` classifiers from vm-src, rule `i` matching TCP to
/// [`bulk_address`]`(i)`:443.
fn yaml(n: usize) -> String {
    [
        doc("PortPair", "CPP", "{ingress: sf1-in, egress: sf1-out}"),
        doc("PortPairGroup", "CPG", "{portPairs: [CPP]}"),
        bulk_chain(n, "c", "vm-src", "CPG"),
    ]
    .concat()
}

/// Ethernet + IPv4 (don't fragment) + TCP to `dst`:443, as the source would send it.
fn frame(dst: [u8; 4]) -> Vec<u8> {
    let tcp = frames::l4(40000, 443, 20);
    let ip = frames::ipv4(6, topo::octets(topo::SRC), dst, &[], 0x4000, &tcp);
    frames::eth(topo::SHARED_MAC, topo::SRC_MAC, 0x0800, &ip)
}

fn median_ns(runs: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(f()?.as_nanos() as f64);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

pub fn measure(
    topo: &mut Topology,
    object: &Path,
    sizes: &[usize],
    repeat: u32,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let node = topo.ns("node");
    for &n in sizes {
        super::check_interrupt()?;
        let daemon = start_daemon(topo, &[])?;
        let file = topo.lab.file("classifiers.yaml", &yaml(n))?;
        let started = Instant::now();
        sfcctl_apply(topo, &file).with_context(|| format!("applying {n} classifiers"))?;
        let apply_ms = started.elapsed().as_secs_f64() * 1e3;
        let baseline = bpf::load_lookup(object, (0..n).map(bulk_address))?;
        let lookup = bpf::tc_program(&baseline, "sfc_bench_lookup")?;
        let cases = [
            ("hit", frame(bulk_address(n - 1))),
            ("miss", frame([10, 255, 255, 255])),
        ];
        let results = netns::run_in(&node, || {
            let steering = bpf::attached_program("vm-src")?;
            let vm_src = netns::ifindex_here("vm-src")?;
            let mut out = Vec::new();
            for (case, frame) in &cases {
                let verdict = bpf::test_run(&steering, frame, vm_src, 1)?.return_value;
                let ns = median_ns(3, || {
                    Ok(bpf::test_run(&steering, frame, vm_src, repeat)?.duration)
                })?;
                let base = median_ns(3, || {
                    Ok(bpf::test_run(lookup, frame, vm_src, repeat)?.duration)
                })?;
                out.push((*case, verdict, ns, base));
            }
            Ok(out)
        })
        .with_context(|| format!("measuring at {n} classifiers"))?;
        for (case, verdict, ns, baseline_ns) in results {
            // A hit is steered (TC_ACT_REDIRECT), a miss passed on to the next program
            // (TC_ACT_UNSPEC): anything else would mean we timed the wrong path.
            let expected = if case == "hit" { 7 } else { -1i32 as u32 };
            anyhow::ensure!(
                verdict == expected,
                "{n} classifiers, {case}: verdict {verdict}, expected {expected}"
            );
            let row = Row {
                rules: n,
                case,
                ns,
                baseline_ns,
                apply_ms,
            };
            progress(&row);
            rows.push(row);
        }
        drop(baseline);
        stop_daemon(topo, daemon)?;
    }
    Ok(rows)
}
