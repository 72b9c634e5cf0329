//! Apply-to-effect latency with real traffic: a sender in the source VM emits a numbered,
//! timestamped UDP datagram every half millisecond; each SF's ingress NIC records which datagrams
//! reached it. An apply moves the chain's first hop from SF1 to SF2 (SF3 stays second); the
//! first datagram seen at SF2 tells when the new path took effect, relative to the moment
//! `sfcctl apply` returned, and SF3 tells whether any datagram skipped a hop on the way.

use std::{fs, time::Duration};

use sfc_lab::{
    demo::{Demo, DST_V4, SRC_V4},
    lab::wait_for,
    yaml::doc,
};

const PORT: u16 = 5000;
const COUNT: u64 = 6000;
const GAP: Duration = Duration::from_micros(500);
/// Generous, so that a loaded machine does not fail the test; the figure is printed.
const BOUND: Duration = Duration::from_millis(100);

/// Sends COUNT datagrams (sequence number, CLOCK_MONOTONIC send time) on a fixed schedule,
/// so that the rate holds even when a sleep overshoots.
const SENDER: &str = r#"
import socket, struct, sys, time
dst, port, count, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for seq in range(count):
    s.sendto(struct.pack('!QQ', seq, time.monotonic_ns()), (dst, port))
    delay = start + (seq + 1) * gap - time.monotonic()
    if delay > 0:
        time.sleep(delay)
"#;

/// Records "seq sent_ns seen_ns" for every datagram to PORT arriving on an interface; stops
/// one second after the last one, or at the time limit.
const RECEIVER: &str = r#"
import socket, struct, sys, time
iface, out, port, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
# SO_RCVBUFFORCE: room for seconds of datagrams, should the reader be descheduled for long.
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
s.bind((iface, 0))
s.settimeout(0.1)
f = open(out, 'w', buffering=1)
f.write('ready\n')
end = time.monotonic() + limit
last = None
while time.monotonic() < end and (last is None or time.monotonic() - last < 1.0):
    try:
        frame, addr = s.recvfrom(2048)
    except socket.timeout:
        continue
    seen = time.monotonic_ns()
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    ip = frame[14:]
    if len(ip) < 20 or ip[9] != 17:
        continue
    udp = ip[(ip[0] & 15) * 4:]
    if len(udp) < 24 or struct.unpack('!H', udp[2:4])[0] != port:
        continue
    seq, sent = struct.unpack('!QQ', udp[8:24])
    f.write(f'{seq} {sent} {seen}\n')
    last = time.monotonic()
f.write('done\n')
"#;

fn chain(group: &str) -> String {
    [
        doc("PortPair", "PP1", "{ingress: sf1-in, egress: sf1-out}"),
        doc("PortPair", "PP2", "{ingress: sf2-in, egress: sf2-out}"),
        doc("PortPairGroup", "PGA", "{portPairs: [PP1]}"),
        doc("PortPair", "PP3", "{ingress: sf3-in, egress: sf3-out}"),
        doc("PortPairGroup", "PGB", "{portPairs: [PP2]}"),
        doc("PortPairGroup", "PGC", "{portPairs: [PP3]}"),
        doc(
            "FlowClassifier",
            "FCU",
            &format!("{{protocol: udp, sourceIpPrefix: {SRC_V4}/32, destinationIpPrefix: {DST_V4}/32, destinationPortRange: '{PORT}', logicalSourcePort: vm-src}}"),
        ),
        doc(
            "PortChain",
            "PC1",
            &format!("{{portPairGroups: [{group}, PGC], flowClassifiers: [FCU]}}"),
        ),
    ]
    .concat()
}

/// CLOCK_MONOTONIC, the clock the sender and the receivers stamp with.
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// (seq, sent_ns, seen_ns) per datagram, and whether the receiver finished.
fn records(path: &str) -> (Vec<(u64, i64, i64)>, bool) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let rows = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().map(|x| x.parse::<i64>().ok());
            Some((w.next()?? as u64, w.next()??, w.next()??))
        })
        .collect();
    (rows, text.ends_with("done\n"))
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

#[test]
fn a_moved_chain_steers_the_next_packets_within_milliseconds_of_the_apply() {
    let mut demo = Demo::build("lat").unwrap();
    if let Err(e) = demo
        .lab
        .sfcctl_stdin(&["apply", "-f", "-"], Some(&chain("PGA")))
    {
        panic!("{e}\n{}", demo.lab.daemon_log());
    }
    let sender = demo.lab.file("send.py", SENDER).unwrap();
    let receiver = demo.lab.file("receive.py", RECEIVER).unwrap();
    let out = |sf: &str| {
        demo.lab
            .dir
            .join(format!("{sf}.txt"))
            .to_string_lossy()
            .into_owned()
    };
    let (out1, out2, out3) = (out("sf1"), out("sf2"), out("sf3"));
    for (sf, path) in [("sf1", &out1), ("sf2", &out2), ("sf3", &out3)] {
        demo.lab
            .spawn(sf, &format!("python3 {receiver} eth-in {path} {PORT} 30"))
            .unwrap();
    }
    let ready = |p: &str| fs::read_to_string(p).is_ok_and(|t| t.starts_with("ready"));
    assert!(
        wait_for(Duration::from_secs(10), || (ready(&out1)
            && ready(&out2)
            && ready(&out3))
        .then_some(()))
        .is_some(),
        "receivers did not start"
    );
    demo.lab
        .spawn(
            "src",
            &format!(
                "python3 {sender} {DST_V4} {PORT} {COUNT} {}",
                GAP.as_secs_f64()
            ),
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || (records(&out1).0.len() >= 200)
            .then_some(()))
        .is_some(),
        "the datagrams do not reach SF1 through the chain"
    );

    let started = monotonic_ns();
    demo.lab
        .sfcctl_stdin(&["apply", "-f", "-"], Some(&chain("PGB")))
        .unwrap();
    let returned = monotonic_ns();

    assert!(
        wait_for(Duration::from_secs(30), || (records(&out1).1
            && records(&out2).1
            && records(&out3).1)
            .then_some(()))
        .is_some(),
        "receivers did not finish"
    );
    let (old, _) = records(&out1);
    let (new, _) = records(&out2);
    let first_new = *new.iter().min().expect("no datagram took the new path");
    let last_old = *old.iter().max().unwrap();
    // The flip happened between the send of the last datagram on the old path and that of
    // the first on the new one; the latency is the latter, counted from the moment sfcctl
    // returned (nil when the new path was in effect before it returned: the daemon answers
    // after the flip).
    let after_return = first_new.1 - returned;
    println!(
        "apply-to-effect latency: {:.2} ms after apply returned (at most: the flip came \
         between datagram #{}, the last on the old path, sent at {:+.2} ms from the return, and \
         #{}, the first on the new path, sent at {:+.2} ms and seen at SF2 at {:+.2} ms); apply \
         took {:.2} ms; one datagram every {} us",
        ms(after_return.max(0)),
        last_old.0,
        ms(last_old.1 - returned),
        first_new.0,
        ms(after_return),
        ms(first_new.2 - returned),
        ms(returned - started),
        GAP.as_micros()
    );
    assert!(
        first_new.1 + GAP.as_nanos() as i64 >= started,
        "a datagram took the new path before the apply began"
    );
    // Make-before-break, per packet: nothing on the old path after the first on the new one,
    // and no datagram on both.
    assert!(
        last_old.0 < first_new.0,
        "old path used after the new one: {last_old:?} {first_new:?}"
    );
    let old_seqs: std::collections::BTreeSet<u64> = old.iter().map(|r| r.0).collect();
    assert!(
        new.iter().all(|r| !old_seqs.contains(&r.0)),
        "a datagram crossed both SFs"
    );
    let lost = (COUNT as usize).saturating_sub(old.len() + new.len());
    assert!(lost <= COUNT as usize / 100, "{lost} datagrams lost");
    // And per hop: every datagram that crossed SF1 or SF2 went on to SF3. A datagram leaving
    // SF2 before its egress had the program would skip the chain's second hop.
    let last_hop: std::collections::BTreeSet<u64> = records(&out3).0.iter().map(|r| r.0).collect();
    let skipped: Vec<u64> = old
        .iter()
        .chain(&new)
        .map(|r| r.0)
        .filter(|seq| !last_hop.contains(seq))
        .collect();
    assert!(
        skipped.is_empty(),
        "{} datagrams skipped SF3, e.g. #{:?}",
        skipped.len(),
        &skipped[..skipped.len().min(5)]
    );
    assert!(
        after_return < BOUND.as_nanos() as i64,
        "the new path took effect {:.1} ms after apply returned",
        ms(after_return)
    );
}
