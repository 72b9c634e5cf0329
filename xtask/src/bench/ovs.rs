//! Open vSwitch with the userspace (netdev) datapath, run by the bench itself inside the node
//! namespace with its own database, run and log directories (no system service is touched; the
//! kernel has no openvswitch module, which the netdev datapath does not need).
//!
//! The flows follow what networking-sfc's OVS agent installs for a chain without correlation:
//! one select group per hop (its buckets are the hop's port pairs: set the SF's MAC, output to
//! its ingress port), a classifier flow on the source port, and a flow per SF egress port that
//! sends the chain's traffic on to the next group; after the last hop, out to the destination.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use sfc_lab::lab::wait_for;

use super::topology::{self as topo, Topology};

pub struct Ovs {
    dir: PathBuf,
}

const BRIDGE: &str = "br-sfc";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn port_no(iface: &str) -> u32 {
    match iface {
        "vm-src" => 1,
        "vm-dst" => 2,
        _ => {
            let k: u32 = iface
                .trim_start_matches("sf")
                .split('-')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("an SF interface");
            if iface.ends_with("-in") {
                100 + k
            } else {
                200 + k
            }
        }
    }
}

impl Ovs {
    /// Why OVS cannot run here, if it cannot.
    pub fn unavailable() -> Option<String> {
        for bin in [
            "/usr/sbin/ovs-vswitchd",
            "/usr/sbin/ovsdb-server",
            "/usr/bin/ovs-vsctl",
            "/usr/bin/ovs-ofctl",
            "/usr/bin/ovsdb-tool",
        ] {
            if !std::path::Path::new(bin).exists() {
                return Some(format!("{bin} is missing (Debian package openvswitch-switch; `cargo xtask setup` installs it)"));
            }
        }
        if !std::path::Path::new(SCHEMA).exists() {
            return Some(format!("{SCHEMA} is missing"));
        }
        None
    }

    fn env(&self) -> String {
        let d = self.dir.display();
        format!("OVS_RUNDIR={d} OVS_DBDIR={d} OVS_LOGDIR={d} OVS_SYSCONFDIR={d}")
    }

    fn db(&self) -> String {
        format!("unix:{}/db.sock", self.dir.display())
    }

    /// Starts ovsdb-server and ovs-vswitchd in the node namespace (stopped with the lab).
    pub fn start(topo: &mut Topology) -> Result<Self> {
        if let Some(why) = Self::unavailable() {
            bail!(why);
        }
        let dir = topo.lab.dir.join("ovs");
        std::fs::create_dir_all(&dir)?;
        let ovs = Ovs { dir };
        let d = ovs.dir.display().to_string();
        let env = ovs.env();
        topo.node(&format!("ovsdb-tool create {d}/conf.db {SCHEMA}"))?;
        // Spawned, not daemonized: the lab kills them (and anything else left in the namespace)
        // when it is dropped.
        topo.lab.spawn(
            "node",
            &format!(
                "env {env} ovsdb-server {d}/conf.db --remote=punix:{d}/db.sock \
                 --unixctl={d}/ovsdb-server.ctl --pidfile={d}/ovsdb-server.pid \
                 --log-file={d}/ovsdb-server.log"
            ),
        )?;
        let sock = ovs.dir.join("db.sock");
        if wait_for(Duration::from_secs(10), || sock.exists().then_some(())).is_none() {
            bail!(
                "ovsdb-server did not come up in 10 s: {}",
                ovs.log("ovsdb-server.log")
            );
        }
        topo.node(&format!(
            "{env} ovs-vsctl --timeout=20 --db={} --no-wait init",
            ovs.db()
        ))?;
        topo.lab.spawn(
            "node",
            &format!(
                "env {env} ovs-vswitchd {} --unixctl={d}/ovs-vswitchd.ctl \
                 --pidfile={d}/ovs-vswitchd.pid --log-file={d}/ovs-vswitchd.log",
                ovs.db()
            ),
        )?;
        let ctl = ovs.dir.join("ovs-vswitchd.ctl");
        if wait_for(Duration::from_secs(10), || ctl.exists().then_some(())).is_none() {
            bail!(
                "ovs-vswitchd did not come up in 10 s: {}",
                ovs.log("ovs-vswitchd.log")
            );
        }
        Ok(ovs)
    }

    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn vsctl(&self, topo: &Topology, args: &str) -> Result<String> {
        topo.node(&format!(
            "{} ovs-vsctl --timeout=20 --db={} {args}",
            self.env(),
            self.db()
        ))
        .with_context(|| {
            format!(
                "ovs-vsctl; ovs-vswitchd log:\n{}",
                self.log("ovs-vswitchd.log")
            )
        })
    }

    fn ports(hops: usize) -> Vec<String> {
        let mut ports = vec!["vm-src".to_string(), "vm-dst".to_string()];
        for k in 1..=hops {
            ports.push(format!("sf{k}-in"));
            ports.push(format!("sf{k}-out"));
        }
        ports
    }

    /// The node-side MACs that frames are addressed to (see topology.rs), and the MACs they
    /// get while OVS owns the ports.
    fn macs(hops: usize) -> Vec<(String, String, String)> {
        let shared = topo::mac_str(topo::SHARED_MAC);
        let mut v = vec![
            (
                "vm-src".to_string(),
                shared.clone(),
                "02:5f:c0:00:01:00".to_string(),
            ),
            (
                "vm-dst".to_string(),
                topo::VM_DST_MAC.to_string(),
                "02:5f:c0:00:01:01".to_string(),
            ),
        ];
        for k in 1..=hops {
            v.push((
                format!("sf{k}-out"),
                shared.clone(),
                format!("02:5f:c0:00:01:{:02x}", 0x10 + k),
            ));
        }
        v
    }

    /// The bridge with the chain's ports (not timed). OVS netdev reads its ports through
    /// AF_PACKET, which does not take frames away from the node's own stack: with the ports'
    /// usual MACs the node would also route every frame. With other MACs, the node's stack
    /// drops them at once as not addressed to it (this kernel has no tc gact or matchall to
    /// drop them at tc ingress instead).
    pub fn prepare(&self, topo: &Topology, hops: usize) -> Result<()> {
        let moves: Vec<String> = Self::macs(hops)
            .into_iter()
            .map(|(port, _, other)| format!("ip link set {port} address {other}"))
            .collect();
        topo.node(&moves.join(" && "))?;
        let mut cmd = format!(
            "add-br {BRIDGE} -- set bridge {BRIDGE} datapath_type=netdev fail-mode=secure protocols=OpenFlow13"
        );
        for port in Self::ports(hops) {
            cmd.push_str(&format!(
                " -- add-port {BRIDGE} {port} -- set interface {port} ofport_request={}",
                port_no(&port)
            ));
        }
        self.vsctl(topo, &cmd)?;
        Ok(())
    }

    /// Installs the chain's groups and flows (timed as the apply).
    pub fn apply(&self, topo: &Topology, hops: usize) -> Result<()> {
        let mac = topo::mac_str(topo::SHARED_MAC);
        let (src, net) = (topo::SRC, topo::NET);
        let mut groups = String::new();
        let mut flows = String::new();
        for k in 1..=hops {
            groups.push_str(&format!(
                "group_id={k},type=select,bucket=weight:1,actions=mod_dl_dst:{mac},output:{}\n",
                port_no(&format!("sf{k}-in"))
            ));
        }
        for k in 0..=hops {
            let from = port_no(&Topology::arrival(k));
            let action = if k == hops {
                format!("mod_dl_dst:{mac},output:{}", port_no("vm-dst"))
            } else {
                format!("group:{}", k + 1)
            };
            flows.push_str(&format!(
                "table=0,priority=100,ip,in_port={from},nw_src={src},nw_dst={net},actions={action}\n"
            ));
        }
        // Replies go straight back to the source; nothing else is forwarded.
        flows.push_str(&format!(
            "table=0,priority=10,in_port={},actions=mod_dl_dst:{},output:{}\ntable=0,priority=0,actions=drop\n",
            port_no("vm-dst"),
            topo::mac_str(topo::SRC_MAC),
            port_no("vm-src")
        ));
        let d = self.dir.display();
        std::fs::write(self.dir.join("groups.txt"), groups)?;
        std::fs::write(self.dir.join("flows.txt"), flows)?;
        let mgmt = format!("unix:{d}/{BRIDGE}.mgmt");
        topo.node(&format!(
            "timeout 60 ovs-ofctl -O OpenFlow13 add-groups {mgmt} {d}/groups.txt && \
             timeout 60 ovs-ofctl -O OpenFlow13 add-flows {mgmt} {d}/flows.txt"
        ))
        .with_context(|| {
            format!(
                "ovs-ofctl; ovs-vswitchd log:\n{}",
                self.log("ovs-vswitchd.log")
            )
        })?;
        Ok(())
    }

    pub fn teardown(&self, topo: &Topology, hops: usize) -> Result<()> {
        self.vsctl(topo, &format!("--if-exists del-br {BRIDGE}"))?;
        let restores: Vec<String> = Self::macs(hops)
            .into_iter()
            .map(|(port, usual, _)| format!("ip link set {port} address {usual}"))
            .collect();
        topo.node(&restores.join(" && "))?;
        topo.node_neighbours()
    }
}
