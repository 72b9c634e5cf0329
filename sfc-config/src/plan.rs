//! Planning an apply: parse the files, merge them into the current state, keep or assign
//! chain ids, and compile the result against the interfaces given. Pure (no kernel), so
//! `sfcctl validate` runs it offline and the agent runs it for `apply` and `--dry-run`.

use std::collections::BTreeSet;

use crate::{
    changes,
    compile::{capacity, compile_cached, Compiled, Image, Interfaces},
    document::{parse_file, ConfigError, ConfigErrors, Sourced},
    model::{Kind, State},
    validate::{validate, Origins},
};

/// Everything `apply --dry-run` and `validate` need, without a kernel: parse, merge, check,
/// compile against the interfaces given, and check the limits that count interfaces whether
/// present or not ([`capacity::limits_of_state`]).
pub fn plan(
    current: &State,
    files: &[(String, String)],
    interfaces: &Interfaces,
) -> Result<(State, Vec<String>, Image), ConfigErrors> {
    plan_compiled(current, files, interfaces)
        .map(|(next, lines, compiled)| (next, lines, compiled.into_image()))
}

/// [`plan`], with the image as a [`Compiled`]: the agent compiles the state it applies again
/// on each interface change ([`Compiled::with_interfaces`]).
pub fn plan_compiled(
    current: &State,
    files: &[(String, String)],
    interfaces: &Interfaces,
) -> Result<(State, Vec<String>, Compiled), ConfigErrors> {
    let objects = parse_files(files)?;
    plan_objects(
        current,
        objects,
        interfaces,
        Origins::new(),
        &BTreeSet::new(),
    )
}

/// Every object of the files, in order; the errors of all files at once.
pub fn parse_files(files: &[(String, String)]) -> Result<Vec<Sourced>, ConfigErrors> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for (file, content) in files {
        match parse_file(file, content) {
            Ok(o) => objects.extend(o),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// [`plan_compiled`] from parsed objects. `origins` is empty but for how interfaces may be
/// named ([`Origins::in_cluster`]); new chains get no id in `reserved` (ids a node of a
/// cluster may still be steering for a deleted chain).
pub fn plan_objects(
    current: &State,
    objects: Vec<Sourced>,
    interfaces: &Interfaces,
    origins: Origins,
    reserved: &BTreeSet<u32>,
) -> Result<(State, Vec<String>, Compiled), ConfigErrors> {
    let (next, origins, names) = merge(current, objects, origins, reserved)?;
    let compiled = compile_cached(&next, interfaces, &origins)?;
    limits(&next, &origins)?;
    let lines = changes::applied(current, &next, &names);
    Ok((next, lines, compiled))
}

/// [`plan_objects`] without compiling: the checks of the state alone. For a cluster's state,
/// which each node compiles (for its own interfaces) once it is committed.
pub fn validate_objects(
    current: &State,
    objects: Vec<Sourced>,
    origins: Origins,
    reserved: &BTreeSet<u32>,
) -> Result<(State, Vec<String>), ConfigErrors> {
    let (next, origins, names) = merge(current, objects, origins, reserved)?;
    validate(&next, &origins)?;
    limits(&next, &origins)?;
    let lines = changes::applied(current, &next, &names);
    Ok((next, lines))
}

/// `current` with `objects` applied on it, new chains given ids; with where each object
/// comes from, and the kind and name of each, in order.
fn merge(
    current: &State,
    objects: Vec<Sourced>,
    origins: Origins,
    reserved: &BTreeSet<u32>,
) -> Result<Merged, ConfigErrors> {
    let mut errors = Vec::new();
    let origins = origins_of(&objects, origins, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut next = current.clone();
    let mut names = Vec::with_capacity(objects.len());
    for s in objects {
        names.push((s.object.spec.kind(), s.object.name.clone()));
        next.upsert(s.object);
    }
    keep_and_assign_chain_ids(&mut next, current, &origins, reserved)?;
    Ok((next, origins, names))
}

/// What [`merge`] gives: the next state, the origins of its objects, and the objects applied.
type Merged = (State, Origins, Vec<(Kind, String)>);

fn limits(state: &State, origins: &Origins) -> Result<(), ConfigErrors> {
    let errors = capacity::limits_of_state(state, origins);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Where each object comes from, in apply order; an object named twice is an error on the
/// second one.
fn origins_of(objects: &[Sourced], mut origins: Origins, errors: &mut Vec<ConfigError>) -> Origins {
    for s in objects {
        let kind = s.object.spec.kind();
        if let Some(first) = origins.insert(kind, &s.object.name, &s.file) {
            let place = if first == s.file {
                String::new()
            } else {
                format!(" (first in {first})")
            };
            errors.push(ConfigError {
                file: s.file.clone(),
                kind: kind.to_string(),
                name: s.object.name.clone(),
                field: "metadata.name".into(),
                message: format!("appears twice{place}; names are unique within a kind"),
            });
        }
    }
    origins
}

/// A chain applied without `chainId` keeps the id it was given before; new ones get the lowest
/// id neither used nor reserved. Ids are stored with the chain, so they are stable across
/// restarts.
fn keep_and_assign_chain_ids(
    next: &mut State,
    current: &State,
    origins: &Origins,
    reserved: &BTreeSet<u32>,
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
        .chain(reserved.iter().copied())
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
