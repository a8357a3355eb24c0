//! What a Create request carries besides the bundle, in the shim's encoding: the
//! runtime options (runc's `Options`) and the rootfs mounts.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::Options;

use super::task::RuntimeOptions;
use crate::error::{Error, Result};
use crate::snapshot::overlay::Mount;

const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// The options Create carries for every task of a pod, infra and containers alike:
/// the OCI runtime binary, its state directory, the cgroup driver.
pub(super) fn runc_options(options: &RuntimeOptions) -> Result<Any> {
    let encoded = Options {
        binary_name: options.binary_name.clone(),
        root: options.root.display().to_string(),
        systemd_cgroup: options.systemd_cgroup,
        ..Default::default()
    };
    Ok(Any {
        type_url: RUNC_OPTIONS_TYPE.to_string(),
        value: encoded
            .write_to_bytes()
            .map_err(|e| Error::Internal(format!("encoding runtime options: {e}")))?,
        ..Default::default()
    })
}

/// A rootfs mount as shim v2 carries it.
pub(super) fn rootfs_mount(mount: &Mount) -> api::Mount {
    api::Mount {
        type_: mount.kind.clone(),
        source: mount.source.clone(),
        options: mount.options.clone(),
        ..Default::default()
    }
}
