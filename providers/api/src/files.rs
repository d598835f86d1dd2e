//! The one way anycloud writes a file that must never be seen half-written: state, plans,
//! keys, `known_hosts`, files uploaded to this machine's "VM". A temp file in the same
//! directory, fsynced, then renamed over the target (the rename replaces a symlink itself,
//! never writes through it), then the directory fsynced.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
