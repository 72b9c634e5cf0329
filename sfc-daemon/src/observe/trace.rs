//! `sfcctl trace`: installs a flow filter in the datapath and streams, live, each matching
//! packet's steps through this node. One trace at a time per node (the filter is one map
//! slot). A trace runs in its client's connection task, reading the pinned filter and event
//! maps, so the agent keeps serving while it lasts; it ends when its client hangs up or stops
//! reading, when its lease runs out, or on `sfcctl trace --stop` from anyone.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap},
    future::Future,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, MapError, RingBuf};
use sfc_api::{
    protocol::{self, Response},
    trace::{FilterError, TraceRecord, TraceSpec, MAX_LEASE_SECONDS},
};
use sfc_common::{
    stat, TraceEvent, TraceFilter, FAMILY_V6, FLAG_ENTRY, FLAG_REVERSE, FLAG_SKIPPED,
    MAP_TRACE_EVENTS, MAP_TRACE_FILTER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use thiserror::Error;
use tokio::{
    io::{unix::AsyncFd, AsyncReadExt, AsyncWriteExt},
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
    sync::{mpsc, watch},
    time::timeout,
};
use tracing::{info, warn};

/// Longest a trace client may take to read one record before the trace ends.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("a trace is already running on this node (started {age} s ago, filter {filter}); end it with `sfcctl trace --stop`")]
    Busy { age: u64, filter: String },
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("waiting on the trace ring: {0}")]
    Ring(std::io::Error),
}

/// Names for the numbers in events, from the agent's state when the trace starts.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub chains: BTreeMap<u16, String>,
    pub interfaces: BTreeMap<u32, String>,
    /// Interface -> the port pair whose ingress it is: where forward traffic goes in.
    pub pairs: BTreeMap<u32, String>,
    /// Interface -> the port pair whose egress it is (and side), where reverse traffic goes in:
    /// with crossed pairs, another pair than the one it is the ingress of.
    pub reverse_pairs: BTreeMap<u32, String>,
}

impl Names {
    /// The pair (and side) a packet going `reverse` or not was sent into through `ifindex`.
    fn target(&self, ifindex: u32, reverse: bool) -> Option<&String> {
        let (first, then) = if reverse {
            (&self.reverse_pairs, &self.pairs)
        } else {
            (&self.pairs, &self.reverse_pairs)
        };
        first.get(&ifindex).or_else(|| then.get(&ifindex))
    }
}

/// The node's one trace: who holds it, and how to end it.
#[derive(Default)]
pub struct TraceSlot {
    running: Mutex<Option<Running>>,
}

struct Running {
    started: Instant,
    filter: String,
    stop: watch::Sender<bool>,
}

impl TraceSlot {
    fn claim(&self, spec: &TraceSpec) -> Result<watch::Receiver<bool>, TraceError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = running.as_ref() {
            return Err(TraceError::Busy {
                age: r.started.elapsed().as_secs(),
                filter: r.filter.clone(),
            });
        }
        let (stop, stopped) = watch::channel(false);
        *running = Some(Running {
            started: Instant::now(),
            filter: describe(spec),
            stop,
        });
        Ok(stopped)
    }

    fn release(&self) {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `sfcctl trace --stop`.
    pub fn stop(&self) -> Response {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.as_ref() {
            Some(r) => {
                let _ = r.stop.send(true);
                Response {
                    ok: true,
                    message: format!(
                        "stopped the trace started {} s ago (filter {})",
                        r.started.elapsed().as_secs(),
                        r.filter
                    ),
                    ..Default::default()
                }
            }
            None => Response {
                ok: true,
                message: "no trace is running on this node".into(),
                ..Default::default()
            },
        }
    }
}

/// A filter as the user gave it, for messages.
fn describe(spec: &TraceSpec) -> String {
    let fields = [
        ("src", spec.src.clone()),
        ("dst", spec.dst.clone()),
        ("proto", spec.proto.clone()),
        ("sport", spec.sport.map(|p| p.to_string())),
        ("dport", spec.dport.map(|p| p.to_string())),
        ("id", spec.id.map(|i| format!("{i:08x}"))),
    ];
    let set: Vec<String> = fields
        .into_iter()
        .filter_map(|(k, v)| Some(format!("--{k} {}", v?)))
        .collect();
    if set.is_empty() {
        "any packet".into()
    } else {
        set.join(" ")
    }
}

fn open<T: TryFrom<Map, Error = MapError>>(
    bpffs: &Path,
    name: &'static str,
    wrap: fn(MapData) -> Map,
) -> Result<T, TraceError> {
    let err = |source| TraceError::Map { name, source };
    let data = MapData::from_pin(bpffs.join("maps").join(name)).map_err(err)?;
    T::try_from(wrap(data)).map_err(err)
}

/// One trace on this node.
pub struct Session<'a> {
    pub bpffs: &'a Path,
    pub spec: TraceSpec,
    pub lease_seconds: Option<u64>,
    pub names: Names,
    pub slot: &'a TraceSlot,
    /// In a cluster: this node's name, on every record.
    pub node: Option<String>,
    /// In a cluster: the records other nodes trace meanwhile, merged into this one's.
    pub remote: Option<mpsc::Receiver<Vec<TraceRecord>>>,
    /// The first answer's message ("tracing", and in a cluster on which nodes).
    pub hello: String,
}

/// Where a trace's records go: a client's connection here, or etcd when another node asked
/// (`cluster::ask`).
pub trait Sink: Send {
    /// The first answer: the trace runs, or why not. False when it could not be sent.
    fn hello(&mut self, response: &Response) -> impl Future<Output = bool> + Send;
    /// Records as they come. False when they can no longer be sent: the trace ends.
    fn records(&mut self, records: Vec<TraceRecord>) -> impl Future<Output = bool> + Send;
    /// Every [`TICK`]: sends what was held back. False as for `records`.
    fn tick(&mut self) -> impl Future<Output = bool> + Send;
    /// The trace ended: sends what is left, if it can.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// How often a sink is ticked.
pub const TICK: Duration = Duration::from_millis(200);

/// Why a trace ended (logged).
#[derive(Debug)]
enum End {
    HungUp,
    NotReading,
    Stopped,
    LeaseOver,
    Failed(String),
}

impl Session<'_> {
    /// Answers with one `Response`, then records until the trace ends: when `gone` resolves
    /// (the client hung up, the asking node let go), the sink refuses more, the trace is
    /// stopped, or its lease runs out.
    pub async fn run(mut self, mut sink: impl Sink, gone: impl Future<Output = ()>) {
        let filter = match self.spec.filter() {
            Ok(f) => f,
            Err(e) => return refuse(&mut sink, TraceError::from(e)).await,
        };
        let maps = open(self.bpffs, MAP_TRACE_FILTER, Map::Array)
            .and_then(|filters| Ok((filters, open(self.bpffs, MAP_TRACE_EVENTS, Map::RingBuf)?)));
        let (mut filters, events): (Array<MapData, TraceFilter>, RingBuf<MapData>) = match maps {
            Ok(m) => m,
            Err(e) => return refuse(&mut sink, e).await,
        };
        let mut stopped = match self.slot.claim(&self.spec) {
            Ok(s) => s,
            Err(e) => return refuse(&mut sink, e).await,
        };
        let lease = Duration::from_secs(
            self.lease_seconds
                .unwrap_or(MAX_LEASE_SECONDS)
                .min(MAX_LEASE_SECONDS),
        );
        // SAFETY: the ring buffer owns its fd and keeps it open for as long as the AsyncFd,
        // which owns the ring buffer, is registered.
        let end = match unsafe { AsyncFd::register(events) }.map_err(std::io::Error::from) {
            Ok(mut events) => {
                // Events of an earlier trace left in the ring are not this one's.
                while events.get_mut().next().is_some() {}
                match filters.set(0, filter, 0) {
                    Ok(()) => {
                        info!(
                            filter = describe(&self.spec),
                            lease_s = lease.as_secs(),
                            "trace started"
                        );
                        let hello = Response {
                            ok: true,
                            message: self.hello.clone(),
                            ..Default::default()
                        };
                        if sink.hello(&hello).await {
                            let stream = Stream {
                                events: &mut events,
                                names: &self.names,
                                node: self.node.as_deref(),
                                clock: Clock::now(),
                                remote: self.remote.as_mut(),
                            };
                            tokio::select! {
                                end = stream.forward(&mut sink) => end,
                                _ = gone => End::HungUp,
                                _ = stopped.wait_for(|s| *s) => End::Stopped,
                                _ = tokio::time::sleep(lease) => End::LeaseOver,
                            }
                        } else {
                            End::NotReading
                        }
                    }
                    Err(source) => End::Failed(
                        TraceError::Map {
                            name: MAP_TRACE_FILTER,
                            source,
                        }
                        .to_string(),
                    ),
                }
            }
            Err(e) => End::Failed(TraceError::Ring(e).to_string()),
        };
        if let Err(e) = filters.set(0, TraceFilter::default(), 0) {
            warn!(error = %e, "clearing the trace filter");
        }
        self.slot.release();
        sink.finish().await;
        match end {
            End::Failed(error) => warn!(error, "trace failed"),
            end => info!(?end, "trace ended"),
        }
    }
}

async fn refuse(sink: &mut impl Sink, e: TraceError) {
    sink.hello(&Response::failure(e.to_string())).await;
}

/// A client's connection: records as JSON lines, at once on one node; in a cluster held back
/// for [`ClientSink::window`] and sent in time order, as other nodes' records come later.
pub struct ClientSink {
    write: OwnedWriteHalf,
    window: Duration,
    held: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    sequence: u64,
}

impl ClientSink {
    pub fn new(write: OwnedWriteHalf, window: Duration) -> Self {
        Self {
            write,
            window,
            held: BinaryHeap::new(),
            sequence: 0,
        }
    }

    /// Sends the held records older than `before` (Unix ns), oldest first.
    async fn flush(&mut self, before: u64) -> bool {
        let mut lines = Vec::new();
        while let Some(Reverse((time, _, _))) = self.held.peek() {
            if *time > before {
                break;
            }
            let Some(Reverse((_, _, line))) = self.held.pop() else {
                break;
            };
            lines.extend_from_slice(&line);
        }
        lines.is_empty() || send(&mut self.write, &lines).await
    }
}

impl Sink for ClientSink {
    async fn hello(&mut self, response: &Response) -> bool {
        send(&mut self.write, &protocol::encode(response)).await
    }

    async fn records(&mut self, records: Vec<TraceRecord>) -> bool {
        for r in records {
            let mut line = serde_json::to_vec(&r).expect("records serialise");
            line.push(b'\n');
            self.sequence += 1;
            self.held.push(Reverse((r.time_ns, self.sequence, line)));
        }
        if self.window.is_zero() {
            return self.flush(u64::MAX).await;
        }
        true
    }

    async fn tick(&mut self) -> bool {
        let now = Clock::now().wall(monotonic_ns());
        self.flush(now.saturating_sub(self.window.as_nanos() as u64))
            .await
    }

    async fn finish(&mut self) {
        self.flush(u64::MAX).await;
    }
}

async fn send(write: &mut OwnedWriteHalf, line: &[u8]) -> bool {
    matches!(
        timeout(WRITE_DEADLINE, write.write_all(line)).await,
        Ok(Ok(()))
    )
}

/// Resolves when the client hangs up: it sends nothing after its request, so anything read
/// (end of file, an error, or stray bytes) means it is done.
pub async fn hung_up(mut read: OwnedReadHalf) {
    let mut byte = [0u8; 1];
    let _ = read.read(&mut byte).await;
}

struct Stream<'a> {
    events: &'a mut AsyncFd<RingBuf<MapData>>,
    names: &'a Names,
    node: Option<&'a str>,
    clock: Clock,
    remote: Option<&'a mut mpsc::Receiver<Vec<TraceRecord>>>,
}

impl Stream<'_> {
    /// Forwards events as they come (and other nodes' records), until the sink refuses.
    async fn forward(mut self, sink: &mut impl Sink) -> End {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            let remote = async {
                match self.remote.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            let records = tokio::select! {
                ready = self.events.readable_mut() => {
                    let mut ready = match ready {
                        Ok(r) => r,
                        Err(e) => return End::Failed(TraceError::Ring(e).to_string()),
                    };
                    let mut records = Vec::new();
                    while let Some(item) = ready.get_inner_mut().next() {
                        if item.len() < std::mem::size_of::<TraceEvent>() {
                            continue;
                        }
                        let event: TraceEvent =
                            unsafe { std::ptr::read_unaligned(item.as_ptr() as *const TraceEvent) };
                        drop(item);
                        let mut r = record(&event, self.names, &self.clock);
                        r.node = self.node.map(str::to_string);
                        records.push(r);
                    }
                    ready.clear_ready();
                    records
                }
                Some(records) = remote => records,
                _ = ticker.tick() => {
                    if !sink.tick().await {
                        return End::NotReading;
                    }
                    continue;
                }
            };
            if !records.is_empty() && !sink.records(records).await {
                return End::NotReading;
            }
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the datapath's clock).
fn monotonic_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts CLOCK_MONOTONIC (the datapath's clock) to wall-clock time.
struct Clock {
    offset_ns: i128,
}

impl Clock {
    fn now() -> Self {
        let read = |id| {
            let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
            unsafe { libc::clock_gettime(id, &mut ts) };
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        Self {
            offset_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC),
        }
    }

    fn wall(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.offset_ns).max(0) as u64
    }
}

fn ip_text(family: u8, addr: &[u32; 4]) -> String {
    if family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (i, w) in addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(o).to_string()
    } else {
        std::net::Ipv4Addr::from(addr[0].to_ne_bytes()).to_string()
    }
}

fn proto_text(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn record(e: &TraceEvent, names: &Names, clock: &Clock) -> TraceRecord {
    let iface = |i: u32| {
        names
            .interfaces
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    let classified = e.chain_id != 0;
    // An address and port as in a URL: IPv6 in brackets.
    let endpoint = |addr: &[u32; 4], port: u16| {
        if e.family == FAMILY_V6 {
            format!("[{}]:{port}", ip_text(e.family, addr))
        } else {
            format!("{}:{port}", ip_text(e.family, addr))
        }
    };
    let flow = format!(
        "{} {} > {}",
        proto_text(e.proto),
        endpoint(&e.src, e.sport),
        endpoint(&e.dst, e.dport)
    );
    TraceRecord {
        time_ns: clock.wall(e.ts_ns),
        id: e.id,
        interface: iface(e.ifindex),
        chain: classified.then(|| {
            names
                .chains
                .get(&e.chain_id)
                .cloned()
                .unwrap_or_else(|| format!("chain id {}", e.chain_id))
        }),
        hop: classified.then_some(e.hop),
        direction: classified.then(|| {
            if e.flags & FLAG_REVERSE != 0 {
                "reverse".to_string()
            } else {
                "forward".to_string()
            }
        }),
        entry: e.flags & FLAG_ENTRY != 0,
        verdict: stat::NAMES
            .get(e.outcome as usize)
            .copied()
            .unwrap_or("unknown")
            .to_string(),
        target: (e.target_ifindex != 0).then(|| {
            names
                .target(e.target_ifindex, e.flags & FLAG_REVERSE != 0)
                .cloned()
                .unwrap_or_else(|| iface(e.target_ifindex))
        }),
        target_interface: (e.target_ifindex != 0).then(|| iface(e.target_ifindex)),
        target_mac: (e.mac != [0; 6]).then(|| {
            e.mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        }),
        tapped: e.tapped != 0,
        skipped: e.flags & FLAG_SKIPPED != 0,
        generation: e.gen,
        flow,
        node: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_named_by_the_pair_the_packet_was_sent_into() {
        // Crossed pairs: ifindex 3 is PP-AB's ingress and PP-BA's egress; 4 the other way
        // round; 5 one pair's ingress and egress at once.
        let names = Names {
            pairs: BTreeMap::from([(3, "PP-AB".into()), (4, "PP-BA".into()), (5, "PP-S".into())]),
            reverse_pairs: BTreeMap::from([
                (3, "PP-BA (egress)".into()),
                (4, "PP-AB (egress)".into()),
            ]),
            ..Default::default()
        };
        // Forward traffic goes into an ingress, reverse traffic into an egress.
        assert_eq!(names.target(3, false).unwrap(), "PP-AB");
        assert_eq!(names.target(3, true).unwrap(), "PP-BA (egress)");
        assert_eq!(names.target(4, true).unwrap(), "PP-AB (egress)");
        // One interface for both sides: its pair, either way.
        assert_eq!(names.target(5, true).unwrap(), "PP-S");
        assert_eq!(names.target(9, false), None);
    }
}
