//! sfc-daemon, the node agent: it loads and pins the steering programs, keeps the desired
//! state, turns it into map contents, and serves sfcctl and Prometheus.
//!
//! - [`agent`]: the one writer: desired state in, dataplane out; the state file; the lock
//!   that keeps one agent per node.
//! - [`dataplane`]: the kernel side: bpffs, pinned maps, program links, netlink.
//! - [`observe`]: counters, health, describe, trace and metrics.
//! - [`api`]: the socket sfcctl talks to.

pub mod agent;
pub mod api;
pub mod dataplane;
pub mod observe;

/// The compiled eBPF object (built by build.rs with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sfc"));

/// A test-only program (sfc-ebpf/src/test_probe.rs, built beside the steering program): a TC
/// classifier that counts the packets it sees per ifindex and hands them on (`TCX_NEXT`). Not
/// used by the daemon.
#[doc(hidden)]
pub static TEST_PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sfc-test-probe"));
