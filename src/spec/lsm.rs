//! AppArmor and SELinux: which profile and labels a process gets, from the CRI
//! security context and what the host enforces ([`LsmFacts`], detected once at
//! start and passed in, so both kinds of host are unit-tested on a host with
//! neither).
//!
//! On a host without the LSM nothing is refused: a profile or label asked for is
//! not applied, and berthd says so once in its log (the kubelet itself refuses
//! AppArmor pods on such nodes; containerd would fail them instead).
//!
//! berth does not load AppArmor profiles: RuntimeDefault names
//! [`DEFAULT_APPARMOR_PROFILE`], which the node must have loaded (containerd
//! generates and loads its `cri-containerd.apparmor.d`). So, unlike containerd,
//! berth confines a process only when a profile is asked for: with none (unset),
//! it stays unconfined, as before berth read these fields, rather than failing
//! every pod of a node that has not loaded berth's profile. A profile asked for
//! that is not loaded is refused before the spec is built ([`check_apparmor`]).

use std::io::{self, Read};
use std::sync::Once;

use crate::domain::config::{AppArmorProfile, SelinuxOptions};
use crate::error::Error;

/// The profile RuntimeDefault means (containerd's is "cri-containerd.apparmor.d").
pub const DEFAULT_APPARMOR_PROFILE: &str = "berth-default";
/// The list of loaded profiles, one "name (mode)" a line.
const APPARMOR_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";
/// Thousands of profiles fit; a list past this is not read further.
const MAX_PROFILES_BYTES: u64 = 16 << 20;
/// container-selinux's defaults, as containerd and CRI-O read them from the policy.
const SELINUX_USER: &str = "system_u";
const SELINUX_ROLE: &str = "system_r";
const SELINUX_TYPE: &str = "container_t";
const SELINUX_FILE_ROLE: &str = "object_r";
const SELINUX_FILE_TYPE: &str = "container_file_t";
/// Without a level asked for, berth does not allocate per-pod MCS categories.
const SELINUX_LEVEL: &str = "s0";

/// Which LSMs the host enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LsmFacts {
    pub apparmor: bool,
    pub selinux: bool,
}

impl LsmFacts {
    /// AppArmor: the module says enabled and its securityfs is there (as runc's
    /// `apparmor.IsEnabled`). SELinux: selinuxfs is mounted with its enforce file.
    pub fn of_this_host() -> LsmFacts {
        let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.trim() == "Y")
            && std::path::Path::new("/sys/kernel/security/apparmor").is_dir();
        let selinux = std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
            mounts.lines().any(|l| {
                let mut fields = l.split_whitespace().skip(1);
                let (dir, fs) = (fields.next(), fields.next());
                fs == Some("selinuxfs")
                    && dir.is_some_and(|d| std::path::Path::new(d).join("enforce").exists())
            })
        });
        LsmFacts { apparmor, selinux }
    }
}

/// The AppArmor profile a process runs under; `None` leaves it unconfined.
pub fn apparmor_profile(p: &AppArmorProfile, privileged: bool, host: LsmFacts) -> Option<String> {
    if !host.apparmor {
        if !matches!(p, AppArmorProfile::Unset | AppArmorProfile::Unconfined) {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                tracing::info!(
                    "AppArmor is not enabled on this host: AppArmor profiles asked for are not applied"
                )
            });
        }
        return None;
    }
    match p {
        AppArmorProfile::Unset | AppArmorProfile::Unconfined => None,
        // Privileged containers run unconfined unless they name a profile, as in containerd.
        AppArmorProfile::RuntimeDefault if privileged => None,
        AppArmorProfile::RuntimeDefault => Some(DEFAULT_APPARMOR_PROFILE.to_string()),
        AppArmorProfile::Localhost(name) => Some(name.clone()),
    }
}

/// Refuses a profile the host has not loaded: a Localhost one is the request's
/// mistake (InvalidArgument naming it), the default one the node's
/// (FailedPrecondition). `loaded` answers whether a profile is loaded.
pub fn check_apparmor(
    field: &str,
    p: &AppArmorProfile,
    privileged: bool,
    host: LsmFacts,
    loaded: &dyn Fn(&str) -> io::Result<bool>,
) -> Result<(), Error> {
    let Some(name) = apparmor_profile(p, privileged, host) else {
        return Ok(());
    };
    let is_loaded = loaded(&name).map_err(|source| Error::Io {
        context: format!("reading {APPARMOR_PROFILES}"),
        source,
    })?;
    match (is_loaded, p) {
        (true, _) => Ok(()),
        (false, AppArmorProfile::Localhost(_)) => Err(Error::InvalidArgument(format!(
            "{field}: AppArmor profile {name:?} is not loaded on this node"
        ))),
        (false, _) => Err(Error::FailedPrecondition(format!(
            "{field}: the default AppArmor profile {name:?} is not loaded on this node; \
             load it with apparmor_parser, or ask for another profile"
        ))),
    }
}

/// Whether `name` is among the host's loaded AppArmor profiles.
pub fn apparmor_profile_loaded(name: &str) -> io::Result<bool> {
    let mut list = String::new();
    std::fs::File::open(APPARMOR_PROFILES)?
        .take(MAX_PROFILES_BYTES)
        .read_to_string(&mut list)?;
    Ok(list.lines().any(|line| {
        // "name (enforce)"; names may hold spaces, the mode never does.
        line.rsplit_once(" (").map_or(line, |(n, _)| n) == name
    }))
}

/// The process label and mount label, from the container's options with each
/// empty part taken from the pod's, then the defaults. `None`s without SELinux
/// or for privileged processes, as in containerd.
pub fn selinux_labels(
    own: Option<&SelinuxOptions>,
    pod: Option<&SelinuxOptions>,
    privileged: bool,
    host: LsmFacts,
) -> (Option<String>, Option<String>) {
    if !host.selinux {
        if own.or(pod).is_some() {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                tracing::info!(
                    "SELinux is not enabled on this host: SELinux labels asked for are not applied"
                )
            });
        }
        return (None, None);
    }
    if privileged {
        return (None, None);
    }
    let part = |get: fn(&SelinuxOptions) -> &str, default: &str| -> String {
        [own, pod]
            .into_iter()
            .flatten()
            .map(get)
            .find(|v| !v.is_empty())
            .unwrap_or(default)
            .to_string()
    };
    let user = part(|o| &o.user, SELINUX_USER);
    let level = part(|o| &o.level, SELINUX_LEVEL);
    let process = format!(
        "{user}:{}:{}:{level}",
        part(|o| &o.role, SELINUX_ROLE),
        part(|o| &o.r#type, SELINUX_TYPE)
    );
    let mount = format!("{user}:{SELINUX_FILE_ROLE}:{SELINUX_FILE_TYPE}:{level}");
    (Some(process), Some(mount))
}
