//! One network on one interface of one pod, and the plugin chain run over it: ADD
//! in order with each result passed on as the next plugin's prevResult, DEL in
//! reverse, CHECK in order against the cached result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::NetworkError;
use super::conf::NetworkList;
use super::error::Call;
use super::plugin::{self, Env};

/// How long one plugin may run before it is killed. Generous: bridge and portmap
/// take tens of milliseconds, but iptables can wait seconds for its lock on a busy
/// node.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What every plugin call of one network on one interface shares.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a NetworkList,
    pub ifname: &'a str,
    pub pod_id: &'a str,
    /// Empty when the namespace is gone (DEL only).
    pub netns: &'a Path,
    pub cni_args: &'a str,
    pub capability_args: &'a Map<String, Value>,
    pub bin_dirs: &'a [PathBuf],
}

impl Attachment<'_> {
    /// Runs the chain's ADD; the last plugin's result is the network's result.
    pub async fn add(&self) -> Result<Value, NetworkError> {
        let mut prev: Option<Value> = None;
        for index in 0..self.network.plugins.len() {
            let (call, out) = self.invoke("ADD", index, prev.as_ref()).await?;
            prev = Some(out.ok_or_else(|| NetworkError::BadResult {
                call: Box::new(call),
                reason: "ADD printed no result".into(),
            })?);
        }
        // parse() refuses an empty plugin list, so prev is set; Null is unreachable.
        Ok(prev.unwrap_or(Value::Null))
    }

    /// Runs the chain's DEL, last plugin first. `prev_result` is the cached ADD
    /// result, passed on only where the spec version has DEL take one.
    pub async fn del(&self, prev_result: Option<&Value>) -> Result<(), NetworkError> {
        let prev = prev_result.filter(|_| self.network.del_takes_prev_result());
        for index in (0..self.network.plugins.len()).rev() {
            self.invoke("DEL", index, prev).await?;
        }
        Ok(())
    }

    /// Runs the chain's CHECK against the cached ADD result; skipped for spec
    /// versions without CHECK and lists with `disableCheck`.
    pub async fn check(&self, prev_result: &Value) -> Result<(), NetworkError> {
        if !self.network.supports_check() {
            return Ok(());
        }
        for index in 0..self.network.plugins.len() {
            self.invoke("CHECK", index, Some(prev_result)).await?;
        }
        Ok(())
    }

    /// Every plugin binary of the network, or which one is missing.
    pub fn binaries(network: &NetworkList, bin_dirs: &[PathBuf]) -> Result<(), NetworkError> {
        for index in 0..network.plugins.len() {
            find_binary(network, index, bin_dirs)?;
        }
        Ok(())
    }

    async fn invoke(
        &self,
        command: &'static str,
        index: usize,
        prev: Option<&Value>,
    ) -> Result<(Call, Option<Value>), NetworkError> {
        let call = Call {
            command,
            network: self.network.name.clone(),
            plugin: self.network.plugin_type(index).to_string(),
            pod_id: self.pod_id.to_string(),
        };
        let binary = find_binary(self.network, index, self.bin_dirs)?;
        let config = self
            .network
            .plugin_config(index, prev, self.capability_args);
        let env = Env {
            command,
            container_id: self.pod_id,
            netns: self.netns,
            ifname: self.ifname,
            args: self.cni_args,
            bin_dirs: self.bin_dirs,
        };
        let started = std::time::Instant::now();
        let out = plugin::run(&call, &binary, &env, &config, PLUGIN_TIMEOUT).await;
        crate::metrics::cni_call(&call.plugin, command, out.is_ok(), started.elapsed());
        let out = out?;
        tracing::debug!(
            command,
            network = %call.network,
            plugin = %call.plugin,
            ifname = self.ifname,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CNI plugin done"
        );
        Ok((call, out))
    }
}

fn find_binary(
    network: &NetworkList,
    index: usize,
    bin_dirs: &[PathBuf],
) -> Result<PathBuf, NetworkError> {
    let plugin = network.plugin_type(index);
    plugin::find(bin_dirs, plugin).ok_or_else(|| NetworkError::PluginNotFound {
        network: network.name.clone(),
        plugin: plugin.to_string(),
        dirs: bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}
