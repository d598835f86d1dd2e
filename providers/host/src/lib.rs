//! The VM host layer: how anycloud reaches a machine and what it runs there.
//!
//! Cloud-free: a cloud provider hands it a [`VmLayout`], its rclone remotes and a transport;
//! this crate renders the scripts and files and drives them. The local cloud uses
//! [`LocalHost`]; VMs reached over SSH use [`SshHost`] behind the same [`Host`] trait.

pub mod idle;
pub mod keys;
pub mod layout;
pub mod registry;
pub mod render;
pub mod scripts;
pub mod ssh;
pub mod steps;
pub mod testing;
pub mod transport;

pub use layout::VmLayout;
pub use ssh::{SshHost, SshPool, SshTarget};
pub use steps::{ContextCache, HostContext, HostProbe, HostedPrivate, Probe};
pub use transport::{Host, LocalHost, Output, TransportError};
