//! The clouds whose buckets are directories on a machine: `local` (this machine, reached
//! through [`anycloud_host::LocalHost`]) and `ssh` (a machine the user already has, reached
//! through [`anycloud_host::SshHost`]). rclone uses remotes of type `local` on that machine.

mod dirs;
mod image;
mod local;
mod ssh;

pub use local::LocalProvider;
pub use ssh::SshProvider;
