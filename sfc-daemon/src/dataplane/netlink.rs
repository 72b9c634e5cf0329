//! Route netlink access for the agent: link dumps, veth peer lookups (how an SF's own NIC
//! address is discovered from its host-side veth, even when the peer lives in another
//! namespace) and link change notifications, on `rtnetlink` and the daemon's tokio runtime.
//!
//! The netlink crates are used through `rtnetlink`'s re-exports so that their versions can
//! never drift apart from the ones `rtnetlink` was built with.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io,
    net::IpAddr,
    os::fd::AsRawFd,
    pin::pin,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use futures::{channel::mpsc::UnboundedReceiver, future::join_all, Stream, StreamExt};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST},
    packet_route::{
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage},
        tc::{TcAttribute, TcHandle},
        RouteNetlinkMessage,
    },
    sys::{AsyncSocket, SocketAddr},
    MulticastGroup,
};
use sfc_config::compile::Interfaces;
pub use sfc_config::compile::Link;
use tokio::time::{timeout_at, Instant};

/// How often a link dump torn by concurrent changes is redone before giving up.
const DUMP_ATTEMPTS: u32 = 10;
/// Receive buffer of the event socket: a burst of link changes (many pods
/// starting at once) must not overflow it before the task reads it.
const EVENT_RCVBUF: libc::c_int = 4 << 20;
/// Link events closer together than BATCH_QUIET make one `changed()`; a
/// sustained stream still gets one every BATCH_MAX. Both add to the latency.
const BATCH_QUIET: Duration = Duration::from_millis(2);
const BATCH_MAX: Duration = Duration::from_millis(20);
/// Bounds of the pause before re-opening a failed event subscription, so a
/// persistently failing socket cannot turn into a busy loop of `changed()`.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// A link as the kernel reported it; None for a message without a name, which the kernel
/// never sends.
fn parse_link(msg: LinkMessage) -> Option<Link> {
    let index = msg.header.index;
    let (mut name, mut mac, mut kind, mut iflink, mut nsid) = (None, None, None, None, None);
    let mut mtu = 0;
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Address(a) => mac = a.try_into().ok(),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            LinkAttribute::Link(i) => iflink = Some(i),
            LinkAttribute::LinkNetNsId(id) => nsid = Some(id),
            LinkAttribute::Mtu(m) => mtu = m,
            _ => {}
        }
    }
    // IFLA_LINK is a veth's peer; for other kinds it names a lower device. Equal to our own
    // index it only means "no peer" within our namespace: a peer elsewhere may well carry the
    // same number.
    let is_veth = kind.as_deref() == Some("veth");
    let peer_index = iflink.filter(|&i| is_veth && i != 0 && (i != index || nsid.is_some()));
    Some(Link {
        index,
        name: name?,
        mac,
        kind,
        peer_index,
        peer_nsid: nsid.filter(|_| peer_index.is_some()),
        up: msg.header.flags.contains(LinkFlags::Up),
        running: msg.header.flags.contains(LinkFlags::LowerUp),
        mtu,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("no tokio runtime in the calling thread")]
    NoRuntime {
        #[source]
        source: tokio::runtime::TryCurrentError,
    },
    #[error("opening the calling thread's network namespace")]
    Netns {
        #[source]
        source: io::Error,
    },
    #[error("opening a route netlink socket")]
    Connect {
        #[source]
        source: io::Error,
    },
    #[error("sending {what} request")]
    Send {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what} failed")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink connection closed before {what} completed")]
    Closed { what: String },
    #[error("link dump still interrupted by concurrent changes after {attempts} attempts")]
    DumpInterrupted { attempts: u32 },
}

/// A route netlink connection whose driver task runs on a tokio runtime, so
/// it can be used from any thread, e.g. with `Handle::block_on`.
pub struct Netlink {
    handle: rtnetlink::Handle,
    runtime: tokio::runtime::Handle,
    interrupted_dumps: AtomicU64,
}

impl Netlink {
    /// Opens a route netlink connection in the calling thread's network
    /// namespace and spawns its driver task on the current tokio runtime; the
    /// task ends when the `Netlink` is dropped.
    pub fn connect() -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|source| NetlinkError::NoRuntime { source })?;
        let (mut conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connect { source })?;
        // We need NLMSG_DONE: the kernel may flag only that message with
        // NLM_F_DUMP_INTR, and without it a dump cut short by a dying
        // connection would be indistinguishable from a complete one.
        conn.set_forward_done(true);
        runtime.spawn(conn);
        Ok(Self {
            handle,
            runtime,
            interrupted_dumps: AtomicU64::new(0),
        })
    }

    /// Dumps that came back marked NLM_F_DUMP_INTR and were redone.
    pub fn interrupted_dumps(&self) -> u64 {
        self.interrupted_dumps.load(Ordering::Relaxed)
    }

    /// Every link of the namespace, by name. A dump the kernel marks as
    /// interrupted by concurrent changes is redone, never returned, so a torn
    /// dump cannot make a live interface look gone.
    pub async fn links(&self) -> Result<BTreeMap<String, Link>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.dump_links().await? {
                Some(links) => return Ok(links),
                None => self.interrupted_dumps.fetch_add(1, Ordering::Relaxed),
            };
        }
        Err(NetlinkError::DumpInterrupted {
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// One RTM_GETLINK dump; None when it was interrupted.
    async fn dump_links(&self) -> Result<Option<BTreeMap<String, Link>>, NetlinkError> {
        let what = "link dump";
        let mut req = get_link(LinkMessage::default());
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = pin!(self.request(req, what)?);
        let mut links = BTreeMap::new();
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            // The kernel flags whichever message it is building when it
            // notices the list changed, often just NLMSG_DONE: check them all.
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg)) => {
                    if let Some(link) = parse_link(msg) {
                        links.insert(link.name.clone(), link);
                    }
                }
                NetlinkPayload::Done(done) if done.code != 0 => {
                    return Err(kernel_error(what, done.code));
                }
                NetlinkPayload::Done(_) => return Ok((!interrupted).then_some(links)),
                NetlinkPayload::Error(err) => return Err(kernel_error(what, err.raw_code())),
                _ => {}
            }
        }
        Err(NetlinkError::Closed { what: what.into() })
    }

    /// The MAC of a veth's peer, wherever the peer lives. Ok(None) for a
    /// non-veth, a veth without a peer index, or a peer that vanished.
    pub async fn peer_mac(&self, link: &Link) -> Result<Option<[u8; 6]>, NetlinkError> {
        let Some(peer_index) = link
            .peer_index
            .filter(|_| link.kind.as_deref() == Some("veth"))
        else {
            return Ok(None);
        };
        let what = format!("RTM_GETLINK of veth peer {peer_index} of {}", link.name);
        let mut msg = LinkMessage::default();
        msg.header.index = peer_index;
        if let Some(nsid) = link.peer_nsid {
            // IFLA_TARGET_NETNSID: look the index up in the peer's namespace.
            msg.attributes.push(LinkAttribute::IfNetnsId(nsid));
        }
        let mut replies = pin!(self.request(get_link(msg), &what)?);
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg)) => {
                    // If the peer vanished, its index may now name an unrelated
                    // link: only trust a veth that points back at us.
                    let peer = parse_link(msg).filter(|p| p.peer_index == Some(link.index));
                    return Ok(peer.and_then(|p| p.mac));
                }
                NetlinkPayload::Error(err) => {
                    return match -err.raw_code() {
                        libc::ENODEV => Ok(None),
                        // The nsid no longer names a namespace: the peer's
                        // namespace, and so the peer, is gone.
                        libc::EINVAL if link.peer_nsid.is_some() => Ok(None),
                        _ => Err(kernel_error(&what, err.raw_code())),
                    };
                }
                _ => {}
            }
        }
        Err(NetlinkError::Closed { what })
    }

    fn request(
        &self,
        req: NetlinkMessage<RouteNetlinkMessage>,
        what: &str,
    ) -> Result<impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + use<>, NetlinkError> {
        // `request` takes &mut self; handles are cheap clones of a channel sender.
        self.handle
            .clone()
            .request(req)
            .map_err(|source| NetlinkError::Send {
                what: what.into(),
                source,
            })
    }
}

impl Netlink {
    /// The interfaces of the namespace with the MAC behind each veth, for the agent's thread
    /// (not a runtime worker): blocks on the runtime the connection was opened on.
    pub fn interfaces(&self) -> Result<Interfaces, NetlinkError> {
        self.runtime.block_on(async {
            let links = self.links().await?;
            // All peers asked at once: one round trip each, in sequence, was most of an
            // apply's planning time (about 2 ms for the 18 veths of an 8-hop chain).
            let answers = join_all(links.values().map(|link| self.peer_mac(link))).await;
            let mut peer_macs = BTreeMap::new();
            for (name, answer) in links.keys().zip(answers) {
                match answer {
                    Ok(Some(mac)) => {
                        peer_macs.insert(name.clone(), mac);
                    }
                    Ok(None) => {}
                    // The kernel could not tell (yet): the MAC behind it is unknown.
                    Err(NetlinkError::Kernel { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Interfaces {
                links,
                peer_macs,
                cluster: None,
                failed: BTreeMap::new(),
            })
        })
    }

    /// The interface that has address `addr`, if one has.
    pub fn interface_with_address(&self, addr: IpAddr) -> Result<Option<Link>, NetlinkError> {
        let what = "address dump";
        self.runtime.block_on(async {
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(
                AddressMessage::default(),
            ));
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut replies = pin!(self.request(req, what)?);
            let mut index = None;
            while let Some(reply) = replies.next().await {
                match reply.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(msg)) => {
                        let has = msg.attributes.iter().any(|a| {
                            matches!(a, AddressAttribute::Address(a) | AddressAttribute::Local(a) if *a == addr)
                        });
                        if has {
                            index = Some(msg.header.index);
                        }
                    }
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Err(kernel_error(what, done.code));
                    }
                    NetlinkPayload::Done(_) => break,
                    NetlinkPayload::Error(err) => return Err(kernel_error(what, err.raw_code())),
                    _ => {}
                }
            }
            let Some(index) = index else { return Ok(None) };
            Ok(self.links().await?.into_values().find(|l| l.index == index))
        })
    }
}

/// The calling thread's namespace's interfaces, once, on a runtime of its own (tests, tools).
pub fn read_interfaces() -> Result<Interfaces, NetlinkError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|source| NetlinkError::Connect { source })?;
    let netlink = runtime.block_on(async { Netlink::connect() })?;
    netlink.interfaces()
}

/// Runs `job` with a plain rtnetlink connection, on a runtime of its own: the agent's thread
/// is not a runtime worker, and what is done here is rare. Not over a [`Netlink`]: that one
/// forwards NLMSG_DONE (see `connect`), which rtnetlink's tc requests do not expect (tried: a
/// qdisc was then never deleted).
fn on_own_connection<T, F: std::future::Future<Output = Result<T, NetlinkError>>>(
    job: impl FnOnce(rtnetlink::Handle) -> F,
) -> Result<T, NetlinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| NetlinkError::Connect { source })?;
    runtime.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connect { source })?;
        tokio::spawn(conn);
        job(handle).await
    })
}

fn send_error(what: &str) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.to_string();
    move |source| NetlinkError::Send { what, source }
}

/// Of `indexes` (interfaces of the calling thread's namespace), those with a clsact qdisc.
pub fn with_clsact(indexes: &BTreeSet<u32>) -> Result<BTreeSet<u32>, NetlinkError> {
    if indexes.is_empty() {
        return Ok(BTreeSet::new());
    }
    on_own_connection(|handle| async move {
        let mut found = BTreeSet::new();
        let mut dump = pin!(handle.qdisc().get().execute());
        while let Some(qdisc) = dump.next().await {
            let qdisc = qdisc.map_err(send_error("qdisc dump"))?;
            let index = qdisc.header.index as u32;
            let clsact = qdisc
                .attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(kind) if kind == "clsact"));
            if clsact && indexes.contains(&index) {
                found.insert(index);
            }
        }
        Ok(found)
    })
}

/// Deletes the clsact qdisc of each interface in `indexes` (of the calling thread's namespace)
/// that has no tc filter at ingress or egress: one added only for a filter of ours, now gone.
/// An interface that no longer exists has nothing left to delete.
pub fn remove_unused_clsacts(indexes: &[u32]) -> Result<(), NetlinkError> {
    if indexes.is_empty() {
        return Ok(());
    }
    on_own_connection(|handle| async move {
        for &index in indexes {
            let index = index as i32;
            let mut filters = 0;
            for egress in [false, true] {
                let get = handle.traffic_filter(index).get();
                let get = if egress { get.egress() } else { get.ingress() };
                let mut dump = pin!(get.execute());
                while let Some(filter) = dump.next().await {
                    filter.map_err(send_error("tc filter dump"))?;
                    filters += 1;
                }
            }
            if filters == 0 {
                let mut del = handle.qdisc().del(index);
                del.message_mut().header.parent = TcHandle::CLSACT;
                match del.execute().await {
                    // The interface is gone, and its qdiscs with it.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {}
                    done => done.map_err(send_error("clsact delete"))?,
                }
            }
        }
        Ok(())
    })
}

/// An RTM_GETLINK request without link statistics, which are large and unused.
fn get_link(mut msg: LinkMessage) -> NetlinkMessage<RouteNetlinkMessage> {
    msg.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg));
    req.header.flags = NLM_F_REQUEST;
    req
}

fn kernel_error(what: &str, code: i32) -> NetlinkError {
    NetlinkError::Kernel {
        what: what.into(),
        source: io::Error::from_raw_os_error(code.saturating_abs()),
    }
}

type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Subscribes to link events (RTNLGRP_LINK) in the calling thread's namespace
/// and calls `changed()` once per batch of events (link added, deleted,
/// renamed, moved to another namespace, set up or down) from a task on the
/// current tokio runtime (which needs its IO and time drivers), until the
/// process ends. `changed()` must not block.
///
/// Events carry no state here: the caller is expected to re-dump. So a socket
/// overflow (ENOBUFS, surfaced as an overrun message) just counts as one more
/// event, and a failed socket is re-opened, followed by one `changed()`.
pub fn watch_links(changed: impl Fn() + Send + Sync + 'static) -> Result<(), NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|source| NetlinkError::NoRuntime { source })?;
    // Kept to re-open the subscription in this namespace, whichever thread
    // the task then runs on.
    let netns =
        File::open("/proc/thread-self/ns/net").map_err(|source| NetlinkError::Netns { source })?;
    let mut events = subscribe().map_err(|source| NetlinkError::Connect { source })?;
    runtime.spawn(async move {
        let mut pause = RESUBSCRIBE_MIN;
        loop {
            if events.next().await.is_some() {
                // Fold a burst into one callback: wait for the events to
                // pause for BATCH_QUIET, but no longer than BATCH_MAX.
                let batch_end = Instant::now() + BATCH_MAX;
                let quiet_end = || batch_end.min(Instant::now() + BATCH_QUIET);
                while let Ok(Some(_)) = timeout_at(quiet_end(), events.next()).await {}
                pause = RESUBSCRIBE_MIN;
                changed();
                continue;
            }
            // The connection ended on a socket error; events may have been lost.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RESUBSCRIBE_MAX);
            if let Ok(fresh) = subscribe_in(&netns) {
                events = fresh;
                changed();
            }
        }
    });
    Ok(())
}

/// A link event subscription in the calling thread's namespace, with its
/// connection task spawned on the current runtime.
fn subscribe() -> io::Result<Events> {
    let (mut conn, _handle, events) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    conn.socket_mut().socket_mut().set_rx_buf_sz(EVENT_RCVBUF)?;
    tokio::spawn(conn);
    Ok(events)
}

/// `subscribe()` in the namespace `netns` refers to. setns(2) only affects the
/// calling thread, so it happens in a short-lived thread, never on a runtime
/// worker; the socket keeps its namespace after that thread ends.
fn subscribe_in(netns: &File) -> io::Result<Events> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: plain syscall on a descriptor we own for the call.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let _runtime = runtime.enter();
                subscribe()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("subscribing thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn ip(args: &[&str]) {
        assert!(
            Command::new("ip").args(args).status().unwrap().success(),
            "ip {args:?}"
        );
    }

    /// A re-subscription runs on whatever thread the watch task is on: its
    /// socket must still land in the watched namespace, not the thread's.
    #[test]
    fn subscribe_in_uses_the_given_namespace() {
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = Netns(format!("hnl-{}-sub", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        let netns = File::open(format!("/var/run/netns/{}", ns.0)).unwrap();

        // This thread stays where it is; only the event socket enters `ns`.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut events = rt.block_on(async { subscribe_in(&netns) }).unwrap();
        ip(&[
            "-n", &ns.0, "link", "add", "ev0", "type", "veth", "peer", "name", "ev1",
        ]);
        let event = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(2), events.next()).await });
        let Ok(Some((msg, _))) = event else {
            panic!("no event from the namespace")
        };
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload else {
            panic!("unexpected event {msg:?}")
        };
        let name = parse_link(link).unwrap().name;
        assert!(name == "ev0" || name == "ev1", "{name}");
    }
}
