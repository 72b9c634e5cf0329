//! Questions between agents, through etcd: how `sfcctl stats` on one node shows every node's
//! counters. No port of its own is opened between the nodes: whoever may ask is whoever may
//! write to the cluster's etcd (its TLS client certificates, where used), which is exactly the
//! cluster's members and operators.
//!
//! The asker takes a lease ([`TTL`]), writes the question under `requests/NODE/ID` with it,
//! and watches `replies/ID` for the answer, for at most [`ANSWER_WITHIN`]. Each agent watches
//! its own `requests/NODE/` prefix, answers (read-only questions only: [`answerable`]) under
//! the asker's lease, at most [`AT_ONCE`] at a time, and refuses an answer larger than
//! [`MAX_ANSWER_BYTES`]. The asker revokes its lease when done, which deletes both keys; an
//! asker that died leaves them to expire with the lease. Nothing of it touches the datapath.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use sfc_api::protocol::{Request, Response};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{records::PREFIX, store::Store};
use crate::agent::run::AgentHandle;

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

fn reply_key(id: &str) -> String {
    format!("{PREFIX}replies/{id}")
}

/// A question as written to etcd.
#[derive(Serialize, Deserialize)]
struct Question {
    from: String,
    /// The asker's lease: the answer is written under it.
    lease: i64,
    request: Request,
}

/// Whether another node may ask this: only what reads counters, never what changes state.
fn answerable(request: &Request) -> bool {
    matches!(request, Request::Stats { .. })
}

/// Where questions come from: this node, and the etcd it shares with the others.
#[derive(Clone)]
pub struct Asker {
    pub node: String,
    pub store: Store,
}

/// Asks node `to` (its agent) `request`, as node `from`; the answer, or why there is none.
pub async fn ask(
    store: &Store,
    from: &str,
    to: &str,
    request: &Request,
) -> Result<Response, String> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!(
        "{from}.{}.{nanos:x}.{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = store.client();
    let lease = store
        .call(client.lease_grant(TTL, None))
        .await
        .map_err(|e| e.to_string())?
        .id();
    let answer = async {
        // Watching before asking: the answer cannot come before the watch.
        let mut stream = store
            .call(client.watch(reply_key(&id), None))
            .await
            .map_err(|e| e.to_string())?;
        let question = Question {
            from: from.to_string(),
            lease,
            request: request.clone(),
        };
        let body = serde_json::to_vec(&question).expect("serialises");
        store
            .call(client.put(
                format!("{}{id}", requests_prefix(to)),
                body,
                Some(PutOptions::new().with_lease(lease)),
            ))
            .await
            .map_err(|e| e.to_string())?;
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

/// Answers the questions put to node `node`, by asking its agent. Never returns.
pub async fn answer_questions(store: Store, node: String, agent: AgentHandle) {
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
                let permit = permits.clone().acquire_owned().await;
                let (store, agent) = (store.clone(), agent.clone());
                tokio::spawn(async move {
                    answer_one(&store, &agent, &id, question).await;
                    drop(permit);
                });
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
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
