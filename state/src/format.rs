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
    let invalid = |e: serde_json::Error| StateError::Invalid(e.to_string());
    // The version alone first: a current state is then read straight into its types, not
    // through a tree of JSON values twice its size (a sweep's state is hundreds of MB).
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        version: u64,
    }
    let found = serde_json::from_slice::<Version>(bytes)
        .map_err(invalid)?
        .version as u32;
    match found {
        FORMAT_VERSION => {
            let mut state: State = serde_json::from_slice(bytes).map_err(invalid)?;
            repack(&mut state);
            Ok(state)
        }
        1 => {
            let mut old: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
            migrate_v1(&mut old);
            let mut state: State = serde_json::from_value(old).map_err(invalid)?;
            repack(&mut state);
            Ok(state)
        }
        other => Err(StateError::Version(other)),
    }
}

/// Rebuilds the state's maps whole. JSON is read key by key, and a B-tree filled in key
/// order leaves its nodes half empty; one collected at once packs them full. A sweep's state
/// is mostly maps (every job's `env`), so this is about a tenth of its memory.
fn repack(state: &mut State) {
    state.resources = std::mem::take(&mut state.resources).into_iter().collect();
    for r in state.resources.values_mut() {
        for v in r.attributes.values_mut() {
            repack_value(v);
        }
    }
}

fn repack_value(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for v in m.values_mut() {
                repack_value(v);
            }
            // One node holds eleven entries: a smaller map is packed already.
            if m.len() > 11 {
                *m = std::mem::take(m).into_iter().collect();
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(repack_value),
        _ => {}
    }
}

pub fn to_bytes(state: &State) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(state).expect("state serialises");
    body.push(b'\n');
    body
}

/// `state` as it folds in the batches of `locks` (see [`State::folded_locks`]), without
/// copying its resources.
pub(crate) fn to_bytes_folding(state: &State, locks: &[String]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Folding<'a> {
        version: u32,
        lineage: &'a str,
        serial: u64,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        folded_locks: &'a [String],
        resources: &'a std::collections::BTreeMap<String, crate::Resource>,
    }
    let mut body = serde_json::to_vec_pretty(&Folding {
        version: state.version,
        lineage: &state.lineage,
        serial: state.serial,
        folded_locks: locks,
        resources: &state.resources,
    })
    .expect("state serialises");
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
    fn a_state_folding_no_locks_is_written_as_any_other() {
        let mut state = State::new();
        state.serial = 3;
        assert_eq!(to_bytes_folding(&state, &[]), to_bytes(&state));
        let folding = String::from_utf8(to_bytes_folding(&state, &["l1".into()])).unwrap();
        let back = from_bytes(folding.as_bytes()).unwrap();
        assert_eq!(back.folded_locks, ["l1"]);
    }

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

    /// Repacking changes how the maps are laid out, never what they hold: a state with maps
    /// large and small, nested in objects and arrays, is written back byte for byte.
    #[test]
    fn a_state_reads_back_to_the_same_bytes() {
        let env: serde_json::Map<String, serde_json::Value> = (0..200)
            .rev()
            .map(|i| (format!("K{i:03}"), serde_json::json!(i.to_string())))
            .collect();
        let mut state = State::new();
        for d in 0..30 {
            let mut attributes = crate::Attrs::new();
            attributes.insert("env".into(), serde_json::Value::Object(env.clone()));
            attributes.insert("list".into(), serde_json::json!([{"a": 1}, env.clone()]));
            state.resources.insert(
                format!("deployment.d{d:02}.container"),
                crate::Resource {
                    kind: "container".into(),
                    provider: "local".into(),
                    attributes,
                    private: serde_json::json!({"layout": {"mnt": "/m"}}),
                    keep_on_destroy: false,
                    dependencies: vec![],
                    pending: None,
                },
            );
        }
        let bytes = to_bytes(&state);
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(to_bytes(&back), bytes);
    }

    #[test]
    fn a_file_without_a_version_is_refused() {
        let err = from_bytes(br#"{"lineage":"","serial":0,"resources":{}}"#).unwrap_err();
        assert!(err.to_string().contains("format version 0"), "{err}");
    }
}
