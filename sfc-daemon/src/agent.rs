//! The node agent's logic: desired state in, dataplane out. Requests and interface changes are
//! handled one at a time on one thread, so every update sees a consistent state.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;
use tracing::{info, warn};

use crate::{
    capacity, changes,
    compile::{compile, Image, Interfaces},
    dataplane::{Dataplane, DataplaneError, Mode},
    document::{parse_file, ConfigError, ConfigErrors, Sourced},
    health::Health,
    model::{Kind, Object, State},
    observe::{ApplyStats, Shared, Snapshot},
    protocol::{Request, Response},
    store::{Store, StoreError},
    validate::Origins,
};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("reading interfaces: {0}")]
    Netlink(#[from] crate::netlink::NetlinkError),
}

/// Everything `apply --dry-run` and `validate` need, without a kernel: parse, merge, check,
/// and compile against the interfaces given.
pub fn plan(
    current: &State,
    files: &[(String, String)],
    interfaces: &Interfaces,
) -> Result<(State, Vec<String>, Image), ConfigErrors> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (file, content) in files {
        match parse_file(file, content) {
            Ok(o) => objects.extend(o),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let origins = origins_of(&objects, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut next = current.clone();
    let mut names = Vec::with_capacity(objects.len());
    for s in objects {
        names.push((s.object.spec.kind(), s.object.name.clone()));
        next.upsert(s.object);
    }
    keep_and_assign_chain_ids(&mut next, current, &origins)?;
    let image = compile(&next, interfaces, &origins)?;
    let lines = changes::applied(current, &next, &names);
    Ok((next, lines, image))
}

fn origins_of(objects: &[Sourced], errors: &mut Vec<ConfigError>) -> Origins {
    let mut origins = Origins::new();
    for s in objects {
        let key = (s.object.spec.kind(), s.object.name.clone());
        if origins.insert(key.clone(), s.file.clone()).is_some() {
            errors.push(ConfigError {
                file: s.file.clone(),
                kind: key.0.to_string(),
                name: key.1,
                field: "metadata.name".into(),
                message: "appears twice; names are unique within a kind".into(),
            });
        }
    }
    origins
}

/// A chain applied without `chainId` keeps the id it was given before; new ones get the lowest
/// free id. Ids are stored with the chain, so they are stable across restarts.
fn keep_and_assign_chain_ids(
    next: &mut State,
    current: &State,
    origins: &Origins,
) -> Result<(), ConfigErrors> {
    for (name, chain) in next.port_chains.iter_mut() {
        if chain.chain_id.is_none() {
            chain.chain_id = current.port_chains.get(name).and_then(|c| c.chain_id);
        }
    }
    let mut used: BTreeSet<u32> = next
        .port_chains
        .values()
        .filter_map(|c| c.chain_id)
        .collect();
    let mut candidate = 1;
    let mut errors = Vec::new();
    for (name, chain) in next.port_chains.iter_mut() {
        if chain.chain_id.is_none() {
            while used.contains(&candidate) {
                candidate += 1;
            }
            if candidate > capacity::MAX_CHAIN_ID {
                errors.push(capacity::no_chain_id(name, origins));
                continue;
            }
            chain.chain_id = Some(candidate);
            used.insert(candidate);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

pub struct Agent {
    state: State,
    store: Store,
    dataplane: Dataplane,
    bpffs: PathBuf,
    interfaces: Interfaces,
    /// The last reconcile error, logged once rather than every tick.
    last_error: Option<String>,
    /// The dataplane reflects `state` on `interfaces`; false forces the next reconcile.
    synced: bool,
    health: Health,
    last_sample: Option<Instant>,
    applies: ApplyStats,
    /// Published for the metrics endpoint.
    observed: Shared,
}

/// How often counters are sampled for rates, health and metrics.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How old a sample `stats` and `describe` may show (newer ones are taken on request).
const FRESH_ENOUGH: Duration = Duration::from_millis(100);

impl Agent {
    pub fn start(
        state_dir: &Path,
        bpffs: &Path,
        mode: Mode,
        observed: Shared,
    ) -> Result<Self, AgentError> {
        let store = Store::new(state_dir)?;
        let state = store.load()?;
        let dataplane = Dataplane::open(bpffs, mode)?;
        info!(
            chains = state.port_chains.len(),
            classifiers = state.flow_classifiers.len(),
            epoch = dataplane.epoch()?,
            "state loaded"
        );
        let mut agent = Self {
            state,
            store,
            dataplane,
            bpffs: bpffs.to_path_buf(),
            interfaces: Interfaces::default(),
            last_error: None,
            synced: false,
            health: Health::default(),
            last_sample: None,
            applies: ApplyStats::default(),
            observed,
        };
        agent.reconcile();
        agent.sample();
        Ok(agent)
    }

    /// Periodic work between requests: follow the interfaces, sample the counters.
    pub fn tick(&mut self) {
        self.reconcile();
        self.sample_if_older_than(SAMPLE_EVERY);
    }

    fn sample_if_older_than(&mut self, age: Duration) {
        if self.last_sample.is_none_or(|at| at.elapsed() >= age) {
            self.sample();
        }
    }

    /// Reads every counter once, updates rates and health, publishes the snapshot.
    fn sample(&mut self) {
        self.last_sample = Some(Instant::now());
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
                self.report(format!("reading counters: {e}"));
                return;
            }
        };
        match self.dataplane.member_counters() {
            Ok(members) => self.health.sample(&members, &snapshot.chains),
            Err(e) => self.report(format!("reading counters: {e}")),
        }
        let state = &self.state;
        let taps = |pair: &str| {
            state
                .port_pair_groups
                .values()
                .any(|g| g.tap_enabled && g.port_pairs.iter().any(|p| p == pair))
        };
        snapshot.pairs = self.health.pairs(&taps);
        snapshot.hops = self.health.hops();
        snapshot.applies = self.applies.clone();
        *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
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
        let now = match Interfaces::read() {
            Ok(now) => now,
            Err(e) => {
                self.report(format!("reading interfaces: {e}"));
                return;
            }
        };
        if self.synced && now == self.interfaces {
            return;
        }
        self.interfaces = now;
        let origins = Origins::new();
        match compile(&self.state, &self.interfaces, &origins) {
            Ok(image) => match self.dataplane.apply(&image) {
                Ok(()) => {
                    self.synced = true;
                    self.last_error = None;
                }
                Err(e) => self.report(format!("updating the dataplane: {e}")),
            },
            // Nothing better to do until the state or the interfaces change: the previous
            // generation keeps steering.
            Err(e) => {
                self.synced = true;
                self.report(format!("the applied state cannot be steered now: {e}"));
            }
        }
    }

    fn report(&mut self, message: String) {
        if self.last_error.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            self.last_error = Some(message);
        }
    }

    pub fn handle(&mut self, request: Request) -> Response {
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
                Ok(objects) => {
                    let targets = objects
                        .into_iter()
                        .map(|s| (s.object.spec.kind(), s.object.name))
                        .collect();
                    self.delete(targets, dry_run)
                }
                Err(e) => errors_response(e),
            },
            Request::Delete {
                kind,
                name,
                dry_run,
            } => self.delete(vec![(kind, name)], dry_run),
            Request::Get { kind, name } => self.get(kind, name),
            // Streams: the server hands those to the trace thread before they get here.
            Request::Trace { .. } => Response::failure("a trace needs its own connection"),
            Request::Stats { chain } => {
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
                let context = crate::describe::Context {
                    state: &self.state,
                    interfaces: &self.interfaces,
                    attached: self.dataplane.attached(),
                    xdp: (self.dataplane.mode() != Mode::Tc).then(|| self.dataplane.xdp()),
                    observed: &observed,
                };
                match context.describe(kind, &name) {
                    Ok(text) => Response {
                        ok: true,
                        message: text,
                        ..Default::default()
                    },
                    Err(e) => Response::failure(e),
                }
            }
        }
    }

    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// Names for a trace's numbers: chains by id, interfaces by index, and the port pair
    /// behind each SF-facing interface.
    pub fn trace_names(&self) -> crate::trace::Names {
        let index = |iface: &str| self.interfaces.links.get(iface).map(|l| l.index);
        let mut names = crate::trace::Names {
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
                .collect(),
            pairs: Default::default(),
        };
        for (name, pp) in &self.state.port_pairs {
            if let Some(i) = index(&pp.egress) {
                names.pairs.insert(i, format!("{name} (egress)"));
            }
            if let Some(i) = index(&pp.ingress) {
                names.pairs.insert(i, name.clone());
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
            ..Default::default()
        })
    }

    /// The interfaces as they are now, for compiling a request. `self.interfaces` is left to
    /// `reconcile`, so that a change seen here still triggers it.
    fn current_interfaces(&self) -> Interfaces {
        Interfaces::read().unwrap_or_else(|_| self.interfaces.clone())
    }

    fn apply(&mut self, file: String, content: String, dry_run: bool) -> Response {
        let started = Instant::now();
        let interfaces = self.current_interfaces();
        let (next, lines, image) = match plan(&self.state, &[(file, content)], &interfaces) {
            Ok(p) => p,
            Err(e) => return errors_response(e),
        };
        if dry_run {
            return self.dry_run(lines, &image, &interfaces);
        }
        let planned = started.elapsed();
        match self.commit(next, &image) {
            Ok(timing) => {
                let took = started.elapsed().as_secs_f64();
                self.applies.count += 1;
                self.applies.seconds_sum += took;
                self.applies.last_seconds = took;
                info!(
                    objects = lines.len(),
                    plan_ms = ms(planned),
                    persist_ms = ms(timing.persist),
                    dataplane_ms = ms(timing.dataplane),
                    "applied"
                );
                ok_response(lines, &image)
            }
            Err(e) => Response::failure(e),
        }
    }

    /// The answer to `--dry-run`: the per-object lines, what the dataplane would do compared
    /// with what the current state programs, and nothing else: no write to disk or kernel.
    fn dry_run(&self, mut lines: Vec<String>, image: &Image, interfaces: &Interfaces) -> Response {
        // The state applied now always compiled once; if the interfaces changed so that it no
        // longer does, compare with an empty dataplane.
        let before = compile(&self.state, interfaces, &Origins::new()).unwrap_or_default();
        lines.push(changes::dataplane(&before, image));
        let mut response = ok_response(lines, image);
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
        let image = match compile(&next, &interfaces, &origins) {
            Ok(image) => image,
            Err(e) => {
                let mut r = errors_response(e);
                r.message = "nothing was deleted: the rest of the state would be invalid; delete the objects that use these first, or in the same file".into();
                return r;
            }
        };
        if dry_run {
            return self.dry_run(lines, &image, &interfaces);
        }
        match self.commit(next, &image) {
            Ok(_) => ok_response(lines, &image),
            Err(e) => Response::failure(e),
        }
    }

    /// Persists, then programs the dataplane; on a dataplane failure the old state is put back
    /// on disk so that disk and kernel agree.
    fn commit(&mut self, next: State, image: &Image) -> Result<Timing, String> {
        let started = Instant::now();
        if next == self.state {
            self.dataplane.apply(image).map_err(|e| e.to_string())?;
            return Ok(Timing {
                persist: Duration::ZERO,
                dataplane: started.elapsed(),
            });
        }
        self.store.save(&next).map_err(|e| e.to_string())?;
        let persist = started.elapsed();
        if let Err(e) = self.dataplane.apply(image) {
            if let Err(restore) = self.store.save(&self.state) {
                warn!(error = %restore, "could not restore the previous state file");
            }
            return Err(format!(
                "the dataplane refused the update, nothing changed: {e}"
            ));
        }
        self.state = next;
        Ok(Timing {
            persist,
            dataplane: started.elapsed() - persist,
        })
    }

    fn get(&self, kind: Kind, name: Option<String>) -> Response {
        let objects: Vec<Object> = match name {
            Some(name) => match self.state.get(kind, &name) {
                Some(spec) => vec![Object { name, spec }],
                None => {
                    return Response::failure(format!(
                        "{kind} {name:?} not found; `sfcctl get {}` lists them",
                        kind.as_str().to_lowercase()
                    ))
                }
            },
            None => self.state.list(kind),
        };
        Response {
            ok: true,
            objects,
            ..Default::default()
        }
    }
}

/// Where the time of one commit went (logged, to see what an apply at scale costs).
struct Timing {
    persist: Duration,
    dataplane: Duration,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn errors_response(e: ConfigErrors) -> Response {
    Response {
        ok: false,
        message: "nothing was changed".into(),
        errors: e.0,
        ..Default::default()
    }
}

fn ok_response(mut lines: Vec<String>, image: &Image) -> Response {
    lines.extend(image.notes.iter().map(|n| format!("note: {n}")));
    Response {
        ok: true,
        message: lines.join("\n"),
        ..Default::default()
    }
}
