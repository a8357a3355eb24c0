//! A pod's user namespace as the kubelet asks for it: uid and gid ranges from
//! container ids to host ids, checked before anything is made from them.

use serde::{Deserialize, Serialize};

/// The kernel accepts at most 340 lines in uid_map/gid_map (since 4.15).
pub const MAX_RANGES: usize = 340;
/// `(uid_t)-1` is no id: a range may end just below it.
const NO_ID: u64 = u32::MAX as u64;

/// One range: `length` ids from `container_id` inside map to `host_id` outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    fn end(&self, start: u32) -> u64 {
        u64::from(start) + u64::from(self.length)
    }

    fn host_range(&self) -> (u64, u64) {
        (u64::from(self.host_id), self.end(self.host_id))
    }
}

/// The mappings of a pod's user namespace (CRI mode POD).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserNamespace {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

impl UserNamespace {
    /// The host uid and gid the container's root is: whose the pod's files are.
    pub fn host_root(&self) -> (u32, u32) {
        (
            map(&self.uids, 0).unwrap_or(0),
            map(&self.gids, 0).unwrap_or(0),
        )
    }

    /// The host uid of container uid `id`, if it is mapped.
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        map(&self.uids, id)
    }

    /// The host gid of container gid `id`, if it is mapped.
    pub fn host_gid(&self, id: u32) -> Option<u32> {
        map(&self.gids, id)
    }

    /// Checks both lists; the error names the field (`uids[1].length`) and why.
    pub fn check(&self) -> Result<(), String> {
        check_list("uids", &self.uids)?;
        check_list("gids", &self.gids)
    }

    /// Whether any host uid or gid of `self` is also one of `other`'s: two pods
    /// sharing host ids would share files and signals.
    pub fn overlaps(&self, other: &UserNamespace) -> Option<&'static str> {
        let any = |a: &[IdMapping], b: &[IdMapping]| {
            a.iter()
                .any(|x| b.iter().any(|y| intersect(x.host_range(), y.host_range())))
        };
        if any(&self.uids, &other.uids) {
            Some("uids")
        } else if any(&self.gids, &other.gids) {
            Some("gids")
        } else {
            None
        }
    }

    /// The `/proc/<pid>/uid_map` text.
    pub fn uid_map(&self) -> String {
        map_text(&self.uids)
    }

    /// The `/proc/<pid>/gid_map` text.
    pub fn gid_map(&self) -> String {
        map_text(&self.gids)
    }
}

fn map(list: &[IdMapping], id: u32) -> Option<u32> {
    list.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id)?;
        (offset < m.length).then(|| m.host_id + offset)
    })
}

fn map_text(list: &[IdMapping]) -> String {
    list.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
        .collect()
}

fn intersect(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn check_list(name: &str, list: &[IdMapping]) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!(
            "{name}: empty; a POD user namespace needs its mappings"
        ));
    }
    if list.len() > MAX_RANGES {
        return Err(format!(
            "{name}: {} ranges, more than the kernel's {MAX_RANGES}",
            list.len()
        ));
    }
    for (i, m) in list.iter().enumerate() {
        let field = |f: &str| format!("{name}[{i}].{f}");
        if m.length == 0 {
            return Err(format!("{}: 0", field("length")));
        }
        if m.end(m.container_id) > NO_ID {
            return Err(format!(
                "{}: {} + length {} passes the last id",
                field("container_id"),
                m.container_id,
                m.length
            ));
        }
        if m.end(m.host_id) > NO_ID {
            return Err(format!(
                "{}: {} + length {} passes the last id",
                field("host_id"),
                m.host_id,
                m.length
            ));
        }
        // The host's root in a pod's namespace would hand the pod the host's files.
        if m.host_id == 0 {
            return Err(format!(
                "{}: maps onto the host's root (id 0)",
                field("host_id")
            ));
        }
        for (j, earlier) in list[..i].iter().enumerate() {
            let inside = |m: &IdMapping| (u64::from(m.container_id), m.end(m.container_id));
            if intersect(inside(m), inside(earlier)) {
                return Err(format!(
                    "{}: overlaps {name}[{j}] inside the container",
                    field("container_id")
                ));
            }
            if intersect(m.host_range(), earlier.host_range()) {
                return Err(format!(
                    "{}: overlaps {name}[{j}] on the host",
                    field("host_id")
                ));
            }
        }
    }
    if map(list, 0).is_none() {
        return Err(format!(
            "{name}: no range maps container id 0, so the container has no root"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn ns(uids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            uids,
            gids: vec![range(0, 65536, 65536)],
        }
    }

    #[test]
    fn the_kubelet_mapping_is_accepted_and_maps_root() {
        let userns = ns(vec![range(0, 65536 * 3, 65536)]);
        userns.check().unwrap();
        assert_eq!(userns.host_root(), (196608, 65536));
        assert_eq!(userns.host_uid(1000), Some(197608));
        assert_eq!(userns.host_uid(65536), None);
        assert_eq!(userns.uid_map(), "0 196608 65536\n");
    }

    #[test]
    fn several_disjoint_ranges_are_accepted() {
        ns(vec![range(0, 100_000, 1000), range(1000, 300_000, 1000)])
            .check()
            .unwrap();
    }

    #[test]
    fn each_bad_mapping_names_its_field() {
        let cases = [
            (vec![], "uids: empty"),
            (vec![range(0, 65536, 0)], "uids[0].length: 0"),
            (
                vec![range(1, 65536, 10)],
                "uids: no range maps container id 0",
            ),
            (
                vec![range(0, 0, 65536)],
                "uids[0].host_id: maps onto the host's root",
            ),
            (
                vec![range(0, u32::MAX - 10, 65536)],
                "uids[0].host_id: 4294967285 + length 65536 passes",
            ),
            (
                vec![range(u32::MAX - 1, 65536, 2)],
                "uids[0].container_id: 4294967294 + length 2 passes",
            ),
            (
                vec![range(0, 65536, 100), range(50, 200_000, 100)],
                "uids[1].container_id: overlaps uids[0] inside",
            ),
            (
                vec![range(0, 65536, 100), range(100, 65600, 100)],
                "uids[1].host_id: overlaps uids[0] on the host",
            ),
        ];
        for (uids, want) in cases {
            let got = ns(uids.clone()).check().unwrap_err();
            assert!(got.starts_with(want), "{uids:?}: {got}");
        }
        let too_many = (0..=MAX_RANGES as u32)
            .map(|i| range(i, 65536 + i, 1))
            .collect();
        assert!(ns(too_many).check().unwrap_err().contains("341 ranges"));
        let no_gids = UserNamespace {
            uids: vec![range(0, 65536, 65536)],
            gids: vec![],
        };
        assert!(no_gids.check().unwrap_err().starts_with("gids: empty"));
    }

    #[test]
    fn overlapping_pods_are_told_apart() {
        let a = ns(vec![range(0, 65536, 65536)]);
        let mut b = ns(vec![range(0, 131072, 65536)]);
        assert_eq!(a.overlaps(&b), Some("gids"));
        b.gids = vec![range(0, 131072, 65536)];
        assert_eq!(a.overlaps(&b), None);
        b.uids = vec![range(0, 131071, 2)];
        assert_eq!(a.overlaps(&b), Some("uids"));
    }
}
