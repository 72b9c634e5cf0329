//! The probe frame and the socket it goes out of.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use sfc_common::{ProbePayload, PROBE_PAYLOAD_OFFSET, PROBE_PORT};

/// What one probe frame carries.
pub struct Probe {
    pub sf_mac: [u8; 6],
    pub host_mac: [u8; 6],
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub token: u64,
    pub seq: u64,
}

const PAYLOAD: usize = size_of::<ProbePayload>();
pub const FRAME_LEN: usize = PROBE_PAYLOAD_OFFSET + PAYLOAD;

/// The frame: Ethernet to the SF's NIC, IPv4 (DF, TTL 64, checksummed) and UDP from and to the
/// probe port (no UDP checksum: optional over IPv4), then the payload the datapath knows
/// probes by.
pub fn build(p: &Probe) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&p.sf_mac);
    f[6..12].copy_from_slice(&p.host_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&p.source.octets());
    ip[16..20].copy_from_slice(&p.destination.octets());
    let sum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&PROBE_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&PROBE_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f[42..50].copy_from_slice(&p.token.to_ne_bytes());
    f[50..58].copy_from_slice(&p.seq.to_ne_bytes());
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
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
    use super::*;

    #[test]
    fn the_frame_has_a_valid_ipv4_header_and_the_payload_where_the_datapath_reads_it() {
        let f = build(&Probe {
            sf_mac: [2, 0, 0, 0, 0, 1],
            host_mac: [2, 0, 0, 0, 0, 2],
            source: Ipv4Addr::new(198, 18, 0, 10),
            destination: Ipv4Addr::new(198, 18, 0, 100),
            token: 0x1122_3344_5566_7788,
            seq: 7,
        });
        assert_eq!(
            ipv4_checksum(&f[14..34]),
            0,
            "a checksummed header sums to 0"
        );
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), PROBE_PORT);
        let payload: [u8; 8] = f[PROBE_PAYLOAD_OFFSET..PROBE_PAYLOAD_OFFSET + 8]
            .try_into()
            .unwrap();
        assert_eq!(u64::from_ne_bytes(payload), 0x1122_3344_5566_7788);
        assert_eq!(f.len(), 58);
    }
}
