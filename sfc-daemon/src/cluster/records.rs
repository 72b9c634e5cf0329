//! What the cluster keeps in etcd, and under which keys. Everything lives under
//! [`PREFIX`]; the version in it changes when a value's layout does.
//!
//! The desired state is split into [`SHARDS`] shards by object (a hash of kind and name). A
//! shard's contents are written once under a key of their own (`shards/NNN/VERSION`, never
//! rewritten), and the small [`Head`] names the current version of every shard. An apply
//! writes the shards it changes, then replaces the head in one transaction guarded by the
//! head's revision it validated against: applies of any size are atomic, the head's
//! revision is the cluster state's revision, and readers that read the shards at that
//! revision see exactly one state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sfc_api::protocol::NodeInterface;
use sfc_config::{
    model::{Kind, Object},
    nodes::Placement,
};

pub const PREFIX: &str = "/sfc/v1/";
/// Shards of the desired state: 100 000 classifiers of ~300 bytes make ~120 KB per shard,
/// well under etcd's 1.5 MiB per request.
pub const SHARDS: u16 = 256;

pub fn head_key() -> String {
    format!("{PREFIX}state/head")
}

pub fn shards_prefix() -> String {
    format!("{PREFIX}state/shards/")
}

pub fn shard_key(shard: u16, version: &str) -> String {
    format!("{}{shard:03}/{version}", shards_prefix())
}

/// `(shard, version)` of a shard key.
pub fn parse_shard_key(key: &str) -> Option<(u16, &str)> {
    let (shard, version) = key.strip_prefix(&shards_prefix())?.split_once('/')?;
    Some((shard.parse().ok()?, version))
}

pub fn node_key(node: &str) -> String {
    format!("{PREFIX}nodes/{node}")
}

pub fn alive_key(node: &str) -> String {
    format!("{PREFIX}alive/{node}")
}

pub fn status_key(node: &str) -> String {
    format!("{PREFIX}status/{node}")
}

/// The shard an object is kept in (FNV-1a of kind and name: stable across releases).
pub fn shard_of(kind: Kind, name: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in kind.as_str().bytes().chain([b'/']).chain(name.bytes()) {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(SHARDS)) as u16
}

/// The root of the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head {
    /// The current version of each non-empty shard.
    pub shards: BTreeMap<u16, String>,
    /// Ids of deleted chains, each with the first revision that no longer has the chain: a
    /// new chain gets none of them while a node has applied an older revision.
    #[serde(default)]
    pub retired: BTreeMap<u32, i64>,
}

/// One object as it was applied (interface names qualified or not), its chain id filled in,
/// with the node each interface reference was pinned to when it was applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub object: Object,
    #[serde(default)]
    pub placement: Placement,
    /// The first revision that has this version of the object.
    pub since: i64,
}

/// What a node says about itself. Not under its lease: a lost node keeps its row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub tunnel_address: String,
    pub interfaces: Vec<NodeInterface>,
    /// The largest IP packet its chains carry to other nodes (its underlay's MTU less the
    /// encapsulation); 0: not known.
    #[serde(default)]
    pub usable_mtu: u32,
    /// Its members out of their groups (health checks: probes failing, or ejected as black
    /// holes), by port pair, with why: every node leaves them out alike.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub down: BTreeMap<String, String>,
}

/// The revision of the desired state a node has applied, why it is not fully steered, and
/// which revisions its dataplane takes and sends (see `handover`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub revision: i64,
    #[serde(default)]
    pub error: String,
    /// The revisions (low 32 bits) whose packets from other nodes its dataplane takes: those
    /// of its two generations.
    #[serde(default)]
    pub holding: Vec<u32>,
    /// The revisions its packets may carry to other nodes: the active one first, and for two
    /// generation leases after a flip the one before.
    #[serde(default)]
    pub sending: Vec<u32>,
}

/// The key held under the node's lease while its agent runs: which agent holds the name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alive {
    /// Host, boot and state directory of the agent: the same agent restarted takes its name
    /// back at once; another one is refused while this one lives.
    pub instance: String,
    pub pid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_round_trip_and_shards_spread() {
        let key = shard_key(7, "n1.123");
        assert_eq!(parse_shard_key(&key), Some((7, "n1.123")));
        let used: std::collections::BTreeSet<u16> = (0..4096)
            .map(|i| shard_of(Kind::FlowClassifier, &format!("fc{i}")))
            .collect();
        assert!(used.len() > 240, "{}", used.len());
        assert!(used.iter().all(|s| *s < SHARDS));
    }
}
