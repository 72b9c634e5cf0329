//! sfcctl <-> daemon: one JSON request and one JSON response per connection, newline-ended,
//! each carrying the protocol version, so that a mismatched pair says so instead of
//! misreading each other.

use serde::{Deserialize, Serialize};
use sfc_config::{
    document::ConfigError,
    model::{Kind, Object},
};

use crate::{
    counters::{Generation, Row, TableFills},
    health::{HopHealth, PairHealth},
};

/// The version of this protocol. Version 1 had no version field.
pub const PROTOCOL_VERSION: u32 = 2;

/// The largest request the daemon reads (a chain file of 100k classifiers is ~30 MB of YAML).
pub const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// A request or a response on the wire: the body's fields beside `version`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u32,
    #[serde(flatten)]
    pub body: T,
}

impl<T> Envelope<T> {
    pub fn new(body: T) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// Just the version of a message, read before the rest so that a mismatch is reported as one.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

/// Why a message from the other side cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("{peer} speaks protocol version {theirs}, this {me} speaks {PROTOCOL_VERSION}: use sfcctl and sfc-daemon of the same release", theirs = .theirs.map_or("1 (unversioned)".to_string(), |v| v.to_string()))]
    Version {
        peer: &'static str,
        me: &'static str,
        theirs: Option<u32>,
    },
    #[error("malformed message from {peer}: {source}")]
    Malformed {
        peer: &'static str,
        source: serde_json::Error,
    },
}

/// Reads one message sent by `peer` (`"sfcctl"` or `"sfc-daemon"`) to `me`, checking the
/// version first.
pub fn decode<T: serde::de::DeserializeOwned>(
    line: &[u8],
    peer: &'static str,
    me: &'static str,
) -> Result<T, ProtocolError> {
    let malformed = |source| ProtocolError::Malformed { peer, source };
    let version = serde_json::from_slice::<VersionOnly>(line)
        .map_err(malformed)?
        .version;
    if version != Some(PROTOCOL_VERSION) {
        return Err(ProtocolError::Version {
            peer,
            me,
            theirs: version,
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(line).map_err(malformed)?;
    Ok(envelope.body)
}

/// One message as a line.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Envelope::new(body)).expect("messages serialise");
    line.push(b'\n');
    line
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Apply {
        file: String,
        content: String,
        #[serde(default)]
        dry_run: bool,
    },
    DeleteFile {
        file: String,
        content: String,
        #[serde(default)]
        dry_run: bool,
    },
    Delete {
        kind: Kind,
        name: String,
        #[serde(default)]
        dry_run: bool,
    },
    Get {
        kind: Kind,
        name: Option<String>,
    },
    Stats {
        /// Only this chain's hops, and the SFs of its groups.
        #[serde(default)]
        chain: Option<String>,
        /// In a cluster: only this node (by default every node, each asked of its agent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
    Describe {
        kind: Kind,
        name: String,
    },
    /// Answered with one `Response` line, then `trace::TraceRecord` lines until the client
    /// hangs up, the trace is stopped, or its lease ends.
    Trace {
        spec: crate::trace::TraceSpec,
        /// How long the trace may run; the daemon caps it (`trace::MAX_LEASE_SECONDS`).
        #[serde(default)]
        lease_seconds: Option<u64>,
    },
    /// Ends the trace running on this node, whoever started it.
    TraceStop,
    /// The cluster's nodes (a daemon without `--etcd` says it is not in a cluster).
    GetNodes,
    /// Forgets a node that is gone for good (lost, and no object on it).
    DeleteNode {
        name: String,
    },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// Human-readable outcome, one line per object for apply/delete.
    #[serde(default)]
    pub message: String,
    /// Input errors (apply, delete): each names file, kind, name and field.
    #[serde(default)]
    pub errors: Vec<ConfigError>,
    #[serde(default)]
    pub objects: Vec<Object>,
    /// Datapath counters by name (stats).
    #[serde(default)]
    pub counters: Vec<(String, u64)>,
    /// Per-chain counters, all generations summed (stats).
    #[serde(default)]
    pub chains: Vec<Row>,
    /// Per-chain counters of each recent generation, oldest first (stats).
    #[serde(default)]
    pub generations: Vec<Generation>,
    /// Traffic into and out of each SF, with rates and health (stats, describe).
    #[serde(default)]
    pub pairs: Vec<PairHealth>,
    /// Traffic into and out of each hop of each chain (stats, describe).
    #[serde(default)]
    pub hops: Vec<HopHealth>,
    /// How full the flow, pin and decision tables are, as last counted (stats; none before the
    /// daemon's first count). Optional on the wire, so that sfcctl and sfc-daemon of the
    /// releases before and after it still understand each other: no new protocol version.
    #[serde(default)]
    pub tables: Option<TableFills>,
    /// The cluster's nodes, sorted by name (get nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    /// In a cluster: the revision of the cluster's state this node steers (apply, delete,
    /// describe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// In a cluster (stats): each node's own answer, sorted by node. The counters and chains
    /// above are then their sums; hops, SFs, generations and tables are each node's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_node: Vec<NodeStats>,
}

/// One node's part of `sfcctl stats` in a cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStats {
    pub node: String,
    /// Why there are no counters from it (lost, no answer); empty when it answered.
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub stats: Response,
}

/// One row of `sfcctl get nodes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub name: String,
    pub tunnel_address: String,
    /// `ready` while its agent holds its lease, `lost` once the lease expired.
    pub state: String,
    pub interfaces: Vec<NodeInterface>,
    /// The revision of the cluster's state it has applied (0: none yet).
    pub applied_revision: i64,
    /// Why its last apply did not fully take effect; empty when fine.
    pub error: String,
    /// The largest IP packet its chains carry to other nodes: its underlay's MTU less the
    /// encapsulation (0: not known).
    #[serde(default)]
    pub usable_mtu: u32,
    /// The revisions (low 32 bits) whose packets from other nodes its dataplane takes.
    #[serde(default)]
    pub holding: Vec<u32>,
    /// The revisions its packets to other nodes may carry (the active one first).
    #[serde(default)]
    pub sending: Vec<u32>,
    /// Its members out of their groups (health checks), by port pair, with why.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub down: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInterface {
    pub name: String,
    pub mac: String,
}

impl Response {
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            ..Default::default()
        }
    }
}
