//! The config exactly as written, with the location of every value a later check may blame.
//! What belongs to a provider (`providers.<name>`, a deployment's `vm:`) is kept as a
//! located tree ([`anycloud_provider::doc::Doc`]) for the provider's own checks.

use std::fmt;
use std::marker::PhantomData;

use anycloud_provider::doc::{Doc, Key, Value};
use anycloud_provider::Loc;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

pub type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub project: Option<S<String>>,
    /// Where the state lives, when not in the local file: `s3:`, `azureblob:`, `gcs:`.
    pub state: Option<S<RawDoc>>,
    pub providers: Option<S<Entries<S<RawDoc>>>>,
    pub defaults: Option<RawDefaults>,
    pub deployments: Option<S<Entries<S<RawDeployment>>>>,
}

/// What the state store needs of a config: `state:` and the providers' settings (their
/// credentials and endpoints), read before the rest, which may not even parse.
#[derive(Deserialize)]
pub struct RawHead {
    pub state: Option<S<RawDoc>>,
    pub providers: Option<S<Entries<S<RawDoc>>>>,
}

/// Fields shared by `defaults:` and each deployment; a deployment's own win.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub provider: Option<S<String>>,
    pub region: Option<S<String>>,
    pub sync_interval: Option<S<Interval>>,
    pub idle_shutdown: Option<S<Interval>>,
    pub vm: Option<S<RawDoc>>,
    pub connectivity_check: Option<RawCheck>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// A sweep: one deployment per combination of these axes' values (`matrix.rs`).
    pub matrix: Option<S<RawDoc>>,
    pub provider: Option<S<String>>,
    pub region: Option<S<String>>,
    pub vm: Option<S<RawDoc>>,
    pub container: Option<S<RawContainer>>,
    pub buckets: Option<RawBuckets>,
    pub sync_interval: Option<S<Interval>>,
    /// How long a machine waits after its job ended before it uploads, verifies and stops.
    pub idle_shutdown: Option<S<Interval>>,
    pub connectivity_check: Option<RawCheck>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawContainer {
    pub image: Option<S<String>>,
    pub command: Option<S<RawCommand>>,
    pub env: Option<Entries<S<String>>>,
    pub gpus: Option<S<String>>,
    pub shm_size: Option<S<String>>,
    pub restart: Option<S<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBuckets {
    pub input: Option<S<String>>,
    pub output: Option<S<String>>,
    pub checkpoint: Option<bool>,
}

/// rclone's connectivity check: how many tries, how far apart (the seed's `--retries 30
/// --retries-sleep 15s`, as a loop of our own: rclone's listings ignore them; shorter in tests).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub retries: Option<S<u32>>,
    pub retries_sleep: Option<S<Interval>>,
}

/// A duration as written: text like `60s`; a bare number (YAML reads `5` as one) is refused
/// unless it is 0.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum Interval {
    Seconds(u64),
    Text(String),
}

impl Interval {
    pub fn seconds(&self) -> Result<u64, String> {
        match self {
            Interval::Seconds(0) => Ok(0),
            Interval::Seconds(n) => Err(anycloud_provider::duration::no_unit(*n)),
            Interval::Text(t) => anycloud_provider::duration::parse(t).map(|d| d.as_secs()),
        }
    }
}

/// `command:` as written. One string is a mistake reported with the list form it should
/// take (the words are not split here: a shell's quoting is not ours to guess at run time).
#[derive(Clone)]
pub enum RawCommand {
    Words(Vec<S<String>>),
    Line(String),
}

impl RawCommand {
    pub fn words(&self) -> &[S<String>] {
        match self {
            RawCommand::Words(w) => w,
            RawCommand::Line(_) => &[],
        }
    }

    pub fn words_mut(&mut self) -> &mut [S<String>] {
        match self {
            RawCommand::Words(w) => w,
            RawCommand::Line(_) => &mut [],
        }
    }
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CommandVisitor;
        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of words, e.g. [\"/bin/sh\", \"/job.sh\"]")
            }
            fn visit_str<E>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawCommand, E> {
                Ok(RawCommand::Line(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut words = Vec::new();
                while let Some(w) = seq.next_element::<S<String>>()? {
                    words.push(w);
                }
                Ok(RawCommand::Words(words))
            }
        }
        d.deserialize_any(CommandVisitor)
    }
}

/// A mapping kept in file order with the location of each key (serde maps lose both).
#[derive(Clone)]
pub struct Entries<V>(pub Vec<(S<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V2<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V2<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<S<String>>()? {
                    out.push((k, map.next_value()?));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V2(PhantomData))
    }
}

pub fn loc(l: Location) -> Loc {
    if l == Location::UNKNOWN {
        Loc::UNKNOWN
    } else {
        Loc::new(l.line(), l.column())
    }
}

/// Any YAML value, each part located: a provider's part of the config.
#[derive(Clone)]
pub struct RawDoc(pub Value);

impl RawDoc {
    pub fn located(s: S<RawDoc>) -> Doc {
        Doc {
            at: loc(s.referenced),
            value: s.value.0,
        }
    }
}

impl<'de> Deserialize<'de> for RawDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = RawDoc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Int(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDoc, E> {
                Ok(RawDoc(match i64::try_from(v) {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(v as f64),
                }))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Str(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Str(v)))
            }
            fn visit_unit<E>(self) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Null))
            }
            fn visit_none<E>(self) -> Result<RawDoc, E> {
                Ok(RawDoc(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawDoc, D::Error> {
                RawDoc::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDoc, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<S<RawDoc>>()? {
                    items.push(RawDoc::located(item));
                }
                Ok(RawDoc(Value::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDoc, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<S<String>>()? {
                    let v: S<RawDoc> = map.next_value()?;
                    entries.push((
                        Key {
                            name: k.value,
                            at: loc(k.referenced),
                        },
                        RawDoc::located(v),
                    ));
                }
                Ok(RawDoc(Value::Map(entries)))
            }
        }
        d.deserialize_any(DocVisitor)
    }
}
