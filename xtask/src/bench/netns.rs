//! Running code inside one of the bench's network namespaces from this process: a thread that
//! has entered the namespace (setns changes only the calling thread), so sockets, ifindexes,
//! BPF attachments and /proc/thread-self/net all belong to that namespace.

use std::{fs::File, os::fd::AsRawFd, thread};

use anyhow::{anyhow, bail, Context, Result};

/// Moves the calling thread into namespace `name` (a name under /run/netns).
pub fn enter(name: &str) -> Result<()> {
    let file = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening network namespace {name}"))?;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `name` and returns its result.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread in namespace {name} panicked"))?
    })
}

/// Interface counters of namespace `name`: (rx_packets, tx_packets) of `iface`.
pub fn counters(name: &str, iface: &str) -> Result<(u64, u64)> {
    run_in(name, || {
        // /proc/thread-self/net is this thread's namespace (/proc/self/net is the leader's).
        let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
        for line in text.lines() {
            let Some((dev, rest)) = line.split_once(':') else {
                continue;
            };
            if dev.trim() == iface {
                let v: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                if v.len() >= 10 {
                    return Ok((v[1], v[9]));
                }
            }
        }
        bail!("no interface {iface} in /proc/net/dev of {name}")
    })
}

/// The ifindex of `iface` in namespace `name`.
pub fn ifindex(name: &str, iface: &str) -> Result<u32> {
    run_in(name, || ifindex_here(iface)).with_context(|| format!("in namespace {name}"))
}

/// The ifindex of `iface` in the calling thread's namespace.
pub fn ifindex_here(iface: &str) -> Result<u32> {
    let iface_c = std::ffi::CString::new(iface)?;
    match unsafe { libc::if_nametoindex(iface_c.as_ptr()) } {
        0 => bail!("no interface {iface}"),
        index => Ok(index),
    }
}
