//! Each pod's ADD, kept on disk (`<cache_dir>/<pod-id>-<ifname>.json`): the network
//! config it ran with, its CNI_ARGS and capability arguments, and the final result.
//! DEL and CHECK replay exactly that, with the result as prevResult, even after a
//! berthd restart or after the conf dir changed under the pod.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::NetworkError;
use super::conf::{self, NetworkList};

const KIND: &str = "berthCniResultV1";

/// One ADD, as DEL and CHECK need it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    /// The network config list as it was at ADD.
    pub network: NetworkList,
    pub cni_args: String,
    pub capability_args: Map<String, Value>,
    /// The final result, prevResult of DEL and CHECK.
    pub result: Value,
}

/// The file format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    kind: String,
    network: Value,
    cni_args: String,
    capability_args: Map<String, Value>,
    result: Value,
}

#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub fn new(dir: &Path) -> ResultCache {
        ResultCache {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, pod_id: &str, ifname: &str) -> PathBuf {
        // Pod ids are hex from berth, but this is a file name: keep it one.
        let safe: String = pod_id
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        self.dir.join(format!("{safe}-{ifname}.json"))
    }

    /// The entry, or None when there is none. An unreadable entry is reported and
    /// treated as missing: DEL must still be able to run from the current config.
    pub async fn load(&self, pod_id: &str, ifname: &str) -> Result<Option<Cached>, NetworkError> {
        let path = self.path(pod_id, ifname);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NetworkError::Cache { path, source }),
        };
        let entry = serde_json::from_slice::<Entry>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|entry| {
                if entry.kind != KIND {
                    return Err(format!("unknown kind {:?}", entry.kind));
                }
                Ok(Cached {
                    network: conf::parse(entry.network)?,
                    cni_args: entry.cni_args,
                    capability_args: entry.capability_args,
                    result: entry.result,
                })
            });
        match entry {
            Ok(cached) => Ok(Some(cached)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring unreadable CNI cache entry");
                Ok(None)
            }
        }
    }

    /// Writes the entry atomically (temp file, fsync, rename), so a crash leaves the
    /// old entry or the new one, never half of one.
    pub async fn store(
        &self,
        pod_id: &str,
        ifname: &str,
        cached: &Cached,
    ) -> Result<(), NetworkError> {
        let path = self.path(pod_id, ifname);
        let fail = |source: io::Error| NetworkError::Cache {
            path: path.clone(),
            source,
        };
        let entry = Entry {
            kind: KIND.into(),
            network: cached.network.raw.clone(),
            cni_args: cached.cni_args.clone(),
            capability_args: cached.capability_args.clone(),
            result: cached.result.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| fail(io::Error::other(e)))?;
        tokio::fs::create_dir_all(&self.dir).await.map_err(fail)?;
        let tmp = path.with_extension("json.tmp");
        let write = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(fail(e));
        }
        Ok(())
    }

    /// Forgets a pod's entry; a missing one is fine.
    pub async fn remove(&self, pod_id: &str, ifname: &str) -> Result<(), NetworkError> {
        let path = self.path(pod_id, ifname);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::Cache { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn entries_round_trip_and_go_away() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(&dir.path().join("results"));
        assert_eq!(cache.load("p1", "eth0").await.unwrap(), None);
        let entry = Cached {
            network: conf::loopback_network(),
            cni_args: "IgnoreUnknown=1".into(),
            capability_args: Map::new(),
            result: json!({"ips": []}),
        };
        cache.store("p1", "eth0", &entry).await.unwrap();
        assert_eq!(cache.load("p1", "eth0").await.unwrap(), Some(entry));
        assert_eq!(cache.load("p1", "lo").await.unwrap(), None);
        cache.remove("p1", "eth0").await.unwrap();
        cache.remove("p1", "eth0").await.unwrap();
        assert_eq!(cache.load("p1", "eth0").await.unwrap(), None);
    }

    #[tokio::test]
    async fn corrupt_entries_read_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        std::fs::write(dir.path().join("p1-eth0.json"), "{truncated").unwrap();
        assert_eq!(cache.load("p1", "eth0").await.unwrap(), None);
        let bad_network = json!({"kind": KIND, "network": {"name": "n"}, "cniArgs": "",
                                 "capabilityArgs": {}, "result": {}});
        std::fs::write(dir.path().join("p1-lo.json"), bad_network.to_string()).unwrap();
        assert_eq!(cache.load("p1", "lo").await.unwrap(), None);
    }
}
