//! Traffic for the measurements, always from the source namespace to addresses inside the
//! destination namespace, every loop bounded by a deadline.
//!
//! - packet rate: 64-byte UDP frames from one sendmmsg sender per core, counted as received
//!   packets at the destination's interface (the kernel has no pktgen here and xdp-trafficgen
//!   does not run on this kernel); from UDP sockets, from a packet socket in three flow mixes
//!   ([`FlowMix`]), and as XDP frames;
//! - TCP throughput: iperf3;
//! - connection rate: short TCP connections (connect, a small request and answer, close);
//! - latency: ping at 1 ms intervals, each reply's time.

use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sfc_lab::{frames, lab::Lab};

use super::{bpf, interrupted, netns, topology as topo};

/// UDP payload for a 64-byte frame on the wire: 64 - 4 (FCS) - 14 (Ethernet) - 20 - 8.
const PAYLOAD: usize = 18;
const BATCH: usize = 64;

fn addr(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().expect("a constant address"), port)
}

/// Sends 64-byte frames from `src_ns` to the sink until `stop`; returns the number sent.
fn flood(src_ns: &str, sending: &Sending, deadline: Instant) -> Result<u64> {
    netns::enter(src_ns)?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr(topo::SINK, topo::PPS_PORT))?;
    let payload = [0u8; PAYLOAD];
    let mut iov = [libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: PAYLOAD,
    }];
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let what = format!("from {src_ns}");
    send_batches(
        socket.as_raw_fd(),
        &mut msgs,
        sending,
        deadline,
        &what,
        |_| {},
    )
}

/// Sends `msgs` with sendmmsg on `fd` until `stop` or `deadline`, calling `refill` with the
/// number sent so far before each batch; returns the number sent. ENOBUFS and the like only
/// mean that the path is saturated, which is the point: the batch is sent again.
fn send_batches(
    fd: i32,
    msgs: &mut [libc::mmsghdr],
    sending: &Sending,
    deadline: Instant,
    what: &str,
    mut refill: impl FnMut(u64),
) -> Result<u64> {
    let (mut sent, mut failed) = (0u64, None);
    sending.started();
    while !sending.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        refill(sent);
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n > 0 {
            sent += n as u64;
        } else {
            failed = Some(std::io::Error::last_os_error());
        }
    }
    match (sent, failed) {
        (0, Some(e)) => bail!("every sendmmsg {what} failed, the last with: {e}"),
        _ => Ok(sent),
    }
}

/// Packets per second received at the destination's interface over `window`, after `warmup`.
fn received_rate(dst_ns: &str, warmup: Duration, window: Duration) -> Result<f64> {
    thread::sleep(warmup);
    let (rx0, _) = netns::counters(dst_ns, "eth0")?;
    let t0 = Instant::now();
    thread::sleep(window);
    let (rx1, _) = netns::counters(dst_ns, "eth0")?;
    Ok((rx1 - rx0) as f64 / t0.elapsed().as_secs_f64())
}

/// What the senders and the measuring thread share: senders say when they start sending, and
/// stop when told.
#[derive(Default)]
struct Sending {
    stop: AtomicBool,
    started: AtomicUsize,
}

impl Sending {
    /// A sender is set up and sends from now on.
    fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `senders` copies of `send` (each calls `Sending::started` once set up, sends until
/// `stop` is set or its deadline passes, and returns how many packets it sent) and measures
/// the destination's received rate once they all send (on a busy machine a thread may start
/// late: a window that opened before would count its absence). Returns the rate and the
/// packets sent.
fn while_sending(
    dst_ns: &str,
    senders: usize,
    warmup: Duration,
    window: Duration,
    send: impl Fn(usize, &Sending, Instant) -> Result<u64> + Sync,
) -> Result<(f64, u64)> {
    while_running(senders, warmup + window, send, || {
        received_rate(dst_ns, warmup, window)
    })
}

/// Runs `workers` copies of `work` (given their index; see [`while_sending`]) and, once they
/// all started, `measure`; then stops them. Returns what `measure` returned and the sum of what
/// the workers returned.
fn while_running(
    workers: usize,
    measuring: Duration,
    work: impl Fn(usize, &Sending, Instant) -> Result<u64> + Sync,
    measure: impl FnOnce() -> Result<f64>,
) -> Result<(f64, u64)> {
    let sending = Sending::default();
    let set_up_by = Instant::now() + Duration::from_secs(5);
    let deadline = set_up_by + measuring + Duration::from_secs(5);
    thread::scope(|s| {
        let (sending, work) = (&sending, &work);
        let handles: Vec<_> = (0..workers)
            .map(|i| s.spawn(move || work(i, sending, deadline)))
            .collect();
        // Bounded: a worker that fails before it starts ends the wait at `set_up_by`, and
        // its error is reported below.
        while sending.started.load(Ordering::Relaxed) < workers && Instant::now() < set_up_by {
            thread::sleep(Duration::from_millis(1));
        }
        let measured = measure();
        sending.stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for h in handles {
            sent += h
                .join()
                .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        if sent == 0 {
            bail!("the workers did nothing");
        }
        Ok((measured?, sent))
    })
}

/// Received packets per second at the destination, over `window` after `warmup`.
pub fn packet_rate(
    src_ns: &str,
    dst_ns: &str,
    senders: usize,
    warmup: Duration,
    window: Duration,
) -> Result<f64> {
    while_sending(dst_ns, senders, warmup, window, |_, sending, deadline| {
        flood(src_ns, sending, deadline)
    })
    .map(|(rate, _)| rate)
}

/// The 64-byte frame (60 without the FCS) the XDP frame source sends: UDP from the source to
/// the sink, IPv4 header checksum filled in, no UDP checksum.
fn udp64_frame() -> Vec<u8> {
    udp64_frame_with_ports(topo::PPS_PORT, topo::PPS_PORT)
}

fn udp64_frame_with_ports(sport: u16, dport: u16) -> Vec<u8> {
    let udp = frames::udp(sport, dport, &[0u8; PAYLOAD]);
    let mut ip = frames::ipv4(
        17,
        topo::octets(topo::SRC),
        topo::octets(topo::SINK),
        &[],
        0,
        &udp,
    );
    frames::ipv4_checksum(&mut ip);
    frames::eth(topo::SHARED_MAC, topo::SRC_MAC, 0x0800, &ip)
}

/// Received packets per second at the destination when the source's NIC sends 64-byte frames
/// as XDP frames (BPF_PROG_TEST_RUN with live frames, one sender per core): they reach the
/// node the way frames from a NIC do, before any skb exists, and no socket is involved.
pub fn packet_rate_xdp_frames(
    object: &std::path::Path,
    src_ns: &str,
    dst_ns: &str,
    senders: usize,
    warmup: Duration,
    window: Duration,
) -> Result<f64> {
    let frame = udp64_frame();
    while_sending(dst_ns, senders, warmup, window, |_, sending, deadline| {
        netns::enter(src_ns)?;
        let ebpf = bpf::load_tx(object)?;
        let ifindex = netns::ifindex_here("eth0")?;
        // About 20 ms of frames per call at the rates seen here.
        const PER_CALL: u32 = 1 << 14;
        let mut sent = 0;
        sending.started();
        while !sending.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            bpf::send_live_frames(&ebpf, &frame, ifindex, PER_CALL)?;
            sent += PER_CALL as u64;
        }
        Ok(sent)
    })
    .map(|(rate, _)| rate)
}

/// Which flows the frames of a packet-rate measurement belong to. Flows differ by UDP ports
/// only, so every system steers them all (the chains match addresses) and the IPv4 header,
/// its checksum included, stays the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowMix {
    /// One flow per sender.
    One,
    /// This many flows in all, each sender cycling through its share of them.
    Recurring(u32),
    /// A flow never seen before on every frame: the source port steps through 64 000 values,
    /// and the destination port moves on after each lap.
    NewEveryFrame,
}

/// The mixes every system is measured in, at every chain length.
pub const MIXES: [FlowMix; 3] = [
    FlowMix::One,
    FlowMix::Recurring(10_000),
    FlowMix::NewEveryFrame,
];

/// Source ports of the mixes: 64 000 of them, from 1024.
const FIRST_SPORT: u16 = 1024;
const SPORTS: u64 = 64_000;

impl FlowMix {
    pub fn metric(self) -> &'static str {
        match self {
            FlowMix::One => "flows_one_pps",
            FlowMix::Recurring(_) => "flows_10k_pps",
            FlowMix::NewEveryFrame => "flows_new_pps",
        }
    }

    /// The ports of sender `sender`'s (of `senders`) `n`-th frame.
    fn ports(self, sender: usize, senders: usize, n: u64) -> (u16, u16) {
        let sender = sender as u64;
        match self {
            FlowMix::One => (FIRST_SPORT + sender as u16, topo::PPS_PORT),
            FlowMix::Recurring(flows) => {
                let share = (flows as u64 / senders as u64).max(1);
                let flow = sender * share + n % share;
                (
                    FIRST_SPORT + (flow % SPORTS) as u16,
                    topo::PPS_PORT + (flow / SPORTS) as u16,
                )
            }
            // Each sender has destination ports of its own: 20 000 laps of 64 000 frames
            // before a flow comes back, far more than any window here sends.
            FlowMix::NewEveryFrame => (
                FIRST_SPORT + (n % SPORTS) as u16,
                10_000 + (sender * 20_000 + (n / SPORTS) % 20_000) as u16,
            ),
        }
    }
}

/// Sends 64-byte frames of `mix` out of the source's NIC through a packet socket (built here:
/// a UDP socket cannot change its source port per datagram) until `stop`; returns the number
/// sent. From the node's side they arrive exactly like the UDP sockets' frames.
fn flood_frames(
    src_ns: &str,
    mix: FlowMix,
    sender: usize,
    senders: usize,
    sending: &Sending,
    deadline: Instant,
) -> Result<u64> {
    netns::enter(src_ns)?;
    let ifindex = netns::ifindex_here("eth0")?;
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&topo::SHARED_MAC);
    let mut frames: Vec<Vec<u8>> = (0..BATCH).map(|_| udp64_frame()).collect();
    // UDP header right after Ethernet (14) and IPv4 (20): source port, then destination port.
    const PORTS: usize = 34;
    let mut iovs: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = &mut to as *mut libc::sockaddr_ll as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let what = format!("on a packet socket in {src_ns}");
    let fd = socket.as_raw_fd();
    // The frames of a short batch are sent again, so no flow of the mix is skipped.
    send_batches(fd, &mut msgs, sending, deadline, &what, |sent| {
        for (k, frame) in frames.iter_mut().enumerate() {
            let (sport, dport) = mix.ports(sender, senders, sent + k as u64);
            frame[PORTS..PORTS + 2].copy_from_slice(&sport.to_be_bytes());
            frame[PORTS + 2..PORTS + 4].copy_from_slice(&dport.to_be_bytes());
        }
    })
}

/// Received packets per second at the destination, over `window` after `warmup`, of frames in
/// flow mix `mix` sent from a packet socket per sender.
pub fn packet_rate_mix(
    src_ns: &str,
    dst_ns: &str,
    mix: FlowMix,
    senders: usize,
    warmup: Duration,
    window: Duration,
) -> Result<f64> {
    while_sending(dst_ns, senders, warmup, window, |k, sending, deadline| {
        flood_frames(src_ns, mix, k, senders, sending, deadline)
    })
    .map(|(rate, _)| rate)
}

/// The request and the answer of one short connection.
pub const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
pub const ANSWER: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";

/// Short TCP connections per second from the source to the destination, each: connect, send a
/// small request, read the small answer to its end (the server closes first, so waiting
/// connections pile up at the server, never as used source ports at the clients), close.
/// Counted over `window` after `warmup`, from `clients` clients and as many server threads.
pub fn connection_rate(
    src_ns: &str,
    dst_ns: &str,
    clients: usize,
    warmup: Duration,
    window: Duration,
) -> Result<f64> {
    let listener = netns::run_in(dst_ns, || {
        let l = TcpListener::bind(addr(topo::DST, topo::CONN_PORT))?;
        // accept() wakes up every 20 ms to see whether to stop.
        set_timeout(l.as_raw_fd(), libc::SO_RCVTIMEO, Duration::from_millis(20))?;
        Ok(l)
    })
    .context("the connection-rate server")?;
    let done = AtomicU64::new(0);
    let (listener, done) = (&listener, &done);
    let stop_servers = AtomicBool::new(false);
    let stop_servers = &stop_servers;
    thread::scope(|s| {
        let servers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let mut buf = [0u8; 256];
                    let give_up = Instant::now() + warmup + window + Duration::from_secs(20);
                    while !stop_servers.load(Ordering::Relaxed) && Instant::now() < give_up {
                        let Ok((mut c, _)) = listener.accept() else {
                            continue;
                        };
                        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                        if matches!(c.read(&mut buf), Ok(n) if n > 0) {
                            let _ = c.write_all(ANSWER);
                        }
                    }
                })
            })
            .collect();
        let result = while_running(
            clients,
            warmup + window,
            |_, sending, deadline| {
                netns::enter(src_ns)?;
                let to = std::net::SocketAddr::V4(addr(topo::DST, topo::CONN_PORT));
                let mut answer = Vec::with_capacity(ANSWER.len());
                let (mut ok, mut failed) = (0u64, None);
                sending.started();
                while !sending.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    answer.clear();
                    let outcome = TcpStream::connect_timeout(&to, Duration::from_secs(1)).and_then(
                        |mut c| {
                            c.set_read_timeout(Some(Duration::from_secs(1)))?;
                            c.write_all(REQUEST)?;
                            c.read_to_end(&mut answer)
                        },
                    );
                    match outcome {
                        Ok(_) if answer == ANSWER => {
                            ok += 1;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => failed = Some("a truncated answer".to_string()),
                        Err(e) => failed = Some(e.to_string()),
                    }
                }
                match (ok, failed) {
                    (0, Some(e)) => bail!("no connection completed; the last failed with: {e}"),
                    _ => Ok(ok),
                }
            },
            || {
                thread::sleep(warmup);
                let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
                thread::sleep(window);
                let c1 = done.load(Ordering::Relaxed);
                Ok((c1 - c0) as f64 / t0.elapsed().as_secs_f64())
            },
        );
        stop_servers.store(true, Ordering::Relaxed);
        for h in servers {
            h.join()
                .map_err(|_| anyhow::anyhow!("a connection-rate server thread panicked"))?;
        }
        result.map(|(rate, _)| rate)
    })
}

fn set_timeout(fd: i32, option: libc::c_int, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if r != 0 {
        bail!("setsockopt: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// TCP throughput in Gbit/s: iperf3 for `seconds`, or for `bytes` when given (smoke).
pub fn tcp_throughput(lab: &Lab, seconds: u32, bytes: Option<&str>) -> Result<f64> {
    let amount = match bytes {
        Some(b) => format!("-n {b}"),
        None => format!("-t {seconds}"),
    };
    let out = lab
        .sh(
            "src",
            &format!(
                "timeout {} iperf3 -4 -c {} {amount} -J --connect-timeout 3000",
                seconds + 15,
                topo::DST
            ),
        )
        .context("iperf3")?;
    let json: serde_json::Value = serde_json::from_str(&out).context("parsing iperf3 -J")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .with_context(|| format!("no end.sum_received in iperf3 output: {out}"))
}

/// Round-trip times in µs of `count` pings at 1 ms intervals.
pub fn ping_rtts(lab: &Lab, count: usize) -> Result<Vec<f64>> {
    let out = lab.sh(
        "src",
        &format!(
            "timeout {} ping -n -c {count} -i 0.001 -W 1 {} || true",
            count / 200 + 10,
            topo::DST
        ),
    )?;
    let rtts: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.trim_end_matches(" ms").trim().parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect();
    if rtts.len() < count / 2 {
        bail!("only {} of {count} pings answered", rtts.len());
    }
    Ok(rtts)
}

/// Runs `apply` while sending probe datagrams every 100 µs into the chain; probes are
/// blackholed by the node, so only a steered one can reach the destination. Returns the apply's
/// wall time and the time from its start until the first probe arrived, both in ms; the latter
/// is None if none arrived within `limit` after the apply.
pub fn apply_and_probe(
    src_ns: &str,
    dst_ns: &str,
    limit: Duration,
    apply: impl FnOnce() -> Result<()>,
) -> Result<(f64, Option<f64>)> {
    let stop = AtomicBool::new(false);
    let stop = &stop;
    thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = s.spawn(move || -> Result<Option<Instant>> {
            netns::enter(dst_ns)?;
            let socket = UdpSocket::bind(addr(topo::PROBE, topo::PROBE_PORT))?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + limit + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if socket.recv(&mut buf).is_ok() {
                    return Ok(Some(Instant::now()));
                }
            }
            Ok(None)
        });
        let sender = s.spawn(move || -> Result<()> {
            netns::enter(src_ns)?;
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(addr(topo::PROBE, topo::PROBE_PORT))?;
            let deadline = Instant::now() + limit + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = socket.send(b"probe");
                thread::sleep(Duration::from_micros(100));
            }
            Ok(())
        });
        let result = (|| -> Result<(Instant, Duration)> {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .context("the probe receiver did not start")?;
            // Nothing may steer yet: a probe arriving now means that the previous system is
            // still in place, and the figure would be meaningless.
            thread::sleep(Duration::from_millis(5));
            if receiver.is_finished() {
                bail!("probes reach the destination before the chain is applied");
            }
            let start = Instant::now();
            apply()?;
            let applied = start.elapsed();
            let wait_until = Instant::now() + limit;
            while !receiver.is_finished() && Instant::now() < wait_until && !interrupted() {
                thread::sleep(Duration::from_millis(1));
            }
            Ok((start, applied))
        })();
        stop.store(true, Ordering::Relaxed);
        let arrived = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("probe receiver panicked"))??;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("probe sender panicked"))??;
        let (start, applied) = result?;
        Ok((
            applied.as_secs_f64() * 1e3,
            arrived.map(|t| t.duration_since(start).as_secs_f64() * 1e3),
        ))
    })
}
