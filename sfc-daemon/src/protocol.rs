//! sfcctl <-> daemon: one JSON request and one JSON response per connection, newline-ended.

use serde::{Deserialize, Serialize};

use crate::{
    counters::{Generation, Row},
    document::ConfigError,
    health::{HopHealth, PairHealth},
    model::{Kind, Object},
};

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
    },
    Describe {
        kind: Kind,
        name: String,
    },
    /// Answered with one `Response` line, then `trace::TraceRecord` lines until the client
    /// hangs up.
    Trace {
        spec: crate::trace::TraceSpec,
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
