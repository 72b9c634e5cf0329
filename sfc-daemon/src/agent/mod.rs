//! The node agent's logic: desired state in, dataplane out. The agent is the one writer:
//! requests that change something and interface changes are handled one at a time on its own
//! thread ([`run`]), so every update sees a consistent state, while clients are read and
//! answered elsewhere ([`crate::api::server`]), so no apply waits on another client's I/O.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

pub mod cluster;
pub mod lock;
pub mod run;
pub mod store;

use sfc_api::{
    health::{MemberHealth, PairHealth, Probed, State as HealthState},
    protocol::{Request, Response},
};
use sfc_config::{
    changes,
    compile::{compile, compile_cached, Compiled, Image, Interfaces, Link},
    document::{parse_file, ConfigErrors},
    model::{Kind, Object, State},
    plan::parse_files,
    plan::plan_compiled,
    validate::Origins,
};

use crate::{
    cluster::handover::PeerHandover,
    dataplane::{
        handover::Steered,
        netlink::{Netlink, NetlinkError},
        Dataplane, DataplaneError, Mode, Options, Underlay,
    },
    observe::{
        health::{Ejection, Health},
        metrics::{Metrics, Status},
        snapshot::{ProbedMember, Shared, Snapshot},
    },
    probe,
};
use store::{Store, StoreError};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("starting the thread that counts the tables: {0}")]
    Thread(std::io::Error),
    #[error("finding this node's tunnel address: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Tunnel(String),
    #[error("making the probe token from /dev/urandom: {0}")]
    Token(std::io::Error),
}

/// Why an apply or a delete that passed validation did not take effect.
#[derive(Debug, Error)]
pub enum CommitError {
    #[error("saving the state: {0}; nothing changed")]
    Persist(#[source] StoreError),
    #[error("saving the state: {0}; the dataplane steers the refused change until the next apply or restart: {1}")]
    PersistNotTakenBack(#[source] StoreError, String),
    #[error("the dataplane refused the update, nothing changed: {0}")]
    Dataplane(#[source] DataplaneError),
}

/// The applied state as last committed, for readers on other threads (`get` is answered from
/// it without queueing behind an apply).
pub type Published = Arc<Mutex<Arc<State>>>;

pub struct Agent {
    state: State,
    published: Published,
    netlink: Netlink,
    store: Store,
    dataplane: Dataplane,
    interfaces: Interfaces,
    /// What the applied state last compiled to, kept so that an interface change recompiles
    /// only the stages that read the interfaces that changed (None until it first compiled).
    compiled: Option<Compiled>,
    /// Why the dataplane does not steer the applied state (logged once, not every tick).
    last_error: Option<String>,
    /// The last other problem logged (reading counters), likewise.
    last_warning: Option<String>,
    /// The dataplane reflects `state` on `interfaces` (or cannot, until they change); false
    /// makes the next reconcile compile and write whatever changed.
    synced: bool,
    health: Health,
    last_sample: Option<Instant>,
    metrics: Arc<Metrics>,
    /// What /readyz says: whether the dataplane steers the applied state.
    status: Arc<Status>,
    /// Published for the metrics endpoint.
    observed: Shared,
    /// In a cluster (`--etcd`): where the desired state comes from and goes to.
    cluster: Option<cluster::ClusterLink>,
    /// The active generation last recorded in the state directory.
    remembered: Option<(u64, u64)>,
    /// In a cluster: where packets to and from other nodes go.
    underlay: Option<Underlay>,
    /// Health checks: the members to probe go out here, their health comes back.
    probes: Probes,
}

/// The agent's side of the health checks.
struct Probes {
    targets: watch::Sender<Vec<probe::Target>>,
    /// Each probed member's health, as last reported.
    health: BTreeMap<String, MemberHealth>,
    /// Members of groups with a health check that cannot be probed, and why.
    unprobed: BTreeMap<String, String>,
    /// Times each member went down or came back up.
    transitions: BTreeMap<String, u64>,
    /// Members out of their groups as black holes (passive checks).
    ejected: BTreeMap<String, Ejection>,
    /// An ejection began or ended since the last reconcile.
    ejections_changed: bool,
}

/// How old a sample `stats` and `describe` may show (newer ones are taken on request).
const FRESH_ENOUGH: Duration = Duration::from_millis(100);

/// What `describe` shows as skipped before anything compiled.
static NONE_SKIPPED: BTreeSet<String> = BTreeSet::new();

/// Why a member ejected by its group's passive check is out.
const EJECTED: &str = "a black hole: packets went in, none came out (passive check)";

/// How long a black hole among `pair`'s group's members stays out, when its group's health
/// check is passive too.
fn passive_ejection(state: &State, pair: &str) -> Option<Duration> {
    state
        .group_of(pair)?
        .health_check
        .as_ref()
        .filter(|c| c.passive)
        .map(|c| Duration::from_millis(c.eject_ms.into()))
}

/// Where the agent keeps what outlives it: the desired state (or, in a cluster, its cache)
/// and the pinned maps and links.
pub struct Paths<'a> {
    pub state_dir: &'a Path,
    pub bpffs: &'a Path,
}

impl Agent {
    pub fn start(
        Paths { state_dir, bpffs }: Paths,
        options: Options,
        netlink: Netlink,
        observed: Shared,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        cluster: Option<cluster::ClusterLink>,
    ) -> Result<Self, AgentError> {
        let store = Store::new(state_dir)?;
        // In a cluster, the last revision this node steered, until etcd says more.
        let (state, published) = match &cluster {
            Some(link) => (
                link.snapshot.local_state(&link.node),
                link.snapshot.applied_state(),
            ),
            None => {
                let state = store.load()?;
                (state.clone(), state)
            }
        };
        let mut dataplane = Dataplane::open(bpffs, options.mode, options.tables)?;
        if let Some((epoch, fingerprint)) = store.load_generation() {
            dataplane.adopt(epoch, fingerprint)?;
        }
        // Before anything steers to another node (outside a cluster: a tunnel an earlier
        // daemon left is let go).
        let underlay = match &cluster {
            Some(link) => Some(underlay(&netlink, link.tunnel_address, link.tunnel_xdp)?),
            None => None,
        };
        dataplane.set_tunnel(underlay.as_ref())?;
        if let Some(link) = &cluster {
            dataplane.set_handover(Box::new(PeerHandover::new(
                link.node.clone(),
                link.store.clone(),
                link.runtime.clone(),
                link.status.clone(),
            )))?;
        }
        if let (Some(link), Some(u)) = (&cluster, &underlay) {
            let mtu = u.usable_mtu();
            link.info.send_modify(|info| info.usable_mtu = mtu);
        }
        info!(
            chains = state.port_chains.len(),
            classifiers = state.flow_classifiers.len(),
            epoch = dataplane.epoch()?,
            "state loaded"
        );
        let mut agent = Self {
            published: Arc::new(Mutex::new(Arc::new(published))),
            netlink,
            state,
            store,
            dataplane,
            interfaces: Interfaces::default(),
            compiled: None,
            last_error: None,
            last_warning: None,
            synced: false,
            health: Health::default(),
            last_sample: None,
            metrics,
            status,
            observed,
            cluster,
            remembered: None,
            underlay,
            probes: Probes {
                targets: watch::channel(Vec::new()).0,
                health: BTreeMap::new(),
                unprobed: BTreeMap::new(),
                transitions: BTreeMap::new(),
                ejected: BTreeMap::new(),
                ejections_changed: false,
            },
        };
        agent.reconcile();
        if let Some(link) = &agent.cluster {
            let revision = link.snapshot.revision;
            link.status.send_modify(|s| s.revision = revision);
        }
        agent.sample();
        let tables = agent.dataplane.table_maps()?;
        crate::observe::fill::spawn(tables, agent.observed.clone()).map_err(AgentError::Thread)?;
        Ok(agent)
    }

    /// What the probing task needs, with the token the pinned maps hold, or a new one the
    /// first time (a restarted agent rewrites none of the maps it finds).
    pub fn prober(&mut self) -> Result<probe::Prober, AgentError> {
        let token = match self.dataplane.probe_token()? {
            0 => random_token().map_err(AgentError::Token)?,
            pinned => pinned,
        };
        Ok(probe::Prober {
            returned: self.dataplane.probes(token)?,
            token,
            targets: self.probes.targets.subscribe(),
        })
    }

    /// The probing task's report: members whose probes fail leave their groups, those whose
    /// probes come back again return. True when one did (the next reconcile recompiles).
    pub fn probed(&mut self, health: BTreeMap<String, MemberHealth>) -> bool {
        let before = self.failed();
        for (pair, h) in &health {
            let Some(before) = self.probes.health.get(pair).map(|o| o.state) else {
                continue;
            };
            if before != h.state {
                *self.probes.transitions.entry(pair.clone()).or_default() += 1;
                match h.state {
                    Probed::Down => warn!(pair, reason = %h.reason, "member down"),
                    Probed::Up => info!(pair, reason = %h.reason, "member up"),
                }
            }
        }
        self.probes.health = health;
        self.failed() != before
    }

    /// The members out of their groups, and why: this node's, and in a cluster those the other
    /// nodes (alive) say are out, so that every node leaves them out alike.
    fn failed(&self) -> BTreeMap<String, String> {
        let mut failed = self.local_failed();
        if let Some(link) = &self.cluster {
            for node in link.nodes.iter().filter(|n| n.alive && n.name != link.node) {
                for (pair, why) in &node.info.down {
                    failed.insert(pair.clone(), format!("on node {}: {why}", node.name));
                }
            }
        }
        failed
    }

    /// This node's members out of their groups (probes failing, or ejected as black holes),
    /// and why.
    fn local_failed(&self) -> BTreeMap<String, String> {
        let mut failed: BTreeMap<String, String> = self
            .probes
            .health
            .iter()
            .filter(|(_, h)| h.state == Probed::Down)
            .map(|(pair, h)| (pair.clone(), h.reason.clone()))
            .collect();
        for pair in self.probes.ejected.keys() {
            failed.insert(pair.clone(), EJECTED.into());
        }
        failed
    }

    /// Passive checks: a member of a group with `healthCheck.passive` that its counters judge
    /// a black hole leaves its group for `ejectMs`; when that is up it returns, judged afresh
    /// (nothing went into it meanwhile, and its counters' window is shorter). A member whose
    /// group no longer has a passive check returns at once.
    fn eject_black_holes(&mut self, pairs: &[PairHealth]) {
        let now = Instant::now();
        let mut moved: Vec<String> = Vec::new();
        let state = &self.state;
        self.probes.ejected.retain(|pair, e| {
            // (Or its group no longer has a passive check.)
            let stays = now < e.until && passive_ejection(state, pair).is_some();
            if !stays {
                info!(pair, "member back: its ejection as a black hole is over");
                moved.push(pair.clone());
            }
            stays
        });
        for p in pairs.iter().filter(|p| p.state == HealthState::BlackHole) {
            let Some(eject) = passive_ejection(&self.state, &p.pair) else {
                continue;
            };
            if self.probes.ejected.contains_key(&p.pair) {
                continue;
            }
            warn!(
                pair = p.pair,
                seconds = eject.as_secs(),
                "member down: {EJECTED}"
            );
            self.probes.ejected.insert(
                p.pair.clone(),
                Ejection {
                    since: SystemTime::now(),
                    until: now + eject,
                },
            );
            moved.push(p.pair.clone());
        }
        for pair in &moved {
            *self.probes.transitions.entry(pair.clone()).or_default() += 1;
        }
        self.probes.ejections_changed |= !moved.is_empty();
    }

    /// A member's health check as `stats` shows it: ejected as a black hole (its probes go on
    /// meanwhile), or what its probes say; `None` when this node does not check it.
    fn member_check(&self, pair: &str) -> Option<MemberHealth> {
        let probed = self.probes.health.get(pair);
        match self.probes.ejected.get(pair) {
            Some(e) => Some(MemberHealth {
                state: Probed::Down,
                since: e.since,
                reason: EJECTED.into(),
                ..probed
                    .cloned()
                    .unwrap_or_else(|| MemberHealth::starting(e.since))
            }),
            None => probed.cloned(),
        }
    }

    /// Whether a member was ejected or came back since the last call (then the dataplane
    /// must be recompiled).
    pub fn ejections_changed(&mut self) -> bool {
        std::mem::take(&mut self.probes.ejections_changed)
    }

    /// Tells the probing task which members of this node to probe, as the state and the
    /// interfaces now say.
    fn publish_probe_targets(&mut self) {
        let (targets, unprobed) = probe::targets(&self.state, &self.interfaces);
        for (pair, why) in &unprobed {
            if self.probes.unprobed.get(pair) != Some(why) {
                warn!(pair, "not probed: {why}");
            }
        }
        self.probes.unprobed = unprobed;
        self.probes.targets.send_if_modified(|now| {
            let changed = *now != targets;
            *now = targets;
            changed
        });
    }

    /// The applied state, as readers on other threads see it.
    pub fn published(&self) -> Published {
        self.published.clone()
    }

    /// The program off interfaces no chain needs any more, when due
    /// ([`Dataplane::detach_stale`]); how long until it next is.
    fn detach_stale(&mut self) -> Option<Duration> {
        self.dataplane.detach_stale().unwrap_or_else(|e| {
            self.warn_once(format!("detaching from interfaces no chain uses: {e}"));
            None
        })
    }

    fn sample_if_older_than(&mut self, age: Duration) {
        if self.last_sample.is_none_or(|at| at.elapsed() >= age) {
            self.sample();
        }
    }

    /// Reads every counter once, updates rates and health, publishes the snapshot.
    fn sample(&mut self) {
        self.last_sample = Some(Instant::now());
        if let Err(e) = self.dataplane.sweep_fragments() {
            self.warn_once(format!("forgetting stale fragments: {e}"));
        }
        let read = || -> Result<Snapshot, crate::dataplane::DataplaneError> {
            let live = self.dataplane.live_counters()?;
            Ok(Snapshot {
                outcomes: sfc_common::stat::NAMES
                    .iter()
                    .map(|n| n.to_string())
                    .zip(self.dataplane.stats()?)
                    .collect(),
                chains: self.dataplane.chain_counters.totals(&live),
                epoch: self.dataplane.epoch()?,
                ..Default::default()
            })
        };
        let mut snapshot = match read() {
            Ok(s) => s,
            Err(e) => {
                self.warn_once(format!("reading counters: {e}"));
                return;
            }
        };
        match self.dataplane.member_counters() {
            Ok(members) => self.health.sample(&members, &snapshot.chains),
            Err(e) => self.warn_once(format!("reading counters: {e}")),
        }
        let state = &self.state;
        let taps = |pair: &str| state.group_of(pair).is_some_and(|g| g.tap_enabled);
        snapshot.pairs = self.health.pairs(&taps);
        // In a cluster, other nodes' interfaces are named NODE/IFNAME in this node's state.
        let remote = |iface: &str| iface.contains('/');
        let spans = |chain: &str| {
            state.port_chains.get(chain).is_some_and(|c| {
                let mut pairs = c
                    .port_pair_groups
                    .iter()
                    .filter_map(|g| state.port_pair_groups.get(g))
                    .flat_map(|g| &g.port_pairs)
                    .filter_map(|p| state.port_pairs.get(p));
                let mut classifiers = c
                    .flow_classifiers
                    .iter()
                    .filter_map(|f| state.flow_classifiers.get(f));
                pairs.any(|p| remote(&p.ingress) || remote(&p.egress))
                    || classifiers.any(|f| {
                        remote(&f.logical_source_port)
                            || f.logical_destination_port.as_deref().is_some_and(remote)
                    })
            })
        };
        snapshot.hops = self.health.hops(&spans);
        self.eject_black_holes(&snapshot.pairs);
        for p in &mut snapshot.pairs {
            p.check = self.member_check(&p.pair);
        }
        snapshot.probed = self
            .probes
            .health
            .iter()
            .map(|(pair, h)| ProbedMember {
                pair: pair.clone(),
                up: h.state == Probed::Up && !self.probes.ejected.contains_key(pair),
                transitions: self.probes.transitions.get(pair).copied().unwrap_or(0),
            })
            .collect();
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        // Counted on a thread of their own, less often.
        snapshot.tables = observed.tables.take();
        *observed = snapshot;
    }

    /// The last published snapshot.
    pub fn observed(&self) -> Snapshot {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the interfaces and, when they changed, brings the dataplane in line with the
    /// desired state. An unchanged namespace costs one netlink dump: no compile, no writes.
    pub fn reconcile(&mut self) {
        let now = match self.netlink.interfaces() {
            Ok(now) => now,
            Err(e) => {
                self.not_ready(format!("reading interfaces: {e}"));
                return;
            }
        };
        let revision = self.cluster.as_ref().map_or(0, |l| l.snapshot.revision);
        let mut now = now;
        now.cluster = self.cluster_view(revision);
        now.failed = self.failed();
        self.publish_down();
        let relevant = !self.synced
            || touches_state(&self.state, &self.interfaces, &now)
            || now.cluster != self.interfaces.cluster
            || now.failed != self.interfaces.failed;
        self.interfaces = now;
        self.follow_underlay_mtu();
        self.publish_interfaces();
        if !relevant {
            if let Err(e) = self.dataplane.sync_live(&self.interfaces) {
                self.not_ready(format!("updating the dataplane: {e}"));
            }
            return;
        }
        let origins = self.origins();
        let compiled = match &self.compiled {
            Some(c) => c.with_interfaces(&self.state, &self.interfaces, &origins),
            None => compile_cached(&self.state, &self.interfaces, &origins),
        };
        self.program(
            compiled,
            "the applied state cannot be steered on the interfaces present",
        );
    }

    /// The underlay's MTU changed: the datapath and the other nodes learn the new one.
    fn follow_underlay_mtu(&mut self) {
        let Some(underlay) = &mut self.underlay else {
            return;
        };
        let Some(mtu) = self
            .interfaces
            .links
            .get(&underlay.name)
            .map(|l| l.mtu)
            .filter(|&m| m != underlay.mtu)
        else {
            return;
        };
        underlay.mtu = mtu;
        let (underlay, usable) = (underlay.clone(), underlay.usable_mtu());
        if let Err(e) = self.dataplane.set_tunnel(Some(&underlay)) {
            self.warn_once(format!("following the underlay's MTU: {e}"));
        }
        if let Some(link) = &self.cluster {
            link.info.send_modify(|info| info.usable_mtu = usable);
        }
    }

    /// Makes what was compiled for `self.state` on `self.interfaces` the active generation.
    /// When it could not be compiled, nothing better can be done until the state or the
    /// interfaces change: the previous generation keeps steering, and `unsteerable` says why.
    /// In a cluster the image may be overtaken by a newer revision: written, not yet active.
    fn program(&mut self, compiled: Result<Compiled, ConfigErrors>, unsteerable: &str) -> Steered {
        match compiled {
            Ok(compiled) => match self.dataplane.apply(compiled.image(), &self.interfaces) {
                Ok(steered) => {
                    self.synced = true;
                    self.compiled = Some(compiled);
                    self.ready();
                    return steered;
                }
                Err(e) => {
                    // Tried again at the next interface change or resync.
                    self.synced = false;
                    self.not_ready(format!("updating the dataplane: {e}"));
                }
            },
            Err(e) => {
                self.synced = true;
                self.not_ready(format!("{unsteerable}: {e}"));
            }
        }
        Steered::Active
    }

    /// How interfaces may be named: `NODE/IFNAME` in a cluster.
    fn origins(&self) -> Origins {
        if self.cluster.is_some() {
            Origins::in_cluster()
        } else {
            Origins::new()
        }
    }

    fn warn_once(&mut self, message: String) {
        if self.last_warning.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.last_warning = Some(message);
        }
    }

    /// The dataplane steers the applied state.
    fn ready(&mut self) {
        self.remember_generation();
        self.publish_probe_targets();
        self.last_error = None;
        self.status.set_ready(None);
        self.publish_error();
    }

    /// Records what the active generation holds, for a restarted daemon to adopt it.
    fn remember_generation(&mut self) {
        let Ok(Some(active)) = self.dataplane.active_fingerprint() else {
            return;
        };
        if self.remembered != Some(active) {
            match self.store.save_generation(active) {
                Ok(()) => self.remembered = Some(active),
                Err(e) => self.warn_once(format!("recording the active generation: {e}")),
            }
        }
    }

    /// It does not, and why: logged once, shown by /readyz, `sfc_ready` and `describe`.
    fn not_ready(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.status.set_ready(Some(message.clone()));
            self.last_error = Some(message);
            self.publish_error();
        }
    }

    /// Answers one request; an apply or delete that changed nothing is counted (metrics).
    pub fn handle(&mut self, request: Request) -> Response {
        let changes = matches!(
            request,
            Request::Apply { dry_run: false, .. }
                | Request::DeleteFile { dry_run: false, .. }
                | Request::Delete { dry_run: false, .. }
        );
        let response = self.answer(request);
        if changes && !response.ok {
            self.metrics.count_refused(if response.errors.is_empty() {
                "failed"
            } else {
                "invalid"
            });
        }
        response
    }

    fn answer(&mut self, request: Request) -> Response {
        if self.cluster.is_some() {
            match request {
                Request::Apply {
                    file,
                    content,
                    dry_run,
                } => {
                    return match parse_files(&[(file, content)]) {
                        Ok(objects) => self.cluster_apply(objects, dry_run),
                        Err(e) => errors_response(e),
                    }
                }
                Request::DeleteFile {
                    file,
                    content,
                    dry_run,
                } => {
                    return match parse_file(&file, &content) {
                        Ok(objects) => self.cluster_delete(targets_of(objects), dry_run),
                        Err(e) => errors_response(e),
                    }
                }
                Request::Delete {
                    kind,
                    name,
                    dry_run,
                } => return self.cluster_delete(vec![(kind, name)], dry_run),
                Request::GetNodes => return self.cluster_nodes(),
                Request::DeleteNode { name } => return self.forget_node(&name),
                request => return self.handle_here(request),
            }
        }
        self.handle_here(request)
    }

    /// Requests answered the same way with or without a cluster (and, without one, all).
    fn handle_here(&mut self, request: Request) -> Response {
        match request {
            Request::Apply {
                file,
                content,
                dry_run,
            } => self.apply(file, content, dry_run),
            Request::DeleteFile {
                file,
                content,
                dry_run,
            } => match parse_file(&file, &content) {
                Ok(objects) => self.delete(targets_of(objects), dry_run),
                Err(e) => errors_response(e),
            },
            Request::Delete {
                kind,
                name,
                dry_run,
            } => self.delete(vec![(kind, name)], dry_run),
            Request::Get { kind, name } => get(&self.published.lock().unwrap_or_else(|e| e.into_inner()).clone(), kind, name),
            Request::GetNodes | Request::DeleteNode { .. } => Response::failure(
                "this node is not in a cluster (sfc-daemon runs without --etcd); `sfcctl get` lists what it steers",
            ),
            // The server answers these itself.
            Request::Trace { .. } | Request::TraceStop => {
                Response::failure("traces are served by the socket server, not the agent")
            }
            Request::Stats { chain, .. } => {
                // Per-SF and per-hop figures as fresh as the live per-chain ones beside them.
                self.sample_if_older_than(FRESH_ENOUGH);
                match self.stats(chain.as_deref()) {
                    Ok(response) => response,
                    Err(e) => Response::failure(e.to_string()),
                }
            }
            Request::Describe { kind, name } => {
                self.sample_if_older_than(FRESH_ENOUGH);
                let observed = self.observed();
                let context = crate::observe::describe::Context {
                    state: &self.state,
                    interfaces: &self.interfaces,
                    attached: self.dataplane.attached(),
                    xdp: (self.dataplane.mode() != Mode::Tc).then(|| self.dataplane.xdp()),
                    observed: &observed,
                    not_ready: self.last_error.clone(),
                    probed: &self.probes.health,
                    unprobed: &self.probes.unprobed,
                    ejected: &self.probes.ejected,
                    skipped: self
                        .compiled
                        .as_ref()
                        .map_or(&NONE_SKIPPED, |c| &c.image().skipped),
                };
                match context.describe(kind, &name) {
                    Ok(mut text) => {
                        if self.cluster.is_some() {
                            text.push_str(&self.cluster_describe(kind, &name));
                        }
                        Response {
                            ok: true,
                            message: text,
                            ..Default::default()
                        }
                    }
                    Err(e) => Response::failure(e),
                }
            }
        }
    }

    /// Names for a trace's numbers: chains by id, interfaces by index, and the port pair
    /// behind each SF-facing interface.
    pub fn trace_names(&self) -> crate::observe::trace::Names {
        // An interface here by its ifindex; one on another node (`NODE/IFNAME`) by the id
        // packets sent there carry.
        let remote = |iface: &str| {
            self.interfaces
                .cluster
                .as_ref()
                .is_some_and(|c| c.remote.contains_key(iface))
                .then(|| sfc_common::remote_id(iface))
        };
        let index = |iface: &str| {
            self.interfaces
                .links
                .get(iface)
                .map(|l| l.index)
                .or_else(|| remote(iface))
        };
        let mut names = crate::observe::trace::Names {
            chains: self
                .state
                .port_chains
                .iter()
                .filter_map(|(name, c)| Some((c.chain_id? as u16, name.clone())))
                .collect(),
            interfaces: self
                .interfaces
                .links
                .values()
                .map(|l| (l.index, l.name.clone()))
                .chain(self.interfaces.cluster.iter().flat_map(|c| {
                    c.remote
                        .keys()
                        .map(|name| (sfc_common::remote_id(name), name.clone()))
                }))
                .collect(),
            pairs: Default::default(),
            reverse_pairs: Default::default(),
        };
        // Forward traffic is sent into a pair's ingress, reverse traffic into its egress: with
        // crossed pairs one interface is both, of two pairs.
        for (name, pp) in &self.state.port_pairs {
            if let Some(i) = index(&pp.ingress) {
                names.pairs.insert(i, name.clone());
            }
            if let Some(i) = index(&pp.egress).filter(|_| pp.egress != pp.ingress) {
                names.reverse_pairs.insert(i, format!("{name} (egress)"));
            }
        }
        names
    }

    fn stats(&self, chain: Option<&str>) -> Result<Response, String> {
        let Some(chain) = chain else {
            return self.stats_all().map_err(|e| e.to_string());
        };
        let Some(spec) = self.state.port_chains.get(chain) else {
            return Err(format!(
                "PortChain {chain:?} not found; `sfcctl get portchains` lists them"
            ));
        };
        let pairs: Vec<&String> = spec
            .port_pair_groups
            .iter()
            .filter_map(|g| self.state.port_pair_groups.get(g))
            .flat_map(|g| &g.port_pairs)
            .collect();
        let mut response = self.stats_all().map_err(|e| e.to_string())?;
        response.chains.retain(|r| r.label.chain == chain);
        response.hops.retain(|h| h.chain == chain);
        response.pairs.retain(|p| pairs.contains(&&p.pair));
        for g in &mut response.generations {
            g.rows.retain(|r| r.label.chain == chain);
        }
        Ok(response)
    }

    fn stats_all(&self) -> Result<Response, crate::dataplane::DataplaneError> {
        let values = self.dataplane.stats()?;
        let live = self.dataplane.live_counters()?;
        let history = &self.dataplane.chain_counters;
        let observed = self.observed();
        let mut generations: Vec<_> = history.history().cloned().collect();
        generations.extend(live.iter().rev().cloned());
        Ok(Response {
            ok: true,
            counters: sfc_common::stat::NAMES
                .iter()
                .map(|n| n.to_string())
                .zip(values)
                .collect(),
            chains: history.totals(&live),
            generations,
            pairs: observed.pairs,
            hops: observed.hops,
            tables: observed.tables,
            ..Default::default()
        })
    }

    /// The interfaces as they are now, for compiling a request (they become `self.interfaces`
    /// once the dataplane steers what was compiled against them).
    fn current_interfaces(&self) -> Interfaces {
        let mut now = self
            .netlink
            .interfaces()
            .unwrap_or_else(|_| self.interfaces.clone());
        now.failed = self.failed();
        now
    }

    fn apply(&mut self, file: String, content: String, dry_run: bool) -> Response {
        let started = Instant::now();
        let interfaces = self.current_interfaces();
        let planned = plan_compiled(&self.state, &[(file, content)], &interfaces);
        let (next, lines, compiled) = match planned {
            Ok(p) => p,
            Err(e) => return errors_response(e),
        };
        if dry_run {
            return self.dry_run(lines, compiled.image(), &interfaces);
        }
        let planned = started.elapsed();
        let notes = compiled.image().notes.clone();
        match self.commit(next, compiled, interfaces) {
            Ok(timing) => {
                let took = started.elapsed().as_secs_f64();
                self.metrics.observe_apply(took);
                info!(
                    objects = lines.len(),
                    plan_ms = ms(planned),
                    persist_ms = ms(timing.persist),
                    dataplane_ms = ms(timing.dataplane),
                    "applied"
                );
                ok_response(lines, &notes)
            }
            Err(e) => Response::failure(e.to_string()),
        }
    }

    /// The answer to `--dry-run`: the per-object lines, what the dataplane would do compared
    /// with what the current state programs, and nothing else: no write to disk or kernel.
    fn dry_run(&self, mut lines: Vec<String>, image: &Image, interfaces: &Interfaces) -> Response {
        // The state applied now always compiled once; if the interfaces changed so that it no
        // longer does, compare with an empty dataplane.
        let before = compile(&self.state, interfaces, &Origins::new()).unwrap_or_default();
        lines.push(changes::dataplane(&before, image));
        let mut response = ok_response(lines, &image.notes);
        response.message.push_str("\ndry run: nothing was changed");
        response
    }

    fn delete(&mut self, targets: Vec<(Kind, String)>, dry_run: bool) -> Response {
        let interfaces = self.current_interfaces();
        let mut next = self.state.clone();
        let mut items = Vec::new();
        for (kind, name) in targets {
            let verb = if next.remove(kind, &name) {
                "deleted"
            } else {
                "not found (nothing to delete)"
            };
            items.push((kind, name, verb.to_string()));
        }
        let lines = changes::render(items);
        let origins = Origins::new();
        let compiled = match compile_cached(&next, &interfaces, &origins) {
            Ok(compiled) => compiled,
            Err(e) => {
                let mut r = errors_response(e);
                r.message = "nothing was deleted: the rest of the state would be invalid; delete the objects that use these first, or in the same file".into();
                return r;
            }
        };
        if dry_run {
            return self.dry_run(lines, compiled.image(), &interfaces);
        }
        let notes = compiled.image().notes.clone();
        match self.commit(next, compiled, interfaces) {
            Ok(_) => ok_response(lines, &notes),
            Err(e) => Response::failure(e.to_string()),
        }
    }

    /// Persists and programs the dataplane at once; when either fails the other is taken
    /// back (the old state put back on disk, or the old image made active again) so that
    /// disk and kernel agree.
    fn commit(
        &mut self,
        next: State,
        compiled: Compiled,
        interfaces: Interfaces,
    ) -> Result<Timing, CommitError> {
        let started = Instant::now();
        if next == self.state {
            self.dataplane
                .apply(compiled.image(), &interfaces)
                .map_err(CommitError::Dataplane)?;
            self.interfaces = interfaces;
            self.compiled = Some(compiled);
            self.ready();
            return Ok(Timing {
                persist: Duration::ZERO,
                dataplane: started.elapsed(),
            });
        }
        // The state file is written (two fsyncs: milliseconds) while the dataplane takes the
        // new image, so that the change takes effect without waiting for the disk.
        let ((saved, persist), (applied, dataplane)) = std::thread::scope(|scope| {
            let store = &self.store;
            let saving = scope.spawn(|| (store.save(&next), started.elapsed()));
            let applied = self.dataplane.apply(compiled.image(), &interfaces);
            let dataplane = started.elapsed();
            let saved = saving.join().expect("saving the state panicked");
            (saved, (applied, dataplane))
        });
        if applied.is_err() || saved.is_err() {
            // A save that failed may still have replaced the file (its directory's fsync
            // failed after the rename).
            if let Err(restore) = self.store.save(&self.state) {
                warn!(error = %restore, "could not restore the previous state file");
            }
        }
        if let Err(e) = applied {
            return Err(CommitError::Dataplane(e));
        }
        if let Err(e) = saved {
            return Err(match self.take_back() {
                Ok(()) => CommitError::Persist(e),
                Err(steering) => CommitError::PersistNotTakenBack(e, steering),
            });
        }
        self.state = next;
        self.interfaces = interfaces;
        self.compiled = Some(compiled);
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(self.state.clone());
        self.ready();
        Ok(Timing { persist, dataplane })
    }

    /// Makes the dataplane steer the applied state again, after a commit whose state could
    /// not be saved (a no-op if that commit did not change the image).
    fn take_back(&mut self) -> Result<(), String> {
        let Some(compiled) = &self.compiled else {
            return Err(
                "the applied state had not compiled, so there is no image to go back to".into(),
            );
        };
        self.dataplane
            .apply(compiled.image(), &self.interfaces)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Where the time of one commit went (logged, to see what an apply at scale costs): from its
/// start until the state was saved, and until the dataplane steered it (the two overlap).
struct Timing {
    persist: Duration,
    dataplane: Duration,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// The kind and name of each object of a file, for deleting them.
fn targets_of(objects: Vec<sfc_config::document::Sourced>) -> Vec<(Kind, String)> {
    objects
        .into_iter()
        .map(|s| (s.object.spec.kind(), s.object.name))
        .collect()
}

fn errors_response(e: ConfigErrors) -> Response {
    Response {
        ok: false,
        message: "nothing was changed".into(),
        errors: e.0,
        ..Default::default()
    }
}

fn ok_response(mut lines: Vec<String>, notes: &[String]) -> Response {
    lines.extend(notes.iter().map(|n| format!("note: {n}")));
    Response {
        ok: true,
        message: lines.join("\n"),
        ..Default::default()
    }
}

/// `sfcctl get`: one object or every object of a kind, sorted by name.
pub fn get(state: &State, kind: Kind, name: Option<String>) -> Response {
    let objects: Vec<Object> = match name {
        Some(name) => match state.get(kind, &name) {
            Some(spec) => vec![Object { name, spec }],
            None => {
                return Response::failure(format!(
                    "{kind} {name:?} not found; `sfcctl get {}` lists them",
                    kind.as_str().to_lowercase()
                ))
            }
        },
        None => state.list(kind),
    };
    Response {
        ok: true,
        objects,
        ..Default::default()
    }
}

/// The interface with this node's tunnel address, where packets to and from other nodes go.
fn underlay(netlink: &Netlink, address: IpAddr, xdp: bool) -> Result<Underlay, AgentError> {
    match netlink.interface_with_address(address)? {
        Some(link) => Ok(Underlay {
            name: link.name,
            index: link.index,
            address,
            xdp,
            mtu: link.mtu,
        }),
        None => Err(AgentError::Tunnel(format!(
            "no interface of this node has tunnel address {address}; give --tunnel-address one of its addresses"
        ))),
    }
}

/// Whether the interfaces changed in a way the state cares about: an interface it names
/// A random probe token, never 0 (0: no probes).
fn random_token() -> std::io::Result<u64> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    loop {
        urandom.read_exact(&mut bytes)?;
        let token = u64::from_ne_bytes(bytes);
        if token != 0 {
            return Ok(token);
        }
    }
}

/// appeared, vanished, or changed (index, MAC, kind, peer, the MAC behind it); up or down
/// alone is not such a change (the dataplane's liveness map follows it without a compile). Changes to
/// other interfaces cost nothing more than the read.
fn touches_state(state: &State, before: &Interfaces, after: &Interfaces) -> bool {
    let named = state
        .port_pairs
        .values()
        .flat_map(|pp| [&pp.ingress, &pp.egress])
        .chain(state.flow_classifiers.values().flat_map(|fc| {
            std::iter::once(&fc.logical_source_port).chain(fc.logical_destination_port.as_ref())
        }));
    // Whether a link is up does not change what is steered through it.
    let steered = |i: &Interfaces, name: &String| {
        i.links.get(name).map(|l| Link {
            up: true,
            running: true,
            ..l.clone()
        })
    };
    named.into_iter().any(|name| {
        steered(before, name) != steered(after, name)
            || before.peer_macs.get(name) != after.peer_macs.get(name)
    })
}
