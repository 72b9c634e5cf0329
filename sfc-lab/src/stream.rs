//! A numbered UDP stream from the source VM (namespace `src`) to the destination VM
//! (namespace `dst`), sent by `tests/scripts/udp_stream.py`: what the make-before-break tests
//! run while they update chains.

use std::{
    fs,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{
    demo::DST_V4,
    lab::{script, wait_for, Lab},
};

/// `count` datagrams of `size` bytes at `rate`/s, `burst` back to back, to the destination's
/// port `port`: one flow from source port 40999, or with `flows` > 1 that many, from source
/// ports 40000 on, in turn. Each datagram carries its sequence number in its first 4 bytes.
#[derive(Clone, Copy)]
pub struct Stream {
    pub count: u32,
    pub rate: u32,
    pub burst: u32,
    pub size: u32,
    pub port: u16,
    pub flows: u16,
}

/// Waits until the receiver `udp_stream.py receive PORT OUT ...` has bound `port`: it creates
/// `OUT.ready` then. Python starting in a namespace can take seconds on a loaded machine, and
/// a datagram sent before the bind is refused and counted lost.
pub fn wait_bound(out: &str, port: u16) -> Result<()> {
    let ready = format!("{out}.ready");
    if wait_for(Duration::from_secs(30), || fs::metadata(&ready).ok()).is_none() {
        bail!("the UDP receiver did not bind port {port} within 30 s");
    }
    Ok(())
}

impl Stream {
    /// Sends the stream while `during` runs; returns how many distinct datagrams arrived.
    pub fn run(self, lab: &Lab, tag: &str, during: impl FnOnce()) -> Result<u64> {
        let out = lab
            .dir
            .join(format!("{tag}.count"))
            .to_string_lossy()
            .into_owned();
        let ready = format!("{out}.ready");
        // A run before with the same tag must not answer for this one.
        for stale in [&out, &ready] {
            let _ = fs::remove_file(stale);
        }
        let udp = script("udp_stream.py");
        let receiver = Reaped(
            lab.cmd("dst", "python3")
                .args([
                    udp.clone(),
                    "receive".into(),
                    self.port.to_string(),
                    out.clone(),
                    "1.5".into(),
                    self.count.to_string(),
                ])
                .stdout(Stdio::null())
                .spawn()
                .context("starting the UDP receiver")?,
        );
        wait_bound(&out, self.port)?;
        let sender = Reaped(
            lab.cmd("src", "python3")
                .args([
                    udp,
                    "send".into(),
                    DST_V4.into(),
                    self.port.to_string(),
                    self.count.to_string(),
                    self.rate.to_string(),
                    if self.flows > 1 {
                        format!("40000-{}", 40000 + self.flows - 1)
                    } else {
                        "40999".into()
                    },
                    self.burst.to_string(),
                    self.size.to_string(),
                ])
                .spawn()
                .context("starting the UDP sender")?,
        );
        during();
        let mut sender = sender;
        if !sender.0.wait()?.success() {
            bail!("the UDP sender failed");
        }
        // The receiver writes its count 1.5 s after the last datagram.
        let seconds = u64::from(self.count / self.rate.max(1)) + 30;
        let Some(text) = wait_for(Duration::from_secs(seconds), || {
            fs::read_to_string(&out).ok()
        }) else {
            bail!("the UDP receiver never wrote {out}");
        };
        drop(receiver);
        let (received, missing) = text.split_once('\n').unwrap_or((&text, ""));
        let received = received.trim().parse()?;
        if received < u64::from(self.count) {
            eprintln!(
                "stream {tag}: {received} of {} datagrams arrived; missing: {}",
                self.count,
                missing.trim()
            );
        }
        Ok(received)
    }
}

/// A process killed (if it still runs) and reaped when dropped, whatever the test does.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
