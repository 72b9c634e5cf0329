//! What the tests (`tests/`) and the bench (`cargo xtask bench`) share.
//!
//! - [`lab`]: labs of network namespaces: namespaces, veths, processes, the daemon and sfcctl;
//! - [`cluster`]: several node agents on one underlay, a real etcd and its certificates;
//! - [`demo`]: the networking-sfc demo topology, built in a lab;
//! - [`spread`]: the same topology spread over three nodes of a cluster;
//! - [`stream`]: a numbered UDP stream through a chain, for make-before-break tests;
//! - [`yaml`]: chain configuration documents, as `sfcctl apply -f` reads them;
//! - [`frames`]: Ethernet frames byte by byte, for BPF_PROG_TEST_RUN.

pub mod cluster;
pub mod demo;
pub mod frames;
pub mod lab;
pub mod spread;
pub mod stream;
pub mod yaml;
