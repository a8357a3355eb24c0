//! A pod's user namespace in an OCI spec: the `user` namespace joined by the path
//! berthd pinned it at (runc 1.1 joins it first, before the others, which the
//! namespace owns), and the mappings runc needs besides, to give its own files
//! (the exec fifo, /dev) to the container's root.

use std::path::Path;

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::SpecError;
use crate::userns::{IdMapping, UserNamespace};

/// Makes `spec`'s container join the user namespace pinned at `path`.
pub fn join_user_namespace(
    spec: &mut Spec,
    path: &Path,
    userns: &UserNamespace,
) -> Result<(), SpecError> {
    let Some(linux) = spec.linux_mut() else {
        return Err(SpecError::InvalidArgument(
            "a spec without a linux section cannot join a user namespace".into(),
        ));
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::User);
    namespaces.insert(
        0,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .path(path)
            .build()?,
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(oci_mappings(&userns.uids)?));
    linux.set_gid_mappings(Some(oci_mappings(&userns.gids)?));
    Ok(())
}

fn oci_mappings(list: &[IdMapping]) -> Result<Vec<oci_spec::runtime::LinuxIdMapping>, SpecError> {
    list.iter()
        .map(|m| {
            Ok(LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_namespace_comes_first_with_its_mappings() {
        let mut spec = Spec::default();
        let userns = UserNamespace {
            uids: vec![IdMapping {
                container_id: 0,
                host_id: 131072,
                length: 65536,
            }],
            gids: vec![IdMapping {
                container_id: 0,
                host_id: 196608,
                length: 65536,
            }],
        };
        join_user_namespace(&mut spec, Path::new("/run/berth/u/ab/ns"), &userns).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let namespaces = linux.namespaces().as_ref().unwrap();
        assert_eq!(namespaces[0].typ(), LinuxNamespaceType::User);
        assert_eq!(
            namespaces[0].path().as_deref(),
            Some(Path::new("/run/berth/u/ab/ns"))
        );
        assert_eq!(
            namespaces
                .iter()
                .filter(|n| n.typ() == LinuxNamespaceType::User)
                .count(),
            1
        );
        let uids = linux.uid_mappings().as_ref().unwrap();
        assert_eq!(
            (uids[0].container_id(), uids[0].host_id(), uids[0].size()),
            (0, 131072, 65536)
        );
        assert_eq!(linux.gid_mappings().as_ref().unwrap()[0].host_id(), 196608);
    }
}
