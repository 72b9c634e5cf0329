//! The systems under test and how each is put on, and taken off, the same topology.
//!
//! - `plain`: no chain; the node routes source to destination.
//! - `sfc-tc`: this project: sfc-daemon in the node namespace, `sfcctl apply -f` of a chain YAML.
//! - `sfc-xdp`: the same in XDP mode, when the daemon has one (see [`xdp_args`]).
//! - `tc-mirred`: a tc u32 classifier with a mirred redirect on each arrival interface.
//! - `policy-routing`: the node routes each hop: `ip rule` (iif, from, to) selects a table per hop.
//! - `ovs-netdev`: Open vSwitch's userspace datapath with networking-sfc-style flows.
//! - `upper-bound`: a hard-wired redirect program (one array read, MAC rewrite, redirect).
//! - `upper-bound-flows`: the same with a flow table, written where the chain starts and read
//!   at every hop: the least a dataplane that keeps per-flow state can do.
//! - `upper-bound-xdp`: the same in native XDP, set up as `sfc-xdp` is.
//!
//! Only `sfc-tc`, `ovs-netdev` and the TC upper bounds rewrite the destination MAC; the others rely
//! on the topology's shared MAC (see topology.rs).

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::Ebpf;
use sfc_lab::{
    lab::{run, wait_for},
    yaml::doc,
};

use super::{
    bpf,
    ovs::Ovs,
    topology::{self as topo, Topology},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Plain,
    SfcTc,
    SfcXdp,
    TcMirred,
    PolicyRouting,
    OvsNetdev,
    UpperBound,
    UpperBoundFlows,
    UpperBoundXdp,
}

pub const ALL: [System; 9] = [
    System::Plain,
    System::SfcTc,
    System::SfcXdp,
    System::TcMirred,
    System::PolicyRouting,
    System::OvsNetdev,
    System::UpperBound,
    System::UpperBoundFlows,
    System::UpperBoundXdp,
];

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Plain => "plain",
            System::SfcTc => "sfc-tc",
            System::SfcXdp => "sfc-xdp",
            System::TcMirred => "tc-mirred",
            System::PolicyRouting => "policy-routing",
            System::OvsNetdev => "ovs-netdev",
            System::UpperBound => "upper-bound",
            System::UpperBoundFlows => "upper-bound-flows",
            System::UpperBoundXdp => "upper-bound-xdp",
        }
    }

    /// The hard-wired program of an upper-bound system.
    fn redirect(self) -> Option<bpf::Redirect> {
        match self {
            System::UpperBound => Some(bpf::Redirect::Tc),
            System::UpperBoundFlows => Some(bpf::Redirect::TcFlows),
            System::UpperBoundXdp => Some(bpf::Redirect::Xdp),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Result<Self> {
        ALL.into_iter().find(|s| s.name() == name).with_context(|| {
            let names: Vec<&str> = ALL.iter().map(|s| s.name()).collect();
            format!("unknown system {name:?}; known: {}", names.join(", "))
        })
    }
}

/// The daemon flags that select XDP mode, if this sfc-daemon has one.
pub fn xdp_args(bin_dir: &std::path::Path) -> Option<Vec<String>> {
    let help = Command::new(bin_dir.join("sfc-daemon"))
        .arg("--help")
        .output()
        .ok()?;
    let help = String::from_utf8_lossy(&help.stdout);
    // Every interface here is a veth.
    help.contains("--xdp-on-veth").then(|| {
        ["--mode", "xdp", "--xdp-on-veth"]
            .map(String::from)
            .to_vec()
    })
}

/// A chain of `hops` single-instance groups (sf1..sfN) for everything from the source to the
/// bench's destination prefix, delivered to the destination's port after the last hop.
pub fn chain_yaml(hops: usize) -> String {
    let mut y = String::new();
    for k in 1..=hops {
        y += &doc(
            "PortPair",
            &format!("PP{k}"),
            &format!("{{ingress: sf{k}-in, egress: sf{k}-out}}"),
        );
        y += &doc(
            "PortPairGroup",
            &format!("PG{k}"),
            &format!("{{portPairs: [PP{k}]}}"),
        );
    }
    y += &doc(
        "FlowClassifier",
        "FC",
        &format!(
            "{{sourceIpPrefix: {}/32, destinationIpPrefix: {}, logicalSourcePort: vm-src, logicalDestinationPort: vm-dst}}",
            topo::SRC,
            topo::NET
        ),
    );
    let groups: Vec<String> = (1..=hops).map(|k| format!("PG{k}")).collect();
    y += &doc(
        "PortChain",
        "PC",
        &format!(
            "{{portPairGroups: [{}], flowClassifiers: [FC]}}",
            groups.join(", ")
        ),
    );
    y
}

/// `sfcctl apply -f file`, given at most two minutes.
pub fn sfcctl_apply(topo: &Topology, file: &str) -> Result<()> {
    let lab = &topo.lab;
    run(Command::new("timeout")
        .arg("120")
        .arg(lab.bin_dir.join("sfcctl"))
        .arg("--socket")
        .arg(lab.socket())
        .args(["apply", "-f", file]))
    .context("sfcctl apply")?;
    Ok(())
}

/// sfc-daemon run by the bench in the node namespace; killed on drop.
pub struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a fresh daemon (empty state, empty bpffs, a new log) in the node namespace.
pub fn start_daemon(topo: &mut Topology, extra: &[String]) -> Result<Daemon> {
    let lab = &mut topo.lab;
    let _ = fs::remove_file(lab.dir.join("daemon.log"));
    let child = lab.spawn_daemon("node", extra, "warn")?;
    Ok(Daemon { child })
}

/// Stops the daemon and removes its pins and state, which detaches its programs: pinned links
/// outlive the daemon by design, and the next system must find the interfaces bare.
pub fn stop_daemon(topo: &mut Topology, daemon: Daemon) -> Result<()> {
    drop(daemon);
    let bpffs = topo.lab.bpffs()?;
    remove_pins(&bpffs, &topo.lab.dir.join("state"))?;
    wait_bare(&topo.ns("node"), &topo.node_interfaces())
}

/// Removes a stopped daemon's pins from `bpffs` and its state directory.
pub fn remove_pins(bpffs: &std::path::Path, state: &std::path::Path) -> Result<()> {
    for entry in fs::read_dir(bpffs)? {
        let path = entry?.path();
        // The kernel's own iterators (progs.debug, maps.debug) are not the daemon's.
        if path.extension().is_some_and(|e| e == "debug") {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    let _ = fs::remove_dir_all(state);
    Ok(())
}

/// Waits until no program is attached to `ifaces` of namespace `ns` any more, then deletes
/// their clsact qdiscs. The kernel releases a link whose last pin went away from a workqueue,
/// a little later, and until then the old chain still steers and would carry the next
/// system's first probe. The daemon keeps the clsact it added for an SF interface's filter
/// while that interface is steered into (see sfc-daemon's links.rs), and a killed daemon
/// leaves it: the next system's `tc qdisc add` would fail on it.
pub fn wait_bare(ns: &str, ifaces: &[String]) -> Result<()> {
    let bare = wait_for(Duration::from_secs(5), || {
        bpf::tcx_attached(ns, ifaces).ok().filter(|n| *n == 0)
    });
    if bare.is_none() {
        bail!("sfc-daemon's programs were still attached 5 s after it stopped and its pins were removed");
    }
    let script: String = ifaces
        .iter()
        .map(|iface| format!("tc qdisc del dev {iface} clsact 2>/dev/null; "))
        .collect();
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &(script + "true")]))?;
    Ok(())
}

/// What is currently set up, and so what teardown must undo.
pub struct Runner {
    /// The bench's eBPF object, or why it is missing.
    object: std::result::Result<PathBuf, String>,
    ovs: Option<std::result::Result<Ovs, String>>,
    daemon: Option<Daemon>,
    upper: Option<Ebpf>,
    xdp: Option<Vec<String>>,
}

impl Runner {
    pub fn new(object: std::result::Result<PathBuf, String>, xdp: Option<Vec<String>>) -> Self {
        Self {
            object,
            ovs: None,
            daemon: None,
            upper: None,
            xdp,
        }
    }

    /// Why `system` cannot run here, if it cannot (checked once, before the rounds).
    pub fn unavailable(&mut self, topo: &mut Topology, system: System) -> Option<String> {
        match system {
            System::SfcXdp if self.xdp.is_none() => Some(
                "this sfc-daemon has no XDP mode for veths (its --help lacks --xdp-on-veth)".into(),
            ),
            System::UpperBound | System::UpperBoundFlows | System::UpperBoundXdp => {
                self.object.as_ref().err().cloned()
            }
            System::OvsNetdev => {
                if self.ovs.is_none() {
                    println!(
                        "    starting Open vSwitch (userspace datapath) in the node namespace"
                    );
                    self.ovs = Some(Ovs::start(topo).map_err(|e| format!("{e:#}")));
                }
                self.ovs.as_ref().and_then(|o| o.as_ref().err().cloned())
            }
            _ => None,
        }
    }

    /// The bench's eBPF object (its programs, the XDP frame source among them).
    pub fn object(&self) -> Result<&std::path::Path> {
        self.object
            .as_deref()
            .map_err(|e| anyhow::anyhow!("the bench's eBPF object: {e}"))
    }

    fn ovs(&self) -> Result<&Ovs> {
        match &self.ovs {
            Some(Ok(ovs)) => Ok(ovs),
            _ => bail!("OVS is not running"),
        }
    }

    /// Everything a system needs before its chain can be applied (not timed): a daemon, an
    /// OVS bridge with its ports, a loaded (not attached) program.
    pub fn prepare(&mut self, topo: &mut Topology, system: System, hops: usize) -> Result<()> {
        match system {
            System::SfcTc => self.daemon = Some(start_daemon(topo, &[])?),
            System::SfcXdp => {
                topo.prepare_xdp_on_veth(true)?;
                let args = self.xdp.clone().unwrap_or_default();
                self.daemon = Some(start_daemon(topo, &args)?)
            }
            System::OvsNetdev => self.ovs()?.prepare(topo, hops)?,
            System::UpperBound | System::UpperBoundFlows | System::UpperBoundXdp => {
                if system == System::UpperBoundXdp {
                    topo.prepare_xdp_on_veth(true)?;
                }
                let object = self.object.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                let redirect = system.redirect().context("not an upper bound")?;
                self.upper = Some(bpf::load_redirect(object, redirect)?);
            }
            System::Plain | System::TcMirred | System::PolicyRouting => {}
        }
        Ok(())
    }

    /// Puts a `hops`-long chain in place: the step timed as "apply".
    pub fn apply(&mut self, topo: &Topology, system: System, hops: usize) -> Result<()> {
        match system {
            System::Plain => Ok(()),
            System::SfcTc | System::SfcXdp => {
                let file = topo.lab.file("chain.yaml", &chain_yaml(hops))?;
                sfcctl_apply(topo, &file)
            }
            System::TcMirred => {
                let mut batch = String::new();
                for k in 0..=hops {
                    let (from, to) = (Topology::arrival(k), Topology::departure(k, hops));
                    batch += &format!(
                        "qdisc add dev {from} clsact\nfilter add dev {from} ingress protocol ip prio 1 u32 \
                         match ip src {}/32 match ip dst {} action mirred egress redirect dev {to}\n",
                        topo::SRC,
                        topo::NET
                    );
                }
                let file = topo.lab.file("tc.batch", &batch)?;
                topo.node(&format!("tc -batch {file}"))?;
                Ok(())
            }
            System::PolicyRouting => {
                let mut batch = String::new();
                for k in 0..=hops {
                    let (from, to) = (Topology::arrival(k), Topology::departure(k, hops));
                    let table = 100 + k;
                    batch += &format!(
                        "rule add pref {table} iif {from} from {}/32 to {} lookup {table}\nroute add {} dev {to} table {table}\n",
                        topo::SRC,
                        topo::NET,
                        topo::NET
                    );
                }
                let file = topo.lab.file("ip.batch", &batch)?;
                topo.node(&format!("ip -batch {file}"))?;
                Ok(())
            }
            System::OvsNetdev => self.ovs()?.apply(topo, hops),
            System::UpperBound | System::UpperBoundFlows | System::UpperBoundXdp => {
                let mut hop_list = Vec::new();
                for k in 0..=hops {
                    hop_list.push(bpf::Hop {
                        from: Topology::arrival(k),
                        to_ifindex: topo.ifindex(&Topology::departure(k, hops))?,
                        mac: topo::SHARED_MAC,
                        entry: k == 0,
                    });
                }
                let ebpf = self.upper.as_mut().context("upper-bound is not prepared")?;
                let redirect = system.redirect().context("not an upper bound")?;
                bpf::attach_redirect(ebpf, &topo.ns("node"), &hop_list, redirect)
            }
        }
    }

    /// Undoes prepare and apply, leaving the topology as built.
    pub fn teardown(&mut self, topo: &mut Topology, system: System, hops: usize) -> Result<()> {
        match system {
            System::Plain => {}
            System::SfcTc | System::SfcXdp => {
                if let Some(daemon) = self.daemon.take() {
                    stop_daemon(topo, daemon)?;
                }
                if system == System::SfcXdp {
                    topo.prepare_xdp_on_veth(false)?;
                }
            }
            System::TcMirred => {
                let cmds: Vec<String> = (0..=hops)
                    .map(|k| {
                        format!(
                            "tc qdisc del dev {} clsact 2>/dev/null",
                            Topology::arrival(k)
                        )
                    })
                    .collect();
                topo.node(&(cmds.join("; ") + "; true"))?;
            }
            System::PolicyRouting => {
                let cmds: Vec<String> = (0..=hops)
                    .map(|k| format!("ip rule del pref {0}; ip route flush table {0}", 100 + k))
                    .collect();
                topo.node(&(cmds.join("; ") + "; true"))?;
            }
            System::OvsNetdev => self.ovs()?.teardown(topo, hops)?,
            System::UpperBound | System::UpperBoundFlows => self.upper = None,
            System::UpperBoundXdp => {
                self.upper = None;
                topo.prepare_xdp_on_veth(false)?;
            }
        }
        Ok(())
    }
}
