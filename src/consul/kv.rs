//! Consul KV for templates: `{{ kv "path/to/key" }}` or `{{ kv "path/to/key" "default" }}`,
//! read once when the config is loaded, so a container can take its settings from Consul
//! (the paper's "obtain all service information from Consul"). Reads are `?stale`, so any
//! server answers, even with no leader.

use crate::config::Consul;
use std::collections::HashMap;

/// The values of `keys` (None: not in Consul), or why the agent could not say.
pub fn fetch(stanza: Option<&Consul>, keys: &[String]) -> Result<HashMap<String, Option<String>>, String> {
    let client = super::client(stanza)?;
    let mut out = HashMap::new();
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let path = format!("/v1/kv/{}?raw&stale", key.trim_start_matches('/'));
        let r = client.get(&path, None).map_err(|e| e.to_string())?;
        let value = match r.status {
            200 => Some(r.body),
            404 => None,
            403 => {
                return Err(format!(
                    "reading KV key \"{key}\": permission denied ({}); the ACL token needs key:read on \"{key}\"",
                    r.body.trim()
                ));
            }
            s => {
                return Err(format!(
                    "reading KV key \"{key}\" from {}: HTTP {s}: {}",
                    client.address.display(),
                    r.body.trim()
                ));
            }
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}
