//! The node's membership: its name held under a lease while the agent runs, what it says about
//! itself (tunnel address, interfaces) and the revision it has applied. One task keeps the
//! lease alive and writes what changed; when etcd is away it keeps trying, and registers
//! again if the lease expired meanwhile.

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::{
    records::{alive_key, node_key, status_key, Alive, NodeInfo, NodeStatus},
    store::Store,
    ClusterError,
};

pub struct Membership {
    pub store: Store,
    pub node: String,
    pub ttl: Duration,
    pub alive: Alive,
}

impl Membership {
    /// Takes the node's name under a new lease. Refused while another agent holds it; the same
    /// agent restarted (same host, boot and state directory) revokes its old lease instead of
    /// waiting for it to expire.
    pub async fn register(&self) -> Result<i64, ClusterError> {
        let mut client = self.store.client();
        let lease = self
            .store
            .call(client.lease_grant(self.ttl.as_secs() as i64, None))
            .await?
            .id();
        let value = serde_json::to_vec(&self.alive).expect("serialises");
        for _ in 0..2 {
            let txn = Txn::new()
                .when([Compare::version(alive_key(&self.node), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    alive_key(&self.node),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(alive_key(&self.node), None)]);
            let response = self.store.call(client.txn(txn)).await?;
            if response.succeeded() {
                info!(node = %self.node, lease, "registered in the cluster");
                return Ok(lease);
            }
            let holder = response.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let Some(kv) = holder else { continue };
            let theirs: Option<Alive> = serde_json::from_slice(kv.value()).ok();
            match theirs {
                Some(a) if a.instance == self.alive.instance => {
                    // This agent, restarted before its old lease expired.
                    let _ = self.store.call(client.lease_revoke(kv.lease())).await;
                }
                other => {
                    let _ = self.store.call(client.lease_revoke(lease)).await;
                    return Err(ClusterError::NodeTaken {
                        node: self.node.clone(),
                        holder: other.map_or("an unknown agent".into(), |a| {
                            format!("{} (pid {})", a.instance, a.pid)
                        }),
                    });
                }
            }
        }
        Err(ClusterError::NodeTaken {
            node: self.node.clone(),
            holder: "an agent that keeps re-registering".into(),
        })
    }

    /// Keeps the lease alive (every TTL/3) from now on, and once `started` fires writes the
    /// node's info and status whenever they change (and again after a failed write or a new
    /// registration). Never returns. The two run side by side so that neither a slow start
    /// (loading the programs takes seconds) nor a slow write can let the lease lapse.
    pub async fn keep(
        self,
        lease: Option<i64>,
        info: watch::Receiver<NodeInfo>,
        status: watch::Receiver<NodeStatus>,
        started: oneshot::Receiver<()>,
    ) {
        let (registered, registrations) = watch::channel(());
        tokio::join!(
            self.keep_lease(lease, registered),
            self.keep_published(info, status, started, registrations)
        );
    }

    /// Renews the lease every TTL/3; registers again when it is gone (and says so on
    /// `registered`, for the info to be written again).
    async fn keep_lease(&self, mut lease: Option<i64>, registered: watch::Sender<()>) {
        let mut last_renewed = Instant::now();
        let mut problem = Problem::default();
        loop {
            let result = match lease {
                None => self.register().await.map(|l| {
                    lease = Some(l);
                    last_renewed = Instant::now();
                    registered.send_replace(());
                }),
                Some(l) => match self.renew(l).await {
                    Ok(true) => {
                        last_renewed = Instant::now();
                        Ok(())
                    }
                    Ok(false) => {
                        warn!(node = %self.node, "the node's lease expired; registering again");
                        lease = None;
                        continue;
                    }
                    Err(e) => {
                        if last_renewed.elapsed() > self.ttl {
                            lease = None;
                        }
                        Err(e)
                    }
                },
            };
            problem.report(result);
            tokio::time::sleep(self.ttl / 3).await;
        }
    }

    /// Writes the node's info and status once the agent has started, then whenever they
    /// change, after a new registration, and again TTL/3 after a failed write.
    async fn keep_published(
        &self,
        mut info: watch::Receiver<NodeInfo>,
        mut status: watch::Receiver<NodeStatus>,
        started: oneshot::Receiver<()>,
        mut registrations: watch::Receiver<()>,
    ) {
        // Until the agent has read its interfaces the info is empty: written now, it would
        // tell the other nodes that this node's port pairs are gone.
        if started.await.is_err() {
            return;
        }
        let mut info_dirty = true;
        let mut status_dirty = true;
        let mut problem = Problem::default();
        loop {
            let result = self
                .publish(&mut info, &mut info_dirty, &mut status, &mut status_dirty)
                .await;
            problem.report(result);
            // The tick retries a failed write (with nothing dirty, a pass writes nothing).
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 3) => {}
                Ok(()) = info.changed() => info_dirty = true,
                Ok(()) = status.changed() => status_dirty = true,
                Ok(()) = registrations.changed() => {
                    info_dirty = true;
                    status_dirty = true;
                }
            }
        }
    }

    /// One keep-alive; Ok(false) when the lease is gone.
    async fn renew(&self, lease: i64) -> Result<bool, ClusterError> {
        let mut client = self.store.client();
        let (mut keeper, mut stream) = self.store.call(client.lease_keep_alive(lease)).await?;
        self.store.call(keeper.keep_alive()).await?;
        match self.store.call(stream.message()).await? {
            Some(r) => Ok(r.ttl() > 0),
            None => Err(self.store.unreachable("the keep-alive stream ended".into())),
        }
    }

    async fn publish(
        &self,
        info: &mut watch::Receiver<NodeInfo>,
        info_dirty: &mut bool,
        status: &mut watch::Receiver<NodeStatus>,
        status_dirty: &mut bool,
    ) -> Result<(), ClusterError> {
        let mut client = self.store.client();
        if *info_dirty {
            let body = serde_json::to_vec(&*info.borrow_and_update()).expect("serialises");
            self.store
                .call(client.put(node_key(&self.node), body, None))
                .await?;
            *info_dirty = false;
        }
        if *status_dirty {
            let body = serde_json::to_vec(&*status.borrow_and_update()).expect("serialises");
            self.store
                .call(client.put(status_key(&self.node), body, None))
                .await?;
            *status_dirty = false;
        }
        Ok(())
    }
}

/// The last failure a loop logged: each new one is logged once, and the recovery once.
#[derive(Default)]
struct Problem(Option<String>);

impl Problem {
    fn report(&mut self, result: Result<(), ClusterError>) {
        match result {
            Ok(()) => {
                if self.0.take().is_some() {
                    info!("the cluster store is reachable again");
                }
            }
            Err(e) => {
                let message = e.to_string();
                if self.0.as_deref() != Some(message.as_str()) {
                    warn!("{message}");
                    self.0 = Some(message);
                }
            }
        }
    }
}
