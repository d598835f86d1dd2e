//! Human and markdown renderings of a plan, made only from the plan document, so the
//! terminal, the PR comment and `plan --format json` can never disagree. The human
//! rendering may be styled for a terminal; stripped of its styles it is the plain one.

use std::collections::BTreeMap;
use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use anycloud_provider::Attrs;
use serde_json::Value;

use crate::plan::{Action, Change, Plan};

/// Styles text, or leaves it plain.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    fn with(self, style: Style, text: &str) -> String {
        if self.0 {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    fn color(self, color: AnsiColor, text: &str) -> String {
        self.with(Style::new().fg_color(Some(color.into())), text)
    }

    fn bold(self, text: &str) -> String {
        self.with(Style::new().bold(), text)
    }

    fn action(self, action: Action, text: &str) -> String {
        match action {
            Action::Create => self.color(AnsiColor::Green, text),
            Action::Delete => self.color(AnsiColor::Red, text),
            Action::Update => self.color(AnsiColor::Yellow, text),
            Action::Replace => self.color(AnsiColor::Magenta, text),
            Action::Read => self.color(AnsiColor::Cyan, text),
            Action::NoOp => text.to_owned(),
        }
    }
}

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "  +",
        Action::Update => "  ~",
        Action::Replace => "-/+",
        Action::Delete => "  -",
        Action::Read => " <=",
        Action::NoOp => "   ",
    }
}

fn headline(c: &Change) -> String {
    let what = match c.action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Delete if c.keep_on_destroy => "will be forgotten",
        Action::Delete => "will be destroyed",
        Action::Read => "will be read during apply",
        Action::NoOp => "is up to date",
    };
    match &c.reason {
        Some(r) => format!("# {} {what} ({r})", c.address),
        None => format!("# {} {what}", c.address),
    }
}

fn scalar(v: &Value) -> String {
    serde_json::to_string(v).expect("json values serialise")
}

fn is_multiline(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| s.contains('\n'))
}

/// `body` as a heredoc after `head` (the `key = ` part): `<<-EOT`, its lines, `EOT`. A body
/// with a line that reads like the terminator gets another one (`EOT1`, …), so no value can
/// end its own heredoc early and pass what follows for plan text.
fn heredoc(out: &mut String, indent: &str, head: &str, body: &str, tail: &str) {
    let mut end = String::from("EOT");
    let mut n = 0;
    while body.lines().any(|l| visible(l).trim() == end) {
        n += 1;
        end = format!("EOT{n}");
    }
    let _ = writeln!(out, "{head}<<-{end}{tail}");
    for line in body.lines() {
        let _ = writeln!(out, "{indent}    {}", visible(line));
    }
    let _ = writeln!(out, "{indent}    {end}");
}

/// A line as it may reach a terminal or a PR comment: control characters (an escape
/// sequence, a carriage return that would overwrite the line, a fake end of the heredoc on
/// a line of its own) are shown as escapes, never sent. Tabs stay.
fn visible(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return line.into();
    }
    line.chars()
        .map(|c| match c {
            '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect::<String>()
        .into()
}

/// One change as a Terraform-style block. Unchanged attributes of updates are counted,
/// not shown; multi-line attributes are unified diffs.
pub fn change_block(c: &Change) -> String {
    block(c, Paint(false))
}

fn block(c: &Change, paint: Paint) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {}", paint.bold(&headline(c)));
    let _ = writeln!(
        out,
        "{} {} \"{}\" {{",
        paint.action(c.action, symbol(c.action)),
        c.kind,
        c.address
    );
    let empty = Attrs::new();
    let before = c.before.as_ref().unwrap_or(&empty);
    let after = c.after.as_ref().unwrap_or(&empty);
    let mut keys: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .chain(c.after_unknown.iter())
        .collect();
    keys.sort();
    keys.dedup();
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut hidden = 0;
    let ind = "     ";
    for k in keys {
        let b = before.get(k);
        let a = after.get(k);
        let unknown = c.after_unknown.contains(k);
        let forces = if c.replace_paths.contains(k) {
            " # forces replacement"
        } else {
            ""
        };
        let (sym, show) = match c.action {
            Action::Create | Action::Read => ("+", true),
            Action::Delete => ("-", true),
            Action::NoOp => (" ", false),
            Action::Update | Action::Replace => {
                if unknown || b != a {
                    ("~", true)
                } else {
                    (" ", false)
                }
            }
        };
        if !show {
            hidden += 1;
            continue;
        }
        let sym_action = match sym {
            "+" => Action::Create,
            "-" => Action::Delete,
            _ => Action::Update,
        };
        let sym = paint.action(sym_action, sym);
        let value_side = if c.action == Action::Delete { b } else { a };
        if unknown && c.action != Action::Delete {
            let was = match (c.action, b) {
                (Action::Replace | Action::Update, Some(v)) => format!("{} -> ", scalar(v)),
                _ => String::new(),
            };
            let _ = writeln!(out, "{ind}{sym} {k:<width$} = {was}(known after apply)");
            continue;
        }
        if c.action == Action::Update || c.action == Action::Replace {
            if is_multiline(b) || is_multiline(a) {
                let old = b.and_then(Value::as_str).unwrap_or("");
                let new = a.and_then(Value::as_str).unwrap_or("");
                let diff = similar::TextDiff::from_lines(old, new);
                let unified = diff.unified_diff().context_radius(3).to_string();
                let head = format!("{ind}{sym} {k:<width$} = ");
                heredoc(&mut out, ind, &head, &unified, forces);
            } else {
                let from = b.map(scalar).unwrap_or_else(|| "null".into());
                let to = a.map(scalar).unwrap_or_else(|| "null".into());
                let _ = writeln!(out, "{ind}{sym} {k:<width$} = {from} -> {to}{forces}");
            }
            continue;
        }
        match value_side {
            Some(v) if is_multiline(Some(v)) => {
                let head = format!("{ind}{sym} {k:<width$} = ");
                heredoc(&mut out, ind, &head, v.as_str().unwrap_or_default(), "");
            }
            Some(v) => {
                let _ = writeln!(out, "{ind}{sym} {k:<width$} = {}", scalar(v));
            }
            None => {}
        }
    }
    if hidden > 0 {
        let _ = writeln!(out, "{ind}  # ({hidden} unchanged attributes hidden)");
    }
    let _ = writeln!(out, "    }}");
    out
}

pub fn human(plan: &Plan) -> String {
    human_with(plan, false)
}

/// [`human`], styled for a terminal when `styled`.
pub fn human_with(plan: &Plan, styled: bool) -> String {
    let paint = Paint(styled);
    let mut out = String::new();
    for w in &plan.warnings {
        let _ = writeln!(
            out,
            "{} {w}\n",
            paint.with(
                Style::new().bold().fg_color(Some(AnsiColor::Yellow.into())),
                "Warning:"
            )
        );
    }
    for u in &plan.unread {
        let _ = writeln!(
            out,
            "{} deployment {} is left out of this plan: {} could not be read.\n",
            paint.with(
                Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
                "Left out:"
            ),
            u.deployment,
            u.address
        );
    }
    for j in &plan.jobs {
        let label = if j.state == "succeeded" {
            paint.bold("Job:")
        } else {
            paint.with(
                Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
                "Job:",
            )
        };
        let _ = writeln!(out, "{label} {}", j.describe());
        for line in &j.last_lines {
            let _ = writeln!(out, "    | {line}");
        }
        out.push('\n');
    }
    // A destroy reads nothing by design; the note is for a plan the user asked not to refresh.
    if !plan.refreshed && !plan.destroy {
        let _ = writeln!(out, "Note: the state was not refreshed (--refresh=false); the plan trusts what it records.\n");
    }
    let active: Vec<&Change> = plan.active().collect();
    if active.is_empty() {
        let _ = writeln!(
            out,
            "No changes. The infrastructure matches the configuration."
        );
        return out;
    }
    let _ = writeln!(out, "anycloud will perform the following actions:\n");
    for c in active {
        out.push_str(&block(c, paint));
        out.push('\n');
    }
    let _ = writeln!(out, "{}", paint.bold(&plan.summary_line()));
    out
}

/// GitHub's limit on the length of a pull-request comment, in characters: a markdown plan
/// never passes it (bytes are counted, which is never fewer).
pub const COMMENT_LIMIT: usize = 65_536;

/// Room kept for the note that says what did not fit.
const NOTE_ROOM: usize = 600;

/// The plan as a pull-request comment: the summary, the notes, a table of the changes by
/// deployment, then each change's diff collapsed. What would pass [`COMMENT_LIMIT`] is
/// left out, in that order of importance, and a note at the end says how much and where the
/// whole plan is.
pub fn markdown(plan: &Plan) -> String {
    markdown_within(plan, COMMENT_LIMIT)
}

fn markdown_within(plan: &Plan, limit: usize) -> String {
    let mut out = String::from("### anycloud plan\n\n");
    let active: Vec<&Change> = plan.active().collect();
    if active.is_empty() {
        out.push_str("No changes. The infrastructure matches the configuration.\n\n");
    } else {
        let _ = writeln!(out, "**{}**\n", plan.summary_line());
    }
    let room = limit.saturating_sub(NOTE_ROOM);
    let mut left_out = LeftOut::default();
    let add = |out: &mut String, piece: String, what: &mut usize| {
        if out.len() + piece.len() <= room && *what == 0 {
            out.push_str(&piece);
        } else {
            *what += 1;
        }
    };
    for w in &plan.warnings {
        add(
            &mut out,
            format!("> **Warning:** {w}\n\n"),
            &mut left_out.notes,
        );
    }
    for u in &plan.unread {
        let piece = format!(
            "> **Left out:** deployment `{}`: `{}` could not be read: {}\n\n",
            u.deployment, u.address, u.error
        );
        add(&mut out, piece, &mut left_out.notes);
    }
    for j in &plan.jobs {
        let mut piece = format!("> **Job:** {}\n\n", j.describe());
        if !j.last_lines.is_empty() {
            piece.push_str("> ```\n");
            for line in &j.last_lines {
                let _ = writeln!(piece, "> {line}");
            }
            piece.push_str("> ```\n\n");
        }
        add(&mut out, piece, &mut left_out.notes);
    }
    if !active.is_empty() {
        let rows = by_deployment(&active);
        out.push_str(
            "| deployment | add | change | replace | destroy | read |\n|---|---|---|---|---|---|\n",
        );
        for (name, s) in &rows {
            let piece = format!(
                "| {name} | {} | {} | {} | {} | {} |\n",
                s.add, s.change, s.replace, s.destroy, s.read
            );
            add(&mut out, piece, &mut left_out.rows);
        }
        out.push('\n');
        for c in &active {
            let why = c.reason.clone().unwrap_or_else(|| {
                if c.replace_paths.is_empty() {
                    String::new()
                } else {
                    format!("changed: {}", c.replace_paths.join(", "))
                }
            });
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", html_text(&why))
            };
            let piece = format!(
                "<details><summary><code>{}</code>: {}{why}</summary>\n\n```diff\n{}```\n</details>\n\n",
                c.address,
                c.action.as_str(),
                change_block(c)
            );
            add(&mut out, piece, &mut left_out.changes);
        }
    }
    if let Some(note) = left_out.note(active.len()) {
        out.push_str(&note);
    }
    out
}

/// What a comment left out to stay within its limit.
#[derive(Default)]
struct LeftOut {
    notes: usize,
    rows: usize,
    changes: usize,
}

impl LeftOut {
    fn note(&self, changes: usize) -> Option<String> {
        let mut parts = Vec::new();
        if self.changes > 0 {
            parts.push(format!(
                "the diffs of {} of the {changes} changes",
                self.changes
            ));
        }
        if self.rows > 0 {
            parts.push(format!("{} rows of the table", self.rows));
        }
        if self.notes > 0 {
            parts.push(format!("{} notes", self.notes));
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!(
            "> **Not shown:** {}: the comment stops before GitHub's limit of {COMMENT_LIMIT} characters. The whole plan is the saved plan file (`anycloud show PLANFILE`, or the workflow's plan artifact).\n",
            parts.join(", ")
        ))
    }
}

/// The changes' counts per deployment (`shared` for what deployments share), by name.
fn by_deployment(active: &[&Change]) -> BTreeMap<String, crate::plan::Summary> {
    let mut rows: BTreeMap<String, crate::plan::Summary> = BTreeMap::new();
    for c in active {
        let name = c
            .address
            .strip_prefix("deployment.")
            .and_then(|r| r.split('.').next())
            .map(|d| format!("`{d}`"))
            .unwrap_or_else(|| "shared".to_owned());
        rows.entry(name).or_default().count(c.action);
    }
    rows
}

/// Text safe inside an HTML element of the comment (a `<summary>`).
fn html_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plans serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Summary;

    #[test]
    fn control_characters_are_shown_escaped_and_no_value_ends_its_own_heredoc() {
        let tricky = "docker run \\\n  --env 'A=\u{1b}[2J\rfake'\nEOT\nPlan: 0 to add\n";
        let change = Change {
            address: "deployment.a.container".into(),
            kind: anycloud_provider::Kind::Container,
            provider: "test".into(),
            action: Action::Create,
            reason: None,
            before: None,
            after: Some(
                serde_json::from_value(
                    serde_json::json!({ "run_spec": tricky, "env": {"A": "\u{1b}[2J\r"} }),
                )
                .unwrap(),
            ),
            private: None,
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        };
        let text = change_block(&change);
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("\\u{1b}[2J\\u{d}fake"), "{text}");
        assert!(text.contains("= <<-EOT1\n"), "{text}");
        assert!(
            text.contains("\n         EOT\n"),
            "the value's EOT is content: {text}"
        );
        assert!(text.contains("\n         EOT1\n"), "{text}");
    }

    #[test]
    fn the_styled_rendering_stripped_is_the_plain_one() {
        let change = Change {
            address: "deployment.a.vm".into(),
            kind: anycloud_provider::Kind::Vm,
            provider: "test".into(),
            action: Action::Create,
            reason: None,
            before: None,
            after: Some(
                serde_json::from_value(serde_json::json!({"x": "a\nb\n", "y": 1})).unwrap(),
            ),
            private: None,
            keep_on_destroy: false,
            after_unknown: vec!["id".into()],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        };
        let plan = Plan {
            format_version: 2,
            lineage: String::new(),
            serial: 0,
            config_digest: String::new(),
            refreshed: true,
            destroy: false,
            targets: vec![],
            warnings: vec!["far away".into()],
            unread: vec![],
            jobs: vec![],
            changes: vec![change],
            summary: Summary::default(),
        };
        let styled = human_with(&plan, true);
        assert!(styled.contains("\u{1b}["));
        let mut stripped = Vec::new();
        let mut stream = anstream::StripStream::new(&mut stripped);
        std::io::Write::write_all(&mut stream, styled.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(stripped).unwrap(), human(&plan));
    }
}
