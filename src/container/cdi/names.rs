//! Fully qualified CDI device names (`vendor.com/class=name`) and the
//! `cdi.k8s.io/<key>` annotations that carry them, checked as the CDI spec defines
//! them so a typo is refused with the field named instead of being looked up.

use std::collections::BTreeMap;

/// The annotation prefix the kubelet's device manager (and DRA drivers) use.
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// A name longer than this is garbage, not a device: the CDI spec sets no limit,
/// but vendor + class + name of real devices stay far below it.
const MAX_NAME_LEN: usize = 256;

/// A device name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualifiedName<'a> {
    pub vendor: &'a str,
    pub class: &'a str,
    pub device: &'a str,
}

/// Splits and checks `vendor.com/class=name`.
pub fn parse(name: &str) -> Result<QualifiedName<'_>, String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} bytes"));
    }
    let (kind, device) = name
        .split_once('=')
        .ok_or("not a qualified CDI device name (vendor.com/class=name): no '='")?;
    let (vendor, class) = parse_kind(kind)?;
    check_device_name(device)?;
    Ok(QualifiedName {
        vendor,
        class,
        device,
    })
}

/// Splits and checks a spec's `kind`, `vendor.com/class`.
pub fn parse_kind(kind: &str) -> Result<(&str, &str), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| format!("kind {kind:?} is not vendor.com/class"))?;
    check_part("vendor", vendor, |c| c == '-' || c == '_' || c == '.')?;
    check_part("class", class, |c| c == '-' || c == '_')?;
    if !vendor.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("vendor {vendor:?} must start with a letter"));
    }
    if !class.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("class {class:?} must start with a letter"));
    }
    Ok((vendor, class))
}

/// A device name within its kind: letters, digits, `-`, `_`, `.`, `:`, starting and
/// ending with a letter or digit.
pub fn check_device_name(device: &str) -> Result<(), String> {
    check_part("device name", device, |c| {
        matches!(c, '-' | '_' | '.' | ':')
    })
}

fn check_part(what: &str, part: &str, extra: impl Fn(char) -> bool) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = part
        .chars()
        .find(|&c| !c.is_ascii_alphanumeric() && !extra(c))
    {
        return Err(format!("{what} {part:?} holds {c:?}"));
    }
    let ends_well = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !ends_well(part.chars().next()) || !ends_well(part.chars().last()) {
        return Err(format!(
            "{what} {part:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// The devices a container asks for: `cdi_devices` first, then each `cdi.k8s.io/*`
/// annotation (a comma-separated list) in key order, without repeats. Errors name
/// the field. Only the container's own annotations count, as in containerd: pod
/// annotations are the pod author's, and would let any pod take any device.
pub fn requested(
    cdi_devices: &[String],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<String>, (String, String)> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |field: String, name: &str| {
        parse(name).map_err(|e| (field, format!("{name:?}: {e}")))?;
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        Ok::<(), (String, String)>(())
    };
    for (i, name) in cdi_devices.iter().enumerate() {
        push(format!("cdi_devices[{i}].name"), name)?;
    }
    for (key, value) in annotations {
        let Some(suffix) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let field = format!("annotations[{key:?}]");
        if suffix.is_empty() {
            return Err((field, "the key after cdi.k8s.io/ is empty".into()));
        }
        for name in value.split(',') {
            push(field.clone(), name)?;
        }
    }
    Ok(out)
}
