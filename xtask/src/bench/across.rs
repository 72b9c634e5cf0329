//! Chains across two nodes: the one-node topology's source, destination and routing SFs,
//! spread over nodes n1 and n2 of a cluster (an underlay bridge, one etcd), the SFs alternating
//! between them. Against this project: the kernel's own pieces, wired by hand as an operator
//! would: one VXLAN device per crossing, with tc mirred or with policy routing.
//!
//! ```text
//!   n1: src ── vm-src   sf1, sf3, ...   uplink 10.99.0.11 ┐
//!                                                         ├ u: br0 (underlay, MTU 1600; etcd)
//!   n2: dst ── vm-dst   sf2, sf4, ...   uplink 10.99.0.12 ┘
//! ```
//!
//! A chain of `hops` goes src → SF1 (n1) → SF2 (n2) → SF3 (n1) → ... → dst (n2): it crosses
//! the underlay between every two SFs (once at 1 hop: SF1 → dst). Addresses and MACs are the
//! one-node topology's (topology.rs). The underlay's MTU is 1600, as operators set it for
//! overlays, so that every system carries the overlay's 1500-byte packets whole (VXLAN adds 50
//! bytes, this project's Geneve 78). The uplinks have GRO on, as NICs have. Replies (TCP,
//! ping) are routed straight back over the underlay, unencapsulated, the same for every
//! system.

use std::time::Duration;

use anyhow::{Context, Result};
use sfc_lab::{
    cluster::{ClusterLab, Etcd},
    lab::{wait_for, Lab},
};

use super::{
    check_interrupt, measure_slot,
    report::Report,
    senders,
    slot::{along_the_chain, percentiles},
    systems::{chain_yaml, remove_pins, wait_bare},
    topology::{self as topo, configure_ends, configure_sf, mac_str, Topology},
    traffic::{self, FlowMix},
    Plan,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// This project: an agent on each node, one `sfcctl apply` on n1; hops cross in Geneve.
    Sfc,
    /// The same with `--tunnel-xdp`: other nodes' packets are stripped in XDP, before GRO.
    SfcXdp,
    /// A VXLAN device per crossing on both nodes; tc u32 + mirred on each arrival interface,
    /// into the next SF, or into the crossing's VXLAN device and out of its peer into the next.
    VxlanMirred,
    /// The same VXLAN devices; `ip rule iif … lookup T` with one table per hop on each node.
    VxlanRouting,
}

pub const ALL: [System; 4] = [
    System::Sfc,
    System::SfcXdp,
    System::VxlanMirred,
    System::VxlanRouting,
];
/// The peers built from the kernel's own pieces.
pub const PEERS: [System; 2] = [System::VxlanMirred, System::VxlanRouting];

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Sfc => "sfc-across",
            System::SfcXdp => "sfc-across-xdp",
            System::VxlanMirred => "vxlan-mirred",
            System::VxlanRouting => "vxlan-routing",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The node (1 or 2) SF `k` (from 1) is on.
fn sf_node(k: usize) -> usize {
    2 - k % 2
}

/// One step of a `hops`-long chain: traffic arriving on `from` (on node `from_node`) goes out
/// of `to` (on `to_node`). Step `k` leaves the source (k = 0) or SF `k`.
struct Step {
    k: usize,
    from: String,
    from_node: usize,
    to: String,
    to_node: usize,
}

impl Step {
    fn crosses(&self) -> bool {
        self.from_node != self.to_node
    }

    /// The VXLAN device a crossing step goes through, on both nodes, and its VNI.
    fn vxlan(&self) -> (String, usize) {
        (format!("vx{}", self.k), 100 + self.k)
    }
}

fn steps(hops: usize) -> Vec<Step> {
    (0..=hops)
        .map(|k| Step {
            k,
            from: Topology::arrival(k),
            from_node: if k == 0 { 1 } else { sf_node(k) },
            to: Topology::departure(k, hops),
            to_node: if k == hops { 2 } else { sf_node(k + 1) },
        })
        .collect()
}

/// The topology with etcd running; agents only while `sfc-across` is measured.
pub struct Across {
    /// Before the cluster (fields drop in order): it runs in one of its namespaces.
    etcd: Etcd,
    cluster: ClusterLab,
    sfs: usize,
}

pub const UNDERLAY_MTU: u32 = 1600;

impl Across {
    pub fn build(sfs: usize) -> Result<Self> {
        let mut cluster = ClusterLab::new("bx", 2)?;
        let lab = &mut cluster.lab;
        for ns in ["n1", "n2"] {
            lab.sh(ns, topo::SYSCTLS)?;
            lab.sh(
                ns,
                &format!("ip link set uplink mtu {UNDERLAY_MTU} && ethtool -K uplink gro on"),
            )?;
        }
        lab.sh(
            "u",
            &format!(
                "ip link set u-n1 mtu {UNDERLAY_MTU} && ip link set u-n2 mtu {UNDERLAY_MTU} && \
                 ip link set br0 mtu {UNDERLAY_MTU}"
            ),
        )?;
        let mut names = vec!["src".to_string(), "dst".into()];
        names.extend((1..=sfs).map(|k| format!("sf{k}")));
        for ns in &names {
            lab.add_ns(ns)?;
            lab.sh(ns, topo::SYSCTLS)?;
        }
        let shared = mac_str(topo::SHARED_MAC);
        lab.veth("n1", "vm-src", "src", "eth0")?;
        lab.veth("n2", "vm-dst", "dst", "eth0")?;
        for k in 1..=sfs {
            let (sf, node) = (format!("sf{k}"), format!("n{}", sf_node(k)));
            lab.veth(&node, &format!("{sf}-in"), &sf, "eth-in")?;
            lab.veth(&node, &format!("{sf}-out"), &sf, "eth-out")?;
            configure_sf(lab, k)?;
            lab.sh(&node, &format!("ip link set {sf}-out address {shared}"))?;
        }
        configure_ends(lab)?;
        // Nothing reaches the destination but through a chain (so a probe that arrives was
        // steered); replies go back over the underlay.
        lab.sh(
            "n1",
            &format!(
                "ip link set vm-src address {shared} && ip route add {src}/32 dev vm-src && \
                 ip neigh replace {src} lladdr {src_mac} dev vm-src nud permanent && \
                 ip route add blackhole {net}",
                src = topo::SRC,
                src_mac = mac_str(topo::SRC_MAC),
                net = topo::NET
            ),
        )?;
        lab.sh(
            "n2",
            &format!(
                "ip link set vm-dst address {} && ip route add {}/32 via {} dev uplink",
                topo::VM_DST_MAC,
                topo::SRC,
                ClusterLab::node_addr(1)
            ),
        )?;
        for node in [1, 2] {
            let mut devs: Vec<String> = (1..=sfs)
                .filter(|&k| sf_node(k) == node)
                .map(|k| format!("sf{k}-in"))
                .collect();
            if node == 2 {
                devs.push("vm-dst".into());
            }
            neighbours(lab, node, &devs)?;
        }
        lab.spawn("dst", &format!("iperf3 -s -B {}", topo::DST))?;
        let etcd = cluster.start_etcd(1, None)?;
        Ok(Self { etcd, cluster, sfs })
    }

    fn lab(&self) -> &Lab {
        &self.cluster.lab
    }

    /// The interfaces of node `node` a system may attach to.
    fn interfaces(&self, node: usize) -> Vec<String> {
        let mut v = vec![
            "uplink".to_string(),
            if node == 1 { "vm-src" } else { "vm-dst" }.into(),
        ];
        for k in (1..=self.sfs).filter(|&k| sf_node(k) == node) {
            v.push(format!("sf{k}-in"));
            v.push(format!("sf{k}-out"));
        }
        v
    }

    fn node(&self, node: usize, script: &str) -> Result<String> {
        self.lab().sh(&format!("n{node}"), script)
    }

    /// One system at one chain length: set up, measured, taken down (also after a failure).
    pub(super) fn run(
        &mut self,
        plan: &Plan,
        report: &mut Report,
        order: usize,
        system: System,
        hops: usize,
    ) -> Result<String> {
        let result = self
            .prepare(system, hops)
            .and_then(|()| self.measure(plan, report, order, system, hops));
        let down = self.teardown(system, hops);
        let line = result?;
        down.context("teardown")?;
        Ok(line)
    }

    /// What the chain needs before it is applied (not timed): the agents, or the VXLAN devices.
    fn prepare(&mut self, system: System, hops: usize) -> Result<()> {
        match system {
            System::Sfc | System::SfcXdp => {
                for i in 1..=2 {
                    let mut args = vec![
                        "--etcd".to_string(),
                        self.etcd.endpoints_arg(),
                        "--node".into(),
                        format!("n{i}"),
                        "--tunnel-address".into(),
                        ClusterLab::node_addr(i),
                    ];
                    if system == System::SfcXdp {
                        args.push("--tunnel-xdp".into());
                    }
                    self.cluster.start_agent(i, &args)?;
                }
                let both_alive = wait_for(Duration::from_secs(20), || {
                    let rows = self.cluster.node_rows(1).ok()?;
                    (rows.iter().filter(|r| r["state"] == "ready").count() == 2).then_some(())
                });
                both_alive.context("the two agents did not both register within 20 s")?;
            }
            System::VxlanMirred | System::VxlanRouting => {
                for step in steps(hops).iter().filter(|s| s.crosses()) {
                    let (dev, vni) = step.vxlan();
                    for (node, peer) in [
                        (step.from_node, step.to_node),
                        (step.to_node, step.from_node),
                    ] {
                        self.node(
                            node,
                            &format!(
                                "ip link add {dev} type vxlan id {vni} local {} remote {} \
                                 dstport 4789 nolearning dev uplink",
                                ClusterLab::node_addr(node),
                                ClusterLab::node_addr(peer)
                            ),
                        )?;
                    }
                    // The receiving end takes the shared MAC, so that it accepts what the
                    // sending end routes to it; the sending end knows the destinations there.
                    self.node(
                        step.to_node,
                        &format!(
                            "ip link set {dev} address {} && ip link set {dev} up",
                            mac_str(topo::SHARED_MAC)
                        ),
                    )?;
                    self.node(step.from_node, &format!("ip link set {dev} up"))?;
                    neighbours(self.lab(), step.from_node, &[dev])?;
                }
            }
        }
        Ok(())
    }

    /// Puts a `hops`-long chain in place: the step timed as "apply". For `sfc-across`, its
    /// revision (to wait for on both nodes).
    fn apply(&self, system: System, hops: usize) -> Result<Option<i64>> {
        match system {
            System::Sfc | System::SfcXdp => self.cluster.apply(1, &chain_yaml(hops)).map(Some),
            System::VxlanMirred => {
                let mut batches = [String::new(), String::new()];
                let filter = |dev: &str, to: &str| {
                    format!(
                        "qdisc add dev {dev} clsact\nfilter add dev {dev} ingress protocol ip prio 1 u32 \
                         match ip src {}/32 match ip dst {} action mirred egress redirect dev {to}\n",
                        topo::SRC,
                        topo::NET
                    )
                };
                for step in steps(hops) {
                    if step.crosses() {
                        let (dev, _) = step.vxlan();
                        batches[step.from_node - 1] += &filter(&step.from, &dev);
                        batches[step.to_node - 1] += &filter(&dev, &step.to);
                    } else {
                        batches[step.from_node - 1] += &filter(&step.from, &step.to);
                    }
                }
                self.batches("tc", &batches)
            }
            System::VxlanRouting => {
                let mut batches = [String::new(), String::new()];
                let hop = |table: usize, from: &str, to: &str| {
                    format!(
                        "rule add pref {table} iif {from} from {}/32 to {} lookup {table}\n\
                         route add {} dev {to} table {table}\n",
                        topo::SRC,
                        topo::NET,
                        topo::NET
                    )
                };
                for step in steps(hops) {
                    let table = 100 + step.k;
                    if step.crosses() {
                        let (dev, _) = step.vxlan();
                        batches[step.from_node - 1] += &hop(table, &step.from, &dev);
                        batches[step.to_node - 1] += &hop(table, &dev, &step.to);
                    } else {
                        batches[step.from_node - 1] += &hop(table, &step.from, &step.to);
                    }
                }
                self.batches("ip", &batches)
            }
        }
        .with_context(|| format!("applying the chain with {}", system.name()))
    }

    /// Runs `tool -batch` of each node's batch (n1's first).
    fn batches(&self, tool: &str, batches: &[String; 2]) -> Result<Option<i64>> {
        for (i, batch) in batches.iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let file = self
                .lab()
                .file(&format!("{tool}-n{}.batch", i + 1), batch)?;
            self.node(i + 1, &format!("{tool} -batch {file}"))?;
        }
        Ok(None)
    }

    /// Undoes prepare and apply, leaving the topology as built.
    fn teardown(&mut self, system: System, hops: usize) -> Result<()> {
        match system {
            System::Sfc | System::SfcXdp => {
                for i in 1..=2 {
                    self.cluster.kill_agent(i)?;
                    let dir = self.cluster.agent(i).dir.clone();
                    remove_pins(&dir.join("bpffs"), &dir.join("state"))?;
                }
                self.etcd
                    .etcdctl(&["del", "", "--prefix"])
                    .context("emptying etcd")?;
                for i in 1..=2 {
                    wait_bare(&self.lab().ns(&format!("n{i}")), &self.interfaces(i))?;
                }
            }
            System::VxlanMirred | System::VxlanRouting => {
                for node in [1, 2] {
                    let mut cmds = Vec::new();
                    for step in steps(hops) {
                        cmds.push(format!(
                            "ip link del {} 2>/dev/null; tc qdisc del dev {} clsact 2>/dev/null; \
                             ip rule del pref {2} 2>/dev/null; ip route flush table {2} 2>/dev/null",
                            step.vxlan().0,
                            step.from,
                            100 + step.k
                        ));
                    }
                    self.node(node, &(cmds.join("; ") + "; true"))?;
                }
            }
        }
        Ok(())
    }

    fn measure(
        &self,
        plan: &Plan,
        report: &mut Report,
        order: usize,
        system: System,
        hops: usize,
    ) -> Result<String> {
        let name = system.name();
        let lab = self.lab();
        let (src, dst) = (lab.ns("src"), lab.ns("dst"));
        let mut revision = None;
        let (apply_ms, first) =
            traffic::apply_and_probe(&src, &dst, Duration::from_secs(5), || {
                revision = self.apply(system, hops)?;
                Ok(())
            })?;
        let first = first.context("no probe reached the destination within 5 s of the apply")?;
        if let Some(revision) = revision {
            self.cluster.wait_applied(&[1, 2], revision)?;
        }
        report.add(order, name, hops, "apply_ms", apply_ms);
        report.add(order, name, hops, "first_packet_ms", first);
        let mut line = format!("apply {apply_ms:.1} ms, first packet {first:.1} ms  ");
        check_interrupt()?;
        let pps = along_the_chain(lab, hops, plan.window, || {
            traffic::packet_rate(&src, &dst, senders(), plan.warmup, plan.window)
        })?;
        report.add(order, name, hops, "udp64_pps", pps);
        check_interrupt()?;
        let mix = FlowMix::NewEveryFrame;
        let new_pps = along_the_chain(lab, hops, plan.window, || {
            traffic::packet_rate_mix(&src, &dst, mix, senders(), plan.warmup, plan.window)
        })
        .with_context(|| format!("flow mix {mix:?}"))?;
        report.add(order, name, hops, mix.metric(), new_pps);
        check_interrupt()?;
        let gbps = traffic::tcp_throughput(lab, plan.tcp_seconds, plan.tcp_bytes)?;
        report.add(order, name, hops, "tcp_gbps", gbps);
        check_interrupt()?;
        let (p50, p99) = percentiles(traffic::ping_rtts(lab, plan.pings)?);
        report.add(order, name, hops, "rtt_p50_us", p50);
        report.add(order, name, hops, "rtt_p99_us", p99);
        line += &format!(
            "{:.3} / {:.3} Mpps  {gbps:.2} Gbit/s  rtt p50 {p50:.0} µs p99 {p99:.0} µs",
            pps / 1e6,
            new_pps / 1e6
        );
        Ok(line)
    }
}

/// Static neighbours on node `node`'s `devs`: the destination's addresses at the shared MAC.
fn neighbours(lab: &Lab, node: usize, devs: &[String]) -> Result<()> {
    if devs.is_empty() {
        return Ok(());
    }
    lab.sh(
        &format!("n{node}"),
        &format!(
            "for d in {}; do for a in {} {} {}; do \
               ip neigh replace $a lladdr {} dev $d nud permanent; done; done",
            devs.join(" "),
            topo::DST,
            topo::SINK,
            topo::PROBE,
            mac_str(topo::SHARED_MAC)
        ),
    )?;
    Ok(())
}

/// Every round: each system at each chain length in `hops`, on one topology built for the
/// longest; failures are recorded and the run goes on.
pub(super) fn run(plan: &Plan, report: &mut Report, first_order: usize) -> Result<()> {
    let sfs = *plan.across_hops.iter().max().unwrap_or(&2);
    println!("==> building the two-node topology: etcd, n1 and n2 on an underlay, {sfs} SFs");
    let mut across = Across::build(sfs).context("building the two-node bench topology")?;
    for round in 1..=plan.rounds {
        for &hops in &plan.across_hops {
            for (i, &system) in plan.across.iter().enumerate() {
                measure_slot(plan, report, round, system.name(), hops, |report| {
                    across.run(plan, report, first_order + i, system, hops)
                })?;
            }
        }
    }
    Ok(())
}
