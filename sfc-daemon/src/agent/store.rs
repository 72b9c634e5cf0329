//! The desired state on disk: one JSON file, replaced atomically (write, fsync, rename, fsync
//! the directory), so a crash leaves either the old or the new state, never a torn one.
//! The directory is 0700 and the file 0600: the state names every interface and address the
//! node steers, which is for root alone.

use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::{snapshot::Snapshot, store::NodeView};
use sfc_config::{
    document::ConfigErrors,
    model::State,
    validate::{validate, Origins},
};

const FILE: &str = "state.json";
/// In a cluster: the last revision of the cluster's state this node steered, so that a
/// restart while etcd is away steers it again instead of nothing.
const CLUSTER_FILE: &str = "cluster.json";
/// The active generation's epoch and image fingerprint, so that a restarted daemon adopts
/// the generation instead of writing the same image again.
const GENERATION_FILE: &str = "generation.json";
/// In a cluster: the other nodes as last seen (where their interfaces are), so that a
/// restarted agent steers across nodes before etcd answers.
const NODES_FILE: &str = "nodes.json";
const FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("state file {path} is not valid: {source}; move it away to start empty")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {path} has format {found}; this daemon reads format {FORMAT}")]
    Format { path: PathBuf, found: u32 },
    #[error("state file {path} holds a state that is not valid:\n{errors}\nthe dataplane keeps steering what is pinned; correct the file (or move it away to start empty) and start sfc-daemon again")]
    Invalid { path: PathBuf, errors: ConfigErrors },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: u32,
    state: State,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        let io_err = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
        // A state file written by an older daemon may be world-readable.
        let file = dir.join(FILE);
        if file.exists() {
            fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).map_err(|source| {
                StoreError::Io {
                    path: file.clone(),
                    source,
                }
            })?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state, or an empty one when nothing was ever saved. A state that does not pass
    /// validation is refused: an agent must never show one state and steer another.
    pub fn load(&self) -> Result<State, StoreError> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let disk: OnDisk = serde_json::from_slice(&text).map_err(|source| StoreError::Parse {
            path: path.clone(),
            source,
        })?;
        if disk.format != FORMAT {
            return Err(StoreError::Format {
                path,
                found: disk.format,
            });
        }
        let file = path.display().to_string();
        let mut origins = Origins::new();
        for (kind, name) in disk.state.objects() {
            origins.insert(kind, &name, &file);
        }
        validate(&disk.state, &origins).map_err(|errors| StoreError::Invalid { path, errors })?;
        Ok(disk.state)
    }

    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            state: state.clone(),
        })
        .expect("state serialises");
        self.replace(FILE, &body)
    }

    /// The cached revision of the cluster's state (an empty one when none was cached).
    pub fn load_cluster(&self) -> Result<Snapshot, StoreError> {
        self.load_cache(CLUSTER_FILE)
    }

    /// What `file` caches; the empty value when it was never written.
    fn load_cache<T: Default + serde::de::DeserializeOwned>(
        &self,
        file: &str,
    ) -> Result<T, StoreError> {
        let path = self.dir.join(file);
        match fs::read(&path) {
            Ok(text) => {
                serde_json::from_slice(&text).map_err(|source| StoreError::Parse { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub fn save_cluster(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.replace(
            CLUSTER_FILE,
            &serde_json::to_vec(snapshot).expect("serialises"),
        )
    }

    /// The other nodes as last seen (none when never cached).
    pub fn load_nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        self.load_cache(NODES_FILE)
    }

    pub fn save_nodes(&self, nodes: &[NodeView]) -> Result<(), StoreError> {
        self.replace(NODES_FILE, &serde_json::to_vec(nodes).expect("serialises"))
    }

    pub fn load_generation(&self) -> Option<(u64, u64)> {
        serde_json::from_slice(&fs::read(self.dir.join(GENERATION_FILE)).ok()?).ok()
    }

    pub fn save_generation(&self, generation: (u64, u64)) -> Result<(), StoreError> {
        self.replace(
            GENERATION_FILE,
            &serde_json::to_vec(&generation).expect("serialises"),
        )
    }

    /// Replaces `file` with `body`: write, fsync, rename, fsync the directory.
    fn replace(&self, file: &str, body: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(file);
        let tmp = self.dir.join(format!(".{file}.tmp"));
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(body).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("sfc-store-{}", std::process::id()));
        let store = Store::new(&dir).unwrap();
        assert_eq!(store.load().unwrap(), State::default());
        let mut state = State::default();
        state.port_pairs.insert(
            "pp1".into(),
            sfc_config::model::PortPairSpec {
                ingress: "a".into(),
                egress: "b".into(),
                ingress_mac: None,
                egress_mac: None,
                weight: 3,
            },
        );
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_invalid_state_file_is_refused_with_its_errors() {
        let dir = std::env::temp_dir().join(format!("sfc-store-bad-{}", std::process::id()));
        let store = Store::new(&dir).unwrap();
        let mut state = State::default();
        state.port_pair_groups.insert(
            "g".into(),
            sfc_config::model::PortPairGroupSpec {
                port_pairs: vec!["missing".into()],
                lb_fields: vec![],
                tap_enabled: false,
                health_check: None,
                fail_mode: Default::default(),
            },
        );
        store.save(&state).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("not valid"), "{err}");
        assert!(err.contains("\"missing\""), "{err}");
        assert!(err.contains(&dir.join(FILE).display().to_string()), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
