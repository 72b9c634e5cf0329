//! sfc: an eBPF service function chaining dataplane. This crate is the node agent
//! (`sfc-daemon`) and its command-line client (`sfcctl`).

pub mod agent;
pub mod capacity;
pub mod changes;
pub mod classifier;
pub mod compile;
pub mod counters;
pub mod dataplane;
pub mod describe;
pub mod document;
pub mod health;
pub mod links;
pub mod maglev;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod observe;
pub mod overlap;
pub mod protocol;
pub mod server;
pub mod stats_view;
pub mod store;
pub mod trace;
pub mod validate;

/// The compiled eBPF object (built by build.rs with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sfc"));
