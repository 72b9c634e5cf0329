//! The demo topology spread over three nodes of a cluster: the source VM and SF1 on node n1,
//! SF2 on n2, SF3 and the destination VM on n3, each node's agent joined to one etcd. The
//! nodes' bridges share a tenant network (bridge `tbr` in the underlay namespace), as VMs of
//! one network on several compute nodes do; the chain's hops between nodes go over the
//! underlay (`br0` in `u`) in Geneve.
//!
//! ```text
//!   n1: src ── vm-src ┤br0├ sf1-in/out ── [SF1]        uplink 10.99.0.11 ┐
//!   n2:               ┤br0├ sf2-in/out ── [SF2]        uplink 10.99.0.12 ├ u: br0 (underlay, etcd)
//!   n3: dst ── vm-dst ┤br0├ sf3-in/out ── [SF3]        uplink 10.99.0.13 ┘
//!   each br0 ── tenant ── u: tbr (the tenant network)
//! ```

use std::time::Duration;

use anyhow::{bail, Result};

use crate::{
    cluster::{ClusterLab, Etcd},
    demo::{add_sf_links_on, address_vms, configure_sf, curl_from, DST_V4, SFS},
    lab::{wait_for, Lab},
};

/// The node (from 1) each SF of [`SFS`] is on.
pub const SF_NODE: [usize; 3] = [1, 2, 3];

pub struct Spread {
    /// Before the lab (fields drop in order): etcd runs in one of its namespaces.
    pub etcd: Etcd,
    pub cluster: ClusterLab,
}

impl Spread {
    /// Builds the topology, starts etcd and an agent on every node (`--node-ttl ttl`), no
    /// chain applied yet.
    pub fn build(tag: &str, ttl: u64) -> Result<Self> {
        Self::build_on(tag, ttl, ClusterLab::node_addr, &[])
    }

    /// The same with the tunnel address of node `i` given by `tunnel_address` (one of the
    /// node's underlay addresses: [`ClusterLab::node_addr`], or IPv6
    /// [`ClusterLab::node_addr6`]), and `extra` arguments for every agent.
    pub fn build_on(
        tag: &str,
        ttl: u64,
        tunnel_address: fn(usize) -> String,
        extra: &[&str],
    ) -> Result<Self> {
        let mut cluster = ClusterLab::new(tag, 3)?;
        let lab = &mut cluster.lab;
        lab.sh("u", "ip link add tbr type bridge && ip link set tbr up")?;
        for ns in ["src", "dst", "sf1", "sf2", "sf3"] {
            lab.add_ns(ns)?;
        }
        for i in 1..=3 {
            let node = format!("n{i}");
            lab.sh(&node, "ip link add br0 type bridge && ip link set br0 up")?;
            lab.veth(&node, "tenant", "u", &format!("t-{node}"))?;
            lab.sh(&node, "ip link set tenant master br0")?;
            lab.sh("u", &format!("ip link set t-{node} master tbr"))?;
        }
        lab.veth("n1", "vm-src", "src", "eth0")?;
        lab.sh("n1", "ip link set vm-src master br0")?;
        lab.veth("n3", "vm-dst", "dst", "eth0")?;
        lab.sh("n3", "ip link set vm-dst master br0")?;
        for (sf, node) in SFS.iter().zip(SF_NODE) {
            add_sf_links_on(lab, &format!("n{node}"), sf)?;
            configure_sf(lab, sf)?;
        }
        address_vms(lab)?;
        lab.spawn("dst", "python3 -m http.server 80 --bind ::")?;
        if wait_for(Duration::from_secs(15), || {
            curl_from(lab, DST_V4, None).ok().filter(|s| *s == 200)
        })
        .is_none()
        {
            bail!("the destination's web server did not answer within 15 s");
        }
        let etcd = cluster.start_etcd(1, None)?;
        for i in 1..=3 {
            let mut args = vec![
                "--etcd".to_string(),
                etcd.endpoints_arg(),
                "--node".into(),
                format!("n{i}"),
                "--tunnel-address".into(),
                tunnel_address(i),
                "--node-ttl".into(),
                ttl.to_string(),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            cluster.start_agent(i, &args)?;
        }
        Ok(Self { etcd, cluster })
    }

    pub fn lab(&self) -> &Lab {
        &self.cluster.lab
    }

    /// Applies `yaml` on node `i` and waits until every node steers it; the revision.
    pub fn apply(&self, i: usize, yaml: &str) -> Result<i64> {
        let revision = self.cluster.apply(i, yaml)?;
        self.cluster.wait_applied(&[1, 2, 3], revision)?;
        Ok(revision)
    }
}
