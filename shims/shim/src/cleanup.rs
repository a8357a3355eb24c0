//! The `delete` subcommand: clean up a container whose shim is gone.
//!
//! containerd runs it with the bundle as working directory when it cannot
//! reach the shim. It force-deletes the runtime's container, unmounts the
//! rootfs, removes the dead shim's socket, and reports the container as
//! killed (exit status 137), as containerd's own runc shim does.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;

use crate::args::Args;
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::reaper::Reaper;
use crate::runtime::Runtime;
use crate::start::bundle_dir;
use crate::{fds, mount, options, signals};

const KILLED: u32 = 128 + libc::SIGKILL as u32;

pub fn delete(args: &Args) -> Result<Vec<u8>> {
    if args.id.is_empty() {
        return Err(Error::InvalidArgument("delete needs -id".to_string()));
    }
    let bundle = bundle_dir(args)?;
    fds::close_inherited_on_exec()?;
    signals::block()?;
    let (tx, _rx) = mpsc::channel();
    let reaper = Reaper::new(tx);
    signals::spawn(Arc::clone(&reaper), None)?;

    let runtime = Runtime::new(options::load(&bundle, &args.namespace), reaper);
    if let Err(e) = runtime.delete(&args.id, true) {
        // Already gone is the usual case when the runtime state was cleaned.
        log::warn!("{e}");
    }
    mount::unmount_all(&bundle.join("rootfs"))?;
    remove_dead_socket(&bundle);

    let resp = DeleteResponse {
        pid: 0,
        exit_status: KILLED,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    };
    Ok(resp.write_to_bytes().unwrap_or_default())
}

fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = address.trim().trim_start_matches("unix://");
    if !path.is_empty() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}
