//! Who the process runs as: the CRI user (or the image's `USER`) resolved against the
//! image's own /etc/passwd and /etc/group, as runc would not do it for us.
//!
//! The forms are containerd's: "uid", "name", and "user:group" where each side is a
//! number or a name. A numeric uid missing from /etc/passwd runs with gid 0; a name
//! missing from it is an error naming the user.

use std::path::PathBuf;

use oci_spec::runtime::{User, UserBuilder};

use super::{ImageConfigView, SpecError};
use crate::domain::config::{SandboxSecurityContext, SecurityContext, SupplementalGroupsPolicy};
use crate::image::ContainerRootfs;
use crate::snapshot::view::{LayeredView, ViewError};

/// Account files bigger than this are refused: real ones are a few KiB, and the
/// image, not berthd, chooses what is there.
pub const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// The image rootfs's account files, read through [`LayeredView`] so that a link in
/// the image never reaches a host file. A missing file reads as empty: many images
/// (and berth's pause rootfs) have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFiles {
    pub passwd: Vec<u8>,
    pub group: Vec<u8>,
}

impl UserFiles {
    /// The files of a root filesystem made of overlay `layers`, top first (a plain
    /// directory is one layer).
    pub fn read(layers: &[PathBuf]) -> Result<UserFiles, SpecError> {
        let view = LayeredView::new(layers);
        let read = |path: &str| -> Result<Vec<u8>, SpecError> {
            match view.read(path, MAX_ACCOUNT_FILE) {
                Ok(bytes) => Ok(bytes.unwrap_or_default()),
                Err(
                    e @ (ViewError::TooLarge { .. }
                    | ViewError::TooManyEntries { .. }
                    | ViewError::Loop { .. }),
                ) => Err(SpecError::InvalidArgument(format!("the image's {e}"))),
                Err(ViewError::Io { path, source }) => Err(SpecError::Io {
                    context: format!("reading the image's {path}"),
                    source,
                }),
            }
        };
        Ok(UserFiles {
            passwd: read("/etc/passwd")?,
            group: read("/etc/group")?,
        })
    }
}

/// The image's /etc/passwd and /etc/group as a container on `rootfs` will see
/// them: its writable layer over the image's.
pub fn user_files(rootfs: &ContainerRootfs) -> Result<UserFiles, SpecError> {
    let layers: Vec<PathBuf> = std::iter::once(rootfs.upper.clone())
        .chain(rootfs.lowers.iter().cloned())
        .collect();
    UserFiles::read(&layers)
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The user for an application container: CRI's run_as_username or run_as_user (with
/// run_as_group), else the image's USER, else root.
pub(super) fn resolve_container(
    sc: &SecurityContext,
    image: &ImageConfigView,
    files: &UserFiles,
) -> Result<User, SpecError> {
    let from_cri = if !sc.run_as_username.is_empty() {
        Some(sc.run_as_username.clone())
    } else {
        sc.run_as_user.map(|uid| uid.to_string())
    };
    let user = match from_cri {
        Some(user) => match sc.run_as_group {
            Some(gid) => format!("{user}:{gid}"),
            None => user,
        },
        None => image.user.clone(),
    };
    let merge = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Merge;
    resolve(&user, merge, &sc.supplemental_groups, files)
}

/// The infra container's user: only numeric ids come from CRI for a pod.
pub(super) fn resolve_sandbox(
    sc: &SandboxSecurityContext,
    files: &UserFiles,
) -> Result<User, SpecError> {
    let user = match (sc.run_as_user, sc.run_as_group) {
        (Some(uid), Some(gid)) => format!("{uid}:{gid}"),
        (Some(uid), None) => uid.to_string(),
        (None, Some(_)) => {
            return Err(SpecError::InvalidArgument(
                "sandbox run_as_group is set without run_as_user".into(),
            ));
        }
        (None, None) => String::new(),
    };
    resolve(&user, true, &sc.supplemental_groups, files)
}

fn resolve(
    user: &str,
    merge_image_groups: bool,
    supplemental: &[i64],
    files: &UserFiles,
) -> Result<User, SpecError> {
    let passwd = read_passwd(&files.passwd);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if group_part.is_some_and(|g| g.contains(':')) {
        return Err(SpecError::InvalidArgument(format!("invalid user {user:?}")));
    }
    let (uid, passwd_gid, name) = if user_part.is_empty() {
        (
            0,
            0,
            passwd.iter().find(|p| p.uid == 0).map(|p| p.name.clone()),
        )
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        }
    } else {
        match passwd.iter().find(|p| p.name == user_part) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone())),
            None => {
                return Err(SpecError::InvalidArgument(format!(
                    "user {user_part:?} not found in the image's /etc/passwd"
                )));
            }
        }
    };
    let groups = read_group(&files.group);
    let gid = match group_part {
        None => passwd_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    SpecError::InvalidArgument(format!(
                        "group {g:?} not found in the image's /etc/group"
                    ))
                })?,
        },
    };
    // The primary gid is listed too: with an empty list runc would keep whatever
    // supplementary groups the runtime itself had.
    let mut additional = vec![gid];
    if merge_image_groups && let Some(name) = &name {
        additional.extend(
            groups
                .iter()
                .filter(|g| g.name != *name && g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    for &g in supplemental {
        let g = u32::try_from(g).map_err(|_| {
            SpecError::InvalidArgument(format!("supplemental group {g} is not a valid gid"))
        })?;
        additional.push(g);
    }
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(additional)
        .build()?)
}

fn read_lines(bytes: &[u8]) -> Vec<Vec<String>> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// "name:password:uid:gid:gecos:home:shell"; malformed lines are skipped, as libc does.
fn read_passwd(bytes: &[u8]) -> Vec<PasswdEntry> {
    read_lines(bytes)
        .into_iter()
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.clone(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// "name:password:gid:member,member".
fn read_group(bytes: &[u8]) -> Vec<GroupEntry> {
    read_lines(bytes)
        .into_iter()
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.clone(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}
