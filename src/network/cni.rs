//! The CNI caller berthd uses: a pod gets `lo` from the loopback plugin and `eth0`
//! from the pod network (the first config in the conf dir, or the built-in
//! bridge). Each ADD is cached so DEL and CHECK replay it exactly, and a failed ADD
//! is deleted again before its error returns, so no IP or veth leaks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::NetworkError;
use super::attachment::Attachment;
use super::cache::{Cached, ResultCache};
use super::conf::{self, NetworkList};
use super::error::Call;
use super::netns;
use super::pod::PodNetwork;
use super::ranges::PodCidrs;
use super::result::{self, Attached};

const LOOPBACK_IF: &str = "lo";
const POD_IF: &str = "eth0";
/// DEL must succeed for IPAM to release the address, and its failures are mostly
/// passing (iptables lock, a busy netlink): try a few times before giving up.
const DEL_ATTEMPTS: u32 = 3;
const DEL_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache: ResultCache,
    /// The node's pod CIDRs, for plugins declaring `ipRanges`; shared by clones.
    pod_cidrs: Arc<RwLock<Option<PodCidrs>>>,
}

impl Cni {
    /// `conf_dir` is read again on every ADD, since the kubelet or an installer may
    /// drop a config there at any time; `bin_dirs` are searched in order;
    /// `cache_dir` keeps each pod's ADD across berthd restarts.
    pub fn new(conf_dir: &Path, bin_dirs: &[PathBuf], cache_dir: &Path) -> Cni {
        Cni {
            conf_dir: conf_dir.to_path_buf(),
            bin_dirs: bin_dirs.to_vec(),
            cache: ResultCache::new(cache_dir),
            pod_cidrs: Arc::default(),
        }
    }

    /// From now on ADDs offer `cidrs` as the `ipRanges` capability.
    pub fn set_pod_cidrs(&self, cidrs: PodCidrs) {
        *self.pod_cidrs.write().unwrap_or_else(|e| e.into_inner()) = Some(cidrs);
    }

    pub fn pod_cidrs(&self) -> Option<PodCidrs> {
        self.pod_cidrs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pod's capability arguments and the node's: `ipRanges`.
    fn capability_args(&self, pod: &PodNetwork<'_>) -> serde_json::Map<String, serde_json::Value> {
        let mut args = pod.capability_args();
        if let Some(cidrs) = self.pod_cidrs() {
            args.insert("ipRanges".into(), cidrs.capability_arg());
        }
        args
    }

    /// Ok when an ADD could run: the config parses and every plugin it names, and
    /// the loopback plugin, is installed. The error says why not.
    pub fn status(&self) -> Result<(), NetworkError> {
        Attachment::binaries(&conf::loopback_network(), &self.bin_dirs)?;
        Attachment::binaries(&conf::load(&self.conf_dir)?, &self.bin_dirs)
    }

    /// Attaches the pod: `lo` up beside the pod network on eth0. If this future is
    /// dropped midway (a cancelled RunPodSandbox), the running plugin is killed and
    /// nothing is undone: the caller then owes the pod a [`Cni::del`].
    #[tracing::instrument(skip_all, fields(pod_id = pod.pod_id))]
    pub async fn add(&self, pod: &PodNetwork<'_>) -> Result<Attached, NetworkError> {
        let started = Instant::now();
        let network = conf::load(&self.conf_dir)?;
        let loopback = conf::loopback_network();
        // A missing binary fails here, before any plugin has set anything up.
        Attachment::binaries(&loopback, &self.bin_dirs)?;
        Attachment::binaries(&network, &self.bin_dirs)?;

        let attached = async {
            // `lo` and eth0 are set up side by side: neither plugin needs the
            // other's interface, and each is a process start of its own. Both
            // run to their end, so a failure of one is undone with everything
            // the other did.
            let (lo, eth) = tokio::join!(
                self.attach(&loopback, LOOPBACK_IF, pod),
                self.attach(&network, POD_IF, pod)
            );
            let result = eth?;
            lo?;
            let bad_result = |reason: String| NetworkError::BadResult {
                call: Box::new(Call {
                    command: "ADD",
                    network: network.name.clone(),
                    plugin: network.plugin_type(network.plugins.len() - 1).to_string(),
                    pod_id: pod.pod_id.to_string(),
                }),
                reason,
            };
            let ips = result::sandbox_ips(&result, POD_IF).map_err(bad_result)?;
            if ips.is_empty() {
                return Err(bad_result(format!("no IP address on {POD_IF}")));
            }
            Ok(Attached { ips, result })
        }
        .await;

        match attached {
            Ok(attached) => {
                tracing::info!(
                    network = %network.name,
                    ips = ?attached.ips,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pod network attached"
                );
                Ok(attached)
            }
            Err(err) => {
                // Whatever did succeed holds an IP, a veth, iptables rules: undo it
                // in reverse, then report the ADD's own error.
                let undo = [(&network, POD_IF), (&loopback, LOOPBACK_IF)];
                for (net, ifname) in undo {
                    if let Err(e) = self.detach(|| Ok(net.clone()), ifname, pod).await {
                        tracing::warn!(error = %e, ifname, "undoing a failed CNI ADD");
                    }
                }
                Err(err)
            }
        }
    }

    /// Detaches the pod: eth0's network beside `lo`'s, each to its end.
    /// Idempotent: a pod never added or already deleted is fine, and so is a
    /// namespace that is gone (DEL still runs, so IPAM releases the address).
    #[tracing::instrument(skip_all, fields(pod_id = pod.pod_id))]
    pub async fn del(&self, pod: &PodNetwork<'_>) -> Result<(), NetworkError> {
        // Today's config is only for a pod without a cache entry: never added, or
        // an ADD cut short by a crash whose allocations DEL must still release.
        let (pod_net, lo) = tokio::join!(
            self.detach(|| conf::load(&self.conf_dir), POD_IF, pod),
            self.detach(|| Ok(conf::loopback_network()), LOOPBACK_IF, pod)
        );
        pod_net.and(lo)
    }

    /// Asks each plugin whether the pod's network is still as ADD left it.
    #[tracing::instrument(skip_all, fields(pod_id = pod.pod_id))]
    pub async fn check(&self, pod: &PodNetwork<'_>) -> Result<(), NetworkError> {
        for ifname in [LOOPBACK_IF, POD_IF] {
            let cached = self.cache.load(pod.pod_id, ifname).await?.ok_or_else(|| {
                NetworkError::NotAttached {
                    pod_id: pod.pod_id.to_string(),
                    ifname: ifname.to_string(),
                }
            })?;
            let attachment = Attachment {
                network: &cached.network,
                ifname,
                pod_id: pod.pod_id,
                netns: pod.netns,
                cni_args: &cached.cni_args,
                capability_args: &cached.capability_args,
                bin_dirs: &self.bin_dirs,
            };
            attachment.check(&cached.result).await?;
        }
        Ok(())
    }

    /// ADD of one network, recorded in the cache before it counts as done.
    async fn attach(
        &self,
        network: &NetworkList,
        ifname: &str,
        pod: &PodNetwork<'_>,
    ) -> Result<serde_json::Value, NetworkError> {
        let cni_args = pod.cni_args();
        let capability_args = self.capability_args(pod);
        let attachment = Attachment {
            network,
            ifname,
            pod_id: pod.pod_id,
            netns: pod.netns,
            cni_args: &cni_args,
            capability_args: &capability_args,
            bin_dirs: &self.bin_dirs,
        };
        let result = attachment.add().await?;
        let cached = Cached {
            network: network.clone(),
            cni_args,
            capability_args,
            result,
        };
        self.cache.store(pod.pod_id, ifname, &cached).await?;
        Ok(cached.result)
    }

    /// DEL of one network: as cached at ADD when there is an entry, else with
    /// `fallback`'s config and no prevResult. Retried; the entry goes on success.
    async fn detach(
        &self,
        fallback: impl FnOnce() -> Result<NetworkList, NetworkError>,
        ifname: &str,
        pod: &PodNetwork<'_>,
    ) -> Result<(), NetworkError> {
        let cached = match self.cache.load(pod.pod_id, ifname).await? {
            Some(cached) => cached,
            None => Cached {
                network: fallback()?,
                cni_args: pod.cni_args(),
                capability_args: self.capability_args(pod),
                result: serde_json::Value::Null,
            },
        };
        let prev_result = Some(&cached.result).filter(|r| !r.is_null());
        // The spec wants an empty CNI_NETNS once the namespace is gone; plugins
        // then skip the in-namespace part and still release the IP.
        let netns = if netns::is_mounted(pod.netns) {
            pod.netns
        } else {
            Path::new("")
        };
        let attachment = Attachment {
            network: &cached.network,
            ifname,
            pod_id: pod.pod_id,
            netns,
            cni_args: &cached.cni_args,
            capability_args: &cached.capability_args,
            bin_dirs: &self.bin_dirs,
        };
        let mut attempt = 1;
        while let Err(e) = attachment.del(prev_result).await {
            if attempt >= DEL_ATTEMPTS {
                return Err(e);
            }
            tracing::warn!(error = %e, attempt, ifname, "CNI DEL failed, retrying");
            tokio::time::sleep(DEL_BACKOFF * attempt).await;
            attempt += 1;
        }
        self.cache.remove(pod.pod_id, ifname).await
    }
}

/// The caller's logic with fake plugins (shell scripts logging each call), no root.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        cni: Cni,
    }

    /// What a fake plugin's successful ADD prints.
    const ADD_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
        "ips":[{"interface":0,"address":"10.1.2.3/24"}]}"#;

    /// A plugin that logs `COMMAND IFNAME NAME prev|none` and prints a result
    /// (ADD) or, when `fail_add`, a CNI error object.
    fn fake_plugin(dir: &Path, name: &str, fail_add: bool) {
        let log = dir.join("calls.log");
        let add = if fail_add {
            r#"echo '{"cniVersion":"1.0.0","code":100,"msg":"fake refused","details":"by test"}'; exit 1"#.to_string()
        } else {
            format!("echo '{ADD_RESULT}'")
        };
        let script = format!(
            "#!/bin/sh\nconf=$(cat)\ncase \"$conf\" in *prevResult*) p=prev;; *) p=none;; esac\n\
             echo \"$CNI_COMMAND $CNI_IFNAME {name} $p\" >> {log}\n\
             if [ \"$CNI_COMMAND\" = ADD ]; then {add}; fi\n",
            log = log.display()
        );
        install_plugin(dir, name, &script);
    }

    fn install_plugin(dir: &Path, name: &str, script: &str) {
        let path = dir.join("bin").join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn fixture(plugins: &[(&str, bool)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fake_plugin(dir.path(), "loopback", false);
        for (name, fail) in plugins {
            fake_plugin(dir.path(), name, *fail);
        }
        let types: Vec<_> = plugins.iter().map(|(n, _)| *n).collect();
        chained(dir, &types)
    }

    /// The fixture of the plugins installed in `dir`, with a conflist chaining
    /// `types`.
    fn chained(dir: tempfile::TempDir, types: &[&str]) -> Fixture {
        let plugins: Vec<_> = types.iter().map(|t| json!({"type": t})).collect();
        let conf = json!({"cniVersion": "1.0.0", "name": "fake", "plugins": plugins});
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        std::fs::write(dir.path().join("net.d/10-fake.conflist"), conf.to_string()).unwrap();
        let cni = Cni::new(
            &dir.path().join("net.d"),
            &[dir.path().join("bin")],
            &dir.path().join("cache"),
        );
        Fixture { dir, cni }
    }

    impl Fixture {
        fn calls(&self) -> Vec<String> {
            let log =
                std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
            let calls = log.lines().map(str::to_string).collect();
            let _ = std::fs::remove_file(self.dir.path().join("calls.log"));
            calls
        }

        /// The calls on eth0 and on lo, each in its order: the two interfaces
        /// are set up side by side, so only the order within one is fixed.
        fn calls_per_interface(&self) -> (Vec<String>, Vec<String>) {
            self.calls().into_iter().partition(|c| c.contains(" eth0 "))
        }
    }

    /// Plugins that each wait (up to 5 s) for the other interface's plugin to
    /// have started before they answer: only calls run side by side finish
    /// at once; one after the other, the first fails after its wait.
    fn rendezvous_fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let marks = dir.path().join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        for (name, other) in [("loopback", "eth0"), ("one", "lo")] {
            let script = format!(
                "#!/bin/sh\ncat >/dev/null\ntouch {marks}/$CNI_COMMAND-$CNI_IFNAME\n\
                 i=0; while [ ! -e {marks}/$CNI_COMMAND-{other} ]; do\n\
                 i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then echo '{ADD_RESULT}'; fi\n",
                marks = marks.display()
            );
            install_plugin(dir.path(), name, &script);
        }
        chained(dir, &["one"])
    }

    fn pod() -> PodNetwork<'static> {
        PodNetwork {
            pod_id: "p1",
            netns: Path::new("/nonexistent/netns/p1"),
            name: "web",
            namespace: "default",
            uid: "u1",
            port_mappings: &[],
            bandwidth: None,
            dns: None,
        }
    }

    #[tokio::test]
    async fn add_chains_and_del_replays_the_cache_in_reverse() {
        let f = fixture(&[("one", false), ("two", false)]);
        let attached = f.cni.add(&pod()).await.unwrap();
        assert_eq!(
            attached.ips,
            vec!["10.1.2.3".parse::<std::net::IpAddr>().unwrap()]
        );
        let (eth0, lo) = f.calls_per_interface();
        assert_eq!(eth0, ["ADD eth0 one none", "ADD eth0 two prev"]);
        assert_eq!(lo, ["ADD lo loopback none"]);

        f.cni.check(&pod()).await.unwrap();
        // lo's network is spec 0.3.1: no CHECK there.
        assert_eq!(f.calls(), ["CHECK eth0 one prev", "CHECK eth0 two prev"]);

        // After a restart (a new Cni on the same dirs), and with the config gone,
        // DEL still runs what ADD ran.
        std::fs::remove_dir_all(f.dir.path().join("net.d")).unwrap();
        let restarted = Cni::new(
            &f.dir.path().join("net.d"),
            &[f.dir.path().join("bin")],
            &f.dir.path().join("cache"),
        );
        restarted.del(&pod()).await.unwrap();
        let (eth0, lo) = f.calls_per_interface();
        assert_eq!(eth0, ["DEL eth0 two prev", "DEL eth0 one prev"]);
        assert_eq!(lo, ["DEL lo loopback none"]);
        assert!(matches!(
            f.cni.check(&pod()).await,
            Err(NetworkError::NotAttached { .. })
        ));

        // A second DEL runs again from today's config (the built-in one now).
        fake_plugin(f.dir.path(), "bridge", false);
        fake_plugin(f.dir.path(), "portmap", false);
        f.cni.del(&pod()).await.unwrap();
        let (eth0, lo) = f.calls_per_interface();
        assert_eq!(eth0, ["DEL eth0 portmap none", "DEL eth0 bridge none"]);
        assert_eq!(lo, ["DEL lo loopback none"]);
    }

    #[tokio::test]
    async fn failed_add_is_undone_and_reports_the_plugin() {
        let f = fixture(&[("one", false), ("broken", true)]);
        let err = f.cni.add(&pod()).await.unwrap_err().to_string();
        assert!(
            err.contains("fake refused (by test)") && err.contains("\"broken\""),
            "{err}"
        );
        let (eth0, lo) = f.calls_per_interface();
        assert_eq!(
            eth0,
            [
                "ADD eth0 one none",
                "ADD eth0 broken prev",
                "DEL eth0 broken none",
                "DEL eth0 one none",
            ]
        );
        assert_eq!(lo, ["ADD lo loopback none", "DEL lo loopback none"]);
        assert!(matches!(
            f.cni.check(&pod()).await,
            Err(NetworkError::NotAttached { .. })
        ));
    }

    #[tokio::test]
    async fn lo_and_eth0_are_set_up_and_torn_down_side_by_side() {
        let f = rendezvous_fixture();
        let started = std::time::Instant::now();
        f.cni.add(&pod()).await.unwrap();
        f.cni.del(&pod()).await.unwrap();
        // Each plugin waited for the other's start; one after the other, the
        // first would have given up after 5 s and failed the call.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn status_and_add_name_a_missing_plugin() {
        let f = fixture(&[("one", false)]);
        f.cni.status().unwrap();
        std::fs::remove_file(f.dir.path().join("bin/one")).unwrap();
        for err in [
            f.cni.status().unwrap_err(),
            f.cni.add(&pod()).await.unwrap_err(),
        ] {
            assert!(
                matches!(&err, NetworkError::PluginNotFound { plugin, .. } if plugin == "one"),
                "{err:?}"
            );
        }
        assert!(f.calls().is_empty());
    }
}
