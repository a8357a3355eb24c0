//! The AppArmor and SELinux fields of CRI security contexts. Whether the host
//! enforces them is decided later, in spec generation; here they are only read and
//! checked.

use k8s_cri::v1 as cri;

use super::invalid;
use crate::domain::config::{AppArmorProfile, SelinuxOptions};
use crate::error::{Error, quote};

/// AppArmor profile names are paths or words; a longer one is not a profile.
const MAX_PROFILE_NAME: usize = 4096;
/// SELinux users, roles, types and MLS ranges are short identifiers.
const MAX_LABEL_PART: usize = 256;
/// The prefix of Localhost profiles in the deprecated string and, by habit, in
/// `localhost_ref` (containerd strips it there too).
const LOCALHOST_PREFIX: &str = "localhost/";

/// The `apparmor` profile, or else the deprecated `apparmor_profile` string
/// ("runtime/default", "localhost/<name>", "unconfined"); neither means unset.
pub(super) fn apparmor(
    parent: &str,
    profile: Option<&cri::SecurityProfile>,
    legacy: &str,
) -> Result<AppArmorProfile, Error> {
    use cri::security_profile::ProfileType;
    let Some(profile) = profile else {
        let field = format!("{parent}.apparmor_profile");
        return match legacy {
            "" => Ok(AppArmorProfile::Unset),
            "runtime/default" => Ok(AppArmorProfile::RuntimeDefault),
            "unconfined" => Ok(AppArmorProfile::Unconfined),
            other => match other.strip_prefix(LOCALHOST_PREFIX) {
                Some(name) => localhost(&field, name),
                None => Err(invalid(
                    &field,
                    format!("{} is not a known profile", quote(other)),
                )),
            },
        };
    };
    let field = format!("{parent}.apparmor");
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(AppArmorProfile::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(AppArmorProfile::Unconfined),
        Ok(ProfileType::Localhost) => {
            let name = &profile.localhost_ref;
            let name = name.strip_prefix(LOCALHOST_PREFIX).unwrap_or(name);
            localhost(&format!("{field}.localhost_ref"), name)
        }
        Err(_) => Err(invalid(
            &format!("{field}.profile_type"),
            profile.profile_type,
        )),
    }
}

fn localhost(field: &str, name: &str) -> Result<AppArmorProfile, Error> {
    if name.is_empty() {
        return Err(invalid(field, "empty profile name"));
    }
    if name.len() > MAX_PROFILE_NAME || name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{} is not a profile name", quote(name)),
        ));
    }
    Ok(AppArmorProfile::Localhost(name.to_string()))
}

/// `selinux_options`; none given, or all parts empty, means no label asked for.
pub(super) fn selinux(
    parent: &str,
    options: Option<&cri::SeLinuxOption>,
) -> Result<Option<SelinuxOptions>, Error> {
    let Some(o) = options else { return Ok(None) };
    for (name, value, colon_ok) in [
        ("user", &o.user, false),
        ("role", &o.role, false),
        ("type", &o.r#type, false),
        // An MLS range holds colons: "s0:c1,c2".
        ("level", &o.level, true),
    ] {
        let bad = value.len() > MAX_LABEL_PART
            || value
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || (c == ':' && !colon_ok));
        if bad {
            return Err(invalid(
                &format!("{parent}.selinux_options.{name}"),
                format!("{} is not a label part", quote(value)),
            ));
        }
    }
    let options = SelinuxOptions {
        user: o.user.clone(),
        role: o.role.clone(),
        r#type: o.r#type.clone(),
        level: o.level.clone(),
    };
    Ok((options != SelinuxOptions::default()).then_some(options))
}
