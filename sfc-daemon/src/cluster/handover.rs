//! Make-before-break across nodes: the cluster's side of [`Handover`]. Each node publishes in
//! its status the revisions its two generations take packets of (`holding`) and those its
//! packets may carry (`sending`: the active one, and for two generation leases after a flip
//! the one before). Around a flip it reads the other alive nodes' statuses, again whenever one
//! changes (a watch on `status/`):
//!
//! - it flips to a revision once every other node holds it, or has given up on it (was given
//!   it or a newer one, and holds it not: it could not steer it); when a node holds a newer
//!   one instead, the revision was overtaken and this node does not flip to it;
//! - it overwrites a generation once no other node sends its revision.
//!
//! Every wait is bounded ([`LIMIT`]): a node that does not answer in time is passed over, with
//! a warning naming it, rather than holding the cluster's updates back. While etcd cannot be
//! read there is nothing to wait for, and nothing is waited.

use std::time::Duration;

use etcd_client::WatchOptions;
use sfc_common::GENERATION_LEASE_NS;
use tokio::{
    runtime::Handle,
    sync::watch,
    time::{timeout, Instant},
};
use tracing::warn;

use super::{
    records::{status_key, NodeStatus},
    store::Store,
};
use crate::dataplane::handover::Handover;

/// The longest a flip or an overwrite waits for the other nodes.
const LIMIT: Duration = Duration::from_secs(5);
/// How often the other nodes' statuses are read again while waiting, though none changed.
const RECHECK: Duration = Duration::from_millis(500);
/// How often they are read while the watch on them is down.
const POLL: Duration = Duration::from_millis(50);

pub struct PeerHandover {
    node: String,
    store: Store,
    runtime: Handle,
    status: watch::Sender<NodeStatus>,
}

/// What a wait found: done (with its answer), or still waiting for these nodes.
enum Check<T> {
    Done(T),
    Waiting(Vec<String>),
}

impl PeerHandover {
    pub fn new(
        node: String,
        store: Store,
        runtime: Handle,
        status: watch::Sender<NodeStatus>,
    ) -> Self {
        Self {
            node,
            store,
            runtime,
            status,
        }
    }

    /// The other alive nodes' statuses; `None` when etcd cannot be read.
    async fn others(&self) -> Option<Vec<(String, NodeStatus)>> {
        let nodes = self.store.nodes().await.ok()?;
        Some(
            nodes
                .into_iter()
                .filter(|n| n.alive && n.name != self.node)
                .map(|n| (n.name, n.status.unwrap_or_default()))
                .collect(),
        )
    }

    /// Reads the other nodes until `check` is done with them, again whenever a node's status
    /// changes (watched) and at least every [`RECHECK`] (a node lost meanwhile changes no
    /// status), for up to [`LIMIT`]; `fallback` when etcd cannot be read or the time is up.
    fn wait<T>(
        &self,
        what: impl std::fmt::Display,
        fallback: T,
        check: impl Fn(&[(String, NodeStatus)]) -> Check<T>,
    ) -> T {
        self.runtime.block_on(async {
            let deadline = Instant::now() + LIMIT;
            // Opened only when there is something to wait for (then read again at once: a
            // change between the first read and the watch is in that read).
            let mut changes = None;
            let mut watched = false;
            loop {
                let Some(others) = self.others().await else {
                    return fallback;
                };
                let nodes = match check(&others) {
                    Check::Done(answer) => return answer,
                    Check::Waiting(nodes) => nodes,
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(
                        nodes = nodes.join(", "),
                        "gave up waiting {:?} for nodes to {what}; packets between them and this node may be dropped until they catch up",
                        LIMIT
                    );
                    return fallback;
                }
                if !watched {
                    watched = true;
                    let mut client = self.store.client();
                    let options = WatchOptions::new().with_prefix();
                    let watch = client.watch(status_key(""), Some(options));
                    changes = timeout(left, watch).await.ok().and_then(Result::ok);
                    continue;
                }
                let pause = left.min(RECHECK);
                match changes.as_mut() {
                    Some(stream) => {
                        if !matches!(
                            timeout(pause, stream.message()).await,
                            Err(_) | Ok(Ok(Some(_)))
                        ) {
                            // The watch failed: reading again on the clock.
                            changes = None;
                        }
                    }
                    None => tokio::time::sleep(pause.min(POLL)).await,
                }
            }
        })
    }
}

impl Handover for PeerHandover {
    fn holding(&mut self, revisions: [u32; 2]) {
        let mut holding: Vec<u32> = revisions.into_iter().filter(|r| *r != 0).collect();
        holding.sort_unstable();
        holding.dedup();
        self.status.send_if_modified(|s| {
            let changed = s.holding != holding;
            s.holding = holding;
            changed
        });
    }

    fn sent_elsewhere(&mut self, revision: u32) -> bool {
        self.runtime
            .block_on(self.others())
            .is_some_and(|o| o.iter().any(|(_, s)| s.sending.contains(&revision)))
    }

    fn until_unsent(&mut self, revision: u32) {
        self.wait(
            format_args!("stop sending revision {revision}"),
            (),
            |others| unsent(others, revision),
        )
    }

    fn until_held(&mut self, revision: u32) -> bool {
        self.wait(format_args!("hold revision {revision}"), true, |others| {
            held(others, revision)
        })
    }

    fn flipped(&mut self, previous: u32, revision: u32) {
        self.status.send_modify(|s| {
            s.sending = [revision, previous]
                .into_iter()
                .filter(|r| *r != 0)
                .collect();
            s.sending.dedup();
        });
        // The previous revision's last packets are out two leases after the flip (unless
        // another flip came meanwhile: its own timer tidies up after it).
        let status = self.status.clone();
        self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_nanos(2 * GENERATION_LEASE_NS)).await;
            status.send_if_modified(|s| {
                let still = s.sending.first() == Some(&revision) && s.sending.len() > 1;
                if still {
                    s.sending.truncate(1);
                }
                still
            });
        });
    }
}

/// Done once no other node sends `revision`.
fn unsent(others: &[(String, NodeStatus)], revision: u32) -> Check<()> {
    let sending: Vec<String> = others
        .iter()
        .filter(|(_, s)| s.sending.contains(&revision))
        .map(|(n, _)| n.clone())
        .collect();
    if sending.is_empty() {
        Check::Done(())
    } else {
        Check::Waiting(sending)
    }
}

/// Whether to flip to `revision`: yes once every other node holds it or gave up on it (was
/// given it, or a newer one, and holds it not); no as soon as one that lacks it holds a newer
/// one (overtaken: it will never hold this one).
fn held(others: &[(String, NodeStatus)], revision: u32) -> Check<bool> {
    let lacking = || {
        others
            .iter()
            .filter(|(_, s)| !s.holding.contains(&revision))
    };
    if lacking().any(|(_, s)| s.holding.iter().any(|r| *r > revision)) {
        return Check::Done(false);
    }
    let waiting: Vec<String> = lacking()
        .filter(|(_, s)| (s.revision as u32) < revision)
        .map(|(n, _)| n.clone())
        .collect();
    if waiting.is_empty() {
        Check::Done(true)
    } else {
        Check::Waiting(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, revision: i64, holding: &[u32], sending: &[u32]) -> (String, NodeStatus) {
        let status = NodeStatus {
            revision,
            holding: holding.to_vec(),
            sending: sending.to_vec(),
            ..NodeStatus::default()
        };
        (name.to_string(), status)
    }

    fn flips(others: &[(String, NodeStatus)], revision: u32) -> Option<bool> {
        match held(others, revision) {
            Check::Done(answer) => Some(answer),
            Check::Waiting(_) => None,
        }
    }

    #[test]
    fn a_flip_waits_for_every_node_to_hold_the_revision() {
        let behind = [
            node("n2", 10, &[9, 10], &[10]),
            node("n3", 10, &[10, 12], &[10]),
        ];
        assert_eq!(flips(&behind, 12), None);
        let caught_up = [
            node("n2", 10, &[10, 12], &[10]),
            node("n3", 12, &[10, 12], &[12]),
        ];
        assert_eq!(flips(&caught_up, 12), Some(true));
        assert_eq!(flips(&[], 12), Some(true), "alone: nothing to wait for");
    }

    #[test]
    fn a_node_that_gave_up_is_not_waited_for_and_a_newer_revision_overtakes() {
        // n2 was given 12 and could not steer it: it still holds 9 and 10.
        let gave_up = [
            node("n2", 12, &[9, 10], &[10]),
            node("n3", 10, &[10, 12], &[10]),
        ];
        assert_eq!(flips(&gave_up, 12), Some(true));
        // n2 went straight to 14: it will never hold 12, so nobody flips to 12.
        let overtaken = [
            node("n2", 10, &[10, 14], &[10]),
            node("n3", 10, &[9, 10], &[10]),
        ];
        assert_eq!(flips(&overtaken, 12), Some(false));
        // One that holds 12 as well as a newer one is no reason not to flip.
        let both = [node("n2", 14, &[12, 14], &[14, 12])];
        assert_eq!(flips(&both, 12), Some(true));
    }

    #[test]
    fn a_generation_is_overwritten_once_no_node_sends_its_revision() {
        let sending = [
            node("n2", 12, &[10, 12], &[12, 10]),
            node("n3", 12, &[10, 12], &[12]),
        ];
        match unsent(&sending, 10) {
            Check::Waiting(nodes) => assert_eq!(nodes, ["n2"]),
            Check::Done(()) => panic!("n2 still sends 10"),
        }
        let done = [node("n2", 12, &[10, 12], &[12])];
        assert!(matches!(unsent(&done, 10), Check::Done(())));
    }
}
