//! Traffic for the measurements, always from the source namespace to addresses inside the
//! destination namespace, every loop bounded by a deadline.
//!
//! - packet rate: 64-byte UDP frames from one sendmmsg sender per core, counted as received
//!   packets at the destination's interface (the kernel has no pktgen here and xdp-trafficgen
//!   does not run on this kernel);
//! - TCP throughput: iperf3;
//! - latency: ping at 1 ms intervals, each reply's time.

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use sfc_lab::frames;

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
    let (mut sent, mut failed) = (0u64, None);
    sending.started();
    while !sending.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        // ENOBUFS and the like: the path is saturated, which is the point; keep going.
        if n > 0 {
            sent += n as u64;
        } else {
            failed = Some(std::io::Error::last_os_error());
        }
    }
    match (sent, failed) {
        (0, Some(e)) => bail!("every sendmmsg from {src_ns} failed, the last with: {e}"),
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
    send: impl Fn(&Sending, Instant) -> Result<u64> + Sync,
) -> Result<(f64, u64)> {
    let sending = Sending::default();
    let set_up_by = Instant::now() + Duration::from_secs(5);
    let deadline = set_up_by + warmup + window + Duration::from_secs(5);
    thread::scope(|s| {
        let handles: Vec<_> = (0..senders)
            .map(|_| s.spawn(|| send(&sending, deadline)))
            .collect();
        // Bounded: a sender that fails before it starts ends the wait at `set_up_by`, and
        // its error is reported below.
        while sending.started.load(Ordering::Relaxed) < senders && Instant::now() < set_up_by {
            thread::sleep(Duration::from_millis(1));
        }
        let measured = received_rate(dst_ns, warmup, window);
        sending.stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        for h in handles {
            sent += h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        }
        if sent == 0 {
            bail!("the senders sent nothing");
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
    while_sending(dst_ns, senders, warmup, window, |sending, deadline| {
        flood(src_ns, sending, deadline)
    })
    .map(|(rate, _)| rate)
}

/// The 64-byte frame (60 without the FCS) the XDP frame source sends: UDP from the source to
/// the sink, IPv4 header checksum filled in, no UDP checksum.
fn udp64_frame() -> Vec<u8> {
    let udp = frames::udp(topo::PPS_PORT, topo::PPS_PORT, &[0u8; PAYLOAD]);
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
    while_sending(dst_ns, senders, warmup, window, |sending, deadline| {
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

/// TCP throughput in Gbit/s: iperf3 for `seconds`, or for `bytes` when given (smoke).
pub fn tcp_throughput(topo: &topo::Topology, seconds: u32, bytes: Option<&str>) -> Result<f64> {
    let amount = match bytes {
        Some(b) => format!("-n {b}"),
        None => format!("-t {seconds}"),
    };
    let out = topo
        .lab
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
pub fn ping_rtts(topo: &topo::Topology, count: usize) -> Result<Vec<f64>> {
    let out = topo.lab.sh(
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
