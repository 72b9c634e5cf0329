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
pub mod cluster;
pub mod dataplane;
pub mod observe;
pub mod probe;

/// The compiled eBPF object (built by build.rs with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sfc"));

/// A test-only program (sfc-ebpf/src/test_probe.rs, built beside the steering program): a TC
/// classifier that counts the packets it sees per ifindex and hands them on (`TCX_NEXT`). Not
/// used by the daemon.
#[doc(hidden)]
pub static TEST_PROBE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sfc-test-probe"));

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use sfc_common::{ABI_VERSION, MAP_NAMES, MAP_PREFIX};

    /// The programs name their maps with literals (`#[map(name = "sfc_v12_...")]`: the macro
    /// takes nothing else), the agent with sfc-common's constants. A literal left behind when
    /// the ABI version is bumped, or a map the constants do not list, would load and then be
    /// missing, or pinned under a name nobody reads: it fails here instead.
    #[test]
    fn the_object_has_exactly_the_maps_sfc_common_names() {
        let object = aya_obj::Object::parse(crate::EBPF_OBJECT).expect("the object parses");
        // Sections of global data (`.rodata`, `.bss`), should the programs ever have any, are
        // maps the loader makes, not maps of the ABI.
        let in_object: BTreeSet<&str> = object
            .maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect();
        let named: BTreeSet<&str> = MAP_NAMES.into_iter().collect();
        assert_eq!(named.len(), MAP_NAMES.len(), "MAP_NAMES lists a map twice");
        let unlisted: Vec<&&str> = in_object.difference(&named).collect();
        let missing: Vec<&&str> = named.difference(&in_object).collect();
        assert!(
            unlisted.is_empty() && missing.is_empty(),
            "the object's maps and sfc_common::MAP_NAMES differ: in the object only: \
             {unlisted:?}; in MAP_NAMES only: {missing:?} (ABI version {ABI_VERSION}: every \
             #[map(name = ...)] in sfc-ebpf starts with {MAP_PREFIX:?} and has its constant \
             in MAP_NAMES)"
        );
        for name in &in_object {
            assert!(name.starts_with(MAP_PREFIX), "{name}");
        }
    }
}
