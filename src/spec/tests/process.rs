//! The process: arguments, environment, working directory, user, capabilities.

use super::*;

#[test]
fn command_and_args_merge_the_kubernetes_way() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // command, args, entrypoint, cmd -> process args (None: an error)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a [&'a str]>,
    );
    let cases: [Case; 6] = [
        (
            &["sh"],
            &["-c", "x"],
            &["/entry"],
            &["serve"],
            Some(&["sh", "-c", "x"]),
        ),
        (&["sh"], &[], &["/entry"], &["serve"], Some(&["sh"])),
        (
            &[],
            &["--port=1"],
            &["/entry"],
            &["serve"],
            Some(&["/entry", "--port=1"]),
        ),
        (
            &[],
            &[],
            &["/entry"],
            &["serve"],
            Some(&["/entry", "serve"]),
        ),
        (&[], &[], &[""], &["serve"], Some(&["serve"])),
        (&[], &[], &[], &[], None),
    ];
    for (command, args, entrypoint, cmd, want) in cases {
        let mut f = Fixture::new();
        f.config.command = s(command);
        f.config.args = s(args);
        f.image.entrypoint = s(entrypoint);
        f.image.cmd = s(cmd);
        match want {
            Some(want) => assert_eq!(f.container()["process"]["args"], json!(want)),
            None => {
                let err = f.try_container().unwrap_err();
                assert!(err.to_string().contains("no command specified"), "{err}");
            }
        }
    }
}

#[test]
fn cri_env_overrides_image_env_and_hostname_is_set() {
    let mut f = Fixture::new();
    f.config.envs = vec![("A".into(), "cri".into()), ("B".into(), "x=y".into())];
    let spec = f.container();
    assert_eq!(
        spec["process"]["env"],
        json!(["PATH=/image/bin", "HOSTNAME=web-1", "A=cri", "B=x=y"])
    );
    // No image PATH: the default; no pod hostname: the node's.
    f.image.env.clear();
    f.sandbox.hostname.clear();
    let env = strings(&f.container()["process"]["env"]);
    assert!(env.contains(&"HOSTNAME=node-a".to_string()), "{env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")),
        "{env:?}"
    );
}

#[test]
fn working_dir_prefers_cri_then_image() {
    let mut f = Fixture::new();
    assert_eq!(f.container()["process"]["cwd"], "/");
    f.image.working_dir = "/srv".into();
    assert_eq!(f.container()["process"]["cwd"], "/srv");
    f.config.working_dir = "/work".into();
    assert_eq!(f.container()["process"]["cwd"], "/work");
}

/// uid, gid, additional gids.
type UserIds = (u64, u64, Vec<u64>);

fn user_of(f: &Fixture) -> Result<UserIds, SpecError> {
    let spec = serde_json::to_value(f.try_container()?).expect("json");
    let u = &spec["process"]["user"];
    let gids = u["additionalGids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    Ok((
        u["uid"].as_u64().unwrap_or(u64::MAX),
        u["gid"].as_u64().unwrap_or(u64::MAX),
        gids,
    ))
}

#[test]
fn image_users_resolve_against_the_image_files() {
    let cases: [(&str, UserIds); 7] = [
        ("", (0, 0, vec![0])),
        ("1000", (1000, 1000, vec![1000, 50, 10])),
        ("app", (1000, 1000, vec![1000, 50, 10])),
        ("app:staff", (1000, 50, vec![50, 10])),
        ("1000:7", (1000, 7, vec![7, 50, 10])),
        // A uid the image does not know runs with gid 0, as in containerd.
        ("4242", (4242, 0, vec![0])),
        ("nobody", (65534, 65534, vec![65534])),
    ];
    for (user, want) in cases {
        let mut f = Fixture::new();
        f.image.user = user.into();
        assert_eq!(user_of(&f).expect(user), want, "USER {user:?}");
    }
}

#[test]
fn unknown_users_and_groups_are_named_in_the_error() {
    let mut f = Fixture::new();
    f.image.user = "ghost".into();
    let err = user_of(&f).unwrap_err();
    assert!(matches!(err, SpecError::InvalidArgument(_)));
    assert!(err.to_string().contains("\"ghost\""), "{err}");
    f.image.user = "app:ghosts".into();
    assert!(user_of(&f).unwrap_err().to_string().contains("\"ghosts\""));
}

#[test]
fn cri_user_wins_over_the_image_and_adds_supplemental_groups() {
    let mut f = Fixture::new();
    f.image.user = "nobody".into();
    let sc = &mut f.config.linux.security_context;
    sc.run_as_user = Some(1000);
    sc.run_as_group = Some(3000);
    sc.supplemental_groups = vec![4000, 50];
    assert_eq!(
        user_of(&f).expect("user"),
        (1000, 3000, vec![3000, 50, 10, 4000])
    );
    let sc = &mut f.config.linux.security_context;
    sc.run_as_username = "app".into();
    sc.run_as_group = None;
    sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict;
    assert_eq!(
        user_of(&f).expect("user"),
        (1000, 1000, vec![1000, 4000, 50])
    );
}

#[test]
fn capabilities_default_add_drop_and_all() {
    let mut f = Fixture::new();
    let default = caps(&f);
    assert_eq!(default.len(), 14);
    assert!(default.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!default.contains(&"CAP_SYS_ADMIN".to_string()));
    assert!(f.container()["process"]["capabilities"]["inheritable"].is_null());

    f.config.linux.security_context.capabilities = Capabilities {
        add_capabilities: vec!["NET_ADMIN".into(), "cap_sys_time".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    };
    let c = caps(&f);
    assert_eq!(c.len(), 15);
    assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && c.contains(&"CAP_SYS_TIME".to_string()));
    assert!(!c.contains(&"CAP_CHOWN".to_string()));

    let requested = &mut f.config.linux.security_context.capabilities;
    requested.add_capabilities = vec!["ALL".into()];
    requested.drop_capabilities = vec!["CHOWN".into()];
    assert_eq!(caps(&f).len(), 40);
    // "ALL" is all that berthd holds: a host that withholds CAP_SYS_RESOURCE
    // (bit 24) from root gets containers without it, not a failed create.
    f.host.capabilities &= !(1 << 24);
    let without = caps(&f);
    assert_eq!(without.len(), 39);
    assert!(!without.contains(&"CAP_SYS_RESOURCE".to_string()));

    let requested = &mut f.config.linux.security_context.capabilities;
    requested.add_capabilities = vec!["NET_RAW".into()];
    requested.drop_capabilities = vec!["all".into()];
    assert_eq!(caps(&f), vec!["CAP_NET_RAW"]);

    f.config
        .linux
        .security_context
        .capabilities
        .add_capabilities = vec!["FLY".into()];
    let err = f.try_container().unwrap_err();
    assert!(err.to_string().contains("\"FLY\""), "{err}");
}

#[test]
fn ambient_capabilities_are_inheritable_too() {
    let mut f = Fixture::new();
    f.config
        .linux
        .security_context
        .capabilities
        .add_ambient_capabilities = vec!["NET_ADMIN".into()];
    let spec = f.container();
    let c = &spec["process"]["capabilities"];
    assert_eq!(c["ambient"], json!(["CAP_NET_ADMIN"]));
    assert_eq!(c["inheritable"], json!(["CAP_NET_ADMIN"]));
    assert!(strings(&c["permitted"]).contains(&"CAP_NET_ADMIN".to_string()));
}
