//! The eBPF side of the bench: finding the bench's own object (built next to the steering
//! program by aya-build), loading its programs, and BPF_PROG_TEST_RUN on any program fd.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap},
    programs::{tc::TcAttachType, ProgramFd, SchedClassifier, Xdp},
    Ebpf,
};

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
    _pad: [u8; 2],
}

unsafe impl aya::Pod for Next {}

/// One hard-wired hop for the upper-bound program: frames arriving on `from` go to `to_ifindex`
/// with destination MAC `mac`.
pub struct Hop {
    pub from: String,
    pub to_ifindex: u32,
    pub mac: [u8; 6],
}

/// Loads (and verifies) `sfc_bench_redirect`, not yet attached.
pub fn load_redirect(object: &Path) -> Result<Ebpf> {
    let mut ebpf = load(object)?;
    classifier(&mut ebpf, "sfc_bench_redirect")?;
    Ok(ebpf)
}

/// Fills the program's table and attaches it (TCX ingress) to every `from` interface in
/// namespace `ns`. Detached when `ebpf` is dropped.
pub fn attach_redirect(ebpf: &mut Ebpf, ns: &str, hops: &[Hop]) -> Result<()> {
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
                    _pad: [0; 2],
                },
                0,
            )?;
        }
        let program: &mut SchedClassifier = ebpf
            .program_mut("sfc_bench_redirect")
            .context("no program sfc_bench_redirect")?
            .try_into()?;
        for hop in hops {
            program
                .attach(&hop.from, TcAttachType::Ingress)
                .with_context(|| format!("attaching sfc_bench_redirect to {}", hop.from))?;
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

/// The fd of a loaded program of the object, for [`test_run`].
pub fn program_fd<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a ProgramFd> {
    let program: &SchedClassifier = ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?;
    Ok(program.fd()?)
}

/// The first TCX ingress program on `iface` of the calling thread's namespace (the steering
/// program the daemon attached).
pub fn attached_program(iface: &str) -> Result<ProgramFd> {
    let (_, programs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
        .with_context(|| format!("querying TCX ingress programs on {iface}"))?;
    let info = programs
        .first()
        .with_context(|| format!("no TCX ingress program on {iface}"))?;
    Ok(info.fd()?)
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
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
    let mut ctx = [0u32; 6];
    ctx[1] = frame.len() as u32;
    ctx[3] = ifindex;
    let mut attr = TestRunAttr {
        prog_fd: program.fd()?.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: 64,
        ..Default::default()
    };
    prog_test_run(&mut attr).context("with live frames")
}

const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `union bpf_attr` for BPF_PROG_TEST_RUN (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs a TC program `repeat` times on `frame` as if it arrived on `ifindex` (0: loopback) of
/// the calling thread's namespace. Returns (verdict, mean ns per run).
pub fn test_run(fd: BorrowedFd<'_>, frame: &[u8], ifindex: u32, repeat: u32) -> Result<(u32, u32)> {
    // struct __sk_buff: ifindex is at byte 40.
    let mut ctx = [0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut attr = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if ifindex > 1 {
        attr.ctx_size_in = ctx.len() as u32;
        attr.ctx_in = ctx.as_ptr() as u64;
    }
    prog_test_run(&mut attr)?;
    Ok((attr.retval, attr.duration))
}

fn prog_test_run(attr: &mut TestRunAttr) -> Result<()> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc != 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
