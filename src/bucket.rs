//! `anycloud bucket ls|upload|download`: fill an input bucket before a run, fetch results
//! after. The local cloud's buckets are directories, so this is a recursive copy.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::engine::UserError;

pub fn local_bucket_dir(config: &Config, name: &str) -> Result<PathBuf, UserError> {
    let uses_other = config.deployments.iter().any(|d| {
        d.provider != "local"
            && [&d.buckets.input, &d.buckets.output, &d.buckets.checkpoint]
                .iter()
                .any(|b| b.as_deref() == Some(name))
    });
    if uses_other {
        return Err(UserError(format!(
            "error: bucket '{name}' belongs to a cloud provider; this build only reaches the local cloud's buckets"
        )));
    }
    Ok(Path::new(&config.local_root).join("buckets").join(name))
}

/// Every file under `dir`, relative, sorted.
pub fn list(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            out.push((rel, meta.len()));
        }
    }
    Ok(())
}

/// Copies a file or a directory tree into `dest`, returning the number of files copied.
pub fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<usize> {
    let meta = std::fs::metadata(src)?;
    if meta.is_file() {
        std::fs::create_dir_all(dest)?;
        let name = src
            .file_name()
            .ok_or_else(|| std::io::Error::other("source has no file name"))?;
        std::fs::copy(src, dest.join(name))?;
        return Ok(1);
    }
    let mut n = 0;
    for (rel, _) in list(src)? {
        let to = dest.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src.join(&rel), &to)?;
        n += 1;
    }
    std::fs::create_dir_all(dest)?;
    Ok(n)
}
