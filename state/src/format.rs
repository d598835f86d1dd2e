//! The state file's bytes: JSON, resources sorted by address. Version 1 kept a provider's
//! bookkeeping as attributes named `_…`; reading one moves them where version 2 keeps them.

use crate::State;

pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("it is not a valid state: {0}")]
    Invalid(String),
    #[error("it has format version {0}; this anycloud reads versions 1 and {FORMAT_VERSION}")]
    Version(u32),
}

pub fn from_bytes(bytes: &[u8]) -> Result<State, StateError> {
    let mut probe: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| StateError::Invalid(e.to_string()))?;
    let found = probe.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    match found {
        1 => migrate_v1(&mut probe),
        FORMAT_VERSION => {}
        other => return Err(StateError::Version(other)),
    }
    serde_json::from_value(probe).map_err(|e| StateError::Invalid(e.to_string()))
}

pub fn to_bytes(state: &State) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(state).expect("state serialises");
    body.push(b'\n');
    body
}

/// `_keep_on_destroy` becomes the resource's flag; every other `_name` attribute becomes
/// `name` of its private bookkeeping.
fn migrate_v1(state: &mut serde_json::Value) {
    state["version"] = FORMAT_VERSION.into();
    let Some(resources) = state.get_mut("resources").and_then(|r| r.as_object_mut()) else {
        return;
    };
    for resource in resources.values_mut() {
        let Some(attrs) = resource
            .get_mut("attributes")
            .and_then(|a| a.as_object_mut())
        else {
            continue;
        };
        let bookkeeping: Vec<String> = attrs
            .keys()
            .filter(|k| k.starts_with('_'))
            .cloned()
            .collect();
        let mut private = serde_json::Map::new();
        let mut keep = false;
        for key in bookkeeping {
            let value = attrs.remove(&key).expect("listed above");
            if key == "_keep_on_destroy" {
                keep = value == serde_json::Value::Bool(true);
            } else {
                private.insert(key[1..].to_owned(), value);
            }
        }
        if !private.is_empty() {
            resource["private"] = serde_json::Value::Object(private);
        }
        if keep {
            resource["keep_on_destroy"] = true.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_state_is_migrated() {
        let v1 =
            br#"{"version":1,"lineage":"l","serial":3,"resources":{"deployment.a.bucket.output":{
            "kind":"bucket","provider":"local","dependencies":[],
            "attributes":{"name":"out","_keep_on_destroy":true,"_layout":{"mnt":"/m"}}}}}"#;
        let s = from_bytes(v1).unwrap();
        let r = &s.resources["deployment.a.bucket.output"];
        assert!(r.keep_on_destroy);
        assert_eq!(r.attributes.keys().collect::<Vec<_>>(), vec!["name"]);
        assert_eq!(r.private, serde_json::json!({"layout": {"mnt": "/m"}}));
        assert_eq!(s.version, FORMAT_VERSION);
    }

    #[test]
    fn an_unknown_version_is_refused() {
        let err =
            from_bytes(br#"{"version":9,"lineage":"","serial":0,"resources":{}}"#).unwrap_err();
        assert!(err.to_string().contains("format version 9"), "{err}");
    }
}
