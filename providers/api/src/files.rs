//! The one way anycloud writes a file that must never be seen half-written: state, plans,
//! keys, `known_hosts`, files uploaded to this machine's "VM". A temp file in the same
//! directory, fsynced, then renamed over the target (the rename replaces a symlink itself,
//! never writes through it), then the directory fsynced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically with `mode`; `before_replace` runs once the new
/// contents are safely on disk and just before they replace the old (the state keeps a
/// `.backup` of the old file there).
pub fn write_atomically_with(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    before_replace: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let tmp = staged(path, bytes, mode)?;
    before_replace()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(path);
    Ok(())
}

/// Writes `bytes` to `path` atomically with `mode`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_atomically_with(path, bytes, mode, || Ok(()))
}

/// Writes `bytes` to `path` only if no file is there yet; `false` when one was (another
/// process got there first, and its file is the one to use).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let tmp = staged(path, bytes, mode)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_dir(path);
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

fn staged(path: &Path, bytes: &[u8], mode: u32) -> io::Result<tempfile::NamedTempFile> {
    let dir = parent(path);
    fs::create_dir_all(dir)?;
    // Created 0600 so nobody can open it before its final mode is set.
    let mut tmp = tempfile::Builder::new()
        .prefix(".anycloud-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Waits for an exclusive advisory lock on `path` (made 0600 when missing), held until the
/// returned file is dropped: how this user's anycloud processes take turns at something
/// they must not do at once. Blocks: call it off the async threads.
pub fn lock_exclusive(path: &Path) -> io::Result<File> {
    fs::create_dir_all(parent(path))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.lock()?;
    Ok(file)
}

/// The directory this user's anycloud processes keep their turn-taking locks in: the
/// user's own runtime directory, else their cache (never a shared `/tmp`, where another
/// user could hold a lock first).
pub fn user_lock_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    let own = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match (own("XDG_RUNTIME_DIR"), own("XDG_CACHE_HOME"), own("HOME")) {
        (Some(run), _, _) => run.join("anycloud").join("locks"),
        (None, Some(cache), _) => cache.join("anycloud").join("locks"),
        (None, None, Some(home)) => home.join(".cache").join("anycloud").join("locks"),
        (None, None, None) => PathBuf::from(".anycloud-locks"),
    }
}

/// Every file under `dir` as a relative path with `/` between its parts, and its size,
/// sorted: what a bucket upload sends and a bucket listing shows.
pub fn list_tree(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((parts.join("/"), meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// What a bucket upload of `source` sends: a file as an object named after it, or a
/// directory tree as its relative paths; each with its path and size.
pub fn upload_list(source: &Path) -> io::Result<Vec<(String, PathBuf, u64)>> {
    let meta = fs::metadata(source)?;
    if meta.is_file() {
        let name = source
            .file_name()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "the source has no file name")
            })?
            .to_string_lossy()
            .into_owned();
        return Ok(vec![(name, source.to_owned(), meta.len())]);
    }
    Ok(list_tree(source)?
        .into_iter()
        .map(|(key, size)| {
            let path = source.join(&key);
            (key, path, size)
        })
        .collect())
}

/// A downloaded file, written whole or not at all: a temporary file beside its destination,
/// renamed over it by [`Staged::persist`] (dropped unpersisted, it is removed).
pub struct Staged {
    file: tokio::fs::File,
    staged: tempfile::NamedTempFile,
    to: PathBuf,
}

impl Staged {
    /// Makes `to`'s directory if needed, and the temporary file in it.
    pub async fn beside(to: &Path) -> io::Result<Staged> {
        let dir = parent(to).to_owned();
        tokio::fs::create_dir_all(&dir).await?;
        let staged = tempfile::Builder::new()
            .prefix(".anycloud-")
            .tempfile_in(&dir)?;
        let file = tokio::fs::File::from_std(staged.reopen()?);
        Ok(Staged {
            file,
            staged,
            to: to.to_owned(),
        })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.write_all(bytes).await
    }

    pub async fn persist(mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.staged.persist(&self.to).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Where an object named `key` goes under `dest`, if it can go there: a key is written
/// only below `dest` (never `..`, an absolute path or an empty part, whatever a bucket
/// holds); `None` for a "directory" marker (a key ending in `/`).
pub fn under(dest: &Path, key: &str) -> io::Result<Option<std::path::PathBuf>> {
    if key.ends_with('/') {
        return Ok(None);
    }
    let unsafe_part = key.starts_with('/')
        || key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == ".." || p.contains('\0'));
    if unsafe_part {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "object '{}' would be written outside {}: not downloaded",
                key.escape_debug(),
                dest.display()
            ),
        ));
    }
    Ok(Some(dest.join(key)))
}

/// Makes a rename in `path`'s directory durable.
pub fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(parent(path)) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_makes_processes_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/s3-policy-b.lock");
        let held = lock_exclusive(&path).unwrap();
        // Another open file description (as another process has) must wait its turn.
        let other = fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_key_is_written_only_below_the_destination() {
        let dest = Path::new("/data/out");
        assert_eq!(under(dest, "a/b.txt").unwrap(), Some(dest.join("a/b.txt")));
        assert_eq!(under(dest, "dir/").unwrap(), None);
        for bad in ["../etc/passwd", "a/../../x", "/etc/passwd", "a//b", "./a"] {
            assert!(under(dest, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tree_lists_relative_names_with_sizes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        fs::write(dir.path().join("b.txt"), "bb").unwrap();
        fs::write(dir.path().join("sub/deeper/a.bin"), "aaaa").unwrap();
        assert_eq!(
            list_tree(dir.path()).unwrap(),
            [("b.txt".to_owned(), 2), ("sub/deeper/a.bin".to_owned(), 4)]
        );
    }

    #[test]
    fn replaces_atomically_with_the_mode_asked_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "theirs").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("plan")).unwrap();
        write_atomically(&dir.path().join("plan"), b"ours", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
        let meta = std::fs::symlink_metadata(dir.path().join("plan")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("plan")).unwrap(),
            "ours"
        );
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 2, "no temp file is left behind");
    }

    #[test]
    fn write_new_keeps_the_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(write_new(&path, b"first", 0o600).unwrap());
        assert!(!write_new(&path, b"second", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
    }
}
