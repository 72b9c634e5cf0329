//! Questions between agents, through etcd: how `sfcctl stats`, `describe` and `trace` on one
//! node cover every node. No port of its own is opened between the nodes: whoever may ask is
//! whoever may write to the cluster's etcd (its TLS client certificates, where used), which is
//! exactly the cluster's members and operators.
//!
//! The asker takes a lease ([`TTL`]), writes the question under `requests/NODE/ID` with it,
//! and watches `replies/ID` for the answer, for at most [`ANSWER_WITHIN`]. Each agent watches
//! its own `requests/NODE/` prefix, answers (read-only questions only: [`answerable`]) under
//! the asker's lease, at most [`AT_ONCE`] at a time, and refuses an answer larger than
//! [`MAX_ANSWER_BYTES`]. The asker revokes its lease when done, which deletes both keys; an
//! asker that died leaves them to expire with the lease. A trace is a question that lasts:
//! the asker keeps its lease alive while its client follows the trace, and the node asked
//! traces with its own slot and sends its records in batches (`replies/ID/NNNNNNNN`, one per
//! 200 ms with records, each at most [`MAX_ANSWER_BYTES`]) until the lease goes. Nothing of it
//! touches the datapath but the trace filter, as on one node.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use sfc_api::{
    protocol::{Request, Response},
    trace::TraceRecord,
};
use tokio::{sync::Semaphore, task::JoinHandle};
use tracing::{debug, warn};

use super::{records::PREFIX, store::Store};
use crate::{
    agent::run::AgentHandle,
    observe::trace::{Session, Sink, TraceSlot},
};

/// How long a question and its answer live in etcd at most.
const TTL: i64 = 10;
/// How long the asker waits for an answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// Questions answered at once by one agent; more wait their turn.
const AT_ONCE: usize = 4;
/// Larger answers are refused (etcd takes at most 1.5 MiB per request).
const MAX_ANSWER_BYTES: usize = 1 << 20;
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn requests_prefix(node: &str) -> String {
    format!("{PREFIX}requests/{node}/")
}

/// A question as written to etcd.
#[derive(Serialize, Deserialize)]
struct Question {
    from: String,
    /// The asker's lease: the answer is written under it.
    lease: i64,
    request: Request,
}

/// Whether another node may ask this: only what reads counters (a trace is answered apart),
/// never what changes state.
fn answerable(request: &Request) -> bool {
    matches!(request, Request::Stats { .. })
}

/// Where questions come from: this node, and the etcd it shares with the others.
#[derive(Clone)]
pub struct Asker {
    pub node: String,
    pub store: Store,
}

/// A question id unique across the cluster: the asking node, its process, the time and a
/// sequence number.
pub fn question_id(from: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{from}.{}.{nanos:x}.{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Puts question `id` to node `to`, under `lease`.
pub async fn put_question(
    store: &Store,
    from: &str,
    to: &str,
    id: &str,
    lease: i64,
    request: &Request,
) -> Result<(), String> {
    let question = Question {
        from: from.to_string(),
        lease,
        request: request.clone(),
    };
    let body = serde_json::to_vec(&question).expect("serialises");
    let mut client = store.client();
    store
        .call(client.put(
            format!("{}{id}", requests_prefix(to)),
            body,
            Some(PutOptions::new().with_lease(lease)),
        ))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where the answers to question `id` go (a trace's: one key per batch, under it).
pub fn reply_key(id: &str) -> String {
    format!("{PREFIX}replies/{id}")
}

/// Asks node `to` (its agent) `request`, as node `from`; the answer, or why there is none.
pub async fn ask(
    store: &Store,
    from: &str,
    to: &str,
    request: &Request,
) -> Result<Response, String> {
    let id = question_id(from);
    let lease = grant(store).await?;
    let mut client = store.client();
    let answer = async {
        // Watching before asking: the answer cannot come before the watch.
        let mut stream = store
            .call(client.watch(reply_key(&id), None))
            .await
            .map_err(|e| e.to_string())?;
        put_question(store, from, to, &id, lease, request).await?;
        let reply = async {
            loop {
                match stream.message().await {
                    Ok(Some(r)) => {
                        if let Some(kv) = r
                            .events()
                            .iter()
                            .filter(|e| e.event_type() == EventType::Put)
                            .find_map(|e| e.kv())
                        {
                            return serde_json::from_slice::<Response>(kv.value())
                                .map_err(|e| format!("an unreadable answer: {e}"));
                        }
                    }
                    Ok(None) => return Err("the watch ended".to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        tokio::time::timeout(ANSWER_WITHIN, reply)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {} s (its agent is busy or stopped)",
                    ANSWER_WITHIN.as_secs()
                ))
            })
    }
    .await;
    let _ = store.call(client.lease_revoke(lease)).await;
    answer
}

/// A lease of [`TTL`] for a question and its answer.
async fn grant(store: &Store) -> Result<i64, String> {
    let mut client = store.client();
    store
        .call(client.lease_grant(TTL, None))
        .await
        .map(|r| r.id())
        .map_err(|e| e.to_string())
}

/// A lease kept alive while held, for questions that last (a trace). Dropped, it is revoked,
/// which deletes every key under it, and the tasks given to it end.
pub struct LeaseGuard {
    store: Store,
    lease: i64,
    tasks: Vec<JoinHandle<()>>,
}

impl LeaseGuard {
    pub async fn new(store: &Store) -> Result<Self, String> {
        let lease = grant(store).await?;
        let keeper = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut client = store.client();
                let Ok((mut keeper, mut stream)) = store.call(client.lease_keep_alive(lease)).await
                else {
                    return;
                };
                loop {
                    tokio::time::sleep(Duration::from_secs(TTL as u64 / 3)).await;
                    if store.call(keeper.keep_alive()).await.is_err()
                        || !matches!(store.call(stream.message()).await, Ok(Some(_)))
                    {
                        return;
                    }
                }
            })
        };
        Ok(Self {
            store: store.clone(),
            lease,
            tasks: vec![keeper],
        })
    }

    pub fn id(&self) -> i64 {
        self.lease
    }

    /// A task that ends with the lease.
    pub fn hold(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let (store, lease) = (self.store.clone(), self.lease);
        tokio::spawn(async move {
            let mut client = store.client();
            let _ = store.call(client.lease_revoke(lease)).await;
        });
    }
}

/// What answering a trace question needs: the node's trace slot and pinned maps.
#[derive(Clone)]
pub struct TraceHost {
    pub bpffs: PathBuf,
    pub slot: Arc<TraceSlot>,
}

/// Answers the questions put to node `node`, by asking its agent (or, for a trace, by
/// tracing here for as long as the asker holds its lease). Never returns.
pub async fn answer_questions(store: Store, node: String, agent: AgentHandle, traces: TraceHost) {
    let permits = Arc::new(Semaphore::new(AT_ONCE));
    let prefix = requests_prefix(&node);
    loop {
        let mut client = store.client();
        // From now on: questions already there are older than this agent, or answered.
        let start = match store
            .call(client.get(prefix.clone(), Some(GetOptions::new().with_count_only())))
            .await
        {
            Ok(r) => r.header().map_or(0, |h| h.revision()) + 1,
            Err(_) => {
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let Ok(mut stream) = store
            .call(client.watch(prefix.clone(), Some(options)))
            .await
        else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        while let Ok(Some(r)) = stream.message().await {
            for event in r
                .events()
                .iter()
                .filter(|e| e.event_type() == EventType::Put)
            {
                let Some(kv) = event.kv() else { continue };
                let Some(id) = kv
                    .key_str()
                    .ok()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .map(str::to_string)
                else {
                    continue;
                };
                let Ok(question) = serde_json::from_slice::<Question>(kv.value()) else {
                    debug!(id, "an unreadable question; left to expire");
                    continue;
                };
                let (store, agent) = (store.clone(), agent.clone());
                if matches!(question.request, Request::Trace { .. }) {
                    // One trace per node at a time: the trace slot refuses the rest.
                    let (node, traces) = (node.clone(), traces.clone());
                    tokio::spawn(async move {
                        trace_here(&store, &node, &agent, &traces, &id, question).await;
                    });
                    continue;
                }
                let permit = permits.clone().acquire_owned().await;
                tokio::spawn(async move {
                    answer_one(&store, &agent, &id, question).await;
                    drop(permit);
                });
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Traces on this node for another node: records go to etcd in batches under the asker's
/// lease, until that lease goes (the asker's trace ended) or this trace ends.
async fn trace_here(
    store: &Store,
    node: &str,
    agent: &AgentHandle,
    traces: &TraceHost,
    id: &str,
    question: Question,
) {
    let Request::Trace {
        spec,
        lease_seconds,
    } = question.request
    else {
        return;
    };
    let mut sink = EtcdSink {
        store: store.clone(),
        id: id.to_string(),
        lease: question.lease,
        batch: 0,
        buffer: Vec::new(),
        dropped: 0,
    };
    let Some(names) = agent.trace_names().await else {
        sink.hello(&Response::failure("its agent has stopped"))
            .await;
        return;
    };
    let session = Session {
        bpffs: &traces.bpffs,
        spec,
        lease_seconds,
        names,
        slot: &traces.slot,
        node: Some(node.to_string()),
        remote: None,
        hello: "tracing".into(),
    };
    session.run(sink, lease_gone(store, question.lease)).await;
}

/// Resolves once `lease` is gone (revoked, or expired).
async fn lease_gone(store: &Store, lease: i64) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut client = store.client();
        if let Ok(r) = store.call(client.lease_time_to_live(lease, None)).await {
            if r.ttl() <= 0 {
                return;
            }
        }
    }
}

/// A trace's answer in etcd: the first answer under `replies/ID/00000000`, then batches of
/// records (JSON lines) under `replies/ID/00000001` on, one per tick with records.
struct EtcdSink {
    store: Store,
    id: String,
    lease: i64,
    batch: u32,
    buffer: Vec<u8>,
    /// Records left out because a batch was full.
    dropped: u64,
}

impl EtcdSink {
    async fn put(&mut self, body: Vec<u8>) -> bool {
        let key = format!("{}/{:08}", reply_key(&self.id), self.batch);
        self.batch += 1;
        let mut client = self.store.client();
        let put = client.put(key, body, Some(PutOptions::new().with_lease(self.lease)));
        self.store.call(put).await.is_ok()
    }
}

impl Sink for EtcdSink {
    async fn hello(&mut self, response: &Response) -> bool {
        let body = serde_json::to_vec(response).expect("serialises");
        self.put(body).await
    }

    async fn records(&mut self, records: Vec<TraceRecord>) -> bool {
        for r in records {
            if self.buffer.len() >= MAX_ANSWER_BYTES {
                self.dropped += 1;
                continue;
            }
            serde_json::to_writer(&mut self.buffer, &r).expect("records serialise");
            self.buffer.push(b'\n');
        }
        true
    }

    async fn tick(&mut self) -> bool {
        if self.dropped > 0 {
            warn!(
                dropped = self.dropped,
                "more trace records than fit one batch to the asking node; left out"
            );
            self.dropped = 0;
        }
        if self.buffer.is_empty() {
            return true;
        }
        let body = std::mem::take(&mut self.buffer);
        self.put(body).await
    }

    async fn finish(&mut self) {
        self.tick().await;
    }
}

async fn answer_one(store: &Store, agent: &AgentHandle, id: &str, question: Question) {
    let response = if answerable(&question.request) {
        agent.call(question.request).await
    } else {
        Response::failure("only counters may be asked of another node")
    };
    let mut body = serde_json::to_vec(&response).expect("serialises");
    if body.len() > MAX_ANSWER_BYTES {
        let refused = Response::failure(format!(
            "the answer is {} bytes, more than {MAX_ANSWER_BYTES} may cross between nodes; ask with --chain",
            body.len()
        ));
        body = serde_json::to_vec(&refused).expect("serialises");
    }
    let mut client = store.client();
    let put = client.put(
        reply_key(id),
        body,
        Some(PutOptions::new().with_lease(question.lease)),
    );
    if let Err(e) = store.call(put).await {
        // The asker gave up (its lease is gone) or etcd is unreachable: it sees no answer.
        warn!(from = question.from, error = %e, "answering another node");
    }
}
