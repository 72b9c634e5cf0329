//! Labs of network namespaces for the demo, the end-to-end tests and the bench.
//!
//! A [`Lab`] owns everything it creates (namespaces, veths inside them, processes, a bpffs
//! mount, a temp directory) and removes all of it when dropped, also when a test fails. Nothing
//! is created in, or sent through, the root namespace: all addresses live inside the lab.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

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
        let socket = self.socket();
        let _ = fs::remove_file(&socket);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(short)])
            .arg(self.bin_dir.join("sfc-daemon"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--bpffs")
            .arg(&bpffs)
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
        let failure = match up {
            Some(Ok(())) => return Ok(child),
            Some(Err(status)) => format!("sfc-daemon exited ({status}):\n{}", self.daemon_log()),
            None => format!("sfc-daemon did not come up in 20 s:\n{}", self.daemon_log()),
        };
        let _ = child.kill();
        let _ = child.wait();
        bail!(failure)
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
        use std::io::Write;
        let mut child = Command::new(self.bin_dir.join("sfcctl"))
            .arg("--socket")
            .arg(self.socket())
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

    /// Writes `text` to a file in the lab directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> Result<String> {
        let path = self.dir.join(name);
        fs::write(&path, text)?;
        Ok(path.to_string_lossy().into_owned())
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
