//! Mutated CRI requests into a live berthd: pods and containers whose fields are set
//! to hostile values (huge, NUL-carrying, climbing, relative, out of range, unknown
//! enum values). Every refusal must be InvalidArgument, NotFound or
//! FailedPrecondition with a short message naming a field; berthd must not crash,
//! must stay within a stated memory bound, and must still run a pod afterwards.
//!
//! Bounded for CI; `BERTH_FUZZ_ITERATIONS=5000` runs longer, `BERTH_FUZZ_SEED=<n>`
//! replays a run (the seed is printed).

mod common;

use common::pod;
use common::rng::{self, Rng};
use common::world::World;
use k8s_cri::v1 as cri;

/// Growth of berthd's anonymous resident memory allowed over the whole run.
const MAX_RSS_GROWTH_KIB: u64 = 64 * 1024;
/// The longest error message accepted: short enough for any gRPC client.
const MAX_MESSAGE: usize = 4096;

/// The hostile values the fuzzer draws from.
trait Hostile {
    fn string(&mut self) -> String;
    fn int(&mut self) -> i64;
    fn enum_value(&mut self) -> i32;
    fn namespace_options(&mut self) -> cri::NamespaceOption;
    fn profile(&mut self) -> cri::SecurityProfile;
}

impl Hostile for Rng {
    fn string(&mut self) -> String {
        let pool: [&dyn Fn() -> String; 24] = [
            &|| String::new(),
            &|| "a".into(),
            &|| "..".into(),
            &|| "../../../../etc/passwd".into(),
            &|| "/".into(),
            &|| "/dev/zero".into(),
            &|| "/etc/shadow".into(),
            &|| "relative/path".into(),
            &|| "x".repeat(100_000),
            &|| "/".to_string() + &"y/".repeat(3000),
            &|| "nul\0byte".into(),
            &|| "é".repeat(5000),
            &|| "a\nb".into(),
            &|| "-1".into(),
            &|| "0-99999".into(),
            &|| "1,,2".into(),
            &|| "0,".repeat(30_000),
            &|| "kubepods.slice".into(),
            &|| "/kubepods/../../../".into(),
            &|| "localhost/".into(),
            &|| "2MB".into(),
            &|| "memory.high".into(),
            &|| "../memory.high".into(),
            &|| "%s%n%x".into(),
        ];
        pool[self.below(pool.len())]()
    }

    fn int(&mut self) -> i64 {
        let pool = [
            0,
            -1,
            -2,
            1,
            i64::MIN,
            i64::MAX,
            1 << 40,
            65_536,
            4096,
            -1000,
            1001,
        ];
        pool[self.below(pool.len())]
    }

    fn enum_value(&mut self) -> i32 {
        [0, 1, 2, 3, 4, 99, -1][self.below(7)]
    }

    fn namespace_options(&mut self) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: self.enum_value(),
            pid: self.enum_value(),
            ipc: self.enum_value(),
            target_id: self.string(),
            ..Default::default()
        }
    }

    fn profile(&mut self) -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: self.enum_value(),
            localhost_ref: self.string(),
        }
    }
}

fn mutate_pod(rng: &mut Rng, c: &mut cri::PodSandboxConfig) -> &'static str {
    let linux = c.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    match rng.below(16) {
        0 => {
            c.log_directory = rng.string();
            "log_directory"
        }
        1 => {
            c.hostname = rng.string();
            "hostname"
        }
        2 => {
            linux.cgroup_parent = rng.string();
            "cgroup_parent"
        }
        3 => {
            linux.sysctls.insert(rng.string(), rng.string());
            "sysctls"
        }
        4 => {
            sc.run_as_user = Some(cri::Int64Value { value: rng.int() });
            "run_as_user"
        }
        5 => {
            sc.run_as_group = Some(cri::Int64Value { value: rng.int() });
            "run_as_group"
        }
        6 => {
            sc.seccomp = Some(rng.profile());
            "seccomp"
        }
        7 => {
            #[allow(deprecated)]
            {
                sc.seccomp_profile_path = rng.string();
            }
            "seccomp_profile_path"
        }
        8 => {
            sc.namespace_options = Some(rng.namespace_options());
            "namespace_options"
        }
        9 => {
            c.port_mappings.push(cri::PortMapping {
                protocol: rng.enum_value(),
                container_port: rng.int() as i32,
                host_port: rng.int() as i32,
                host_ip: rng.string(),
            });
            "port_mappings"
        }
        10 => {
            c.dns_config = Some(cri::DnsConfig {
                servers: vec![rng.string()],
                searches: vec![rng.string()],
                options: vec![rng.string()],
            });
            "dns_config"
        }
        11 => {
            let m = c.metadata.get_or_insert_with(Default::default);
            m.name = rng.string();
            "metadata.name"
        }
        12 => {
            let m = c.metadata.get_or_insert_with(Default::default);
            m.uid = rng.string();
            "metadata.uid"
        }
        13 => {
            c.annotations.insert(rng.string(), rng.string());
            "annotations"
        }
        14 => {
            sc.supplemental_groups = vec![rng.int()];
            "supplemental_groups"
        }
        _ => {
            linux.resources = Some(cri::LinuxContainerResources {
                cpu_period: rng.int(),
                cpu_quota: rng.int(),
                cpu_shares: rng.int(),
                memory_limit_in_bytes: rng.int(),
                ..Default::default()
            });
            "linux.resources"
        }
    }
}

fn mutate_container(rng: &mut Rng, c: &mut cri::ContainerConfig) -> &'static str {
    let linux = c.linux.get_or_insert_with(Default::default);
    let res = linux.resources.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    match rng.below(22) {
        0 => {
            c.log_path = rng.string();
            "log_path"
        }
        1 => {
            c.mounts.push(cri::Mount {
                container_path: rng.string(),
                host_path: rng.string(),
                propagation: rng.enum_value(),
                readonly: rng.below(2) == 0,
                ..Default::default()
            });
            "mounts"
        }
        2 => {
            c.devices.push(cri::Device {
                container_path: rng.string(),
                host_path: rng.string(),
                permissions: rng.string(),
            });
            "devices"
        }
        3 => {
            c.working_dir = rng.string();
            "working_dir"
        }
        4 => {
            c.envs.push(cri::KeyValue {
                key: rng.string(),
                value: rng.string(),
            });
            "envs"
        }
        5 => {
            res.cpuset_cpus = rng.string();
            "cpuset_cpus"
        }
        6 => {
            res.cpuset_mems = rng.string();
            "cpuset_mems"
        }
        7 => {
            res.cpu_period = rng.int();
            res.cpu_quota = rng.int();
            res.cpu_shares = rng.int();
            "cpu"
        }
        8 => {
            res.memory_limit_in_bytes = rng.int();
            res.memory_swap_limit_in_bytes = rng.int();
            "memory"
        }
        9 => {
            res.oom_score_adj = rng.int();
            "oom_score_adj"
        }
        10 => {
            res.hugepage_limits.push(cri::HugepageLimit {
                page_size: rng.string(),
                limit: rng.int() as u64,
            });
            "hugepage_limits"
        }
        11 => {
            res.unified.insert(rng.string(), rng.string());
            "unified"
        }
        12 => {
            sc.run_as_user = Some(cri::Int64Value { value: rng.int() });
            "run_as_user"
        }
        13 => {
            sc.run_as_username = rng.string();
            "run_as_username"
        }
        14 => {
            sc.run_as_group = Some(cri::Int64Value { value: rng.int() });
            "run_as_group"
        }
        15 => {
            sc.seccomp = Some(rng.profile());
            "seccomp"
        }
        16 => {
            sc.capabilities = Some(cri::Capability {
                add_capabilities: vec![rng.string()],
                drop_capabilities: vec![rng.string()],
                add_ambient_capabilities: vec![rng.string()],
            });
            "capabilities"
        }
        17 => {
            sc.masked_paths = vec![rng.string()];
            sc.readonly_paths = vec![rng.string()];
            "masked_paths"
        }
        18 => {
            sc.namespace_options = Some(rng.namespace_options());
            "namespace_options"
        }
        19 => {
            sc.supplemental_groups = vec![rng.int()];
            sc.supplemental_groups_policy = rng.enum_value();
            "supplemental_groups"
        }
        20 => {
            c.image = Some(cri::ImageSpec {
                image: rng.string(),
                ..Default::default()
            });
            "image"
        }
        _ => {
            let m = c.metadata.get_or_insert_with(Default::default);
            m.name = rng.string();
            "metadata.name"
        }
    }
}

/// A refusal must be one a kubelet can act on, short, and about the request. The
/// runtime's own refusal (Unknown, as containerd answers it) is taken only for
/// what berthd cannot know before runc tries, such as a working directory that is
/// a device in the image; it names runc.
fn check_refusal(what: &str, fields: &[&str], status: &tonic::Status) {
    let allowed = [
        tonic::Code::InvalidArgument,
        tonic::Code::NotFound,
        tonic::Code::FailedPrecondition,
        tonic::Code::AlreadyExists,
    ];
    let runtime_refusal =
        status.code() == tonic::Code::Unknown && status.message().contains("runc create failed");
    assert!(
        allowed.contains(&status.code()) || runtime_refusal,
        "{what} with {fields:?}: {:?}: {}",
        status.code(),
        &status.message()[..status.message().len().min(600)]
    );
    assert!(
        status.message().len() <= MAX_MESSAGE,
        "{what} with {fields:?}: a {} byte message",
        status.message().len()
    );
}

fn iterations(default: usize) -> usize {
    std::env::var("BERTH_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_pods_and_containers_are_refused_cleanly() {
    let Some(w) = World::start().await else {
        return;
    };
    let seed = rng::seed("BERTH_FUZZ_SEED");
    let mut rng = Rng(seed);
    let rss_before = common::anon_rss_kib(w.berthd.pid());
    let pid = w.berthd.pid();

    for i in 0..iterations(40) {
        let mut config = w.pod_config(&format!("fuzz-pod-{i}"));
        let fields: Vec<_> = (0..1 + rng.below(3))
            .map(|_| mutate_pod(&mut rng, &mut config))
            .collect();
        match pod::run_pod(&w.cri, config).await {
            Ok(id) => {
                pod::stop(&w.cri, &id).await.expect("StopPodSandbox");
                pod::remove(&w.cri, &id).await.expect("RemovePodSandbox");
            }
            Err(status) => check_refusal("RunPodSandbox", &fields, &status),
        }
    }

    let pod = w.run_pod("fuzz-containers").await;
    for i in 0..iterations(300) {
        let mut config = w.container_config(&format!("c{i}"), "exec sleep 1000");
        let fields: Vec<_> = (0..1 + rng.below(3))
            .map(|_| mutate_container(&mut rng, &mut config))
            .collect();
        match w.create(&pod, config).await {
            Ok(id) => w.remove(&id).await.expect("RemoveContainer"),
            Err(status) => check_refusal("CreateContainer", &fields, &status),
        }
        let mut resources = cri::LinuxContainerResources::default();
        let mut probe = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let field = mutate_container(&mut rng, &mut probe);
        if let Some(r) = probe.linux.and_then(|l| l.resources) {
            resources = r;
        }
        let update = w
            .cri
            .runtime_client()
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: "no-such-container".into(),
                linux: Some(resources),
                ..Default::default()
            })
            .await;
        if let Err(status) = update {
            check_refusal("UpdateContainerResources", &[field], &status);
        }
    }

    assert_eq!(w.berthd.pid(), pid, "berthd is the same process");
    let rss_after = common::anon_rss_kib(pid);
    assert!(
        rss_after < rss_before + MAX_RSS_GROWTH_KIB,
        "berthd grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still serving: a plain container runs.
    w.run(&pod, "after", "echo still-here").await;
    w.wait_log("fuzz-containers", "after", "still-here").await;
}
