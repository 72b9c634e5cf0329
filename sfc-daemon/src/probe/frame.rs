//! The probe frame and the socket it goes out of.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use sfc_common::{ProbePayload, PROBE_PORT};

/// What one probe frame carries.
pub struct Probe {
    pub sf_mac: [u8; 6],
    pub host_mac: [u8; 6],
    /// Of one family (validation makes sure of it).
    pub source: IpAddr,
    pub destination: IpAddr,
    pub token: u64,
    pub seq: u64,
}

const PAYLOAD: usize = size_of::<ProbePayload>();
const UDP_LEN: usize = 8 + PAYLOAD;

/// The frame: Ethernet to the SF's NIC; IPv4 (DF, TTL 64, checksummed) or IPv6 (hop limit
/// 64); UDP from and to the probe port, checksummed (mandatory over IPv6, and an SF that
/// checks it must not drop the probe over IPv4 either); then the payload the datapath knows
/// probes by (at `PROBE_PAYLOAD_OFFSET` or `PROBE_PAYLOAD_OFFSET_V6`).
pub fn build(p: &Probe) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 40 + UDP_LEN);
    f.extend_from_slice(&p.sf_mac);
    f.extend_from_slice(&p.host_mac);
    // The pseudo-header's sum, for the UDP checksum.
    let pseudo = match (p.source, p.destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + UDP_LEN) as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&source.octets());
            ip[16..20].copy_from_slice(&destination.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            f.extend_from_slice(&ip);
            [&source.octets()[..], &destination.octets()[..]].concat()
        }
        (source, destination) => {
            let (source, destination) = (v6(source), v6(destination));
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(UDP_LEN as u16).to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&source);
            f.extend_from_slice(&destination);
            [&source[..], &destination[..]].concat()
        }
    };
    let mut udp = [0u8; UDP_LEN];
    udp[0..2].copy_from_slice(&PROBE_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&PROBE_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&(UDP_LEN as u16).to_be_bytes());
    udp[8..16].copy_from_slice(&p.token.to_ne_bytes());
    udp[16..24].copy_from_slice(&p.seq.to_ne_bytes());
    let tail = [0, 17, 0, UDP_LEN as u8];
    let sum = match checksum(&[&pseudo, &tail, &udp]) {
        0 => 0xffff,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// The Internet checksum of the concatenated `parts` (each of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = parts
        .iter()
        .flat_map(|p| p.chunks(2))
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A packet socket that only sends (protocol 0: it receives nothing).
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn new() -> io::Result<Self> {
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `frame` out of interface `ifindex` (into the SF behind it).
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use sfc_common::{PROBE_PAYLOAD_OFFSET, PROBE_PAYLOAD_OFFSET_V6};

    use super::*;

    fn probe(source: IpAddr, destination: IpAddr) -> Vec<u8> {
        build(&Probe {
            sf_mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
            source,
            destination,
            token: 0x1122_3344_5566_7788,
            seq: 7,
        })
    }

    fn token_at(f: &[u8], offset: usize) -> u64 {
        u64::from_ne_bytes(f[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn an_ipv4_probe_has_valid_checksums_and_the_payload_where_the_datapath_reads_it() {
        let f = probe(
            Ipv4Addr::new(198, 18, 0, 10).into(),
            Ipv4Addr::new(198, 18, 0, 100).into(),
        );
        assert_eq!(f.len(), 58);
        assert_eq!(checksum(&[&f[14..34]]), 0, "a checksummed header sums to 0");
        let pseudo = [&f[26..34], &[0, 17, 0, 24][..], &f[34..]].concat();
        assert_eq!(checksum(&[&pseudo]), 0, "the UDP checksum");
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), PROBE_PORT);
        assert_eq!(token_at(&f, PROBE_PAYLOAD_OFFSET), 0x1122_3344_5566_7788);
    }

    #[test]
    fn an_ipv6_probe_has_a_valid_udp_checksum_and_the_payload_where_the_datapath_reads_it() {
        let source: Ipv6Addr = "fd00:5fc::10".parse().unwrap();
        let destination: Ipv6Addr = "fd00:5fc::100".parse().unwrap();
        let f = probe(source.into(), destination.into());
        assert_eq!(f.len(), 78);
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), 0x86dd);
        assert_eq!((f[20], f[21]), (17, 64), "next header UDP, hop limit 64");
        let pseudo = [&f[22..54], &[0, 17, 0, 24][..], &f[54..]].concat();
        assert_eq!(checksum(&[&pseudo]), 0, "the UDP checksum");
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), PROBE_PORT);
        assert_eq!(token_at(&f, PROBE_PAYLOAD_OFFSET_V6), 0x1122_3344_5566_7788);
    }
}
