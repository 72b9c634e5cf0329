//! The classifier's cost per packet through BPF_PROG_TEST_RUN, for several kinds of
//! classifiers (port mixes) at growing numbers, beside a program that does exactly one hash
//! lookup (the bench's `sfc_bench_lookup`, with as many keys) measured in the same run. The
//! steering program is the one sfc-daemon attached to the node's vm-src after `sfcctl apply -f`
//! of the generated chain file: no daemon internals.
//!
//! Three cases per size:
//! - `decided`: a packet of a flow already decided on vm-src (one LRU lookup, the common case);
//! - `new flow`: a packet of a new flow on every run (classification, member choice, and the
//!   flow's records written), each run of its own frame, mean over the batch;
//! - `miss`: a packet no classifier matches (never remembered: classified on every packet,
//!   every shape probed, and for the source-port mix a binary search over every range).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use sfc_lab::{
    frames,
    yaml::{bulk_address, doc},
};

use super::{
    bpf, netns,
    systems::{sfcctl_apply, start_daemon, stop_daemon},
    topology::{self as topo, Topology},
};

pub struct Row {
    pub mix: &'static str,
    pub rules: usize,
    pub case: &'static str,
    pub ns: f64,
    pub baseline_ns: f64,
    pub apply_ms: f64,
}

/// What the classifiers of one measurement look like. Classifier `i` of the first three
/// matches TCP to [`bulk_address`]`(i)`; all enter at vm-src into one group (SF1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Destination port 443: one key per classifier.
    Exact,
    /// Destination ports 300:400: 11 keys (blocks) per classifier, two shapes.
    DestinationRange,
    /// Source ports 100:200 and destination ports 300:400 (networking-sfc's OVS driver
    /// classifier): the source range checked in each key's entry.
    BothRanges,
    /// Destination 10.0.0.0 port 443, and a source-port range of its own per classifier
    /// (5 ports apart by 6): every classifier shares one key, and its entry's ranges are
    /// searched (the bounded binary search at its deepest).
    SourceRanges,
    /// Destination port 443, to `bulk_address(i)` under a prefix of one of `k` lengths
    /// (/32, /31, ...): `k` match shapes, every one probed by a miss.
    Shapes(u8),
}

impl Mix {
    pub const ALL: [Mix; 6] = [
        Mix::Exact,
        Mix::Shapes(4),
        Mix::Shapes(16),
        Mix::DestinationRange,
        Mix::BothRanges,
        Mix::SourceRanges,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mix::Exact => "dport 443",
            Mix::Shapes(4) => "dport 443, 4 prefix lengths",
            Mix::Shapes(_) => "dport 443, 16 prefix lengths",
            Mix::DestinationRange => "dport 300:400",
            Mix::BothRanges => "sport 100:200, dport 300:400",
            Mix::SourceRanges => "one key, n sport ranges",
        }
    }

    /// The destination prefix length of classifier `i`.
    fn prefix_len(self, i: usize) -> u8 {
        match self {
            Mix::Shapes(k) => 32 - (i % k as usize) as u8,
            _ => 32,
        }
    }

    /// Source and destination ports of classifier `i`.
    fn ports(self, i: usize) -> (Option<(u16, u16)>, (u16, u16)) {
        match self {
            Mix::Exact | Mix::Shapes(_) => (None, (443, 443)),
            Mix::DestinationRange => (None, (300, 400)),
            Mix::BothRanges => (Some((100, 200)), (300, 400)),
            Mix::SourceRanges => {
                let lo = 1024 + 6 * i as u16;
                (Some((lo, lo + 4)), (443, 443))
            }
        }
    }

    fn destination(self, i: usize) -> [u8; 4] {
        match self {
            Mix::SourceRanges => bulk_address(0),
            _ => bulk_address(i),
        }
    }

    /// The largest size this mix is measured at: a source-port range of its own per
    /// classifier fits 10 000 times in the port space, and the ranges' blocks multiply the
    /// entries.
    fn max_rules(self) -> usize {
        match self {
            Mix::Exact | Mix::Shapes(_) => usize::MAX,
            _ => 10_000,
        }
    }

    /// The smallest size this mix is measured at: as many classifiers as it has shapes.
    fn min_rules(self) -> usize {
        match self {
            Mix::Shapes(k) => k as usize,
            _ => 1,
        }
    }

    /// One group (SF1) and `n` classifiers from vm-src in one chain.
    fn yaml(self, n: usize) -> String {
        let mut docs = vec![
            doc("PortPair", "CPP", "{ingress: sf1-in, egress: sf1-out}"),
            doc("PortPairGroup", "CPG", "{portPairs: [CPP]}"),
        ];
        let range = |(lo, hi): (u16, u16)| format!("'{lo}:{hi}'");
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let len = self.prefix_len(i);
            let network = u32::from_be_bytes(self.destination(i)) & (u32::MAX << (32 - len));
            let [a, b, c, d] = network.to_be_bytes();
            let (sport, dport) = self.ports(i);
            let sport = sport
                .map(|s| format!("sourcePortRange: {}, ", range(s)))
                .unwrap_or_default();
            let name = format!("c{i}");
            docs.push(doc(
                "FlowClassifier",
                &name,
                &format!("{{logicalSourcePort: vm-src, protocol: tcp, destinationIpPrefix: {a}.{b}.{c}.{d}/{len}, {sport}destinationPortRange: {}}}", range(dport)),
            ));
            names.push(name);
        }
        docs.push(doc(
            "PortChain",
            "classifiers",
            &format!(
                "{{portPairGroups: [CPG], flowClassifiers: [{}]}}",
                names.join(", ")
            ),
        ));
        docs.concat()
    }

    /// A packet of classifier `i`, from source address `src` (distinct flows differ there).
    fn hit(self, i: usize, src: [u8; 4]) -> Vec<u8> {
        let (sport, dport) = self.ports(i);
        let sport = sport.map_or(40000, |(lo, hi)| lo + (hi - lo) / 2);
        frame(
            src,
            self.destination(i),
            sport,
            dport.0 + (dport.1 - dport.0) / 2,
        )
    }

    /// A packet no classifier takes, that gets as far as one can: to an address of no
    /// classifier, or, where all share one key, to that key with a source port between the
    /// last two ranges.
    fn miss(self, n: usize) -> Vec<u8> {
        match self {
            Mix::SourceRanges => {
                let (Some((_, hi)), dport) = self.ports(n - 1) else {
                    unreachable!("source ranges have a source range")
                };
                frame(topo::octets(topo::SRC), bulk_address(0), hi + 1, dport.0)
            }
            _ => frame(topo::octets(topo::SRC), [10, 255, 255, 255], 40000, 443),
        }
    }
}

/// Ethernet + IPv4 (don't fragment) + TCP, as the source would send it.
fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let tcp = frames::l4(sport, dport, 20);
    let ip = frames::ipv4(6, src, dst, &[], 0x4000, &tcp);
    frames::eth(topo::SHARED_MAC, topo::SRC_MAC, 0x0800, &ip)
}

/// Source address `k` of a batch of new flows (198.19.0.0/16: never the bench's own).
fn new_flow_source(k: usize) -> [u8; 4] {
    [198, 19, (k >> 8) as u8, k as u8]
}

/// New flows per batch; three batches, each of flows never seen before.
const NEW_FLOWS: usize = 2000;

fn median_ns(runs: usize, mut f: impl FnMut(usize) -> Result<Duration>) -> Result<f64> {
    let mut v = Vec::with_capacity(runs);
    for run in 0..runs {
        v.push(f(run)?.as_nanos() as f64);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// The mean duration of one run over `frames`, each run once.
fn mean_once(
    program: &aya::programs::SchedClassifier,
    frames: &[Vec<u8>],
    ifindex: u32,
) -> Result<Duration> {
    let mut total = Duration::ZERO;
    for f in frames {
        total += bpf::test_run(program, f, ifindex, 1)?.duration;
    }
    Ok(total / frames.len() as u32)
}

/// TC_ACT_REDIRECT: steered into SF1.
const STEERED: u32 = 7;
/// TC_ACT_UNSPEC: passed on to the next program.
const PASSED: u32 = -1i32 as u32;

pub fn measure(
    topo: &mut Topology,
    object: &Path,
    sizes: &[usize],
    repeat: u32,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let node = topo.ns("node");
    for mix in Mix::ALL {
        let measured = sizes
            .iter()
            .map(|&n| n.max(mix.min_rules()))
            .filter(|&n| n <= mix.max_rules());
        for n in measured {
            super::check_interrupt()?;
            let daemon = start_daemon(topo, &[])?;
            let file = topo.lab.file("classifiers.yaml", &mix.yaml(n))?;
            let started = Instant::now();
            sfcctl_apply(topo, &file)
                .with_context(|| format!("applying {n} classifiers ({})", mix.name()))?;
            let apply_ms = started.elapsed().as_secs_f64() * 1e3;
            let baseline = bpf::load_lookup(object, (0..n).map(bulk_address))?;
            let lookup = bpf::tc_program(&baseline, "sfc_bench_lookup")?;
            let decided = mix.hit(n - 1, topo::octets(topo::SRC));
            let miss = mix.miss(n);
            let batches: Vec<Vec<Vec<u8>>> = (0..3)
                .map(|b| {
                    (0..NEW_FLOWS)
                        .map(|k| {
                            mix.hit((b * NEW_FLOWS + k) % n, new_flow_source(b * NEW_FLOWS + k))
                        })
                        .collect()
                })
                .collect();
            let results = netns::run_in(&node, || {
                let steering = bpf::attached_program("vm-src")?;
                let vm_src = netns::ifindex_here("vm-src")?;
                let mut out = Vec::new();
                for (case, frame, expected) in [("decided", &decided, STEERED), ("miss", &miss, PASSED)] {
                    let verdict = bpf::test_run(&steering, frame, vm_src, 1)?.return_value;
                    anyhow::ensure!(verdict == expected, "{case}: verdict {verdict}, expected {expected}: the wrong path would be timed");
                    let ns = median_ns(3, |_| Ok(bpf::test_run(&steering, frame, vm_src, repeat)?.duration))?;
                    let base = median_ns(3, |_| Ok(bpf::test_run(lookup, frame, vm_src, repeat)?.duration))?;
                    out.push((case, ns, base));
                }
                let first = bpf::test_run(&steering, &batches[0][0], vm_src, 1)?.return_value;
                anyhow::ensure!(first == STEERED, "new flow: verdict {first}, expected {STEERED}");
                // The first frame of batch 0 was just decided: that batch starts at its second.
                let ns = median_ns(3, |b| {
                    let skip = usize::from(b == 0);
                    mean_once(&steering, &batches[b][skip..], vm_src)
                })?;
                let base = median_ns(3, |b| mean_once(lookup, &batches[b], vm_src))?;
                out.push(("new flow", ns, base));
                Ok(out)
            })
            .with_context(|| format!("measuring {} at {n} classifiers", mix.name()))?;
            for (case, ns, baseline_ns) in results {
                let row = Row {
                    mix: mix.name(),
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
    }
    Ok(rows)
}
