//! A minimal rtnetlink client: list the interfaces of this namespace and read a veth peer's MAC,
//! even when the peer lives in another namespace (IFLA_TARGET_NETNSID), which is how an SF's
//! own NIC address is discovered from its host-side veth.

use std::{collections::BTreeMap, io, mem::size_of};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("netlink request failed: {0}")]
    Request(io::Error),
    #[error("malformed netlink reply")]
    Malformed,
}

/// One interface of the namespace the daemon runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub kind: Option<String>,
    /// For a veth: the peer's ifindex, in the namespace given by `peer_nsid` (or ours).
    pub peer_index: Option<u32>,
    pub peer_nsid: Option<i32>,
}

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_TARGET_NETNSID: u16 = 46;
const NLA_TYPE_MASK: u16 = 0x3fff;

struct Socket(libc::c_int);

impl Drop for Socket {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

impl Socket {
    fn open() -> Result<Self, NetlinkError> {
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        let socket = Socket(fd);
        // A reply that never comes must not hang the daemon.
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const _ as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(socket)
    }

    fn send(&self, msg: &[u8]) -> Result<(), NetlinkError> {
        let n = unsafe { libc::send(self.0, msg.as_ptr() as *const libc::c_void, msg.len(), 0) };
        if n < 0 {
            return Err(NetlinkError::Request(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Reads reply messages until DONE (dump) or the first RTM_NEWLINK (single request).
    fn replies(&self, dump: bool) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a dump of a namespace's links never needs more than a few reads.
        for _ in 0..100_000 {
            let n =
                unsafe { libc::recv(self.0, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 0 {
                return Err(NetlinkError::Request(io::Error::last_os_error()));
            }
            let mut data = &buf[..n as usize];
            while data.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(data[4..6].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > data.len() {
                    return Err(NetlinkError::Malformed);
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(
                            data.get(16..20)
                                .ok_or(NetlinkError::Malformed)?
                                .try_into()
                                .unwrap(),
                        );
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Request(io::Error::from_raw_os_error(-code)));
                    }
                    RTM_NEWLINK => {
                        out.push(data[NLMSG_HDRLEN..len].to_vec());
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                data = &data[align(len).min(data.len())..];
            }
        }
        Err(NetlinkError::Malformed)
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn request(flags: u16, index: i32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    msg[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    msg[NLMSG_HDRLEN] = libc::AF_UNSPEC as u8;
    msg[NLMSG_HDRLEN + 4..NLMSG_HDRLEN + 8].copy_from_slice(&index.to_ne_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        msg.extend_from_slice(&(len as u16).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(align(msg.len()), 0);
    }
    let total = msg.len() as u32;
    msg[0..4].copy_from_slice(&total.to_ne_bytes());
    msg
}

fn attributes(mut data: &[u8]) -> BTreeMap<u16, &[u8]> {
    let mut out = BTreeMap::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            break;
        }
        out.insert(kind, &data[4..len]);
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn parse_link(payload: &[u8]) -> Result<Link, NetlinkError> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(NetlinkError::Malformed);
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().unwrap()) as u32;
    let attrs = attributes(&payload[IFINFOMSG_LEN..]);
    let name = attrs
        .get(&IFLA_IFNAME)
        .map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })
        .ok_or(NetlinkError::Malformed)?;
    let mac = attrs
        .get(&IFLA_ADDRESS)
        .and_then(|v| <[u8; 6]>::try_from(*v).ok());
    let kind = attrs.get(&IFLA_LINKINFO).and_then(|info| {
        attributes(info).get(&IFLA_INFO_KIND).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })
    });
    let u32_attr = |key| {
        attrs
            .get(&key)
            .and_then(|v| <[u8; 4]>::try_from(*v).ok())
            .map(u32::from_ne_bytes)
    };
    let peer_index = u32_attr(IFLA_LINK).filter(|&peer| peer != 0 && peer != index);
    let peer_nsid = u32_attr(IFLA_LINK_NETNSID).map(|v| v as i32);
    Ok(Link {
        index,
        name,
        mac,
        kind,
        peer_index,
        peer_nsid,
    })
}

/// All interfaces of the current network namespace, by name.
pub fn links() -> Result<BTreeMap<String, Link>, NetlinkError> {
    let socket = Socket::open()?;
    socket.send(&request(NLM_F_DUMP, 0, &[]))?;
    socket
        .replies(true)?
        .iter()
        .map(|payload| parse_link(payload).map(|link| (link.name.clone(), link)))
        .collect()
}

/// The MAC of a veth's peer, wherever the peer lives; `None` for other kinds of interface.
pub fn peer_mac(link: &Link) -> Result<Option<[u8; 6]>, NetlinkError> {
    if link.kind.as_deref() != Some("veth") {
        return Ok(None);
    }
    let Some(peer) = link.peer_index else {
        return Ok(None);
    };
    let socket = Socket::open()?;
    let nsid = link.peer_nsid.map(|n| n.to_ne_bytes());
    let attrs: Vec<(u16, &[u8])> = nsid
        .as_ref()
        .map(|n| vec![(IFLA_TARGET_NETNSID, &n[..])])
        .unwrap_or_default();
    socket.send(&request(0, peer as i32, &attrs))?;
    let replies = socket.replies(false)?;
    let payload = replies.first().ok_or(NetlinkError::Malformed)?;
    Ok(parse_link(payload)?.mac)
}
