//! What an apply or a delete changes: one line per object, and for `--dry-run` a summary of
//! what the dataplane would do. Lines are sorted (kind in dependency order, then name) so that
//! the same request against the same state always prints the same bytes.

use std::collections::BTreeSet;

use crate::{
    compile::Image,
    model::{Kind, Spec, State},
};

/// `portpairgroup/PG1 changed (portPairs)`.
pub fn line(kind: Kind, name: &str, verb: &str) -> String {
    format!("{}/{name} {verb}", kind.as_str().to_lowercase())
}

/// Sorts `(kind, name, verb)` and renders one line each.
pub fn render(mut items: Vec<(Kind, String, String)>) -> Vec<String> {
    items.sort();
    items
        .into_iter()
        .map(|(kind, name, verb)| line(kind, &name, &verb))
        .collect()
}

/// For each object named in a file: created, unchanged, or changed with the fields that differ
/// (compared after defaults and kept chain ids, so re-applying a file reports `unchanged`).
pub fn applied(current: &State, next: &State, names: &[(Kind, String)]) -> Vec<String> {
    let items = names
        .iter()
        .map(|(kind, name)| {
            let verb = match (current.get(*kind, name), next.get(*kind, name)) {
                (None, _) => "created".to_string(),
                (Some(old), Some(new)) if old != new => {
                    format!("changed ({})", changed_fields(&old, &new).join(", "))
                }
                _ => "unchanged".to_string(),
            };
            (*kind, name.clone(), verb)
        })
        .collect();
    render(items)
}

/// The spec fields (as the YAML spells them) whose values differ.
fn changed_fields(old: &Spec, new: &Spec) -> Vec<String> {
    let fields = |s: &Spec| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(mut o)) => match o.remove("spec") {
            Some(serde_json::Value::Object(spec)) => spec,
            _ => Default::default(),
        },
        _ => Default::default(),
    };
    let (a, b) = (fields(old), fields(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// What programming `after` in place of `before` would do, in one line.
pub fn dataplane(before: &Image, after: &Image) -> String {
    if before == after {
        return "dataplane: unchanged (nothing would be written)".into();
    }
    let names = |list: Vec<&String>| -> String {
        if list.is_empty() {
            "none".into()
        } else {
            list.into_iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    let start = after
        .attach
        .keys()
        .filter(|i| !before.attach.contains_key(*i))
        .collect();
    let stop = before
        .attach
        .keys()
        .filter(|i| !after.attach.contains_key(*i))
        .collect();
    format!(
        "dataplane: would start managing {}; would stop managing {}; managed interfaces {} -> {}, classifier entries {} -> {}, group tables {} -> {}",
        names(start),
        names(stop),
        before.attach.len(),
        after.attach.len(),
        before.classify.len(),
        after.classify.len(),
        before.rings.len(),
        after.rings.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortPairGroupSpec;

    #[test]
    fn lines_are_sorted_and_name_the_changed_fields() {
        let group = |pairs: &[&str]| PortPairGroupSpec {
            port_pairs: pairs.iter().map(|s| s.to_string()).collect(),
            lb_fields: vec![],
            tap_enabled: false,
            health_check: None,
            fail_mode: Default::default(),
        };
        let mut current = State::default();
        current.port_pair_groups.insert("b".into(), group(&["p1"]));
        current.port_pair_groups.insert("a".into(), group(&["p1"]));
        let mut next = current.clone();
        next.port_pair_groups.insert("b".into(), group(&["p2"]));
        next.port_pair_groups.insert("c".into(), group(&["p3"]));
        let names = [
            (Kind::PortPairGroup, "c".to_string()),
            (Kind::PortPairGroup, "b".to_string()),
            (Kind::PortPairGroup, "a".to_string()),
        ];
        assert_eq!(
            applied(&current, &next, &names),
            [
                "portpairgroup/a unchanged",
                "portpairgroup/b changed (portPairs)",
                "portpairgroup/c created",
            ]
        );
    }
}
