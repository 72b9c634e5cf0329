//! The desired state on disk: one JSON file, replaced atomically (write, fsync, rename, fsync
//! the directory), so a crash leaves either the old or the new state, never a torn one.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::State;

const FILE: &str = "state.json";
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
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    state: State,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state, or an empty one when nothing was ever saved.
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
        Ok(disk.state)
    }

    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let path = self.path();
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let body = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            state: state.clone(),
        })
        .expect("state serialises");
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&body).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
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
            crate::model::PortPairSpec {
                ingress: "a".into(),
                egress: "b".into(),
                ingress_mac: None,
                egress_mac: None,
                weight: 3,
            },
        );
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        fs::remove_dir_all(dir).unwrap();
    }
}
