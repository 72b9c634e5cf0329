//! What the BPF_PROG_TEST_RUN tests share (datapath.rs, fuzz_packets.rs): a sandbox holding the
//! real programs, with maps filled by the real agent code from a chain YAML, in a network
//! namespace private to the test's thread; running a frame through either program; the stats.
// Each test binary compiles this module for itself and uses a part of it.
#![allow(dead_code)]

use std::{path::PathBuf, process::Command};

use aya::programs::{ProgramError, TestRun, TestRunOptions};
use sfc_config::{model::State, plan::plan};
use sfc_daemon::dataplane::{netlink::read_interfaces, tables::Tables, Dataplane, Mode};
use sfc_lab::{frames, lab::run};

/// A private network namespace (for this thread) and bpffs mount; both undone on drop.
pub struct Sandbox {
    // Dropped in this order: the maps and programs, then the mount.
    pub dataplane: Dataplane,
    pub bpffs: Bpffs,
}

/// A bpffs mount, undone on drop (also when setting up the sandbox panics half-way).
pub struct Bpffs(pub PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Moves this thread into a new network namespace, creates a veth pair `NAME` / `NAME-p` for
/// each of `veths` (both ends up), opens the dataplane in `mode` on a fresh bpffs and applies
/// `yaml`.
pub fn sandbox(yaml: &str, mode: Mode, veths: &[&str]) -> Sandbox {
    sandbox_with(yaml, mode, veths, Tables::default())
}

/// The same with tables of the given sizes.
pub fn sandbox_with(yaml: &str, mode: Mode, veths: &[&str], tables: Tables) -> Sandbox {
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET)"
    );
    // No traffic of the namespace's own (IPv6 neighbour discovery and MLD from the veths)
    // may reach the programs: the tests count what the datapath counts.
    for conf in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1").unwrap();
    }
    run(Command::new("ip").args(["link", "set", "lo", "up"])).unwrap();
    for name in veths {
        let peer = format!("{name}-p");
        run(Command::new("ip").args(["link", "add", name, "type", "veth", "peer", "name", &peer]))
            .unwrap();
        // Both ends up: a veth whose peer is down has no carrier and takes no redirect.
        for end in [name, &peer.as_str()] {
            run(Command::new("ip").args(["link", "set", end, "up"])).unwrap();
        }
    }
    let bpffs = std::env::temp_dir().join(
        format!(
            "sfc-dp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    );
    std::fs::create_dir_all(&bpffs).unwrap();
    run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs)).unwrap();
    let bpffs = Bpffs(bpffs);
    let mut sb = Sandbox {
        dataplane: Dataplane::open(&bpffs.0, mode, tables).unwrap(),
        bpffs,
    };
    apply(&mut sb, yaml);
    sb
}

/// Plans `yaml` against the namespace's interfaces and makes it the active generation.
pub fn apply(sb: &mut Sandbox, yaml: &str) {
    let interfaces = read_interfaces().unwrap();
    let (_, _, image) = plan(
        &State::default(),
        &[("chain.yaml".into(), yaml.into())],
        &interfaces,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    sb.dataplane.apply(&image, &interfaces).unwrap();
}

/// The MAC of `iface`'s veth peer (`IFACE-p`): what a member behind `iface` is reached at.
pub fn peer_mac(iface: &str) -> [u8; 6] {
    // Not /sys: it shows the namespace sysfs was mounted in, not this thread's.
    let text =
        run(Command::new("ip").args(["-br", "link", "show", &format!("{iface}-p")])).unwrap();
    let mac = text
        .split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5)
        .unwrap();
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

pub fn ifindex(iface: &str) -> u32 {
    let out = run(Command::new("ip").args(["-o", "link", "show", iface])).unwrap();
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// Runs the TC program on `frame` as if it arrived on `ifindex` (0: loopback). Returns the
/// verdict and the frame as the program left it.
pub fn run_on(sb: &mut Sandbox, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    try_run_on(sb, frame, ifindex).unwrap()
}

/// [`run_on`], with the test runner's refusal (or the program's failure) as an error.
pub fn try_run_on(
    sb: &mut Sandbox,
    frame: &[u8],
    ifindex: u32,
) -> Result<(u32, Vec<u8>), ProgramError> {
    let ctx = frames::skb_ctx(ifindex);
    try_run_program(
        sb.dataplane.program().unwrap(),
        frame,
        (ifindex > 1).then_some(&ctx),
    )
}

/// The same through the XDP program.
pub fn run_xdp_on(sb: &mut Sandbox, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    try_run_xdp_on(sb, frame, ifindex).unwrap()
}

pub fn try_run_xdp_on(
    sb: &mut Sandbox,
    frame: &[u8],
    ifindex: u32,
) -> Result<(u32, Vec<u8>), ProgramError> {
    let ctx = frames::xdp_ctx(frame.len(), ifindex);
    try_run_program(
        sb.dataplane.xdp_program().unwrap(),
        frame,
        (ifindex > 1).then_some(&ctx),
    )
}

pub fn try_run_program<P>(
    program: &P,
    frame: &[u8],
    ctx: Option<&[u8]>,
) -> Result<(u32, Vec<u8>), ProgramError>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = aya::programs::TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx,
        ..TestRunOptions::new()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// The datapath counters, summed over CPUs, in `sfc_common::stat::NAMES` order.
pub fn stats(sb: &Sandbox) -> Vec<u64> {
    sb.dataplane.stats().unwrap()
}

pub fn stat(values: &[u64], name: &str) -> u64 {
    let i = sfc_common::stat::NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap();
    values[i]
}
