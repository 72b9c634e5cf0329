//! The bench's chain topology, in namespaces it creates (all removed when the [`Lab`] drops):
//!
//! ```text
//!   src ── vm-src ┐          node (the host: routes, or steers with the system under test)
//!                 ├ sfK-in ── eth-in  [sfK routes] eth-out ── sfK-out ┤   K = 1..=8
//!   dst ── vm-dst ┘
//! ```
//!
//! Every system uses these same namespaces. Addresses: the source 198.18.0.1; the destination
//! owns 198.18.1.1 (TCP, ping) and 198.18.1.3 (first-packet probes); 198.18.1.2 is a sink for
//! the packet-rate test, counted at the destination's interface and dropped there by a
//! blackhole route (silently: no socket, no ICMP; this kernel has no tc gact/matchall).
//! All neighbours are static: no ARP, no surprises.
//!
//! Frames on the chain path all carry one destination MAC, [`SHARED_MAC`]: it is the MAC of every
//! SF's ingress NIC, of the destination's NIC and of the node's interfaces that receive from the
//! source and from the SFs (vm-src, sfK-out). Peers that cannot rewrite MACs (tc mirred, plain
//! redirection) can therefore hand a frame on unchanged and every receiver accepts it as its own,
//! while the node still accepts frames from the source and the SFs for routing (policy routing).
//! No link has the same MAC at both ends.

use anyhow::Result;
use sfc_lab::lab::Lab;

use super::netns;

pub const SRC: &str = "198.18.0.1";
pub const DST: &str = "198.18.1.1";
pub const SINK: &str = "198.18.1.2";
pub const PROBE: &str = "198.18.1.3";
/// What every chain steers: from the source to this prefix, any protocol.
pub const NET: &str = "198.18.1.0/24";
/// [`NET`] without [`PROBE`] (and the sink): what a chain is narrowed to before an update is
/// timed by the probes.
pub const NET_WITHOUT_PROBE: &str = "198.18.1.0/31";
pub const SHARED_MAC: [u8; 6] = [0x02, 0x5f, 0xc0, 0, 0, 0x01];
/// The source's NIC.
pub const SRC_MAC: [u8; 6] = [0x02, 0x5f, 0xc0, 0, 0, 0x0a];
pub const VM_DST_MAC: &str = "02:5f:c0:00:00:0d";
pub const PPS_PORT: u16 = 9;
pub const PROBE_PORT: u16 = 7777;
/// The connection-rate server's port, on [`DST`].
pub const CONN_PORT: u16 = 8080;

/// The bytes of one of the addresses above.
pub fn octets(addr: &str) -> [u8; 4] {
    addr.parse::<std::net::Ipv4Addr>()
        .expect("a constant address")
        .octets()
}

pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub struct Topology {
    pub lab: Lab,
    /// SF namespaces: sf1..=sfs.
    sfs: usize,
}

pub const SYSCTLS: &str = "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.default.send_redirects=0 net.ipv6.conf.all.disable_ipv6=1 \
    net.ipv6.conf.default.disable_ipv6=1";

/// SF `k`'s namespace, wired already: it routes everything for [`NET`] out of its egress NIC,
/// to the [`SHARED_MAC`] its ingress NIC has too.
pub fn configure_sf(lab: &Lab, k: usize) -> Result<()> {
    let shared = mac_str(SHARED_MAC);
    lab.sh(
        &format!("sf{k}"),
        &format!(
            "ip link set eth-in address {shared} && \
             ip route add {NET} dev eth-out && \
             for a in {DST} {SINK} {PROBE}; do ip neigh add $a lladdr {shared} dev eth-out nud permanent; done"
        ),
    )?;
    Ok(())
}

/// The source's and the destination's namespaces, wired already (`eth0` in each).
pub fn configure_ends(lab: &Lab) -> Result<()> {
    let (shared, src_mac) = (mac_str(SHARED_MAC), mac_str(SRC_MAC));
    // Checksums in software and no TSO/GSO at the source: every system then forwards the
    // same MTU-sized, fully checksummed packets (a userspace datapath such as OVS netdev
    // reads frames through AF_PACKET and cannot carry 64 KB GSO frames or partial checksums).
    lab.sh(
        "src",
        &format!(
            "ip link set eth0 address {src_mac} && ip addr add {SRC}/32 dev eth0 && \
             ip route add {NET} dev eth0 && \
             for a in {DST} {SINK} {PROBE}; do ip neigh add $a lladdr {shared} dev eth0 nud permanent; done && \
             ethtool -K eth0 tx off tso off gso off >/dev/null"
        ),
    )?;
    lab.sh(
        "dst",
        &format!(
            "ip link set eth0 address {shared} && ip addr add {DST}/32 dev eth0 && \
             ip addr add {PROBE}/32 dev eth0 && ip route add {SRC}/32 dev eth0 && \
             ip neigh add {SRC} lladdr {VM_DST_MAC} dev eth0 nud permanent && \
             ethtool -K eth0 tx off tso off gso off >/dev/null && \
             ip route add blackhole {SINK}/32"
        ),
    )?;
    Ok(())
}

impl Topology {
    pub fn build(sfs: usize) -> Result<Self> {
        let mut lab = Lab::new("bench")?;
        let mut names = vec!["node".to_string(), "src".into(), "dst".into()];
        names.extend((1..=sfs).map(|k| format!("sf{k}")));
        for ns in &names {
            lab.add_ns(ns)?;
            // Before any interface exists, so that every interface inherits the defaults.
            lab.sh(ns, SYSCTLS)?;
        }
        lab.veth("node", "vm-src", "src", "eth0")?;
        lab.veth("node", "vm-dst", "dst", "eth0")?;
        for k in 1..=sfs {
            let sf = format!("sf{k}");
            lab.veth("node", &format!("{sf}-in"), &sf, "eth-in")?;
            lab.veth("node", &format!("{sf}-out"), &sf, "eth-out")?;
            configure_sf(&lab, k)?;
            lab.sh(
                "node",
                &format!("ip link set {sf}-out address {}", mac_str(SHARED_MAC)),
            )?;
        }
        configure_ends(&lab)?;
        // Plain forwarding: the node routes. Probes are blackholed, so that one arriving at the
        // destination has certainly followed a chain.
        lab.sh(
            "node",
            &format!(
                "ip link set vm-src address {} && ip link set vm-dst address {VM_DST_MAC} && \
                 ip route add {SRC}/32 dev vm-src && \
                 ip route add {DST}/32 dev vm-dst && ip route add {SINK}/32 dev vm-dst && \
                 ip route add blackhole {PROBE}/32",
                mac_str(SHARED_MAC)
            ),
        )?;
        lab.spawn("dst", "iperf3 -s -B 198.18.1.1")?;
        let topo = Self { lab, sfs };
        topo.node_neighbours()?;
        Ok(topo)
    }

    /// The node's static neighbours: the source, and the destination's addresses behind
    /// vm-dst and behind every SF ingress (for policy routing, whatever table routes there).
    /// Changing an interface's MAC flushes even permanent entries, so whoever does that calls
    /// this again afterwards.
    pub fn node_neighbours(&self) -> Result<()> {
        let (shared, src_mac) = (mac_str(SHARED_MAC), mac_str(SRC_MAC));
        let mut devs = vec!["vm-dst".to_string()];
        devs.extend((1..=self.sfs).map(|k| format!("sf{k}-in")));
        self.node(&format!(
            "ip neigh replace {SRC} lladdr {src_mac} dev vm-src nud permanent && \
             for d in {}; do for a in {DST} {SINK} {PROBE}; do \
               ip neigh replace $a lladdr {shared} dev $d nud permanent; done; done",
            devs.join(" ")
        ))?;
        Ok(())
    }

    pub fn ns(&self, short: &str) -> String {
        self.lab.ns(short)
    }

    /// What XDP on veths needs (or back to the defaults): GRO on where XDP redirects frames
    /// into (the SFs' ingress NICs, the destination's), as a veth takes XDP frames only with
    /// NAPI; and checksums computed by every sender into a steered veth (the SFs; the source
    /// and destination always do here), as a redirected frame loses the skb's offload state.
    pub fn prepare_xdp_on_veth(&self, on: bool) -> Result<()> {
        let (gro, tx) = if on { ("on", "off") } else { ("off", "on") };
        self.lab.sh("dst", &format!("ethtool -K eth0 gro {gro}"))?;
        for k in 1..=self.sfs {
            self.lab.sh(
                &format!("sf{k}"),
                &format!("ethtool -K eth-in gro {gro} tx {tx} && ethtool -K eth-out tx {tx}"),
            )?;
        }
        Ok(())
    }

    /// Runs `script` in the node namespace.
    pub fn node(&self, script: &str) -> Result<String> {
        self.lab.sh("node", script)
    }

    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        netns::ifindex(&self.ns("node"), iface)
    }

    /// Every interface of the node namespace that a system may attach to.
    pub fn node_interfaces(&self) -> Vec<String> {
        let mut v = vec!["vm-src".to_string(), "vm-dst".to_string()];
        for k in 1..=self.sfs {
            v.push(format!("sf{k}-in"));
            v.push(format!("sf{k}-out"));
        }
        v
    }

    /// The interface a hop's traffic arrives on in the node: the source's, then each SF's egress.
    pub fn arrival(k: usize) -> String {
        if k == 0 {
            "vm-src".into()
        } else {
            format!("sf{k}-out")
        }
    }

    /// Where traffic arriving at [`Self::arrival`]`(k)` of a `hops`-long chain goes next.
    pub fn departure(k: usize, hops: usize) -> String {
        if k == hops {
            "vm-dst".into()
        } else {
            format!("sf{}-in", k + 1)
        }
    }
}
