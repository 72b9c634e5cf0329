//! The networking-sfc demo topology, in namespaces: a "node" with a bridge and the host-side
//! veths; a source VM; a destination VM serving HTTP; three SF VMs that route (ip_forward, a
//! static route to the destination through their egress NIC and one back to the source through
//! their ingress NIC, for symmetric chains). PG1 = {SF1, SF2}, PG2 = {SF3}.
//!
//! ```text
//!            node namespace: bridge br0 + sfc-daemon (TC programs on vm-src, sfN-out)
//!   src ── vm-src ┤                                              ├ vm-dst ── dst (HTTP :80)
//!                 ├ sf1-in ── [SF1] ── sf1-out ┤
//!                 ├ sf2-in ── [SF2] ── sf2-out ┤   PG1 = {PP1, PP2}
//!                 ├ sf3-in ── [SF3] ── sf3-out ┤   PG2 = {PP3}
//! ```

use std::{path::Path, thread, time::Duration};

use anyhow::{bail, Result};

use crate::lab::{wait_for, Lab};

pub const SRC_V4: &str = "198.18.0.10";
pub const DST_V4: &str = "198.18.0.100";
pub const SRC_V6: &str = "fd00:5fc::10";
pub const DST_V6: &str = "fd00:5fc::100";
pub const SFS: [&str; 3] = ["sf1", "sf2", "sf3"];

/// The example chain shipped in the repository, which the demo applies.
pub fn example_chain() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/chain.yaml")
        .to_string_lossy()
        .into_owned()
}

pub struct Demo {
    pub lab: Lab,
}

/// Which SFs one request crossed: packets each SF forwarded while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossing {
    pub status: u16,
    pub forwarded: [u64; 3],
}

impl Crossing {
    pub fn crossed(&self) -> Vec<&'static str> {
        SFS.iter()
            .zip(self.forwarded)
            .filter(|(_, n)| *n > 0)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Every request answered, each through exactly one PG1 member and then SF3, every packet
/// that crossed PG1 crossing SF3 too.
pub fn assert_through_one_pg1_member_then_sf3(results: &[Crossing], what: &str) {
    for c in results {
        assert_eq!(c.status, 200, "{what}: {c:?}");
        assert!(c.forwarded[2] > 0, "{what}: SF3 skipped: {c:?}");
        assert!(
            (c.forwarded[0] > 0) != (c.forwarded[1] > 0),
            "{what}: not exactly one PG1 member: {c:?}"
        );
        assert_eq!(
            c.forwarded[0] + c.forwarded[1],
            c.forwarded[2],
            "{what}: every packet that crossed PG1 must cross SF3: {c:?}"
        );
    }
}

/// The example chain made symmetric: replies enter at vm-dst and cross the same SFs back.
pub fn symmetric_chain() -> String {
    std::fs::read_to_string(example_chain())
        .expect("examples/chain.yaml")
        .replace(
            "  logicalSourcePort: vm-src\n",
            "  logicalSourcePort: vm-src\n  logicalDestinationPort: vm-dst\n",
        )
        .replace(
            "  flowClassifiers: [FC1, FC1-v6]",
            "  flowClassifiers: [FC1, FC1-v6]\n  chainParameters: {symmetric: true}",
        )
}

/// SF `sf`'s two veths (`sfN-in`/`eth-in`, `sfN-out`/`eth-out`), their host sides on the
/// node's bridge, all up: as the demo builds them, or again after they were deleted.
pub fn add_sf_links(lab: &Lab, sf: &str) -> Result<()> {
    add_sf_links_on(lab, "node", sf)
}

/// The same on node namespace `node`.
pub fn add_sf_links_on(lab: &Lab, node: &str, sf: &str) -> Result<()> {
    for (host, inside) in [("in", "eth-in"), ("out", "eth-out")] {
        let host = format!("{sf}-{host}");
        lab.veth(node, &host, sf, inside)?;
        lab.sh(node, &format!("ip link set {host} master br0"))?;
    }
    Ok(())
}

/// SF `sf` (one of [`SFS`]) set up to route, on the veths [`add_sf_links`] made: addresses,
/// forwarding, a route to the destination through its egress NIC and one back to the source
/// through its ingress NIC.
pub fn configure_sf(lab: &Lab, sf: &str) -> Result<()> {
    let Some(n) = SFS.iter().position(|s| *s == sf).map(|i| i + 1) else {
        bail!("no SF {sf} in the demo");
    };
    lab.sh(
        sf,
        &format!(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
               net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
               net.ipv4.conf.eth-in.rp_filter=0 net.ipv4.conf.eth-out.rp_filter=0 \
               net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.send_redirects=0 && \
             ip addr add 198.18.0.{n}1/24 dev eth-in && \
             ip addr add 198.18.0.{n}2/32 dev eth-out && \
             ip -6 addr add fd00:5fc::{n}1/64 dev eth-in nodad && \
             ip -6 addr add fd00:5fc::{n}2/128 dev eth-out nodad && \
             ip route add {DST_V4}/32 dev eth-out && \
             ip -6 route add {DST_V6}/128 dev eth-out && \
             ip route add {SRC_V4}/32 dev eth-in && \
             ip -6 route add {SRC_V6}/128 dev eth-in"
        ),
    )?;
    Ok(())
}

/// The source and destination VMs' addresses (namespaces `src` and `dst`, NIC `eth0`).
pub fn address_vms(lab: &Lab) -> Result<()> {
    lab.sh(
        "src",
        &format!("ip addr add {SRC_V4}/24 dev eth0 && ip -6 addr add {SRC_V6}/64 dev eth0 nodad"),
    )?;
    lab.sh(
        "dst",
        &format!("ip addr add {DST_V4}/24 dev eth0 && ip -6 addr add {DST_V6}/64 dev eth0 nodad"),
    )?;
    Ok(())
}

impl Demo {
    /// `sfcctl apply -f -` of `yaml`; panics with the daemon's log when it is refused.
    pub fn apply(&self, yaml: &str) {
        if let Err(e) = self.lab.sfcctl_stdin(&["apply", "-f", "-"], Some(yaml)) {
            panic!("apply failed: {e}\n{}", self.lab.daemon_log());
        }
    }

    /// Builds the topology and starts the daemon (no chain applied yet).
    pub fn build(tag: &str) -> Result<Self> {
        Self::build_with(tag, &[])
    }

    /// The same, with extra sfc-daemon flags.
    pub fn build_with(tag: &str, daemon_args: &[&str]) -> Result<Self> {
        let mut lab = Lab::new(tag)?;
        lab.daemon_args = daemon_args.iter().map(|a| a.to_string()).collect();
        for ns in ["node", "src", "dst", "sf1", "sf2", "sf3"] {
            lab.add_ns(ns)?;
        }
        lab.sh("node", "ip link add br0 type bridge && ip link set br0 up")?;
        lab.veth("node", "vm-src", "src", "eth0")?;
        lab.veth("node", "vm-dst", "dst", "eth0")?;
        lab.sh(
            "node",
            "ip link set vm-src master br0 && ip link set vm-dst master br0",
        )?;
        for sf in SFS {
            add_sf_links(&lab, sf)?;
        }
        address_vms(&lab)?;
        for sf in SFS {
            configure_sf(&lab, sf)?;
        }
        lab.spawn("dst", "python3 -m http.server 80 --bind ::")?;
        let demo = Demo { lab };
        if wait_for(Duration::from_secs(15), || {
            demo.curl(DST_V4).ok().filter(|s| *s == 200)
        })
        .is_none()
        {
            bail!("the destination's web server did not answer within 15 s");
        }
        let mut demo = demo;
        demo.lab.start_daemon("node")?;
        Ok(demo)
    }

    /// One HTTP GET from the source VM; the status code (0 when no answer).
    pub fn curl(&self, dst: &str) -> Result<u16> {
        self.curl_from(dst, None)
    }

    /// Same, from a chosen source port, so that a test's flows (and so their hashes) are fixed.
    pub fn curl_from(&self, dst: &str, local_port: Option<u16>) -> Result<u16> {
        curl_from(&self.lab, dst, local_port)
    }

    pub fn forwarded(&self, v6: bool) -> Result<[u64; 3]> {
        forwarded(&self.lab, v6)
    }

    /// One request, and the packets each SF forwarded for it.
    pub fn request(&self, dst: &str) -> Result<Crossing> {
        self.request_from(dst, None)
    }

    pub fn request_from(&self, dst: &str, local_port: Option<u16>) -> Result<Crossing> {
        request_from(&self.lab, dst, local_port)
    }
}

/// One HTTP GET from the source VM of `lab` (namespace `src`), from `local_port` if given; the
/// status code (0 when no answer).
pub fn curl_from(lab: &Lab, dst: &str, local_port: Option<u16>) -> Result<u16> {
    let host = if dst.contains(':') {
        format!("[{dst}]")
    } else {
        dst.to_string()
    };
    let port = local_port
        .map(|p| format!("--local-port {p}"))
        .unwrap_or_default();
    let out = lab.sh(
        "src",
        &format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {port} http://{host}/ || true"
        ),
    )?;
    Ok(out.trim().parse().unwrap_or(0))
}

/// Packets each SF of `lab` (namespaces `sf1`..`sf3`) sent out of its ingress NIC: the
/// reverse direction of a chain.
pub fn sent_back(lab: &Lab) -> Result<[u64; 3]> {
    let mut out = [0; 3];
    for (i, sf) in SFS.iter().enumerate() {
        let text = lab.sh(sf, "cat /sys/class/net/eth-in/statistics/tx_packets")?;
        out[i] = text.trim().parse()?;
    }
    Ok(out)
}

/// One request from `local_port` through the symmetric chain ([`symmetric_chain`]), checked:
/// both directions of the connection cross one PG1 member and SF3 and nothing else, and the
/// replies leave through those SFs' ingress NICs. The PG1 member it crossed (0 or 1).
pub fn symmetric_request(lab: &Lab, local_port: u16) -> usize {
    let back_before = sent_back(lab).unwrap();
    let c = request_from(lab, DST_V4, Some(local_port)).unwrap();
    let back = sent_back(lab).unwrap();
    assert_eq!(c.status, 200, "{c:?}");
    let member = if c.forwarded[0] > 0 { 0 } else { 1 };
    // The member's and SF3's counts match, the other member saw nothing.
    assert_eq!(c.forwarded[1 - member], 0, "{c:?}");
    assert_eq!(c.forwarded[member], c.forwarded[2], "{c:?}");
    // One HTTP exchange is about ten packets both ways, fewer when the stack merges some
    // (a FIN with the response): at least a handshake and the request and reply.
    assert!(c.forwarded[2] >= 6, "replies did not cross the SFs: {c:?}");
    // The replies left through the SFs' ingress NICs (reverse direction).
    for sf in [member, 2] {
        assert!(
            back[sf] - back_before[sf] >= 4,
            "SF{} sent no replies back: {back_before:?} -> {back:?}",
            sf + 1
        );
    }
    member
}

/// Packets each SF of `lab` (namespaces `sf1`..`sf3`) has forwarded.
pub fn forwarded(lab: &Lab, v6: bool) -> Result<[u64; 3]> {
    let mut out = [0; 3];
    for (i, sf) in SFS.iter().enumerate() {
        let (a, b) = lab.forwarded(sf)?;
        out[i] = if v6 { b } else { a };
    }
    Ok(out)
}

/// One request from the source VM of `lab`, and the packets each SF forwarded for it.
pub fn request_from(lab: &Lab, dst: &str, local_port: Option<u16>) -> Result<Crossing> {
    let v6 = dst.contains(':');
    let before = forwarded(lab, v6)?;
    let status = curl_from(lab, dst, local_port)?;
    // The last ACK of the connection leaves just after curl exits.
    thread::sleep(Duration::from_millis(150));
    let after = forwarded(lab, v6)?;
    let forwarded = [0, 1, 2].map(|i| after[i] - before[i]);
    Ok(Crossing { status, forwarded })
}
