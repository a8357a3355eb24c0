//! Command-line flags as containerd passes them to a shim binary.
//!
//! containerd uses Go's `flag` package conventions: `-name value`, `--name value`,
//! `-name=value`, and bare boolean flags; the action (`start`, `delete`) comes
//! after the flags. Unknown flags are an error so typos do not pass silently.

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    /// containerd's GRPC address (used to name the shim socket and by the
    /// publish binary).
    pub address: String,
    pub publish_binary: String,
    pub bundle: Option<String>,
    pub socket: Option<String>,
    pub debug: bool,
    pub version: bool,
    pub action: Option<String>,
}

pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args> {
    let mut args = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix('-') else {
            if args.action.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "unexpected argument {arg:?}"
                )));
            }
            args.action = Some(arg);
            continue;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "debug" => args.debug = inline.as_deref().is_none_or(|v| v == "true"),
            "v" | "version" => args.version = true,
            _ => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| {
                        Error::InvalidArgument(format!("flag -{name} needs a value"))
                    })?,
                };
                match name {
                    "namespace" => args.namespace = value,
                    "id" => args.id = value,
                    "address" => args.address = value,
                    "publish-binary" => args.publish_binary = value,
                    "bundle" => args.bundle = Some(value),
                    "socket" => args.socket = Some(value),
                    _ => return Err(Error::InvalidArgument(format!("unknown flag -{name}"))),
                }
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn containerd_start_invocation() {
        let a = p("-namespace k8s.io -address /run/c.sock -publish-binary /usr/bin/containerd -id abc -debug start")
            .unwrap();
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.id, "abc");
        assert_eq!(a.address, "/run/c.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert!(a.debug);
        assert_eq!(a.action.as_deref(), Some("start"));
    }

    #[test]
    fn equals_and_double_dash() {
        let a = p("--namespace=ns -id=x -bundle /b delete").unwrap();
        assert_eq!(a.namespace, "ns");
        assert_eq!(a.bundle.as_deref(), Some("/b"));
        assert_eq!(a.action.as_deref(), Some("delete"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(p("-nope 1").is_err());
        assert!(p("-id").is_err());
        assert!(p("start delete").is_err());
    }
}
