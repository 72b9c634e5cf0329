//! The agent's thread: one loop that takes requests and interface events from a queue, one at
//! a time, and samples the counters in between. Map writes and compiles block, so the loop has
//! a thread of its own instead of a slot on the async runtime; clients reach it through
//! [`AgentHandle`], which never waits for anything but the answer.

use std::{
    collections::BTreeMap,
    sync::{
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    time::{Duration, Instant},
};

use sfc_api::{
    health::MemberHealth,
    protocol::{Request, Response},
};
use tokio::sync::oneshot;

use super::{cluster::Snapshot, Agent};
use crate::cluster::store::NodeView;
use crate::observe::{metrics::Status, trace::Names};

/// How often counters are sampled for rates, health and metrics (also the loop's longest
/// sleep, so the heartbeat `/healthz` reads is at most this old while the agent is idle).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Interfaces are followed through netlink events; a full re-read this often as well catches
/// whatever an overflowing event socket may have lost.
const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// Events handled before interface changes are acted on.
const BATCH: usize = 64;

pub enum Event {
    Request {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// Something changed in the namespace's links (netlink said so).
    InterfacesChanged,
    /// Names for a trace's numbers.
    TraceNames(oneshot::Sender<Names>),
    /// A new revision of the cluster's desired state.
    ClusterState(Arc<Snapshot>),
    /// The cluster's nodes changed (one joined or was lost, or its interfaces changed).
    ClusterNodes(Vec<NodeView>),
    /// Every probed member's health: when one changed, and every second.
    Probed(BTreeMap<String, MemberHealth>),
}

/// How the rest of the daemon talks to the agent.
#[derive(Clone)]
pub struct AgentHandle {
    events: mpsc::Sender<Event>,
}

impl AgentHandle {
    /// Queues `request` and waits for its answer.
    pub async fn call(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::Request { request, reply }).is_err() {
            return Response::failure("the agent has stopped; restart sfc-daemon");
        }
        answer.await.unwrap_or_else(|_| {
            Response::failure("the agent stopped while handling the request; see its log")
        })
    }

    pub async fn trace_names(&self) -> Option<Names> {
        let (reply, answer) = oneshot::channel();
        self.events.send(Event::TraceNames(reply)).ok()?;
        answer.await.ok()
    }

    /// Never blocks: called from netlink's task.
    pub fn interfaces_changed(&self) {
        let _ = self.events.send(Event::InterfacesChanged);
    }

    /// Never blocks: called from the task that follows the cluster's state.
    pub fn cluster_state(&self, snapshot: Arc<Snapshot>) {
        let _ = self.events.send(Event::ClusterState(snapshot));
    }

    /// Never blocks: called from the probing task.
    pub fn probed(&self, health: BTreeMap<String, MemberHealth>) {
        let _ = self.events.send(Event::Probed(health));
    }

    /// Never blocks: called from the task that follows the cluster's nodes.
    pub fn cluster_nodes(&self, nodes: Vec<NodeView>) {
        let _ = self.events.send(Event::ClusterNodes(nodes));
    }
}

/// The agent's queue: the handle to reach it, and the end its thread reads. Made before the
/// agent so that interface events seen while it starts wait for it.
pub fn queue() -> (AgentHandle, Queue) {
    let (events, queue) = mpsc::channel();
    (AgentHandle { events }, Queue(queue))
}

pub struct Queue(mpsc::Receiver<Event>);

/// Starts the agent's thread.
pub fn spawn(agent: Agent, queue: Queue, status: Arc<Status>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agent".into())
        .spawn(move || run(agent, queue.0, &status))?;
    Ok(())
}

fn run(mut agent: Agent, queue: mpsc::Receiver<Event>, status: &Status) {
    let mut last_resync = Instant::now();
    let mut wait = SAMPLE_EVERY;
    loop {
        status.beat();
        let mut interfaces_changed = false;
        match queue.recv_timeout(wait) {
            Ok(event) => interfaces_changed |= handle(&mut agent, event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // A burst of link events (a veth pair, a namespace torn down) costs one re-read; a
        // steady stream of requests cannot put it off for long.
        for _ in 0..BATCH {
            let Ok(event) = queue.try_recv() else { break };
            interfaces_changed |= handle(&mut agent, event);
        }
        if interfaces_changed || last_resync.elapsed() >= RESYNC_EVERY {
            agent.reconcile();
            last_resync = Instant::now();
        }
        agent.sample_if_older_than(SAMPLE_EVERY);
        // A passive check took a member out, or one is back: recompiled now.
        if agent.ejections_changed() {
            agent.reconcile();
        }
        // Woken when interfaces an update left are due to lose the program.
        wait = agent
            .detach_stale()
            .map_or(SAMPLE_EVERY, |due| due.min(SAMPLE_EVERY));
    }
}

/// Handles one event; true when it says the interfaces changed.
fn handle(agent: &mut Agent, event: Event) -> bool {
    match event {
        Event::Request { request, reply } => {
            // A client that hung up meanwhile gets nothing; the work is done all the same.
            let _ = reply.send(agent.handle(request));
            false
        }
        Event::TraceNames(reply) => {
            let _ = reply.send(agent.trace_names());
            false
        }
        Event::InterfacesChanged => true,
        Event::ClusterState(snapshot) => {
            agent.steer_cluster(snapshot);
            false
        }
        Event::ClusterNodes(nodes) => {
            agent.nodes_changed(nodes);
            true
        }
        // A member in or out: recompiled by the reconcile that follows.
        Event::Probed(health) => agent.probed(health),
    }
}
