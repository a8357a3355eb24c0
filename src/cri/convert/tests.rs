use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::*;

fn container() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 2,
        }),
        image: Some(cri::ImageSpec {
            image: "sha256:abc".into(),
            ..Default::default()
        }),
        command: vec!["sh".into()],
        args: vec!["-c".into(), "true".into()],
        envs: vec![
            cri::KeyValue {
                key: "A".into(),
                value: "1".into(),
            },
            cri::KeyValue {
                key: "A".into(),
                value: "2".into(),
            },
        ],
        labels: HashMap::from([("k".to_string(), "v".to_string())]),
        tty: true,
        ..Default::default()
    }
}

fn sandbox() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 1,
        }),
        hostname: "web-1".into(),
        ..Default::default()
    }
}

fn message(err: Error) -> String {
    match err {
        Error::InvalidArgument(m) => m,
        other => panic!("not InvalidArgument: {other}"),
    }
}

#[test]
fn a_container_config_converts() {
    let mut c = container();
    let linux = c.linux.get_or_insert_default();
    linux.resources = Some(cri::LinuxContainerResources {
        cpu_quota: -1,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 1000,
        hugepage_limits: vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4,
        }],
        ..Default::default()
    });
    linux.security_context = Some(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        }),
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 3000 }),
        namespace_options: Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Container as i32,
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/var/lib/kubelet/seccomp/p.json".into(),
        }),
        ..Default::default()
    });
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/srv".into(),
        readonly: true,
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    c.devices = vec![cri::Device {
        host_path: "/dev/fuse".into(),
        ..Default::default()
    }];
    let d = ContainerConfig::try_from(&c).expect("converts");
    assert_eq!(
        (d.name.as_str(), d.attempt, d.image.as_str()),
        ("app", 2, "sha256:abc")
    );
    assert_eq!(d.envs, [("A".into(), "1".into()), ("A".into(), "2".into())]);
    assert_eq!(d.labels.get("k").map(String::as_str), Some("v"));
    assert!(d.tty);
    let r = &d.linux.resources;
    assert_eq!(
        (r.cpu_quota, r.memory_limit_in_bytes, r.oom_score_adj),
        (-1, 64 << 20, 1000)
    );
    assert_eq!(r.hugepage_limits[0].page_size, "2MB");
    let sc = &d.linux.security_context;
    assert_eq!(sc.capabilities.add_capabilities, ["NET_ADMIN"]);
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(3000)));
    assert_eq!(sc.namespace_options.pid, NamespaceMode::Container);
    assert_eq!(sc.namespace_options.network, NamespaceMode::Node);
    assert_eq!(sc.namespace_options.ipc, NamespaceMode::Pod);
    assert_eq!(
        sc.seccomp,
        SeccompProfile::Localhost("/var/lib/kubelet/seccomp/p.json".into())
    );
    assert_eq!(d.mounts[0].propagation, MountPropagation::HostToContainer);
    assert!(d.mounts[0].readonly);
    // An empty container path means the host's; empty permissions mean all.
    assert_eq!(d.devices[0].container_path, "/dev/fuse");
    assert_eq!(d.devices[0].permissions, "rwm");
    // The domain config round-trips through the store's serialization.
    let json = serde_json::to_string(&d).expect("serialize");
    assert_eq!(
        serde_json::from_str::<ContainerConfig>(&json).expect("load"),
        d
    );
}

#[test]
fn invalid_container_fields_are_named() {
    type Breaks = fn(&mut cri::ContainerConfig);
    let cases: Vec<(Breaks, &str)> = vec![
        (|c| c.metadata = None, "metadata"),
        (
            |c| c.metadata.get_or_insert_default().name.clear(),
            "metadata.name",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    host_path: "/srv".into(),
                    ..Default::default()
                }]
            },
            "mounts[0].container_path",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/a".into(),
                    host_path: "/srv".into(),
                    propagation: 7,
                    ..Default::default()
                }]
            },
            "mounts[0].propagation",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/a".into(),
                    host_path: "/srv".into(),
                    recursive_read_only: true,
                    ..Default::default()
                }]
            },
            "mounts[0].recursive_read_only",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/a".into(),
                    host_path: "/srv".into(),
                    readonly: true,
                    recursive_read_only: true,
                    propagation: cri::MountPropagation::PropagationBidirectional as i32,
                    ..Default::default()
                }]
            },
            "mounts[0].recursive_read_only",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/a".into(),
                    host_path: "/srv".into(),
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            },
            "mounts[0].host_path",
        ),
        (
            |c| {
                c.mounts = vec![cri::Mount {
                    container_path: "/a".into(),
                    image: Some(cri::ImageSpec {
                        image: "bad\0ref".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            },
            "mounts[0].image.image",
        ),
        (
            |c| {
                c.devices = vec![cri::Device {
                    host_path: "/dev/x".into(),
                    permissions: "rx".into(),
                    ..Default::default()
                }]
            },
            "devices[0].permissions",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().resources = Some(cri::LinuxContainerResources {
                    cpu_quota: -2,
                    ..Default::default()
                })
            },
            "linux.resources.cpu_quota",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().resources = Some(cri::LinuxContainerResources {
                    cpu_shares: -5,
                    ..Default::default()
                })
            },
            "linux.resources.cpu_shares",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().resources = Some(cri::LinuxContainerResources {
                    oom_score_adj: 1001,
                    ..Default::default()
                })
            },
            "linux.resources.oom_score_adj",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().security_context =
                    Some(cri::LinuxContainerSecurityContext {
                        run_as_group: Some(cri::Int64Value { value: 1 }),
                        ..Default::default()
                    })
            },
            "linux.security_context.run_as_group",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().security_context =
                    Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(cri::NamespaceOption {
                            pid: cri::NamespaceMode::Target as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
            },
            "linux.security_context.namespace_options.target_id",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().security_context =
                    Some(cri::LinuxContainerSecurityContext {
                        namespace_options: Some(cri::NamespaceOption {
                            userns_options: Some(cri::UserNamespace {
                                mode: cri::NamespaceMode::Pod as i32,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
            },
            "linux.security_context.namespace_options.userns_options.uids",
        ),
        (
            |c| {
                c.linux.get_or_insert_default().security_context =
                    Some(cri::LinuxContainerSecurityContext {
                        seccomp: Some(cri::SecurityProfile {
                            profile_type: cri::security_profile::ProfileType::Localhost as i32,
                            localhost_ref: "relative.json".into(),
                        }),
                        ..Default::default()
                    })
            },
            "linux.security_context.seccomp.localhost_ref",
        ),
    ];
    for (breaks, field) in cases {
        let mut c = container();
        breaks(&mut c);
        let m = message(ContainerConfig::try_from(&c).unwrap_err());
        assert!(m.starts_with(&format!("{field}:")), "{field}: got {m}");
    }
}

#[test]
#[allow(deprecated)]
fn legacy_seccomp_paths_are_understood() {
    let with_path = |path: &str| {
        let mut c = container();
        c.linux.get_or_insert_default().security_context =
            Some(cri::LinuxContainerSecurityContext {
                seccomp_profile_path: path.into(),
                ..Default::default()
            });
        ContainerConfig::try_from(&c).map(|d| d.linux.security_context.seccomp)
    };
    assert_eq!(with_path("").expect("empty"), SeccompProfile::Unconfined);
    assert_eq!(
        with_path("runtime/default").expect("rd"),
        SeccompProfile::RuntimeDefault
    );
    assert_eq!(
        with_path("localhost//etc/p.json").expect("localhost"),
        SeccompProfile::Localhost("/etc/p.json".into())
    );
    assert!(with_path("bogus").is_err());
}

#[test]
fn a_sandbox_config_converts() {
    let mut s = sandbox();
    s.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.0.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    s.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Udp as i32,
        container_port: 53,
        host_port: 5353,
        host_ip: "127.0.0.1".into(),
    }];
    s.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: "/kubepods/pod1".into(),
        sysctls: HashMap::from([("kernel.shmmax".to_string(), "1024".to_string())]),
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            privileged: true,
            run_as_user: Some(cri::Int64Value { value: 65535 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    // On the host's network the pod has the node's hostname: none of its own.
    s.hostname.clear();
    let d = SandboxConfig::try_from(&s).expect("converts");
    assert_eq!(
        (d.name.as_str(), d.uid.as_str(), d.namespace.as_str()),
        ("web", "uid-1", "default")
    );
    assert_eq!(d.hostname, "");
    assert_eq!(d.dns.options, ["ndots:5"]);
    assert_eq!(d.port_mappings[0].protocol, Protocol::Udp);
    assert_eq!(d.port_mappings[0].host_port, 5353);
    assert_eq!(d.linux.cgroup_parent, "/kubepods/pod1");
    assert_eq!(
        d.linux.sysctls.get("kernel.shmmax").map(String::as_str),
        Some("1024")
    );
    assert!(d.host_network());
    assert!(d.linux.security_context.privileged);
    assert_eq!(d.linux.security_context.run_as_user, Some(65535));
    assert_eq!(d.linux.security_context.seccomp, SeccompProfile::Unconfined);
}

#[test]
fn invalid_sandbox_fields_are_named() {
    let mut s = sandbox();
    s.metadata.get_or_insert_default().uid.clear();
    assert!(message(SandboxConfig::try_from(&s).unwrap_err()).starts_with("metadata.uid:"));
    let mut s = sandbox();
    s.port_mappings = vec![cri::PortMapping {
        container_port: 70000,
        ..Default::default()
    }];
    let m = message(SandboxConfig::try_from(&s).unwrap_err());
    assert!(m.starts_with("port_mappings[0].container_port:"), "{m}");
    let mut s = sandbox();
    assert_eq!(s.hostname, "web-1");
    SandboxConfig::try_from(&s).expect("a hostname in the pod's own network");
    s.linux.get_or_insert_default().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = SandboxConfig::try_from(&s).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let m = message(err);
    assert!(
        m.starts_with("hostname:") && m.contains("host's network"),
        "{m}"
    );
}

#[test]
#[allow(deprecated)]
fn apparmor_selinux_image_and_cdi_fields_are_kept() {
    use crate::domain::config::{AppArmorProfile, SelinuxOptions};
    let with = |sc: cri::LinuxContainerSecurityContext| {
        let mut c = container();
        c.linux.get_or_insert_default().security_context = Some(sc);
        ContainerConfig::try_from(&c).map(|d| d.linux.security_context)
    };
    let profile = |t: cri::security_profile::ProfileType, r: &str| cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.into(),
    };
    use cri::security_profile::ProfileType as T;
    for (sc, want) in [
        (Default::default(), AppArmorProfile::Unset),
        (
            cri::LinuxContainerSecurityContext {
                apparmor: Some(profile(T::Localhost, "localhost/p1")),
                ..Default::default()
            },
            AppArmorProfile::Localhost("p1".into()),
        ),
        (
            cri::LinuxContainerSecurityContext {
                apparmor: Some(profile(T::RuntimeDefault, "")),
                ..Default::default()
            },
            AppArmorProfile::RuntimeDefault,
        ),
        (
            cri::LinuxContainerSecurityContext {
                apparmor_profile: "localhost/p2".into(),
                ..Default::default()
            },
            AppArmorProfile::Localhost("p2".into()),
        ),
        (
            cri::LinuxContainerSecurityContext {
                apparmor_profile: "unconfined".into(),
                ..Default::default()
            },
            AppArmorProfile::Unconfined,
        ),
    ] {
        assert_eq!(with(sc).expect("converts").apparmor, want);
    }
    for (sc, field) in [
        (
            cri::LinuxContainerSecurityContext {
                apparmor_profile: "bogus".into(),
                ..Default::default()
            },
            "linux.security_context.apparmor_profile",
        ),
        (
            cri::LinuxContainerSecurityContext {
                apparmor: Some(profile(T::Localhost, "")),
                ..Default::default()
            },
            "linux.security_context.apparmor.localhost_ref",
        ),
        (
            cri::LinuxContainerSecurityContext {
                selinux_options: Some(cri::SeLinuxOption {
                    r#type: "a:b".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "linux.security_context.selinux_options.type",
        ),
    ] {
        let m = message(with(sc).unwrap_err());
        assert!(m.starts_with(&format!("{field}:")), "{field}: got {m}");
    }
    let sc = with(cri::LinuxContainerSecurityContext {
        selinux_options: Some(cri::SeLinuxOption {
            level: "s0:c1,c2".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        sc.selinux,
        Some(SelinuxOptions {
            level: "s0:c1,c2".into(),
            ..Default::default()
        })
    );

    let mut c = container();
    c.image.as_mut().unwrap().user_specified_image = "busybox:1".into();
    c.cdi_devices = vec![cri::CdiDevice {
        name: "vendor.com/gpu=g0".into(),
    }];
    c.annotations
        .insert("cdi.k8s.io/x".into(), "vendor.com/gpu=g1".into());
    let d = ContainerConfig::try_from(&c).unwrap();
    assert_eq!(d.user_specified_image, "busybox:1");
    assert_eq!(
        d.cdi_devices,
        vec!["vendor.com/gpu=g0", "vendor.com/gpu=g1"]
    );
    c.cdi_devices[0].name = "g0".into();
    let m = message(ContainerConfig::try_from(&c).unwrap_err());
    assert!(m.starts_with("cdi_devices[0].name:"), "{m}");
}

#[test]
fn a_pod_user_namespace_converts_and_node_mode_is_none() {
    let with_userns = |mode: cri::NamespaceMode, ids: Vec<cri::IdMapping>| {
        let mut s = sandbox();
        s.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(cri::UserNamespace {
                        mode: mode as i32,
                        uids: ids.clone(),
                        gids: ids,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        SandboxConfig::try_from(&s)
    };
    let kubelet = vec![cri::IdMapping {
        host_id: 65536 * 5,
        container_id: 0,
        length: 65536,
    }];
    let d = with_userns(cri::NamespaceMode::Pod, kubelet).expect("converts");
    let userns = d.linux.security_context.namespace_options.userns.unwrap();
    assert_eq!(userns.host_root(), (327680, 327680));
    assert_eq!(userns.uids.len(), 1);
    let d = with_userns(cri::NamespaceMode::Node, vec![]).expect("converts");
    assert_eq!(d.linux.security_context.namespace_options.userns, None);
    let err = message(with_userns(cri::NamespaceMode::Container, vec![]).unwrap_err());
    assert!(
        err.starts_with("linux.security_context.namespace_options.userns_options.mode:"),
        "{err}"
    );
}
