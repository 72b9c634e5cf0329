//! Real-kernel tests. They need root, create their own network namespaces
//! (deleted by a guard, also on panic) and never touch the namespace the test
//! binary was started in: every `ip` command is `ip -n <test namespace>`, and
//! netlink sockets are opened by threads moved into a test namespace.

use std::{
    fs::{self, File},
    io::Write,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use sfc_daemon::dataplane::netlink::{self, Netlink, NetlinkError};
use tokio::runtime::{Builder, Runtime};

/// A network namespace of this test run, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hnl-{}-{tag}{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        Self(name)
    }

    /// `ip -n <self> <args>`, which must succeed; returns stdout.
    fn ip(&self, args: &str) -> String {
        run(Command::new("ip")
            .args(["-n", &self.0])
            .args(args.split_whitespace()))
    }

    /// `ip -n <self> -batch -` with `commands` on stdin.
    fn batch(&self, commands: &str) {
        let mut child = Command::new("ip")
            .args(["-n", &self.0, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning ip -batch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ip -batch failed");
    }

    /// "dummy", or "ifb" (a similar inert device) on kernels built without
    /// the dummy driver.
    fn dummy_kind(&self) -> &'static str {
        let probe = Command::new("ip")
            .args(["-n", &self.0, "link", "add", "probe0", "type", "dummy"])
            .stderr(Stdio::null())
            .status();
        if probe.unwrap().success() {
            self.ip("link del probe0");
            "dummy"
        } else {
            "ifb"
        }
    }

    fn mac(&self, dev: &str) -> [u8; 6] {
        // `ip -br link`: "<name>[@peer] <state> <mac> <flags>"
        let out = self.ip(&format!("-br link show dev {dev}"));
        let field = out.split_whitespace().nth(2).expect("mac in ip -br output");
        let bytes: Vec<u8> = field
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        bytes.try_into().expect("6-byte mac")
    }

    /// Runs `f` in a thread moved into this namespace, so that every socket
    /// it (and any runtime it builds) opens belongs to the namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("opening netns");
                // SAFETY: plain syscall on an open descriptor; affects this thread only.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Tolerates a namespace a test already deleted.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawning ip");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn runtime() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn connect(rt: &Runtime) -> Netlink {
    let _entered = rt.enter();
    Netlink::connect().expect("connect")
}

/// Waits (bounded) until `rx` has been quiet for 50 ms; returns how many
/// callbacks were drained.
fn settle(rx: &mpsc::Receiver<Instant>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut drained = 0;
    while Instant::now() < deadline && rx.recv_timeout(Duration::from_millis(50)).is_ok() {
        drained += 1;
    }
    drained
}

#[test]
fn netlink_is_send_sync_and_needs_a_runtime() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Netlink>();
    assert!(matches!(
        Netlink::connect(),
        Err(NetlinkError::NoRuntime { .. })
    ));
    assert!(matches!(
        netlink::watch_links(|| {}),
        Err(NetlinkError::NoRuntime { .. })
    ));
}

#[test]
fn links_and_peer_macs() {
    let a = Netns::new("a");
    let b = Netns::new("b");
    a.ip("link add va type veth peer name vb");
    a.ip("link add vc type veth peer name vd");
    a.ip("link set va up");
    a.ip(&format!("link set vb netns {}", b.0));
    let (va_mac, vb_mac, vd_mac) = (a.mac("va"), b.mac("vb"), a.mac("vd"));

    a.enter(|| {
        let rt = runtime();
        let nl = connect(&rt);
        // Like the agent: a plain thread blocking on the runtime's handle.
        let links = rt.handle().block_on(nl.links()).unwrap();
        println!("links: {links:?}");

        let lo = &links["lo"];
        assert_eq!(
            (lo.index, lo.kind.as_deref(), lo.peer_index),
            (1, None, None)
        );
        assert_eq!(rt.handle().block_on(nl.peer_mac(lo)).unwrap(), None);

        let va = &links["va"];
        assert_eq!(va.kind.as_deref(), Some("veth"));
        assert_eq!(va.mac, Some(va_mac));
        assert!(va.up);
        assert!(va.peer_index.is_some());
        assert!(va.peer_nsid.is_some(), "peer in another namespace");
        assert_eq!(rt.handle().block_on(nl.peer_mac(va)).unwrap(), Some(vb_mac));

        let (vc, vd) = (&links["vc"], &links["vd"]);
        assert_eq!(vc.kind.as_deref(), Some("veth"));
        assert!(!vc.up && !vd.up);
        assert_eq!((vc.peer_index, vc.peer_nsid), (Some(vd.index), None));
        assert_eq!(vd.mac, Some(vd_mac));
        assert_eq!(rt.handle().block_on(nl.peer_mac(vc)).unwrap(), Some(vd_mac));

        // A peer that vanished is Ok(None): same namespace (ENODEV)...
        let (vc, va) = (vc.clone(), va.clone());
        a.ip("link del vc");
        assert_eq!(rt.handle().block_on(nl.peer_mac(&vc)).unwrap(), None);

        // ...and with its whole namespace gone (the nsid no longer resolves).
        // Namespace teardown is asynchronous: wait, bounded, for va to go too.
        run(Command::new("ip").args(["netns", "del", &b.0]));
        let gone = (0..100).any(|_| {
            thread::sleep(Duration::from_millis(50));
            !rt.handle().block_on(nl.links()).unwrap().contains_key("va")
        });
        assert!(gone, "va still there 5 s after deleting the peer namespace");
        assert_eq!(rt.handle().block_on(nl.peer_mac(&va)).unwrap(), None);
    });
}

#[test]
fn watch_links_reports_each_change_quickly() {
    let a = Netns::new("wa");
    let b = Netns::new("wb");
    a.enter(|| {
        let rt = runtime();
        let (tx, rx) = mpsc::channel();
        {
            let _entered = rt.enter();
            netlink::watch_links(move || {
                let _ = tx.send(Instant::now());
            })
            .unwrap();
        }
        let kind = a.dummy_kind();
        let steps = [
            ("add", format!("link add x0 type {kind}")),
            ("up", "link set x0 up".into()),
            ("down", "link set x0 down".into()),
            ("rename", "link set x0 name x1".into()),
            ("move to other netns", format!("link set x1 netns {}", b.0)),
            ("add", format!("link add x2 type {kind}")),
            ("delete", "link del x2".into()),
        ];
        for (what, cmd) in steps {
            settle(&rx);
            let start = Instant::now();
            a.ip(&cmd);
            let finished = Instant::now();
            let called = rx
                .recv_timeout(Duration::from_millis(100))
                .unwrap_or_else(|_| panic!("no changed() within 100 ms of `{cmd}`"));
            println!(
                "{what:>20}: changed() {:>6.2} ms after `ip` started, {:>5.2} ms after it exited",
                called.saturating_duration_since(start).as_secs_f64() * 1e3,
                called.saturating_duration_since(finished).as_secs_f64() * 1e3,
            );
        }
        // Quiet namespace, quiet callback: no busy loop.
        settle(&rx);
        assert_eq!(rx.recv_timeout(Duration::from_millis(300)).ok(), None);
        drop(rt);
    });
}

/// Drops counted by the kernel on this namespace's NETLINK_ROUTE sockets
/// subscribed to RTNLGRP_LINK (columns of /proc/net/netlink).
fn link_event_socket_drops() -> u64 {
    let table = fs::read_to_string("/proc/thread-self/net/netlink").unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f[1] == "0" && u32::from_str_radix(f[3], 16).unwrap() & 1 != 0)
        .map(|f| f[8].parse::<u64>().unwrap())
        .sum()
}

#[test]
fn watch_links_survives_overflow() {
    let a = Netns::new("ov");
    a.enter(|| {
        // A current_thread runtime runs its tasks only inside block_on, so
        // nothing reads the event socket while the burst below fills it.
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        {
            let _entered = rt.enter();
            let calls = calls.clone();
            netlink::watch_links(move || {
                calls.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
        }
        // 50 links set up and down 40 times: 4000+ events within a second,
        // more than the socket buffer holds.
        let kind = a.dummy_kind();
        let adds: String = (0..50)
            .map(|i| format!("link add o{i} type {kind}\n"))
            .collect();
        let toggle = |state| (0..50).map(move |i| format!("link set o{i} {state}\n"));
        let toggles: String = (0..40)
            .flat_map(|_| toggle("up").chain(toggle("down")))
            .collect();
        let t = Instant::now();
        a.batch(&adds);
        a.batch(&toggles);
        let drops = link_event_socket_drops();
        println!(
            "50 adds + 4000 up/down in {:?}, {drops} events dropped by the kernel",
            t.elapsed()
        );
        assert!(drops > 0, "the burst did not overflow the event socket");

        // Let the runtime read the backlog and the overrun: a callback per
        // batch window of the backlog (a few), not one per event (thousands).
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(300)).await });
        let after_burst = calls.load(Ordering::Relaxed);
        println!("changed() called {after_burst} times for the burst");
        assert!((1..=20).contains(&after_burst));

        // The subscription still works after ENOBUFS.
        let start = Instant::now();
        a.ip(&format!("link add late type {kind}"));
        let seen = rt.block_on(async {
            let wait = async {
                while calls.load(Ordering::Relaxed) == after_burst {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_millis(100), wait).await
        });
        assert!(
            seen.is_ok(),
            "no changed() within 100 ms after the overflow"
        );
        println!(
            "changed() after overflow: {:.2} ms after `ip` started",
            start.elapsed().as_secs_f64() * 1e3
        );
    });
}

#[test]
fn dumps_under_churn_are_never_torn() {
    const DUMPS: usize = 1000;
    let a = Netns::new("churn");
    let kind = a.dummy_kind();
    a.ip(&format!("link add keep0 type {kind}"));
    let adds: String = (0..200)
        .map(|i| format!("link add d{i} type {kind}\n"))
        .collect();
    let dels: String = (0..200).map(|i| format!("link del d{i}\n")).collect();
    a.enter(|| {
        let rt = runtime();
        let nl = connect(&rt);
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            let churn = s.spawn(|| {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) && rounds < 1000 {
                    a.batch(&adds);
                    a.batch(&dels);
                    rounds += 1;
                }
                rounds
            });
            // Stops the churn also when an assertion below panics.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let stop_guard = Stop(&stop);
            thread::sleep(Duration::from_millis(50));

            let (mut min, mut max) = (usize::MAX, 0);
            let t = Instant::now();
            for _ in 0..DUMPS {
                let links = rt.handle().block_on(nl.links()).expect("a complete dump");
                assert_eq!(links.get("lo").map(|l| l.index), Some(1));
                assert!(links.contains_key("keep0"));
                let mut indices: Vec<u32> = links.values().map(|l| l.index).collect();
                indices.sort_unstable();
                indices.dedup();
                assert_eq!(indices.len(), links.len(), "duplicate ifindex");
                for (name, link) in &links {
                    assert_eq!(name, &link.name);
                    if name.starts_with('d') {
                        assert_eq!(link.kind.as_deref(), Some(kind));
                    }
                }
                (min, max) = (min.min(links.len()), max.max(links.len()));
            }
            let elapsed = t.elapsed();
            drop(stop_guard);
            let rounds = churn.join().unwrap();
            println!(
                "{DUMPS} dumps in {elapsed:?} ({min}..={max} links) during {rounds} churn rounds \
                 of 200 adds + 200 deletes; {} dumps were NLM_F_DUMP_INTR and redone",
                nl.interrupted_dumps()
            );
            assert!(rounds > 0 && max > 2, "the churn overlapped the dumps");
        });
    });
}
