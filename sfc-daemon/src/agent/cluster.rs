//! The agent in a cluster: it steers its own part of the cluster's desired state, and turns
//! `apply` and `delete` into commits of the whole cluster's state. Runs on the agent's thread;
//! the calls to etcd are made on the async runtime and waited for (each bounded in time).

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use sfc_api::protocol::{Node, Response};
use sfc_config::{
    changes,
    compile::{compile_cached, Cluster},
    document::{ConfigErrors, Sourced},
    model::{Kind, Object, Spec, State},
    nodes::{self, NodeInterfaces},
    plan::validate_objects,
    validate::{validate, Origins},
};
use tokio::sync::watch;
use tracing::info;

use super::{errors_response, ms, ok_response, Agent};
pub use crate::cluster::snapshot::Snapshot;
use crate::cluster::{
    records::{Head, NodeInfo, NodeStatus, Record},
    store::{NodeView, Store},
    ClusterError,
};
use crate::dataplane::handover::Steered;

/// Commits tried when other applies keep committing first: each retry validates again
/// against the newer state.
const ATTEMPTS: usize = 5;
/// How long an apply rides through etcd being briefly unavailable (a leader election takes
/// 1 to 2 s) before it is refused.
const RIDE_THROUGH: Duration = Duration::from_secs(4);
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Newer revisions read in a row when each is overtaken in turn (another node always has a
/// newer one): past that, the watch brings the next.
const OVERTAKEN_READS: usize = 4;

pub struct ClusterLink {
    pub node: String,
    pub store: Store,
    pub runtime: tokio::runtime::Handle,
    /// The revision the dataplane was last given (steered, or refused with an error).
    pub snapshot: Arc<Snapshot>,
    /// The registered nodes as last seen (without their statuses).
    pub nodes: Vec<NodeView>,
    /// Where other nodes send this node's part of their chains.
    pub tunnel_address: IpAddr,
    /// Their packets are stripped in XDP too (`--tunnel-xdp`).
    pub tunnel_xdp: bool,
    pub status: watch::Sender<NodeStatus>,
    pub info: watch::Sender<NodeInfo>,
}

impl ClusterLink {
    /// Runs `f` on the runtime and waits for it; again while etcd is unavailable, for up to
    /// [`RIDE_THROUGH`] (every call is safe to repeat: a commit whose answer was lost fails
    /// its guard the second time, and the apply then finds its objects already there).
    fn wait<T, F: Future<Output = Result<T, ClusterError>>>(
        &self,
        f: impl Fn() -> F,
    ) -> Result<T, ClusterError> {
        let started = Instant::now();
        loop {
            match self.runtime.block_on(f()) {
                Err(ClusterError::Unreachable { .. }) if started.elapsed() < RIDE_THROUGH => {
                    std::thread::sleep(RETRY_AFTER)
                }
                result => return result,
            }
        }
    }
}

/// What an apply or a delete changes, once validated against one revision.
struct Planned {
    upserts: Vec<Record>,
    removals: Vec<(Kind, String)>,
    lines: Vec<String>,
    /// The state after it, every interface qualified.
    next: State,
}

impl Agent {
    fn link(&self) -> &ClusterLink {
        self.cluster.as_ref().expect("cluster mode")
    }

    /// A revision of the cluster's state arrived (or was just committed here): steer this
    /// node's part of it. When another node already holds a newer one, that one is read and
    /// steered at once rather than when the watch brings it.
    pub fn steer_cluster(&mut self, mut snapshot: Arc<Snapshot>) {
        for _ in 0..OVERTAKEN_READS {
            if self.steer_revision(snapshot.clone()) == Steered::Active {
                return;
            }
            let link = self.link();
            match link.wait(|| link.store.refresh(&snapshot)) {
                Ok(latest) if latest.revision > snapshot.revision => snapshot = Arc::new(latest),
                _ => return,
            }
        }
    }

    /// Steers one revision, caches it for a restart without etcd, and says what came of it.
    fn steer_revision(&mut self, snapshot: Arc<Snapshot>) -> Steered {
        let Some(link) = &self.cluster else {
            return Steered::Active;
        };
        if snapshot.revision <= link.snapshot.revision && self.compiled.is_some() {
            return Steered::Active;
        }
        self.state = snapshot.local_state(&link.node);
        self.interfaces = self.current_interfaces();
        self.interfaces.cluster = self.cluster_view(snapshot.revision);
        let compiled = compile_cached(&self.state, &self.interfaces, &Origins::in_cluster());
        let steered = self.program(
            compiled,
            &format!(
                "revision {} cannot be steered on this node's interfaces",
                snapshot.revision
            ),
        );
        if let Err(e) = self.store.save_cluster(&snapshot) {
            self.warn_once(format!("caching the cluster's state: {e}"));
        }
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(snapshot.applied_state());
        let link = self.cluster.as_mut().expect("cluster mode");
        link.snapshot = snapshot;
        let revision = link.snapshot.revision;
        link.status.send_modify(|s| s.revision = revision);
        steered
    }

    /// The other nodes changed: steer across them as they are now.
    pub fn nodes_changed(&mut self, nodes: Vec<NodeView>) {
        let Some(link) = &mut self.cluster else {
            return;
        };
        link.nodes = nodes;
        let own = link.tunnel_address;
        let other_family = link.nodes.iter().find_map(|n| {
            let addr = n.info.tunnel_address.parse::<IpAddr>().ok()?;
            (addr.is_ipv4() != own.is_ipv4()).then(|| format!("{} ({addr})", n.name))
        });
        if let Some(node) = other_family {
            self.warn_once(format!(
                "node {node} has a tunnel address of another family than this node's {own}: the nodes of a cluster need tunnel addresses of one family (IPv4 or IPv6); its port pairs are left out here"
            ));
        }
        if let Err(e) = self.store.save_nodes(&self.link().nodes) {
            self.warn_once(format!("caching the cluster's nodes: {e}"));
        }
    }

    /// What compiling revision `revision` of `self.state` here needs to know of the other
    /// nodes: those of their interfaces the state names, on the nodes alive (steered to
    /// through the tunnel), and the tunnel addresses of all (taken packets from). Only named
    /// interfaces, so that the churn of other interfaces on other nodes recompiles nothing
    /// here. `None` outside a cluster.
    pub(super) fn cluster_view(&self, revision: i64) -> Option<Cluster> {
        let link = self.cluster.as_ref()?;
        let named: BTreeSet<&String> = self
            .state
            .port_pairs
            .values()
            .flat_map(|pp| [&pp.ingress, &pp.egress])
            .chain(self.state.flow_classifiers.values().flat_map(|fc| {
                std::iter::once(&fc.logical_source_port).chain(fc.logical_destination_port.as_ref())
            }))
            .collect();
        let mut view = Cluster {
            node: link.node.clone(),
            // The low 32 bits travel with packets: equal revisions are all they compare.
            revision: revision as u32,
            ..Cluster::default()
        };
        for node in link.nodes.iter().filter(|n| n.name != link.node) {
            let Ok(addr) = node.info.tunnel_address.parse::<IpAddr>() else {
                continue;
            };
            // The underlay carries one family: a node of the other cannot be reached, and
            // its members are left out as if it were lost (`nodes_changed` says so).
            if addr.is_ipv4() != link.tunnel_address.is_ipv4() {
                continue;
            }
            view.peers.insert(addr);
            if node.alive {
                for iface in &node.info.interfaces {
                    let qualified = format!("{}/{}", node.name, iface.name);
                    if named.contains(&qualified) {
                        view.remote.insert(qualified, addr);
                    }
                }
            }
        }
        Some(view)
    }

    pub(super) fn cluster_apply(&mut self, objects: Vec<Sourced>, dry_run: bool) -> Response {
        self.cluster_change(dry_run, |base, nodes, reserved| {
            let placements = nodes::resolve(&objects, nodes)?;
            let qualified: Vec<Sourced> = objects
                .iter()
                .zip(&placements)
                .map(|(s, placement)| Sourced {
                    file: s.file.clone(),
                    object: Object {
                        name: s.object.name.clone(),
                        spec: nodes::qualify(&s.object.spec, placement),
                    },
                })
                .collect();
            let (next, lines) = validate_objects(
                &base.qualified_state(),
                qualified,
                Origins::in_cluster(),
                reserved,
            )?;
            let upserts = objects
                .iter()
                .zip(placements)
                .map(|(s, placement)| {
                    let mut object = s.object.clone();
                    if let Spec::PortChain(chain) = &mut object.spec {
                        chain.chain_id =
                            next.port_chains.get(&object.name).and_then(|c| c.chain_id);
                    }
                    Record {
                        object,
                        placement,
                        since: base.revision + 1,
                    }
                })
                .collect();
            Ok(Planned {
                upserts,
                removals: Vec::new(),
                lines,
                next,
            })
        })
    }

    pub(super) fn cluster_delete(
        &mut self,
        targets: Vec<(Kind, String)>,
        dry_run: bool,
    ) -> Response {
        self.cluster_change(dry_run, |base, _, _| {
            let mut next = base.qualified_state();
            let mut items = Vec::new();
            let mut removals = Vec::new();
            for (kind, name) in &targets {
                let verb = if next.remove(*kind, name) {
                    removals.push((*kind, name.clone()));
                    "deleted"
                } else {
                    "not found (nothing to delete)"
                };
                items.push((*kind, name.clone(), verb.to_string()));
            }
            if let Err(e) = validate(&next, &Origins::in_cluster()) {
                let mut r = errors_response(e);
                r.message = "nothing was deleted: the rest of the cluster's state would be invalid; delete the objects that use these first, or in the same file".into();
                return Err(r.into());
            }
            Ok(Planned {
                upserts: Vec::new(),
                removals,
                lines: changes::render(items),
                next,
            })
        })
    }

    /// Validates `plan` against the cluster's latest state and commits it, guarded by the
    /// revision it was validated against; when another apply committed first, validates again
    /// against the newer state.
    fn cluster_change(
        &mut self,
        dry_run: bool,
        plan: impl Fn(&Snapshot, &NodeInterfaces, &BTreeSet<u32>) -> Result<Planned, PlanError>,
    ) -> Response {
        let mut base = self.link().snapshot.clone();
        for _ in 0..ATTEMPTS {
            let link = self.link();
            let read = link.wait(|| async {
                let latest = link.store.refresh(&base).await?;
                Ok((latest, link.store.nodes().await?))
            });
            let (latest, nodes) = match read {
                Ok(r) => r,
                Err(e) => return refused(e),
            };
            base = Arc::new(latest);
            let interfaces: NodeInterfaces = nodes
                .iter()
                .map(|n| {
                    let names = n.info.interfaces.iter().map(|i| i.name.clone()).collect();
                    (n.name.clone(), names)
                })
                .collect();
            let (reserved, retired) = chain_ids_held(&base, &nodes);
            let started = Instant::now();
            let planned = match plan(&base, &interfaces, &reserved) {
                Ok(p) => p,
                Err(PlanError::Invalid(e)) => return errors_response(e),
                Err(PlanError::Refused(r)) => return *r,
            };
            if dry_run {
                let mut response = ok_response(planned.lines, &[]);
                response.message.push_str("\ndry run: nothing was changed");
                return response;
            }
            let changed = base.changed_shards(planned.upserts, &planned.removals);
            if changed.is_empty() {
                let mut response = ok_response(planned.lines, &[]);
                response.revision = Some(base.revision);
                return response;
            }
            let head = Head {
                shards: base.head.shards.clone(),
                retired: retire(&base, &planned.next, retired),
            };
            let planned_at = started.elapsed();
            let committed = link.wait(|| {
                link.store
                    .commit(&base, changed.clone(), head.clone(), &link.node)
            });
            match committed {
                Ok(next) => {
                    let revision = next.revision;
                    let committed_at = started.elapsed();
                    self.steer_cluster(Arc::new(next));
                    info!(
                        revision,
                        plan_ms = ms(planned_at),
                        commit_ms = ms(committed_at - planned_at),
                        steer_ms = ms(started.elapsed() - committed_at),
                        "committed"
                    );
                    let mut lines = planned.lines;
                    lines.push(format!(
                        "committed as revision {revision} of the cluster's state"
                    ));
                    if let Some(problem) = &self.last_error {
                        lines.push(format!(
                            "note: this node does not steer it fully: {problem}"
                        ));
                    }
                    let mut response = ok_response(lines, &[]);
                    response.revision = Some(revision);
                    return response;
                }
                Err(ClusterError::Conflict) => continue,
                Err(e) => return refused(e),
            }
        }
        Response::failure(format!(
            "the cluster's state changed {ATTEMPTS} times while this request was validated against it; nothing was changed, try again"
        ))
    }

    pub(super) fn cluster_nodes(&self) -> Response {
        let link = self.link();
        match link.wait(|| link.store.nodes()) {
            Ok(nodes) => Response {
                ok: true,
                nodes: nodes.into_iter().map(node_row).collect(),
                ..Default::default()
            },
            Err(e) => Response::failure(e.to_string()),
        }
    }

    /// `sfcctl delete node NAME`: forgets a node that is gone for good, so that its
    /// interfaces no longer count when names are resolved and its applied revision no longer
    /// holds back chain ids. Refused while it is alive or while objects are on it.
    pub(super) fn forget_node(&mut self, name: &str) -> Response {
        let link = self.link();
        let mut base = link.snapshot.clone();
        for _ in 0..ATTEMPTS {
            base = match link.wait(|| link.store.refresh(&base)) {
                Ok(latest) => Arc::new(latest),
                Err(e) => return refused(e),
            };
            let on_node: Vec<String> = base
                .records()
                .filter(|r| r.placement.values().any(|n| n == name))
                .map(|r| format!("{} {:?}", r.object.spec.kind(), r.object.name))
                .collect();
            if !on_node.is_empty() {
                let shown = on_node
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = on_node.len().saturating_sub(5);
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                return Response::failure(format!(
                    "node {name:?} still has {shown}{more}; delete them first (or apply them on other nodes); nothing was changed"
                ));
            }
            match link.wait(|| link.store.forget_node(&base, name)) {
                Ok(true) => return ok_response(vec![format!("node/{name} forgotten")], &[]),
                Ok(false) => {
                    return Response::failure(format!(
                        "node {name:?} not found; `sfcctl get nodes` lists them"
                    ))
                }
                Err(ClusterError::Conflict) => continue,
                Err(e) => return refused(e),
            }
        }
        Response::failure(format!(
            "the cluster's state changed {ATTEMPTS} times while node {name:?} was checked; nothing was changed, try again"
        ))
    }

    /// For `describe`: each node's applied revision, beside the revision that brought this
    /// version of the object.
    pub(super) fn cluster_describe(&self, kind: Kind, name: &str) -> String {
        let link = self.link();
        let since = link.snapshot.record(kind, name).map_or(0, |r| r.since);
        let mut out = format!(
            "\nNodes (this node steers revision {}; this version of the object came after revision {}):\n",
            link.snapshot.revision,
            since - 1
        );
        match link.wait(|| link.store.nodes()) {
            Ok(nodes) => {
                for n in nodes.into_iter().map(node_row) {
                    let has = if n.applied_revision >= since {
                        "has it"
                    } else {
                        "behind"
                    };
                    out.push_str(&format!(
                        "  {}\t{}\tapplied revision {}\t{has}{}\n",
                        n.name,
                        n.state,
                        n.applied_revision,
                        if n.error.is_empty() {
                            String::new()
                        } else {
                            format!("\terror: {}", n.error)
                        }
                    ));
                }
            }
            Err(e) => out.push_str(&format!("  unknown: {e}\n")),
        }
        out
    }

    /// The interfaces this node has, for the other nodes' name resolution.
    pub(super) fn publish_interfaces(&self) {
        let Some(link) = &self.cluster else { return };
        let interfaces = self
            .interfaces
            .links
            .values()
            .filter(|l| l.name != "lo")
            .map(|l| sfc_api::protocol::NodeInterface {
                name: l.name.clone(),
                mac: l.mac.map(format_mac).unwrap_or_default(),
            })
            .collect();
        link.info.send_if_modified(|info| {
            let changed = info.interfaces != interfaces;
            info.interfaces = interfaces;
            changed
        });
    }

    /// Tells the other nodes which of this node's members are out of their groups.
    pub(super) fn publish_down(&self) {
        let Some(link) = &self.cluster else { return };
        let down = self.local_failed();
        link.info.send_if_modified(|info| {
            let changed = info.down != down;
            info.down = down;
            changed
        });
    }

    /// Says why this node does not steer its part fully (empty: it does).
    pub(super) fn publish_error(&self) {
        if let Some(link) = &self.cluster {
            let error = self.last_error.clone().unwrap_or_default();
            link.status.send_if_modified(|s| {
                let changed = s.error != error;
                s.error = error;
                changed
            });
        }
    }
}

enum PlanError {
    Invalid(ConfigErrors),
    Refused(Box<Response>),
}

impl From<ConfigErrors> for PlanError {
    fn from(e: ConfigErrors) -> Self {
        PlanError::Invalid(e)
    }
}

impl From<Response> for PlanError {
    fn from(r: Response) -> Self {
        PlanError::Refused(Box::new(r))
    }
}

fn refused(e: ClusterError) -> Response {
    let mut message = format!("{e}; nothing was changed");
    if matches!(e, ClusterError::Unreachable { .. }) {
        message.push_str(", and every node keeps steering what it has");
    }
    Response::failure(message)
}

/// Chain ids a new chain may not take: those of deleted chains while a node has applied a
/// revision that still had them (a node lost meanwhile counts: its dataplane may still run).
/// Also the retired ids still worth keeping.
fn chain_ids_held(base: &Snapshot, nodes: &[NodeView]) -> (BTreeSet<u32>, BTreeMap<u32, i64>) {
    let oldest = nodes
        .iter()
        .filter_map(|n| n.status.as_ref().map(|s| s.revision))
        .min()
        .unwrap_or(i64::MAX);
    let retired: BTreeMap<u32, i64> = base
        .head
        .retired
        .iter()
        .filter(|(_, since)| **since > oldest)
        .map(|(id, since)| (*id, *since))
        .collect();
    (retired.keys().copied().collect(), retired)
}

/// `retired` plus the ids of the chains `next` no longer has.
fn retire(base: &Snapshot, next: &State, mut retired: BTreeMap<u32, i64>) -> BTreeMap<u32, i64> {
    let ids = |s: &State| -> BTreeSet<u32> {
        s.port_chains.values().filter_map(|c| c.chain_id).collect()
    };
    let kept = ids(next);
    for id in ids(&base.applied_state()).difference(&kept) {
        retired.insert(*id, base.revision + 1);
    }
    retired
}

fn node_row(n: NodeView) -> Node {
    let status = n.status.unwrap_or_default();
    Node {
        state: if n.alive { "ready" } else { "lost" }.into(),
        tunnel_address: n.info.tunnel_address,
        interfaces: n.info.interfaces,
        applied_revision: status.revision,
        error: status.error,
        usable_mtu: n.info.usable_mtu,
        holding: status.holding,
        sending: status.sending,
        down: n.info.down,
        name: n.name,
    }
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
