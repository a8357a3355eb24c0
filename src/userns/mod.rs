//! Pods in user namespaces (CRI `userns_options` mode POD): the mappings
//! (`mapping`), the namespace pinned on a file (`ns`), id-mapped bind mounts
//! (`idmap`), a pod's directory of those (`pod`), and the start-up probe that
//! says whether this host can do it (`probe`). Linux only; every call blocks.

pub mod idmap;
pub mod mapping;
pub mod ns;
pub mod pod;
pub mod probe;

pub use mapping::{IdMapping, UserNamespace};
pub use pod::PodUserns;
