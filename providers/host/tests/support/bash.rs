//! Running a host script for real in a test, as the transport would.

use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Output};

/// Runs `script` with bash, its streams in files: a step's log follower (`tail --pid`)
/// keeps stderr open until bash is reaped, which `Command::output` only does after reading
/// stderr to its end. `path_first`: a directory searched before `PATH` (stand-in tools).
pub fn bash(script: &str, path_first: Option<&Path>) -> Output {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script);
    if let Some(dir) = path_first {
        let old = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{old}", dir.display()));
    }
    let status = cmd
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .status()
        .unwrap();
    let read = |mut f: std::fs::File| {
        let mut bytes = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut bytes).unwrap();
        bytes
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}
