//! AppArmor and SELinux in the generated specs, on a host with both LSMs and on
//! one with neither (this one), through the injected `LsmFacts`.

use super::*;
use crate::domain::config::{AppArmorProfile, SelinuxOptions};
use crate::error::Error;
use crate::spec::lsm::check_apparmor;

const BOTH: LsmFacts = LsmFacts {
    apparmor: true,
    selinux: true,
};

fn with_lsm(lsm: LsmFacts) -> Fixture {
    let mut f = Fixture::new();
    f.host.lsm = lsm;
    f
}

fn level(level: &str) -> Option<SelinuxOptions> {
    Some(SelinuxOptions {
        level: level.into(),
        ..Default::default()
    })
}

#[test]
fn apparmor_profiles_map_as_in_containerd() {
    let mut f = with_lsm(BOTH);
    for (asked, privileged, profile) in [
        (
            AppArmorProfile::RuntimeDefault,
            false,
            json!("berth-default"),
        ),
        (
            AppArmorProfile::Localhost("my-prof".into()),
            false,
            json!("my-prof"),
        ),
        (
            AppArmorProfile::Localhost("my-prof".into()),
            true,
            json!("my-prof"),
        ),
        (AppArmorProfile::Unconfined, false, Value::Null),
        (AppArmorProfile::RuntimeDefault, true, Value::Null),
        // berth loads no default profile, so nothing asked means unconfined.
        (AppArmorProfile::Unset, false, Value::Null),
    ] {
        f.sandbox.linux.security_context.privileged = privileged;
        f.config.linux.security_context.privileged = privileged;
        f.config.linux.security_context.apparmor = asked.clone();
        let spec = f.container();
        assert_eq!(spec["process"]["apparmorProfile"], profile, "{asked:?}");
    }
    f.sandbox.linux.security_context.apparmor = AppArmorProfile::RuntimeDefault;
    assert_eq!(
        f.sandbox(None)["process"]["apparmorProfile"],
        "berth-default"
    );
}

#[test]
fn without_the_lsms_nothing_is_applied_and_nothing_refused() {
    let mut f = with_lsm(LsmFacts::default());
    f.config.linux.security_context.apparmor = AppArmorProfile::Localhost("my-prof".into());
    f.config.linux.security_context.selinux = level("s0:c1,c2");
    f.sandbox.linux.security_context.apparmor = AppArmorProfile::RuntimeDefault;
    f.sandbox.linux.security_context.selinux = level("s0:c1,c2");
    for spec in [f.container(), f.sandbox(None)] {
        assert_eq!(spec["process"]["apparmorProfile"], Value::Null);
        assert_eq!(spec["process"]["selinuxLabel"], Value::Null);
        assert_eq!(spec["linux"]["mountLabel"], Value::Null);
    }
    let refuse = |_: &str| -> io::Result<bool> { Ok(false) };
    let sc = &f.config.linux.security_context;
    check_apparmor("f", &sc.apparmor, false, LsmFacts::default(), &refuse).unwrap();
}

#[test]
fn selinux_labels_take_the_containers_parts_then_the_pods_then_the_defaults() {
    let mut f = with_lsm(BOTH);
    f.sandbox.linux.security_context.selinux = level("s0:c1,c2");
    f.config.linux.security_context.selinux = Some(SelinuxOptions {
        r#type: "spc_t".into(),
        ..Default::default()
    });
    let spec = f.container();
    assert_eq!(
        spec["process"]["selinuxLabel"],
        "system_u:system_r:spc_t:s0:c1,c2"
    );
    assert_eq!(
        spec["linux"]["mountLabel"],
        "system_u:object_r:container_file_t:s0:c1,c2"
    );

    let pod = f.sandbox(None);
    assert_eq!(
        pod["process"]["selinuxLabel"],
        "system_u:system_r:container_t:s0:c1,c2"
    );
    assert_eq!(
        pod["linux"]["mountLabel"],
        "system_u:object_r:container_file_t:s0:c1,c2"
    );

    f.sandbox.linux.security_context.privileged = true;
    f.config.linux.security_context.privileged = true;
    assert_eq!(f.container()["process"]["selinuxLabel"], Value::Null);
}

#[test]
fn a_profile_that_is_not_loaded_is_refused_naming_it() {
    let loaded = |name: &str| -> io::Result<bool> { Ok(name == "berth-default") };
    let local = AppArmorProfile::Localhost("missing-prof".into());
    let err = check_apparmor(
        "linux.security_context.apparmor",
        &local,
        false,
        BOTH,
        &loaded,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("missing-prof") && m.contains("linux.security_context.apparmor")),
        "{err:?}"
    );
    check_apparmor("f", &AppArmorProfile::RuntimeDefault, false, BOTH, &loaded).unwrap();
    let none = |_: &str| -> io::Result<bool> { Ok(false) };
    let err =
        check_apparmor("f", &AppArmorProfile::RuntimeDefault, false, BOTH, &none).unwrap_err();
    assert!(
        matches!(&err, Error::FailedPrecondition(m) if m.contains("berth-default")),
        "{err:?}"
    );
    // Unconfined and privileged defaults never look.
    check_apparmor("f", &AppArmorProfile::Unconfined, false, BOTH, &none).unwrap();
    check_apparmor("f", &AppArmorProfile::RuntimeDefault, true, BOTH, &none).unwrap();
}
