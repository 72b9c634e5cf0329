//! The eBPF side of the bench: finding the bench's own object (built next to the steering
//! program by aya-build), loading its programs, and BPF_PROG_TEST_RUN (aya's [`TestRun`]) on
//! them and on the steering program the daemon attached.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap},
    programs::{
        tc::TcAttachType, SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, TestRunResult,
        Xdp, XdpMode,
    },
    Ebpf,
};
use sfc_lab::frames;

use super::netns;

/// aya-build copies every eBPF binary of sfc-ebpf into sfc-daemon's OUT_DIR; the bench's is
/// `sfc-bench`. Several OUT_DIRs may exist (one per build configuration): take the newest.
pub fn find_object(target_dir: &Path) -> Result<PathBuf> {
    let build = target_dir.join("release/build");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in
        std::fs::read_dir(&build).with_context(|| format!("reading {}", build.display()))?
    {
        let entry = entry?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("sfc-daemon-")
        {
            continue;
        }
        let candidate = entry.path().join("out/sfc-bench");
        if let Ok(meta) = candidate.metadata() {
            let modified = meta.modified()?;
            if best.as_ref().is_none_or(|(t, _)| modified > *t) {
                best = Some((modified, candidate));
            }
        }
    }
    match best {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no sfc-bench eBPF object under {}/sfc-daemon-*/out; run `cargo build --release -p sfc-daemon`",
            build.display()
        ),
    }
}

fn load(object: &Path) -> Result<Ebpf> {
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    Ebpf::load(&bytes).with_context(|| format!("loading {}", object.display()))
}

fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name} in the bench object"))?
        .try_into()?;
    program.load().with_context(|| format!("loading {name}"))?;
    Ok(program)
}

/// Matches `Next` in sfc-ebpf/src/bench.rs.
#[repr(C)]
#[derive(Clone, Copy)]
struct Next {
    ifindex: u32,
    mac: [u8; 6],
    entry: u8,
    _pad: u8,
}

unsafe impl aya::Pod for Next {}

/// One hard-wired hop for the upper-bound program: frames arriving on `from` go to `to_ifindex`
/// with destination MAC `mac`; `entry`: the chain starts there.
pub struct Hop {
    pub from: String,
    pub to_ifindex: u32,
    pub mac: [u8; 6],
    pub entry: bool,
}

/// The hard-wired redirect programs (see sfc-ebpf/src/bench.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Tc,
    /// TC, with a flow table written where the chain starts and read at every hop.
    TcFlows,
    Xdp,
}

impl Redirect {
    fn program(self) -> &'static str {
        match self {
            Redirect::Tc => "sfc_bench_redirect",
            Redirect::TcFlows => "sfc_bench_redirect_flows",
            Redirect::Xdp => "sfc_bench_redirect_xdp",
        }
    }
}

/// Loads (and verifies) a hard-wired redirect program, not yet attached.
pub fn load_redirect(object: &Path, redirect: Redirect) -> Result<Ebpf> {
    let mut ebpf = load(object)?;
    let name = redirect.program();
    if redirect == Redirect::Xdp {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the bench object"))?
            .try_into()?;
        program.load().with_context(|| format!("loading {name}"))?;
    } else {
        classifier(&mut ebpf, name)?;
    }
    Ok(ebpf)
}

/// Fills the program's table and attaches it (TCX ingress, or native XDP) to every `from`
/// interface in namespace `ns`. Detached when `ebpf` is dropped.
pub fn attach_redirect(ebpf: &mut Ebpf, ns: &str, hops: &[Hop], redirect: Redirect) -> Result<()> {
    let name = redirect.program();
    netns::run_in(ns, || {
        // The table first, so that the first frame the program sees is steered.
        let mut next: Array<_, Next> = Array::try_from(
            ebpf.map_mut("sfc_bench_next")
                .context("no map sfc_bench_next")?,
        )?;
        for hop in hops {
            let from = netns::ifindex_here(&hop.from)?;
            next.set(
                from,
                Next {
                    ifindex: hop.to_ifindex,
                    mac: hop.mac,
                    entry: hop.entry as u8,
                    _pad: 0,
                },
                0,
            )?;
        }
        let program = ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name}"))?;
        if redirect == Redirect::Xdp {
            let program: &mut Xdp = program.try_into()?;
            for hop in hops {
                program
                    .attach(&hop.from, XdpMode::Driver)
                    .with_context(|| format!("attaching {name} to {}", hop.from))?;
            }
        } else {
            let program: &mut SchedClassifier = program.try_into()?;
            for hop in hops {
                program
                    .attach(&hop.from, TcAttachType::Ingress)
                    .with_context(|| format!("attaching {name} to {}", hop.from))?;
            }
        }
        Ok(())
    })
}

/// Loads `sfc_bench_lookup` with `keys` (IPv4 addresses) in its hash map.
pub fn load_lookup(object: &Path, keys: impl Iterator<Item = [u8; 4]>) -> Result<Ebpf> {
    let mut ebpf = load(object)?;
    classifier(&mut ebpf, "sfc_bench_lookup")?;
    let mut hash: HashMap<_, u32, u32> = HashMap::try_from(
        ebpf.map_mut("sfc_bench_hash")
            .context("no map sfc_bench_hash")?,
    )?;
    for key in keys {
        hash.insert(u32::from_ne_bytes(key), 1, 0)?;
    }
    Ok(ebpf)
}

/// A loaded TC program of the object, for [`test_run`].
pub fn tc_program<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}

/// The first TCX ingress program on `iface` of the calling thread's namespace (the steering
/// program the daemon attached), for [`test_run`]. Dropping it leaves it attached.
pub fn attached_program(iface: &str) -> Result<SchedClassifier> {
    let (_, programs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
        .with_context(|| format!("querying TCX ingress programs on {iface}"))?;
    let info = programs
        .into_iter()
        .next()
        .with_context(|| format!("no TCX ingress program on {iface}"))?;
    let name = info.name_as_str().unwrap_or("steering").to_string();
    Ok(SchedClassifier::from_program_info(info, name.into())?)
}

/// How many TCX ingress programs are attached to `ifaces` in namespace `ns`.
pub fn tcx_attached(ns: &str, ifaces: &[String]) -> Result<usize> {
    netns::run_in(ns, || {
        let mut n = 0;
        for iface in ifaces {
            n += SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
                .with_context(|| format!("querying TCX ingress programs on {iface}"))?
                .1
                .len();
        }
        Ok(n)
    })
}

/// Loads `sfc_bench_tx` (XDP_TX for every frame).
pub fn load_tx(object: &Path) -> Result<Ebpf> {
    let mut ebpf = load(object)?;
    let program: &mut Xdp = ebpf
        .program_mut("sfc_bench_tx")
        .context("no program sfc_bench_tx in the bench object")?
        .try_into()?;
    program.load().context("loading sfc_bench_tx")?;
    Ok(ebpf)
}

/// Sends `repeat` copies of `frame` out of `ifindex` (of the calling thread's namespace) as
/// XDP frames: `sfc_bench_tx` through BPF_PROG_TEST_RUN with live frames.
pub fn send_live_frames(ebpf: &Ebpf, frame: &[u8], ifindex: u32, repeat: u32) -> Result<()> {
    let program: &Xdp = ebpf
        .program("sfc_bench_tx")
        .context("no program sfc_bench_tx")?
        .try_into()?;
    // Live frames need the context's data_end, and leave through its ingress_ifindex.
    let ctx = frames::xdp_ctx(frame.len(), ifindex);
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN with live frames")?;
    Ok(())
}

/// Runs a TC program `repeat` times on `frame` as if it arrived on `ifindex` (0: loopback) of
/// the calling thread's namespace: its verdict, and the mean duration of one run.
pub fn test_run(
    program: &SchedClassifier,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> Result<TestRunResult> {
    let ctx = frames::skb_ctx(ifindex);
    program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: (ifindex > 1).then_some(&ctx[..]),
            repeat,
            ..TestRunOptions::new()
        })
        .context("BPF_PROG_TEST_RUN")
}
