//! CDI (Container Device Interface) devices: a container names devices
//! (`vendor.com/class=name`, through CRI `cdi_devices` or `cdi.k8s.io/*`
//! annotations), the node describes them in spec files (`cdi_spec_dirs`,
//! `/etc/cdi` and `/var/run/cdi` by default, the later directory winning), and
//! berth applies their container edits to the OCI spec.
//!
//! A module of berth's own rather than the `container-device-interface` crate:
//! that crate (1.1) builds clap, jsonschema, serde_yaml (unmaintained) and
//! anyhow into the library, reads spec files whole without a size bound, and
//! returns untyped errors, where berth needs bounded reads and errors that map to
//! NotFound / InvalidArgument. What berth needs of it is small: parse, check,
//! resolve, apply.

mod apply;
pub mod names;
mod registry;
mod spec;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use crate::error::Error;
use crate::spec::DeviceLookup;

pub use registry::{MAX_SPEC_BYTES, MAX_SPEC_FILES};

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// No spec on the node defines the device.
    #[error("{0}")]
    NotFound(String),
    /// The device is defined, but cannot be given as defined.
    #[error("{0}")]
    Invalid(String),
}

impl From<CdiError> for Error {
    fn from(e: CdiError) -> Self {
        match e {
            CdiError::NotFound(m) => Error::NotFound(m),
            CdiError::Invalid(m) => Error::InvalidArgument(m),
        }
    }
}

/// Resolves `devices` against the spec files of `dirs` and applies their edits to
/// `spec`. Nothing is read when no device is asked for.
pub fn inject(
    spec: &mut oci_spec::runtime::Spec,
    devices: &[String],
    dirs: &[PathBuf],
    lookup: &dyn DeviceLookup,
) -> Result<(), CdiError> {
    if devices.is_empty() {
        return Ok(());
    }
    let edits = registry::Registry::load(dirs).resolve(devices)?;
    apply::apply(spec, &edits, lookup)
}
