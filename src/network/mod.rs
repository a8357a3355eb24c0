//! Pod networking: network namespaces pinned as files, and the CNI plugins that
//! wire them up (ADD, DEL, CHECK, and whether the node's network is ready at all).
//!
//! - [`netns`]: create and remove a pod's network namespace.
//! - [`Cni`]: the plugin caller, fed with [`PodNetwork`] and giving [`Attached`].

mod attachment;
mod cache;
mod cni;
mod conf;
mod error;
pub mod netns;
mod plugin;
mod pod;
mod ranges;
mod result;

pub use cni::Cni;
pub use conf::find_conf;
pub use error::{Call, NetworkError};
pub use netns::NetNs;
pub use pod::{Bandwidth, Dns, PodNetwork, PortMapping};
pub use ranges::PodCidrs;
pub use result::Attached;
