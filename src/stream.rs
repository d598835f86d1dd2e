//! `--json-stream`: one JSON object per line on stdout for everything plan, apply and
//! destroy do, for programs to follow (CI, dashboards). The schema is `stream.schema.json`
//! beside this file (`anycloud schema json-stream` prints it); every line carries the
//! schema's major version in `v`, so a reader can refuse a stream it does not know. Human
//! text goes to stderr meanwhile.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::plan::{Action, Plan};

/// The schema's version: a new event type or field is a minor change, anything a reader
/// could misread is a new major (`v`).
pub const SCHEMA_MAJOR: u64 = 1;
pub const SCHEMA_VERSION: &str = "1.1";
/// The JSON Schema of every line.
pub const SCHEMA: &str = include_str!("stream.schema.json");

pub struct Stream {
    out: Mutex<Box<dyn Write + Send>>,
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
        Action::Read => "read",
        Action::NoOp => "no-op",
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Stream {
    pub fn stdout() -> Stream {
        Stream::to(Box::new(std::io::stdout()))
    }

    /// A stream into any writer (tests).
    pub fn to(out: Box<dyn Write + Send>) -> Stream {
        let s = Stream {
            out: Mutex::new(out),
        };
        s.emit(
            "version",
            &format!("anycloud {}", env!("CARGO_PKG_VERSION")),
            json!({ "anycloud": env!("CARGO_PKG_VERSION"), "schema": SCHEMA_VERSION }),
        );
        s
    }

    /// One line: `v`, `type`, `at` (UTC, milliseconds), `message` (what a person would read),
    /// then the type's own fields.
    pub fn emit(&self, kind: &str, message: &str, fields: Value) {
        let mut line = Map::new();
        line.insert("v".into(), json!(SCHEMA_MAJOR));
        line.insert("type".into(), json!(kind));
        line.insert(
            "at".into(),
            json!(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
        line.insert("message".into(), json!(message));
        if let Value::Object(more) = fields {
            line.extend(more);
        }
        let mut text = serde_json::to_vec(&Value::Object(line)).expect("plain data");
        text.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed pipe is not an error of the run.
        let _ = out.write_all(&text);
        let _ = out.flush();
    }

    /// The plan's changes, one line each, then its summary.
    pub fn plan(&self, plan: &Plan, operation: &str) {
        for c in plan.active() {
            let mut change = json!({
                "address": c.address,
                "action": action_name(c.action),
                "kind": c.kind.to_string(),
                "provider": c.provider,
            });
            if let Some(reason) = &c.reason {
                change["reason"] = json!(reason);
            }
            self.emit(
                "planned_change",
                &format!("{}: plan to {}", c.address, action_name(c.action)),
                json!({ "change": change }),
            );
        }
        let s = &plan.summary;
        self.emit(
            "change_summary",
            &plan.summary_line(),
            json!({ "changes": {
                "operation": operation,
                "add": s.add, "change": s.change, "replace": s.replace,
                "destroy": s.destroy, "read": s.read,
            }}),
        );
    }

    pub fn started(&self, address: &str, action: Action) {
        self.emit(
            "apply_start",
            &format!("{address}: {}", action_name(action)),
            json!({ "hook": { "address": address, "action": action_name(action) } }),
        );
    }

    pub fn progress(&self, address: &str, text: &str) {
        self.emit(
            "apply_progress",
            &format!("{address}: {text}"),
            json!({ "hook": { "address": address, "text": text } }),
        );
    }

    pub fn finished(&self, address: &str, action: Action, elapsed: Duration) {
        self.emit(
            "apply_complete",
            &format!("{address}: {} complete", action_name(action)),
            json!({ "hook": {
                "address": address, "action": action_name(action), "elapsed_secs": secs(elapsed)
            }}),
        );
    }

    pub fn errored(&self, address: &str, error: &str, elapsed: Duration) {
        self.emit(
            "apply_errored",
            &format!("{address}: {error}"),
            json!({ "hook": { "address": address, "error": error, "elapsed_secs": secs(elapsed) } }),
        );
    }

    pub fn retrying(&self, address: &str, error: &str, after: Duration) {
        self.emit(
            "apply_retry",
            &format!(
                "{address}: retrying in {:.1}s after: {error}",
                after.as_secs_f64()
            ),
            json!({ "hook": { "address": address, "error": error, "after_secs": secs(after) } }),
        );
    }

    pub fn skipped(&self, address: &str) {
        self.emit(
            "apply_skipped",
            &format!("{address}: skipped (a resource it needs failed)"),
            json!({ "hook": { "address": address } }),
        );
    }

    /// `anycloud run --recover` applying a lost job's deployment again: which recovery of
    /// how many at most, why (`machine-gone`, `job-interrupted`, `unfinished`), and how long
    /// since the loss was seen (the backoff, and any wait for the state lock).
    pub fn recovery(
        &self,
        message: &str,
        deployment: &str,
        attempt: u32,
        max_recoveries: u32,
        reason: &str,
        waited: Duration,
    ) {
        self.emit(
            "recovery",
            message,
            json!({ "recovery": {
                "deployment": deployment,
                "attempt": attempt,
                "max_recoveries": max_recoveries,
                "reason": reason,
                "waited_secs": secs(waited),
            }}),
        );
    }

    pub fn log(&self, text: &str) {
        self.emit("log", text, json!({}));
    }

    /// How the run ended: `complete`, `failed` or `interrupted`, with the addresses.
    pub fn outcome(
        &self,
        operation: &str,
        status: &str,
        done: &[String],
        failed: &[(String, String)],
        skipped: &[String],
    ) {
        self.emit(
            "outcome",
            &format!(
                "{operation} {status}: {} finished, {} failed, {} skipped",
                done.len(),
                failed.len(),
                skipped.len()
            ),
            json!({ "outcome": {
                "operation": operation,
                "status": status,
                "done": done,
                "failed": failed.iter().map(|(a, e)| json!({"address": a, "error": e})).collect::<Vec<_>>(),
                "skipped": skipped,
            }}),
        );
    }

    /// A problem that ends the command (a config error, a lock held by another run): where
    /// it is (file, line and column, or a resource's address) and what to do, when known.
    pub fn diagnostic(&self, severity: &str, d: &anycloud_provider::Diagnostic) {
        let mut fields = json!({ "severity": severity, "summary": d.message });
        if let Some(help) = &d.help {
            fields["help"] = json!(help);
        }
        if let Some(file) = &d.file {
            fields["range"] = json!({ "file": file, "line": d.line, "column": d.column });
        }
        if let Some(address) = &d.address {
            fields["address"] = json!(address);
        }
        self.emit(
            "diagnostic",
            &d.render(false),
            json!({ "diagnostic": fields }),
        );
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A writer tests read back.
    #[derive(Clone, Default)]
    pub struct Shared(pub std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        pub fn lines(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// Every line valid against the published schema; returns their types.
    pub fn check_against_schema(lines: &[Value]) -> Vec<String> {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        lines
            .iter()
            .map(|line| {
                let errors: Vec<String> =
                    validator.iter_errors(line).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{line}: {errors:?}");
                line["type"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn every_event_matches_the_schema_and_the_schema_refuses_what_it_should() {
        let out = Shared::default();
        let s = Stream::to(Box::new(out.clone()));
        s.started("deployment.a.vm", Action::Create);
        s.progress("deployment.a.vm", "waiting for SSH");
        s.retrying("deployment.a.vm", "throttled", Duration::from_millis(250));
        s.finished("deployment.a.vm", Action::Create, Duration::from_secs(3));
        s.errored("deployment.b.vm", "quota exceeded", Duration::ZERO);
        s.skipped("deployment.b.container");
        s.recovery(
            "Recovery 1 of at most 3: the machine of deployment a is gone",
            "a",
            1,
            3,
            "machine-gone",
            Duration::from_millis(1200),
        );
        s.log("stopping");
        s.outcome(
            "apply",
            "failed",
            &["deployment.a.vm".into()],
            &[("deployment.b.vm".into(), "quota exceeded".into())],
            &["deployment.b.container".into()],
        );
        let mut d = anycloud_provider::Diagnostic::error("unknown key 'sync_intervall'")
            .with_help("did you mean 'sync_interval'?");
        d.file = Some("anycloud.yaml".into());
        d.line = 4;
        d.column = 3;
        s.diagnostic("error", &d);
        let lines = out.lines();
        let types = check_against_schema(&lines);
        assert_eq!(types[0], "version");
        assert_eq!(lines[0]["schema"], SCHEMA_VERSION);
        assert_eq!(types.len(), 11);
        assert_eq!(lines[10]["diagnostic"]["range"]["line"], 4);
        assert_eq!(types[7], "recovery");
        assert_eq!(lines[7]["recovery"]["waited_secs"], 1.2);
        // The schema is not a rubber stamp.
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut wrong = lines[3].clone();
        wrong["hook"].as_object_mut().unwrap().remove("after_secs");
        assert!(!validator.is_valid(&wrong), "a retry without its delay");
        let mut wrong = lines[1].clone();
        wrong["v"] = json!(2);
        assert!(!validator.is_valid(&wrong), "another major version");
        let mut wrong = lines[1].clone();
        wrong["hook"]["action"] = json!("explode");
        assert!(!validator.is_valid(&wrong), "an unknown action");
        let mut wrong = lines[7].clone();
        wrong["recovery"]["reason"] = json!("bored");
        assert!(
            !validator.is_valid(&wrong),
            "a recovery for no known reason"
        );
        let mut wrong = lines[7].clone();
        wrong["recovery"]["attempt"] = json!(0);
        assert!(!validator.is_valid(&wrong), "a recovery numbered from 0");
        let mut wrong = lines[7].clone();
        wrong["recovery"]
            .as_object_mut()
            .unwrap()
            .remove("deployment");
        assert!(!validator.is_valid(&wrong), "a recovery of no deployment");
    }
}
