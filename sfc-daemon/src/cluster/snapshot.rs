//! One revision of the cluster's desired state, as read from etcd (or from the node's cache
//! of it), and the views the agent needs of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sfc_config::{
    model::{Kind, Object, State},
    nodes,
};

use super::records::{shard_of, Head, Record};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The head's revision: the cluster state's revision (0: nothing applied yet).
    pub revision: i64,
    pub head: Head,
    /// The records of every non-empty shard.
    pub shards: BTreeMap<u16, Vec<Record>>,
}

impl Snapshot {
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.shards.values().flatten()
    }

    pub fn record(&self, kind: Kind, name: &str) -> Option<&Record> {
        self.shards
            .get(&shard_of(kind, name))?
            .iter()
            .find(|r| r.object.spec.kind() == kind && r.object.name == name)
    }

    /// The objects as they were applied: what `get` shows.
    pub fn applied_state(&self) -> State {
        self.state_with(|r| r.object.clone())
    }

    /// Every interface reference qualified: what an apply is validated against.
    pub fn qualified_state(&self) -> State {
        self.state_with(|r| Object {
            name: r.object.name.clone(),
            spec: nodes::qualify(&r.object.spec, &r.placement),
        })
    }

    /// What `node` programs: its own interfaces by name, the others' qualified.
    pub fn local_state(&self, node: &str) -> State {
        self.state_with(|r| Object {
            name: r.object.name.clone(),
            spec: nodes::localize(&r.object.spec, &r.placement, node),
        })
    }

    fn state_with(&self, f: impl Fn(&Record) -> Object) -> State {
        let mut state = State::default();
        for record in self.records() {
            state.upsert(f(record));
        }
        state
    }

    /// The shards that change when `upserts` replace (or add) their objects and `removals`
    /// go: each with its whole new contents (empty: the shard goes).
    pub fn changed_shards(
        &self,
        upserts: Vec<Record>,
        removals: &[(Kind, String)],
    ) -> BTreeMap<u16, Vec<Record>> {
        let mut changed: BTreeMap<u16, Vec<Record>> = BTreeMap::new();
        let current = |s: u16| self.shards.get(&s).cloned().unwrap_or_default();
        for (kind, name) in removals {
            let s = shard_of(*kind, name);
            changed
                .entry(s)
                .or_insert_with(|| current(s))
                .retain(|r| !(r.object.spec.kind() == *kind && &r.object.name == name));
        }
        for record in upserts {
            let s = shard_of(record.object.spec.kind(), &record.object.name);
            let records = changed.entry(s).or_insert_with(|| current(s));
            match records.iter_mut().find(|r| {
                r.object.spec.kind() == record.object.spec.kind()
                    && r.object.name == record.object.name
            }) {
                Some(old) if old.object == record.object && old.placement == record.placement => {}
                Some(old) => *old = record,
                None => records.push(record),
            }
        }
        // Sorted, so that one state always serialises alike.
        for records in changed.values_mut() {
            records.sort_by(|a, b| {
                (a.object.spec.kind(), &a.object.name).cmp(&(b.object.spec.kind(), &b.object.name))
            });
        }
        changed.retain(|s, records| self.shards.get(s) != Some(records));
        changed
    }

    /// The snapshot after `changed` was committed as `head` at `revision`.
    pub fn with(&self, changed: BTreeMap<u16, Vec<Record>>, head: Head, revision: i64) -> Self {
        let mut shards = self.shards.clone();
        for (s, records) in changed {
            if records.is_empty() {
                shards.remove(&s);
            } else {
                shards.insert(s, records);
            }
        }
        Snapshot {
            revision,
            head,
            shards,
        }
    }
}
