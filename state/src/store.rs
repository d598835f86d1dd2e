use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{State, FORMAT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("state file {path} has format version {found}; this anycloud reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the state at `path`; a missing file is an empty, [`State::unborn`] state.
pub fn load(path: &Path) -> Result<State, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::unborn()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let invalid = |message: String| StateError::Invalid {
        path: path.into(),
        message,
    };
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let found = probe.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(StateError::Version {
            path: path.into(),
            found,
        });
    }
    serde_json::from_value(probe).map_err(|e| invalid(e.to_string()))
}

/// Writes `state` atomically: temp file, fsync, previous copy to `.backup`, rename, fsync dir.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let werr = |source| StateError::Write {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(werr)?;
    let mut body = serde_json::to_vec_pretty(state).expect("state serialises");
    body.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(werr)?;
    tmp.write_all(&body).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    if path.exists() {
        let backup = backup_path(path);
        // A hard link keeps the old copy without a window where `path` is missing.
        let _ = fs::remove_file(&backup);
        if fs::hard_link(path, &backup).is_err() {
            fs::copy(path, &backup).map_err(werr)?;
        }
        let _ = fs::set_permissions(&backup, fs::Permissions::from_mode(0o600));
    }
    tmp.persist(path).map_err(|e| werr(e.error))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn backup_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".backup");
    PathBuf::from(p)
}

pub(crate) fn open_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}
