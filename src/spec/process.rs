//! The container process: its arguments, environment, working directory and
//! capabilities, from the image config and the CRI config.

use oci_spec::runtime::{Capabilities as CapSet, Capability, LinuxCapabilities};

use super::{ImageConfigView, SpecError};
use crate::domain::config::{Capabilities, ContainerConfig};

/// Used when neither the image nor the CRI config sets PATH.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's (and Docker's) default set for unprivileged containers.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability up to CAP_CHECKPOINT_RESTORE (Linux 5.9), in bit order: the
/// index of each is its number.
const ALL_CAPABILITIES: [Capability; 41] = {
    use Capability::*;
    [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ]
};

/// Whether the capability set `held` (a bit per capability number) has `cap`.
pub(super) fn holds(held: u64, cap: Capability) -> bool {
    ALL_CAPABILITIES
        .iter()
        .position(|c| *c == cap)
        .is_some_and(|bit| held & (1 << bit) != 0)
}

/// What "ALL" and privileged mean: every capability berthd itself holds (`held`,
/// its effective set as a bit mask). runc cannot grant one it lacks, so asking for
/// more would fail the container, as on hosts that withhold CAP_SYS_RESOURCE
/// even from root; containerd grants its own current set for the same reason.
fn all_capabilities(held: u64) -> CapSet {
    ALL_CAPABILITIES
        .into_iter()
        .filter(|cap| holds(held, *cap))
        .collect()
}

/// The infra container runs its image's entrypoint and cmd; CRI cannot override them.
pub(super) fn sandbox_args(image: &ImageConfigView) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::InvalidArgument(
            "sandbox image: no command specified".into(),
        ));
    }
    Ok(args)
}

/// Kubernetes' rule (as Docker's): a CRI command replaces the image's entrypoint and
/// drops its cmd; CRI args alone replace only the cmd.
pub(super) fn container_args(
    config: &ContainerConfig,
    image: &ImageConfigView,
) -> Result<Vec<String>, SpecError> {
    let (command, args) = if config.command.is_empty() {
        let args = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        // Docker writes `ENTRYPOINT [""]` to mean "no entrypoint".
        let entrypoint: &[String] = if image.entrypoint == [""] {
            &[]
        } else {
            &image.entrypoint
        };
        (entrypoint, args)
    } else {
        (&config.command[..], &config.args)
    };
    let all: Vec<String> = command.iter().chain(args).cloned().collect();
    if all.is_empty() {
        return Err(SpecError::InvalidArgument(format!(
            "container {:?}: no command specified",
            config.name
        )));
    }
    Ok(all)
}

/// PATH (unless set elsewhere), then HOSTNAME, then the image's variables, then the
/// CRI's; a later value for a key replaces the earlier one in place.
pub(super) fn environment(
    image_env: &[String],
    cri_env: &[(String, String)],
    hostname: Option<&str>,
) -> Vec<String> {
    let mut env: Vec<String> = vec![DEFAULT_PATH.to_string()];
    if let Some(hostname) = hostname {
        env.push(format!("HOSTNAME={hostname}"));
    }
    let cri = cri_env.iter().map(|(k, v)| format!("{k}={v}"));
    for entry in image_env.iter().cloned().chain(cri) {
        let key = entry.split('=').next().unwrap_or_default();
        match env.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    env
}

/// CRI's working directory, else the image's, else "/".
pub(super) fn working_dir(cri: &str, image: &str) -> String {
    [cri, image]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// The capability sets. As containerd: "ALL" in add, then "ALL" in drop, are applied
/// before the single names, so `add: [ALL], drop: [CHOWN]` is everything but CHOWN.
/// Privileged containers get every capability whatever the lists say. Ambient
/// capabilities are also made inheritable and permitted, as the kernel requires.
pub(super) fn capabilities(
    requested: &Capabilities,
    privileged: bool,
    held: u64,
) -> Result<LinuxCapabilities, SpecError> {
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut caps: CapSet = DEFAULT_CAPABILITIES.into_iter().collect();
    if privileged {
        caps = all_capabilities(held);
    } else {
        if requested.add_capabilities.iter().any(is_all) {
            caps = all_capabilities(held);
        }
        if requested.drop_capabilities.iter().any(is_all) {
            caps.clear();
        }
        for name in requested.add_capabilities.iter().filter(|c| !is_all(c)) {
            caps.insert(parse(name)?);
        }
        for name in requested.drop_capabilities.iter().filter(|c| !is_all(c)) {
            caps.remove(&parse(name)?);
        }
    }
    let ambient: CapSet = requested
        .add_ambient_capabilities
        .iter()
        .map(|n| parse(n))
        .collect::<Result<_, _>>()?;
    caps.extend(ambient.iter().copied());
    let mut sets = LinuxCapabilities::default();
    sets.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        // Inheritable stays empty unless ambient capabilities need it (CVE-2022-24769).
        .set_inheritable(non_empty(ambient.clone()))
        .set_ambient(non_empty(ambient));
    Ok(sets)
}

fn non_empty(set: CapSet) -> Option<CapSet> {
    (!set.is_empty()).then_some(set)
}

/// "NET_ADMIN", "net_admin" and "CAP_NET_ADMIN" all name the same capability.
fn parse(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .map_err(|_| SpecError::InvalidArgument(format!("unknown capability {name:?}")))
}
