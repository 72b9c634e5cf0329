//! List and watch: the node follows the cluster's desired state. Every (re-)list rebuilds the
//! whole state from the shards the head names, so whatever a lost watch event would have
//! said is in it, and whatever was deleted meanwhile is gone from it (mark and sweep). A
//! watch on the head says when to list again; a list every [`RELIST_EVERY`] catches a watch
//! that went quiet without failing.

use std::{sync::Arc, time::Duration};

use etcd_client::WatchOptions;
use tracing::{info, warn};

use super::{
    records::{head_key, PREFIX},
    snapshot::Snapshot,
    store::{NodeView, Store},
};

const RELIST_EVERY: Duration = Duration::from_secs(10);
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Follows the desired state from `known` on; `deliver` gets every new revision. Never returns.
pub async fn follow(store: Store, mut known: Arc<Snapshot>, deliver: impl Fn(Arc<Snapshot>)) {
    let mut failing = None::<String>;
    loop {
        match store.refresh(&known).await {
            Ok(latest) => {
                if failing.take().is_some() {
                    info!("following the cluster's state again");
                }
                if latest.revision != known.revision {
                    known = Arc::new(latest);
                    deliver(known.clone());
                }
            }
            Err(e) => {
                let message = format!("{e}; this node keeps steering revision {}", known.revision);
                if failing.as_deref() != Some(message.as_str()) {
                    warn!("{message}");
                    failing = Some(message);
                }
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        }
        wait_for_change(&store, known.revision).await;
    }
}

/// Follows the registered nodes (tunnel addresses, interfaces) and which of them are alive;
/// `deliver` gets them whenever that changes (not their applied revisions, which change at
/// every apply). Never returns.
pub async fn follow_nodes(store: Store, deliver: impl Fn(Vec<NodeView>)) {
    let mut known = None;
    loop {
        // Watching before listing: whatever changes after the list is an event.
        let mut client = store.client();
        // `alive/` up to `nodes/` and its keys (nothing else is kept between them).
        let options = WatchOptions::new().with_range(format!("{PREFIX}nodes0"));
        let watch = store
            .call(client.watch(format!("{PREFIX}alive/"), Some(options)))
            .await;
        if let Ok(mut nodes) = store.nodes().await {
            for node in &mut nodes {
                node.status = None;
            }
            if known.as_ref() != Some(&nodes) {
                known = Some(nodes.clone());
                deliver(nodes);
            }
        }
        let Ok(mut stream) = watch else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        let changed = async {
            loop {
                match stream.message().await {
                    Ok(Some(r)) if r.events().is_empty() && !r.canceled() => continue,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(RELIST_EVERY, changed).await;
    }
}

/// Returns when the head changed after `revision`, the watch failed, or [`RELIST_EVERY`]
/// passed.
async fn wait_for_change(store: &Store, revision: i64) {
    let mut client = store.client();
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let watching = async {
        let Ok(mut stream) = store.call(client.watch(head_key(), Some(options))).await else {
            tokio::time::sleep(RETRY_AFTER).await;
            return;
        };
        // Any message (an event, a cancellation, an error, the end) means: list again.
        loop {
            match stream.message().await {
                Ok(Some(r)) if r.events().is_empty() && !r.canceled() => continue,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(RELIST_EVERY, watching).await;
}
