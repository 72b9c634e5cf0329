//! The classifier's cost per packet through BPF_PROG_TEST_RUN, at growing numbers of
//! classifiers, for a packet that matches the last one (hit) and one that matches none (miss),
//! beside a program that does exactly one hash lookup (the bench's `sfc_bench_lookup`, with as
//! many keys) measured in the same run. The steering program is the one sfc-daemon attached to
//! the node's vm-src after `sfcctl apply -f` of the generated chain file: no daemon internals.

use std::{os::fd::AsFd, path::Path, time::Instant};

use anyhow::{Context, Result};

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

fn rule_addr(i: usize) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn yaml(n: usize) -> String {
    let mut y = String::with_capacity(n * 220);
    y += "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPair\nmetadata: {name: CPP}\nspec: {ingress: sf1-in, egress: sf1-out}\n---\n";
    y += "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortPairGroup\nmetadata: {name: CPG}\nspec: {portPairs: [CPP]}\n---\n";
    for i in 0..n {
        let [a, b, c, d] = rule_addr(i);
        y += &format!(
            "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: FlowClassifier\nmetadata: {{name: c{i}}}\nspec: {{logicalSourcePort: vm-src, protocol: tcp, destinationIpPrefix: {a}.{b}.{c}.{d}/32, destinationPortRange: '443'}}\n---\n"
        );
    }
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    y += &format!(
        "apiVersion: sfc.dataplane.dev/v1alpha1\nkind: PortChain\nmetadata: {{name: bulk}}\nspec: {{portPairGroups: [CPG], flowClassifiers: [{}]}}\n",
        names.join(", ")
    );
    y
}

/// Ethernet + IPv4 + TCP to `dst`:443, as the source would send it.
fn frame(dst: [u8; 4]) -> Vec<u8> {
    let mut f = topo::SHARED_MAC.to_vec();
    f.extend_from_slice(&[0x02, 0x5f, 0xc0, 0, 0, 0x0a, 0x08, 0x00]);
    let src: std::net::Ipv4Addr = topo::SRC.parse().expect("a constant address");
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
    tcp[12] = 0x50;
    f.extend_from_slice(&tcp);
    f
}

fn median_ns(runs: usize, mut f: impl FnMut() -> Result<u32>) -> Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(f()? as f64);
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
        let baseline = bpf::load_lookup(object, (0..n).map(rule_addr))?;
        let baseline_fd = bpf::program_fd(&baseline, "sfc_bench_lookup")?;
        let cases = [
            ("hit", frame(rule_addr(n - 1))),
            ("miss", frame([10, 255, 255, 255])),
        ];
        let results = netns::run_in(&node, || {
            let steering = bpf::attached_program("vm-src")?;
            let vm_src = netns::ifindex_here("vm-src")?;
            let mut out = Vec::new();
            for (case, frame) in &cases {
                let (verdict, _) = bpf::test_run(steering.as_fd(), frame, vm_src, 1)?;
                let ns = median_ns(3, || {
                    Ok(bpf::test_run(steering.as_fd(), frame, vm_src, repeat)?.1)
                })?;
                let base = median_ns(3, || {
                    Ok(bpf::test_run(baseline_fd.as_fd(), frame, vm_src, repeat)?.1)
                })?;
                out.push((*case, verdict, ns, base));
            }
            Ok(out)
        })
        .with_context(|| format!("measuring at {n} classifiers"))?;
        for (case, verdict, ns, baseline_ns) in results {
            // A hit is steered (TC_ACT_REDIRECT), a miss passed on (TC_ACT_OK): anything else
            // would mean we timed the wrong path.
            let expected = if case == "hit" { 7 } else { 0 };
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
