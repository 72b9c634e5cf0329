//! Labs of network namespaces for the demo, the end-to-end tests and the bench.
//!
//! A [`Lab`] owns everything it creates (namespaces, veths inside them, processes, a bpffs
//! mount, a temp directory) and removes all of it when dropped, also when a test fails. Nothing
//! is created in, or sent through, the root namespace: all addresses live inside the lab.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `f` returns `Some`, polling, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub dir: PathBuf,
    bpffs_mounted: bool,
    daemon: Option<Child>,
    pub bin_dir: PathBuf,
    /// Extra sfc-daemon flags (`--mode xdp`, say), for every start.
    pub daemon_args: Vec<String>,
}

/// Where `cargo build --release` put the binaries (override with SFC_BIN_DIR).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SFC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

/// The path of `name` in the repository's `tests/scripts/` (the helper programs the tests run
/// inside a lab's namespaces, e.g. `script("udp_stream.py")`), as text for a shell command line.
pub fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/scripts")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Starts `bin_dir`/sfc-daemon inside network namespace `netns` (its full name) with its socket
/// (`dir`/sfc.sock, a stale one removed first), state directory (`dir`/state), `bpffs` and
/// metrics port (127.0.0.1:9464 of that namespace), then `args`, with `RUST_LOG=log_level`
/// and its output appended to `dir`/daemon.log, and waits until it serves its socket. The
/// caller owns the process; one that exits or does not come up in 20 s is killed, and the error
/// carries its log.
pub fn spawn_daemon_at(
    netns: &str,
    bin_dir: &Path,
    dir: &Path,
    bpffs: &Path,
    args: &[String],
    log_level: &str,
) -> Result<Child> {
    let socket = dir.join("sfc.sock");
    let log_path = dir.join("daemon.log");
    let _ = fs::remove_file(&socket);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(bin_dir.join("sfc-daemon"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--bpffs")
        .arg(bpffs)
        .args(["--metrics", "127.0.0.1:9464"])
        .args(args)
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting sfc-daemon")?;
    let up = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(status));
        }
        socket.exists().then_some(Ok(()))
    });
    let log_text = || fs::read_to_string(&log_path).unwrap_or_default();
    let failure = match up {
        Some(Ok(())) => return Ok(child),
        Some(Err(status)) => format!("sfc-daemon exited ({status}):\n{}", log_text()),
        None => format!("sfc-daemon did not come up in 20 s:\n{}", log_text()),
    };
    let _ = child.kill();
    let _ = child.wait();
    bail!(failure)
}

/// Runs `bin_dir`/sfcctl against the daemon serving `socket`, `stdin` (if any) as its input;
/// Ok(stdout) on success, Err(stderr) otherwise. A unix socket is reached by its path, so
/// sfcctl runs here, whatever namespace the daemon is in.
pub fn sfcctl_at(
    bin_dir: &Path,
    socket: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::result::Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(bin_dir.join("sfcctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running sfcctl: {e}"))?;
    let mut input = child.stdin.take().expect("piped");
    if let Some(text) = stdin {
        input
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Lab {
    /// A new, empty lab; `tag` (a few letters) makes its namespace names recognisable.
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sfc{tag}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir)?;
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
            bpffs_mounted: false,
            daemon: None,
            bin_dir: bin_dir(),
            daemon_args: Vec::new(),
        })
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    pub fn add_ns(&mut self, short: &str) -> Result<String> {
        let name = self.ns(short);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        self.namespaces.push(name.clone());
        self.sh(short, "ip link set lo up")?;
        Ok(name)
    }

    /// Runs a shell command inside namespace `short`.
    pub fn sh(&self, short: &str, script: &str) -> Result<String> {
        run(Command::new("ip").args(["netns", "exec", &self.ns(short), "sh", "-c", script]))
    }

    /// A command to run inside namespace `short`.
    pub fn cmd(&self, short: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short), program]);
        c
    }

    /// Starts a background process inside namespace `short`; killed when the lab goes.
    pub fn spawn(&mut self, short: &str, script: &str) -> Result<()> {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(short),
                "sh",
                "-c",
                &format!("exec {script}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning a lab process")?;
        self.children.push(child);
        Ok(())
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`, both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<()> {
        self.sh(
            a,
            &format!(
                "ip link add {a_if} type veth peer name {b_if} netns {b} && ip link set {a_if} up",
                b = self.ns(b)
            ),
        )?;
        self.sh(b, &format!("ip link set {b_if} up"))?;
        Ok(())
    }

    /// Mounts a private bpffs for the daemon (outside /sys, which `ip netns exec` remounts).
    pub fn bpffs(&mut self) -> Result<PathBuf> {
        let path = self.dir.join("bpffs");
        if !self.bpffs_mounted {
            fs::create_dir_all(&path)?;
            run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
            self.bpffs_mounted = true;
        }
        Ok(path)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sfc.sock")
    }

    /// Starts sfc-daemon inside namespace `short` and waits until it serves its socket.
    pub fn start_daemon(&mut self, short: &str) -> Result<()> {
        let args = self.daemon_args.clone();
        self.daemon = Some(self.spawn_daemon(short, &args, "info")?);
        Ok(())
    }

    /// Starts sfc-daemon inside namespace `short` on this lab's socket, state directory, bpffs
    /// and metrics port, with `args` and `RUST_LOG=log_level`, its output appended to
    /// daemon.log, and waits until it serves its socket. The caller owns the process (one that
    /// did not come up is killed); [`Self::start_daemon`] gives it to the lab.
    pub fn spawn_daemon(&mut self, short: &str, args: &[String], log_level: &str) -> Result<Child> {
        let bpffs = self.bpffs()?;
        spawn_daemon_at(
            &self.ns(short),
            &self.bin_dir,
            &self.dir,
            &bpffs,
            args,
            log_level,
        )
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would: nothing of the daemon's runs afterwards.
    pub fn kill_daemon(&mut self) -> Result<()> {
        if let Some(mut child) = self.daemon.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Runs sfcctl against this lab's daemon; Ok(stdout) on success, Err(stderr) otherwise.
    pub fn sfcctl(&self, args: &[&str]) -> std::result::Result<String, String> {
        self.sfcctl_stdin(args, None)
    }

    pub fn sfcctl_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::result::Result<String, String> {
        sfcctl_at(&self.bin_dir, &self.socket(), args, stdin)
    }

    /// Writes `text` to a file in the lab directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> Result<String> {
        let path = self.dir.join(name);
        fs::write(&path, text)?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// Runs `f` on a thread that has entered namespace `short` (setns moves only the calling
    /// thread), so that the sockets, ifindexes and BPF attachments it makes belong there.
    pub fn run_in<T: Send>(&self, short: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.ns(short));
        thread::scope(|s| {
            s.spawn(|| {
                let ns = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns into {path}: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow!("a thread in namespace {short} panicked"))?
        })
    }

    /// The ifindex of `iface` in namespace `short`.
    pub fn ifindex(&self, short: &str, iface: &str) -> Result<u32> {
        self.run_in(short, || ifindex_here(iface))
    }

    /// The MAC address of `iface` in namespace `short`.
    pub fn mac(&self, short: &str, iface: &str) -> Result<[u8; 6]> {
        let text = self.sh(short, &format!("cat /sys/class/net/{iface}/address"))?;
        let bytes = text
            .trim()
            .split(':')
            .map(|b| u8::from_str_radix(b, 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .with_context(|| format!("MAC address of {iface}: {text:?}"))?;
        bytes
            .try_into()
            .map_err(|_| anyhow!("MAC address of {iface}: {text:?}"))
    }

    /// One interface counter (`rx_packets`, `tx_packets`, ...) of each of `ifaces` in namespace
    /// `short`, read at once.
    pub fn link_counters(&self, short: &str, ifaces: &[&str], counter: &str) -> Result<Vec<u64>> {
        let paths: Vec<String> = ifaces
            .iter()
            .map(|i| format!("/sys/class/net/{i}/statistics/{counter}"))
            .collect();
        let text = self.sh(short, &format!("cat {}", paths.join(" ")))?;
        let values = text
            .split_whitespace()
            .map(|v| v.parse::<u64>())
            .collect::<std::result::Result<Vec<u64>, _>>()?;
        if values.len() != ifaces.len() {
            bail!("{counter} of {ifaces:?} in {short}: {text:?}");
        }
        Ok(values)
    }

    /// Sends `frames` (whole Ethernet frames, headers included) out of `iface` of namespace
    /// `short` through an AF_PACKET socket, at most `per_second` a second. The kernel adds
    /// nothing but what the interface itself does (a VLAN interface adds its tag).
    pub fn send_frames(
        &self,
        short: &str,
        iface: &str,
        frames: &[Vec<u8>],
        per_second: u32,
    ) -> Result<()> {
        self.run_in(short, || {
            let ifindex = ifindex_here(iface)?;
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: a descriptor just returned by socket(2), owned here alone.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let start = Instant::now();
            for (i, frame) in frames.iter().enumerate() {
                if frame.len() < 14 {
                    bail!("frame {i} is shorter than an Ethernet header");
                }
                let due = start + Duration::from_secs_f64(i as f64 / per_second.max(1) as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
                let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                addr.sll_family = libc::AF_PACKET as u16;
                // Network byte order, as the frame carries it.
                addr.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
                addr.sll_ifindex = ifindex as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                // SAFETY: the buffer and the address are valid for the lengths given.
                let sent = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const addr).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if sent != frame.len() as isize {
                    bail!(
                        "sending frame {i} out of {iface}: {}",
                        std::io::Error::last_os_error()
                    );
                }
            }
            Ok(())
        })
    }

    /// `sfcctl stats -o json`, as numbers: the datapath outcome counters and the packets sent
    /// into each port pair and come back out of it.
    pub fn stats(&self) -> Result<Stats> {
        let text = self
            .sfcctl(&["stats", "-o", "json"])
            .map_err(|e| anyhow!(e))?;
        Stats::parse(&text)
    }

    /// Network counters of namespace `short`: (IPv4 forwarded, IPv6 forwarded) datagrams.
    pub fn forwarded(&self, short: &str) -> Result<(u64, u64)> {
        let snmp = self.sh(short, "cat /proc/net/snmp")?;
        let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip:")).collect();
        let v4 = match lines.as_slice() {
            [names, values] => names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "ForwDatagrams")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0),
            _ => bail!("unexpected /proc/net/snmp in {short}"),
        };
        let snmp6 = self.sh(short, "cat /proc/net/snmp6")?;
        let v6 = snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Ip6OutForwDatagrams"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok((v4, v6))
    }
}

/// What `sfcctl stats` counted, as [`Lab::stats`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datapath outcomes by name (`steered`, `no_match`, ...).
    pub counters: BTreeMap<String, u64>,
    /// Per port pair: packets sent into the SF, packets that came back out.
    pub pairs: BTreeMap<String, (u64, u64)>,
}

impl Stats {
    /// What `sfcctl stats -o json` printed.
    pub fn parse(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)?;
        let counters = v["counters"]
            .as_object()
            .with_context(|| format!("no counters in {text}"))?
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        let pairs = v["pairs"]
            .as_array()
            .with_context(|| format!("no pairs in {text}"))?
            .iter()
            .filter_map(|p| {
                Some((
                    p["pair"].as_str()?.to_string(),
                    (p["into_packets"].as_u64()?, p["from_packets"].as_u64()?),
                ))
            })
            .collect();
        Ok(Stats { counters, pairs })
    }

    /// An outcome counter; 0 for one this daemon does not have.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Packets sent into port pair `pair` (0 for one `stats` does not show).
    pub fn into_pair(&self, pair: &str) -> u64 {
        self.pairs.get(pair).map(|p| p.0).unwrap_or(0)
    }
}

/// The ifindex of `iface` in the calling thread's namespace.
pub fn ifindex_here(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface)?;
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => bail!("no interface {iface}"),
        index => Ok(index),
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.kill_daemon();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Anything still running inside (curl, a server started by hand) goes first.
            let _ = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        if let Ok(pid) = pid.parse::<i32>() {
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if self.bpffs_mounted {
            let path = self.dir.join("bpffs");
            let _ = Command::new("umount").arg("-l").arg(&path).output();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
