//! The cluster store: reads and writes of the desired state, the nodes and their status in
//! etcd. Every call is bounded by [`REQUEST_TIMEOUT`], so an unreachable etcd turns into an
//! error that says so instead of a request that hangs.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{
    records::{
        alive_key, head_key, node_key, parse_shard_key, shard_key, shards_prefix, status_key, Head,
        NodeInfo, NodeStatus, Record, PREFIX,
    },
    snapshot::Snapshot,
    ClusterError,
};

/// How long one request to etcd may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a request that etcd refused at once is made (see [`Store::read`] and
/// [`Store::write`]).
const ATTEMPTS: usize = 5;
/// Between two of those attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// etcd refuses transactions of more than 128 operations and requests over 1.5 MiB; writes
/// are batched well under both.
const MAX_OPS: usize = 64;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// The largest shard written (one shard in one put, within the request limit).
const MAX_SHARD_BYTES: usize = 1400 * 1024;

/// Why one etcd call brought no answer.
enum NoAnswer {
    Error(etcd_client::Error),
    Timeout,
}

impl NoAnswer {
    fn reason(&self) -> String {
        match self {
            NoAnswer::Error(e) => e.to_string(),
            NoAnswer::Timeout => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
        }
    }
}

/// One etcd call, given the request timeout.
async fn once<T>(f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, NoAnswer> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(answer) => answer.map_err(NoAnswer::Error),
        Err(_) => Err(NoAnswer::Timeout),
    }
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    /// For messages.
    pub endpoints: String,
}

/// A node as the cluster sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub name: String,
    pub info: NodeInfo,
    pub alive: bool,
    pub status: Option<NodeStatus>,
}

impl Store {
    pub fn new(client: Client, endpoints: String) -> Self {
        Self { client, endpoints }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one etcd call within the request timeout.
    pub async fn call<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, ClusterError> {
        once(f).await.map_err(|e| self.unreachable(e.reason()))
    }

    /// [`call`](Self::call) of a read that `read` makes, made again (up to [`ATTEMPTS`]
    /// in all) while etcd answers with an error at once: with one member of several down,
    /// the client still sends some requests to it (they fail at connect) until it stops
    /// picking it, and a refresh of many shards would otherwise fail as a whole every time.
    /// A read that times out is not tried again (the time is spent).
    pub async fn read<T, F>(&self, read: impl Fn() -> F) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.attempts(read, |_| true).await
    }

    /// [`call`](Self::call) of a write that `write` makes, made again (up to [`ATTEMPTS`] in
    /// all) only while it never reached etcd (the member picked refused the connection): a
    /// write that may have been carried out is never repeated.
    pub async fn write<T, F>(&self, write: impl Fn() -> F) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.attempts(write, never_sent).await
    }

    /// A transaction, made with [`write`](Self::write).
    async fn write_txn(&self, txn: Txn) -> Result<TxnResponse, ClusterError> {
        self.write(|| {
            let mut client = self.client();
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
    }

    async fn attempts<T, F>(
        &self,
        call: impl Fn() -> F,
        again: fn(&etcd_client::Error) -> bool,
    ) -> Result<T, ClusterError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        let failure = loop {
            match once(call()).await {
                Ok(v) => return Ok(v),
                Err(NoAnswer::Error(e)) if attempt < ATTEMPTS && again(&e) => {}
                // The last attempt, an error not worth another, or a timeout (the time is spent).
                Err(e) => break e,
            }
            // The client's choice of member is random: a moment for it to pick another.
            tokio::time::sleep(RETRY_PAUSE).await;
            attempt += 1;
        };
        Err(self.unreachable(failure.reason()))
    }

    pub fn unreachable(&self, reason: String) -> ClusterError {
        ClusterError::Unreachable {
            endpoints: self.endpoints.clone(),
            reason,
        }
    }

    /// The desired state at the head's latest revision, reading only the shards whose
    /// version differs from `known`'s (shard versions are written once, never changed).
    pub async fn refresh(&self, known: &Snapshot) -> Result<Snapshot, ClusterError> {
        let response = self
            .read(|| {
                let mut client = self.client();
                async move { client.get(head_key(), None).await }
            })
            .await?;
        let read_at = response.header().map_or(0, |h| h.revision());
        let Some(kv) = response.kvs().first() else {
            return Ok(Snapshot::default());
        };
        if kv.mod_revision() == known.revision {
            return Ok(known.clone());
        }
        let head: Head = parse(kv)?;
        let mut shards = BTreeMap::new();
        let mut missing = Vec::new();
        for (shard, version) in &head.shards {
            match known.shards.get(shard) {
                Some(records) if known.head.shards.get(shard) == Some(version) => {
                    shards.insert(*shard, records.clone());
                }
                _ => missing.push((*shard, shard_key(*shard, version))),
            }
        }
        // At the revision the head was read at: a later apply may have removed these keys
        // since (etcd keeps them readable there until it compacts).
        for batch in missing.chunks(16) {
            let reads = batch.iter().map(|(_, key)| {
                self.read(move || {
                    let (mut client, key) = (self.client(), key.clone());
                    async move {
                        client
                            .get(key, Some(GetOptions::new().with_revision(read_at)))
                            .await
                    }
                })
            });
            for ((shard, key), response) in batch.iter().zip(futures::future::join_all(reads).await)
            {
                let response = response?;
                let kv = response
                    .kvs()
                    .first()
                    .ok_or_else(|| ClusterError::Corrupt {
                        key: key.clone(),
                        reason: format!(
                            "named by the head at revision {} but absent",
                            kv.mod_revision()
                        ),
                    })?;
                shards.insert(*shard, parse::<Vec<Record>>(kv)?);
            }
        }
        Ok(Snapshot {
            revision: kv.mod_revision(),
            head,
            shards,
        })
    }

    /// Writes `changed` (each shard's whole new contents) under a version of `node`'s never
    /// used before, then makes `head` name them in one transaction guarded by
    /// `base.revision`. Err([`ClusterError::Conflict`]) when another apply committed since
    /// `base` was read: nothing of this one is then visible. Safe to call again after an
    /// error: each call writes keys of its own, and removes only those.
    pub async fn commit(
        &self,
        base: &Snapshot,
        changed: BTreeMap<u16, Vec<Record>>,
        mut head: Head,
        node: &str,
    ) -> Result<Snapshot, ClusterError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let version = format!("{node}.{nanos}");
        let mut puts = Vec::new();
        for (shard, records) in &changed {
            if records.is_empty() {
                head.shards.remove(shard);
                continue;
            }
            let body = serde_json::to_vec(records).expect("records serialise");
            if body.len() > MAX_SHARD_BYTES {
                return Err(ClusterError::TooLarge {
                    what: format!("shard {shard} of the desired state"),
                    size: body.len(),
                });
            }
            head.shards.insert(*shard, version.clone());
            puts.push((shard_key(*shard, &version), body));
        }
        let written: Vec<String> = puts.iter().map(|(k, _)| k.clone()).collect();
        // The shards first: no head names them yet, so no reader sees them.
        if let Err(e) = self.put_batches(puts).await {
            self.delete_keys(&written).await;
            return Err(e);
        }
        let guard = if base.revision == 0 {
            Compare::version(head_key(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(head_key(), CompareOp::Equal, base.revision)
        };
        let body = serde_json::to_vec(&head).expect("head serialises");
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::put(head_key(), body, None)]);
        let response = match self.write_txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                // Unknown whether it committed: the shards are left for the sweep, which
                // removes them only if no head names them.
                return Err(e);
            }
        };
        if !response.succeeded() {
            self.delete_keys(&written).await;
            return Err(ClusterError::Conflict);
        }
        let revision = response.header().map_or(0, |h| h.revision());
        self.sweep(&head, revision).await;
        Ok(base.with(changed, head, revision))
    }

    async fn put_batches(&self, puts: Vec<(String, Vec<u8>)>) -> Result<(), ClusterError> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (key, body) in puts {
            if !batch.is_empty() && (batch.len() == MAX_OPS || bytes + body.len() > MAX_BATCH_BYTES)
            {
                let ops = std::mem::take(&mut batch);
                self.write_txn(Txn::new().and_then(ops)).await?;
                bytes = 0;
            }
            bytes += body.len() + key.len();
            batch.push(TxnOp::put(key, body, None));
        }
        if !batch.is_empty() {
            self.write_txn(Txn::new().and_then(batch)).await?;
        }
        Ok(())
    }

    /// Best effort: what is left is swept by a later commit.
    async fn delete_keys(&self, keys: &[String]) {
        for batch in keys.chunks(MAX_OPS) {
            let ops: Vec<TxnOp> = batch
                .iter()
                .map(|k| TxnOp::delete(k.clone(), None))
                .collect();
            if let Err(e) = self.write_txn(Txn::new().and_then(ops)).await {
                warn!(error = %e, "removing shard versions no head names");
                return;
            }
        }
    }

    /// Removes the shard versions `head` (committed at `revision`) does not name and that were
    /// written before it: replaced ones, and those of applies that failed or crashed. An apply
    /// still writing wrote its shards after it read its head, and a head older than
    /// `revision`, so its guard fails: what it wrote is never needed.
    async fn sweep(&self, head: &Head, revision: i64) {
        let mut client = self.client();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let listed = match self.call(client.get(shards_prefix(), Some(options))).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "listing shard versions");
                return;
            }
        };
        let stale: Vec<String> = listed
            .kvs()
            .iter()
            .filter(|kv| kv.create_revision() < revision)
            .filter_map(|kv| kv.key_str().ok())
            .filter(|key| {
                parse_shard_key(key).is_none_or(|(shard, version)| {
                    head.shards.get(&shard).map(String::as_str) != Some(version)
                })
            })
            .map(str::to_string)
            .collect();
        self.delete_keys(&stale).await;
    }

    /// Forgets `node` (its row and status), guarded by its lease being gone and by the state
    /// still being at `base` (which the caller found no object of the node in). Ok(false)
    /// when there was no such node.
    pub async fn forget_node(&self, base: &Snapshot, node: &str) -> Result<bool, ClusterError> {
        let state_unchanged = if base.revision == 0 {
            Compare::version(head_key(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(head_key(), CompareOp::Equal, base.revision)
        };
        let txn = Txn::new()
            .when([
                Compare::version(alive_key(node), CompareOp::Equal, 0),
                state_unchanged,
            ])
            .and_then([
                TxnOp::delete(node_key(node), None),
                TxnOp::delete(status_key(node), None),
            ])
            .or_else([TxnOp::get(alive_key(node), None)]);
        let response = self.write_txn(txn).await?;
        let responses = response.op_responses();
        if !response.succeeded() {
            let alive = responses
                .iter()
                .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
            return Err(if alive {
                ClusterError::NodeAlive { node: node.into() }
            } else {
                ClusterError::Conflict
            });
        }
        Ok(matches!(responses.first(), Some(TxnOpResponse::Delete(d)) if d.deleted() > 0))
    }

    /// Every node that ever registered, with whether its lease holds and its status.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClusterError> {
        let list = |what: &'static str| {
            self.read(move || {
                let mut client = self.client();
                async move {
                    let options = GetOptions::new().with_prefix();
                    client.get(format!("{PREFIX}{what}/"), Some(options)).await
                }
            })
        };
        let (infos, alive, statuses) =
            futures::try_join!(list("nodes"), list("alive"), list("status"))?;
        let name = |kv: &KeyValue, what: &str| -> Option<String> {
            Some(
                kv.key_str()
                    .ok()?
                    .strip_prefix(&format!("{PREFIX}{what}/"))?
                    .to_string(),
            )
        };
        let alive: BTreeSet<String> = alive
            .kvs()
            .iter()
            .filter_map(|kv| name(kv, "alive"))
            .collect();
        let mut statuses: BTreeMap<String, NodeStatus> = statuses
            .kvs()
            .iter()
            .filter_map(|kv| Some((name(kv, "status")?, parse(kv).ok()?)))
            .collect();
        let mut nodes = Vec::new();
        for kv in infos.kvs() {
            let Some(node) = name(kv, "nodes") else {
                continue;
            };
            nodes.push(NodeView {
                alive: alive.contains(&node),
                status: statuses.remove(&node),
                info: parse(kv)?,
                name: node,
            });
        }
        Ok(nodes)
    }
}

fn parse<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, ClusterError> {
    serde_json::from_slice(kv.value()).map_err(|e| ClusterError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })
}

/// Whether a request failed before it reached etcd: the connection to the member the client
/// picked was refused or had no route (a member down).
fn never_sent(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(transport) => Some(transport),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}
