//! `sfcctl trace`: installs a flow filter in the datapath and streams, live, each matching
//! packet's steps through this node. One trace at a time; it runs on its own thread, reading
//! the pinned filter and event maps, so the agent keeps serving while it lasts.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use aya::maps::{Array, Map, MapData, MapError, RingBuf};
use serde::{Deserialize, Serialize};
use sfc_common::{
    stat, trace_field, TraceEvent, TraceFilter, FAMILY_V4, FAMILY_V6, FLAG_ENTRY, FLAG_REVERSE,
    MAP_TRACE_EVENTS, MAP_TRACE_FILTER, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::protocol::Response;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error("a trace is already running on this node; stop it first")]
    Busy,
    #[error("--{field} {value:?}: {message}")]
    Filter {
        field: &'static str,
        value: String,
        message: String,
    },
    #[error("cloning the client socket: {0}")]
    Socket(std::io::Error),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
}

/// What to trace, as sfcctl takes it and sends it (any subset).
#[derive(Clone, Debug, Default, Serialize, Deserialize, clap::Args)]
pub struct TraceSpec {
    #[arg(long)]
    pub src: Option<String>,
    #[arg(long)]
    pub dst: Option<String>,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    pub proto: Option<String>,
    #[arg(long)]
    pub sport: Option<u16>,
    #[arg(long)]
    pub dport: Option<u16>,
    /// A tracking id (hex, as printed) to follow one flow.
    #[arg(long, value_parser = parse_id)]
    pub id: Option<u32>,
}

fn parse_id(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a tracking id (8 hex digits, as trace prints)"))
}

/// One step of one packet, as sfcctl prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Tracking id: the same for both directions of a flow.
    pub id: u32,
    pub interface: String,
    pub chain: Option<String>,
    pub hop: Option<u8>,
    pub direction: Option<String>,
    /// True where the packet entered its chain.
    pub entry: bool,
    pub verdict: String,
    /// The port pair the packet was sent into, or the logical destination port.
    pub target: Option<String>,
    pub target_interface: Option<String>,
    pub target_mac: Option<String>,
    pub tapped: bool,
    pub generation: u8,
    pub flow: String,
}

/// Names for the numbers in events, from the agent's state when the trace starts.
#[derive(Clone, Debug, Default)]
pub struct Names {
    pub chains: BTreeMap<u16, String>,
    pub interfaces: BTreeMap<u32, String>,
    /// Interface -> the port pair (and side) behind it.
    pub pairs: BTreeMap<u32, String>,
}

static RUNNING: AtomicBool = AtomicBool::new(false);

fn address(field: &'static str, text: &str) -> Result<(u8, [u32; 4]), TraceError> {
    let ip: IpAddr = text.parse().map_err(|_| TraceError::Filter {
        field,
        value: text.into(),
        message: "not an IPv4 or IPv6 address".into(),
    })?;
    Ok(match ip {
        IpAddr::V4(v4) => (FAMILY_V4, [u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (FAMILY_V6, [w(0), w(4), w(8), w(12)])
        }
    })
}

fn protocol(text: &str) -> Result<u8, TraceError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" => PROTO_ICMP,
        "icmpv6" => PROTO_ICMPV6,
        other => other.parse().map_err(|_| TraceError::Filter {
            field: "proto",
            value: text.into(),
            message: "use tcp, udp, icmp, icmpv6 or a number 0..255".into(),
        })?,
    })
}

impl TraceSpec {
    /// The datapath filter, checked (addresses of one family, a known protocol).
    pub fn filter(&self) -> Result<TraceFilter, TraceError> {
        let mut f = TraceFilter {
            enabled: 1,
            ..Default::default()
        };
        for (field, text, bit) in [
            ("src", &self.src, trace_field::SRC),
            ("dst", &self.dst, trace_field::DST),
        ] {
            let Some(text) = text else { continue };
            let (family, addr) = address(field, text)?;
            if f.family != 0 && f.family != family {
                return Err(TraceError::Filter {
                    field,
                    value: text.clone(),
                    message: "--src and --dst must be of one family".into(),
                });
            }
            f.family = family;
            f.fields |= bit;
            if bit == trace_field::SRC {
                f.src = addr;
            } else {
                f.dst = addr;
            }
        }
        if let Some(p) = &self.proto {
            f.proto = protocol(p)?;
            f.fields |= trace_field::PROTO;
        }
        if let Some(p) = self.sport {
            f.sport = p;
            f.fields |= trace_field::SPORT;
        }
        if let Some(p) = self.dport {
            f.dport = p;
            f.fields |= trace_field::DPORT;
        }
        if let Some(id) = self.id {
            f.id = id;
            f.fields |= trace_field::ID;
        }
        Ok(f)
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

/// Starts a trace on its own thread, answering on (a clone of) `stream`: one `Response`
/// line, then one `TraceRecord` line per event until the client hangs up. An error here is
/// the caller's to report on `stream`.
pub fn start(
    stream: &UnixStream,
    bpffs: &Path,
    spec: TraceSpec,
    names: Names,
) -> Result<(), TraceError> {
    let filter = spec.filter()?;
    let mut stream = stream.try_clone().map_err(TraceError::Socket)?;
    let mut filters: Array<MapData, TraceFilter> = open(bpffs, MAP_TRACE_FILTER, Map::Array)?;
    let mut events: RingBuf<MapData> = open(bpffs, MAP_TRACE_EVENTS, Map::RingBuf)?;
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(TraceError::Busy);
    }
    // Events of an earlier trace left in the ring are not this one's.
    while events.next().is_some() {}
    if let Err(source) = filters.set(0, filter, 0) {
        RUNNING.store(false, Ordering::Release);
        return Err(TraceError::Map {
            name: MAP_TRACE_FILTER,
            source,
        });
    }
    info!(?spec, "trace started");
    std::thread::spawn(move || {
        let hello = Response {
            ok: true,
            message: "tracing".into(),
            ..Default::default()
        };
        if send(&mut stream, &hello) {
            stream_events(&mut stream, &mut events, &names);
        }
        if let Err(e) = filters.set(0, TraceFilter::default(), 0) {
            warn!(error = %e, "clearing the trace filter");
        }
        info!("trace ended");
        RUNNING.store(false, Ordering::Release);
    });
    Ok(())
}

fn send<T: Serialize>(stream: &mut UnixStream, value: &T) -> bool {
    let mut line = serde_json::to_vec(value).expect("serialises");
    line.push(b'\n');
    stream.write_all(&line).is_ok()
}

/// Until the client hangs up: wait for events (or the hang-up), forward them.
fn stream_events(stream: &mut UnixStream, events: &mut RingBuf<MapData>, names: &Names) {
    let clock = Clock::now();
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut fds = [
            libc::pollfd {
                fd: events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
        ];
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, 500) };
        if rc < 0 {
            return;
        }
        // The client sends nothing after its request: readable means gone.
        if fds[1].revents != 0 {
            return;
        }
        while let Some(item) = events.next() {
            if item.len() < std::mem::size_of::<TraceEvent>() {
                continue;
            }
            let event: TraceEvent =
                unsafe { std::ptr::read_unaligned(item.as_ptr() as *const TraceEvent) };
            drop(item);
            if !send(stream, &record(&event, names, &clock)) {
                return;
            }
        }
    }
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
                .pairs
                .get(&e.target_ifindex)
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
        generation: e.gen,
        flow,
    }
}

/// How sfcctl prints a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The client side: asks the daemon at `socket` for a trace and prints records as they come,
/// until `count` records or `duration` (whichever first; neither: until interrupted).
pub fn follow(
    socket: &Path,
    spec: TraceSpec,
    count: Option<u64>,
    duration: Option<Duration>,
    format: Format,
) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    spec.filter().map_err(|e| e.to_string())?;
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach sfc-daemon at {}: {e}; is it running? (pass --socket if it listens elsewhere)",
            socket.display()
        )
    })?;
    let request = crate::protocol::Request::Trace { spec };
    if !send(&mut stream, &request) {
        return Err("sending to sfc-daemon failed".into());
    }
    let deadline = duration.map(|d| std::time::Instant::now() + d);
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("reading from sfc-daemon: {e}"))?;
    let hello: Response = serde_json::from_str(&line)
        .map_err(|e| format!("unexpected reply from sfc-daemon: {e}"))?;
    if !hello.ok {
        return Err(hello.message);
    }
    if format == Format::Table {
        println!(
            "{:<15} {:<10} {:<10} {:<10} {:>3} {:<7} {:<15} {:<16} FLOW",
            "TIME (UTC)", "ID", "INTERFACE", "CHAIN", "HOP", "DIR", "VERDICT", "TARGET"
        );
    }
    let mut printed = 0u64;
    while count.is_none_or(|c| printed < c) {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = stream.set_read_timeout(Some(left));
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("sfc-daemon ended the trace".into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(format!("reading from sfc-daemon: {e}")),
        }
        let r: TraceRecord = serde_json::from_str(&line)
            .map_err(|e| format!("unexpected trace record from sfc-daemon: {e}"))?;
        match format {
            Format::Json => println!("{}", line.trim_end()),
            Format::Table => println!(
                "{:<15} {:<10} {:<10} {:<10} {:>3} {:<7} {:<15} {:<16} {}",
                clock_text(r.time_ns),
                format!("{:08x}", r.id),
                r.interface,
                r.chain.as_deref().unwrap_or("-"),
                r.hop.map(|h| h.to_string()).unwrap_or("-".into()),
                r.direction.as_deref().unwrap_or("-"),
                if r.tapped {
                    format!("{}+tap", r.verdict)
                } else {
                    r.verdict.clone()
                },
                r.target.as_deref().unwrap_or("-"),
                r.flow
            ),
        }
        printed += 1;
    }
    Ok(())
}

/// HH:MM:SS.ffffff of a Unix time in nanoseconds (UTC).
fn clock_text(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ns / 1000 % 1_000_000
    )
}
