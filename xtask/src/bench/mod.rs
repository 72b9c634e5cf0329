//! `cargo xtask bench`: this project's steering against its peers on one chain topology, in
//! interleaved rounds (every system once per round, then again), plus the classifier's cost
//! per packet through BPF_PROG_TEST_RUN, plus chains across two nodes against VXLAN wired by
//! hand (across.rs). `--smoke` is the same code with one round, one hop and
//! short durations, writing to a temp dir; `cargo xtask test` runs it so that it never rots.

mod across;
mod bpf;
mod classifier;
mod netns;
mod ovs;
mod report;
mod slot;
mod systems;
mod topology;
mod traffic;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::json;

use report::Report;
use systems::{Runner, System};
use topology::Topology;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once Ctrl-C (or SIGTERM) arrived, so that the topology is dropped and cleaned up.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

/// `cargo xtask bench` options (all optional: the full run by default).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Options {
    /// A few seconds: one round, one hop, short durations, results in a temp dir.
    #[arg(long)]
    pub smoke: bool,
    /// Interleaved rounds (default 5; 1 with --smoke).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Systems to run, comma-separated (default: all): plain, sfc-tc, sfc-xdp, tc-mirred,
    /// policy-routing, ovs-netdev, upper-bound, upper-bound-flows, upper-bound-xdp on one node;
    /// sfc-across, vxlan-mirred, vxlan-routing on two.
    #[arg(long, value_delimiter = ',')]
    pub systems: Option<Vec<String>>,
    /// Chain lengths, comma-separated (default 1,2,4,8 on one node and 1,2,4 on two; 1 and 2
    /// with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub hops: Option<Vec<usize>>,
    /// Output directory (default bench/results, or a temp dir with --smoke).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Leave out the classifier cost measurement.
    #[arg(long)]
    pub skip_classifier: bool,
}

/// Durations and sizes of one run.
struct Plan {
    rounds: usize,
    hops: Vec<usize>,
    systems: Vec<System>,
    /// The systems measured on two nodes, and at which chain lengths.
    across: Vec<across::System>,
    across_hops: Vec<usize>,
    warmup: Duration,
    window: Duration,
    tcp_seconds: u32,
    tcp_bytes: Option<&'static str>,
    pings: usize,
    classifier_sizes: Vec<usize>,
    repeat: u32,
    out: PathBuf,
}

impl Plan {
    fn new(opts: &Options, root: &Path) -> Result<Self> {
        let (mut systems, mut across) = (Vec::new(), Vec::new());
        match &opts.systems {
            Some(names) => {
                for name in names {
                    if let Some(a) = across::System::from_name(name) {
                        across.push(a);
                    } else {
                        systems.push(System::from_name(name).with_context(|| {
                            let two: Vec<&str> = across::ALL.iter().map(|s| s.name()).collect();
                            format!("or on two nodes: {}", two.join(", "))
                        })?);
                    }
                }
            }
            None => {
                systems = systems::ALL.to_vec();
                across = across::ALL.to_vec();
            }
        }
        let (hops, across_hops) = match (&opts.hops, opts.smoke) {
            (Some(hops), _) => (hops.clone(), hops.clone()),
            (None, true) => (vec![1], vec![2]),
            (None, false) => (vec![1, 2, 4, 8], vec![1, 2, 4]),
        };
        if hops.is_empty() || hops.iter().any(|h| !(1..=8).contains(h)) {
            bail!("hops must be between 1 and 8");
        }
        let out = match &opts.out {
            Some(out) => out.clone(),
            None if opts.smoke => {
                std::env::temp_dir().join(format!("sfc-bench-smoke-{}", std::process::id()))
            }
            None => root.join("bench/results"),
        };
        Ok(if opts.smoke {
            Plan {
                rounds: opts.rounds.unwrap_or(1),
                hops,
                systems,
                across,
                across_hops,
                warmup: Duration::from_millis(50),
                window: Duration::from_millis(200),
                tcp_seconds: 1,
                tcp_bytes: Some("2M"),
                pings: 20,
                classifier_sizes: vec![1, 100],
                repeat: 10_000,
                out,
            }
        } else {
            Plan {
                rounds: opts.rounds.unwrap_or(5),
                hops,
                systems,
                across,
                across_hops,
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(1200),
                tcp_seconds: 2,
                tcp_bytes: None,
                pings: 400,
                classifier_sizes: vec![1, 100, 10_000, 100_000],
                repeat: 200_000,
                out,
            }
        })
    }

    fn config(&self) -> serde_json::Value {
        json!({
            "rounds": self.rounds,
            "hops": self.hops,
            "systems": self.systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "across_systems": self.across.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "across_hops": self.across_hops,
            "across": format!("the chain's SFs alternate between two nodes (SF1 on n1, SF2 on n2, ...; the source on n1, the destination on n2) on an underlay bridge of MTU {}; 64-byte UDP as above, one flow per sender and a new flow every frame; TCP and RTT as above", across::UNDERLAY_MTU),
            "udp": format!("64-byte frames from {} sendmmsg sender threads, {:?} warm-up, {:?} counted at the destination", senders(), self.warmup, self.window),
            "flow_mixes": format!("64-byte frames from {} packet-socket sender threads (sendmmsg): one flow per sender; 10 000 flows, each sender cycling through its share; a new flow every frame (source port stepping through 64 000 values, the destination port moving on each lap); {:?} warm-up, {:?} counted at the destination", senders(), self.warmup, self.window),
            "tcp_connections": format!("{} clients, each in a loop: connect, an {}-byte request, a {}-byte answer, the server closes; {:?} warm-up, {:?} counted", senders(), traffic::REQUEST.len(), traffic::ANSWER.len(), self.warmup, self.window),
            "udp_xdp": format!("the same frames sent as XDP frames out of the source's NIC (BPF_PROG_TEST_RUN, live frames, XDP_TX) by {} threads as fast as they can, {:?} warm-up, {:?} counted at the destination", senders(), self.warmup, self.window),
            "tcp": match self.tcp_bytes { Some(b) => format!("iperf3 -n {b}"), None => format!("iperf3 -t {}", self.tcp_seconds) },
            "latency": format!("{} pings at 1 ms intervals", self.pings),
            "classifier_repeat": self.repeat,
        })
    }
}

fn senders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(opts: Options, root: &Path, target_dir: &Path, bin_dir: &Path) -> Result<()> {
    let started = Instant::now();
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let plan = Plan::new(&opts, root)?;
    let mut report = Report::default();
    if !plan.systems.is_empty() || !opts.skip_classifier {
        one_node(&plan, &opts, target_dir, bin_dir, &mut report)?;
    }
    if !plan.across.is_empty() {
        // Listed after the one-node systems.
        across::run(&plan, &mut report, plan.systems.len())?;
        println!("==> removing the two-node topology");
    }
    report.write(&plan.out, plan.config())?;
    println!(
        "==> results in {} (latest.json, latest.md, packet-rate.png); {:.1} s in all",
        plan.out.display(),
        started.elapsed().as_secs_f64()
    );
    if opts.smoke && !report.errors.is_empty() {
        bail!(
            "{} measurement(s) failed:\n{}",
            report.errors.len(),
            report.errors.join("\n")
        );
    }
    Ok(())
}

/// One system at one chain length in one round: says which on a line, then what it measured
/// or why it failed; a failure is recorded in the report and the run goes on, unless it was
/// interrupted.
fn measure_slot(
    plan: &Plan,
    report: &mut Report,
    round: usize,
    system: &str,
    hops: usize,
    measure: impl FnOnce(&mut Report) -> Result<String>,
) -> Result<()> {
    check_interrupt()?;
    print!(
        "    round {round}/{}  {system:<15} hops {hops}  ",
        plan.rounds
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    match measure(report) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            check_interrupt()?;
            println!("FAILED: {e:#}");
            report
                .errors
                .push(format!("{system} hops {hops} round {round}: {e:#}"));
        }
    }
    Ok(())
}

/// The one-node systems in interleaved rounds, then the classifier's cost.
fn one_node(
    plan: &Plan,
    opts: &Options,
    target_dir: &Path,
    bin_dir: &Path,
    report: &mut Report,
) -> Result<()> {
    let object = bpf::find_object(target_dir);
    let sfs = *plan.hops.iter().max().unwrap_or(&1);
    println!("==> building the topology: source, destination, node and {sfs} SF namespaces");
    let built = Instant::now();
    let mut topo = Topology::build(sfs).context("building the bench topology")?;
    println!("    done in {:.1} s", built.elapsed().as_secs_f64());
    let mut runner = Runner::new(
        object.as_ref().cloned().map_err(|e| format!("{e:#}")),
        systems::xdp_args(bin_dir),
    );
    let mut systems = Vec::new();
    for &system in &plan.systems {
        if let Some(why) = runner.unavailable(&mut topo, system) {
            println!("    {:<15} skipped: {why}", system.name());
            report.skipped.push((system.name().into(), why));
        } else {
            systems.push(system);
        }
    }
    let measured = (|| -> Result<()> {
        for round in 1..=plan.rounds {
            for &hops in &plan.hops {
                for (order, &system) in systems.iter().enumerate() {
                    // plain has no chain: once per round, as hops 0.
                    if system == System::Plain && hops != plan.hops[0] {
                        continue;
                    }
                    let hops = if system == System::Plain { 0 } else { hops };
                    measure_slot(plan, report, round, system.name(), hops, |report| {
                        slot::run(&mut topo, &mut runner, plan, report, order, system, hops)
                    })?;
                }
            }
        }
        match (&object, opts.skip_classifier) {
            (_, true) => {}
            (Ok(object), false) => {
                println!("==> classifier cost through BPF_PROG_TEST_RUN (sfcctl apply, then the attached program)");
                report.classifier = classifier::measure(
                    &mut topo,
                    object,
                    &plan.classifier_sizes,
                    plan.repeat,
                    |r| {
                        println!(
                            "    {:>6} classifiers  {:<29}  {:<8}  {:>6.1} ns/packet  (one hash lookup {:>5.1} ns)  apply {:.0} ms",
                            r.rules, r.mix, r.case, r.ns, r.baseline_ns, r.apply_ms
                        )
                    },
                )?;
            }
            (Err(e), false) => bail!("classifier cost: {e:#}"),
        }
        Ok(())
    })();
    drop(runner);
    println!("==> removing the topology");
    drop(topo);
    measured
}
