//! Reserved names: a pod (or container) name belongs to one id at a time, so a
//! second RunPodSandbox with the same metadata fails instead of racing the first.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::config::SandboxConfig;
use crate::error::{Error, Result};

/// Name -> the id holding it. A plain map behind a lock that no await crosses.
#[derive(Debug, Default)]
pub struct NameIndex {
    names: Mutex<HashMap<String, String>>,
}

impl NameIndex {
    /// Reserves `name` for `id`; reserving it again for the same id is fine.
    pub fn reserve(&self, name: &str, id: &str) -> Result<()> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        match names.get(name) {
            Some(holder) if holder != id => Err(Error::AlreadyExists(format!(
                "name {name:?} is reserved for {holder:?}"
            ))),
            Some(_) => Ok(()),
            None => {
                names.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    /// Releases `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.get(name).is_some_and(|holder| holder == id) {
            names.remove(name);
        }
    }
}

/// `<name>_<namespace>_<uid>_<attempt>`, the name containerd reserves for a pod.
pub fn sandbox_name(config: &SandboxConfig) -> String {
    format!(
        "{}_{}_{}_{}",
        config.name, config.namespace, config.uid, config.attempt
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_has_one_holder_until_released() {
        let index = NameIndex::default();
        index.reserve("web_default_u1_0", "a").unwrap();
        index.reserve("web_default_u1_0", "a").unwrap();
        let err = index.reserve("web_default_u1_0", "b").unwrap_err();
        assert!(matches!(err, Error::AlreadyExists(_)));
        assert!(err.to_string().contains("\"a\""), "{err}");
        // Only the holder releases it.
        index.release("web_default_u1_0", "b");
        assert!(index.reserve("web_default_u1_0", "b").is_err());
        index.release("web_default_u1_0", "a");
        index.reserve("web_default_u1_0", "b").unwrap();
    }

    #[test]
    fn names_follow_containerd() {
        let config = SandboxConfig {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 2,
            ..Default::default()
        };
        assert_eq!(sandbox_name(&config), "web_default_u1_2");
    }
}
