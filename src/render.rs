//! Human and markdown renderings of a plan, made only from the plan document, so the
//! terminal, the PR comment and `plan --format json` can never disagree. The human
//! rendering may be styled for a terminal; stripped of its styles it is the plain one.

use std::collections::BTreeMap;
use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use anycloud_provider::Attrs;
use serde_json::Value;

use crate::escape::{self, visible, visible_lines};
use crate::plan::{Action, Change, EndedJob, Plan};

mod story;
pub use story::{story, Line, Story};

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

/// A generated text (a script, a program, `rclone.conf`, a run line) as one line: its
/// digest and length, or for a change both digests and how many lines differ. Its whole text
/// is for `-v` and a comment's `<details>`; the digest says whether two plans agree on it.
fn collapsed(c: &Change, b: Option<&Value>, a: Option<&Value>) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    match c.action {
        Action::Update | Action::Replace => {
            let (old, new) = (text(b), text(a));
            let diff = similar::TextDiff::from_lines(&old, &new);
            let (mut removed, mut added) = (0, 0);
            for change in diff.iter_all_changes() {
                match change.tag() {
                    similar::ChangeTag::Delete => removed += 1,
                    similar::ChangeTag::Insert => added += 1,
                    similar::ChangeTag::Equal => {}
                }
            }
            let counted = if removed == added {
                format!("{removed} {} changed", lines_word(removed))
            } else {
                format!("{removed} {} removed, {added} added", lines_word(removed))
            };
            format!("{} -> {} ({counted})", digest(b), digest(a))
        }
        _ => {
            let v = if c.action == Action::Delete { b } else { a };
            let n = text(v).lines().count();
            format!("{} ({n} {})", digest(v), lines_word(n))
        }
    }
}

fn lines_word(n: usize) -> &'static str {
    if n == 1 {
        "line"
    } else {
        "lines"
    }
}

/// A text's sha256, shortened: `sha256:` and its first 12 hex digits. Anything else (a
/// side that is not text) as its JSON.
fn digest(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => {
            let hex = anycloud_provider::digest::sha256_hex(s);
            format!("sha256:{}…", &hex[..12])
        }
        Some(v) => scalar(v),
        None => "null".into(),
    }
}

/// The generated texts a change shows, whole (or as a unified diff for an update or a
/// replacement), each line made visible: what `<details>` holds in a comment.
fn generated_texts(c: &Change) -> Vec<(String, String)> {
    let empty = Attrs::new();
    let before = c.before.as_ref().unwrap_or(&empty);
    let after = c.after.as_ref().unwrap_or(&empty);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut texts = Vec::new();
    for k in keys {
        let (b, a) = (before.get(k), after.get(k));
        if !(is_multiline(b) || is_multiline(a)) || c.after_unknown.contains(k) {
            continue;
        }
        let body = match c.action {
            Action::Update | Action::Replace if b != a => {
                let old = b.and_then(Value::as_str).unwrap_or("");
                let new = a.and_then(Value::as_str).unwrap_or("");
                similar::TextDiff::from_lines(old, new)
                    .unified_diff()
                    .context_radius(3)
                    .to_string()
            }
            Action::Create | Action::Read => a.and_then(Value::as_str).unwrap_or("").to_owned(),
            Action::Delete => b.and_then(Value::as_str).unwrap_or("").to_owned(),
            _ => continue,
        };
        let body: Vec<_> = body.lines().map(|l| visible(l).into_owned()).collect();
        texts.push((k.clone(), body.join("\n") + "\n"));
    }
    texts
}

/// One change as a Terraform-style block. Unchanged attributes of updates are counted,
/// not shown; multi-line attributes are unified diffs when `verbose`, else one line each
/// with their digests.
pub fn change_block(c: &Change, verbose: bool) -> String {
    block(c, Paint(false), verbose)
}

fn block(c: &Change, paint: Paint, verbose: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "  {}", paint.bold(&visible(&headline(c))));
    let _ = writeln!(
        out,
        "{} {} \"{}\" {{",
        paint.action(c.action, symbol(c.action)),
        c.kind,
        visible(&c.address)
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
        // A key a machine reported is shown as any text of it is.
        let k = visible(k);
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
        if !verbose && (is_multiline(b) || is_multiline(a)) {
            let _ = writeln!(
                out,
                "{ind}{sym} {k:<width$} = {}{forces}",
                collapsed(c, b, a)
            );
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
    human_opts(plan, styled, false)
}

/// [`human_with`], with every generated text whole when `verbose` (`-v`).
pub fn human_opts(plan: &Plan, styled: bool, verbose: bool) -> String {
    let paint = Paint(styled);
    let mut out = String::new();
    if plan.has_changes() {
        let story = story(plan, &|t| visible(t).into_owned());
        if !story.is_empty() {
            for line in &story.lines {
                let _ = writeln!(out, "{}", line.text);
            }
            if let Some(line) = story.untouched_line() {
                let _ = writeln!(out, "{line}");
            }
            out.push('\n');
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(
            out,
            "{} {}\n",
            paint.with(
                Style::new().bold().fg_color(Some(AnsiColor::Yellow.into())),
                "Warning:"
            ),
            visible_lines(w)
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
        let _ = writeln!(out, "{label} {}", shown(j, |t| visible(t).into_owned()));
        for line in &j.last_lines {
            let _ = writeln!(out, "    | {}", visible(line));
        }
        out.push('\n');
    }
    let placed = crate::render::story::placement_lines(plan, &|t| visible(t).into_owned());
    for line in &placed {
        let _ = writeln!(out, "{line}");
    }
    if !placed.is_empty() {
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
        out.push_str(&block(c, paint, verbose));
        out.push('\n');
    }
    let _ = writeln!(out, "{}", paint.bold(&plan.summary_line()));
    out.push_str(&crate::plan::sweeps::summary_lines(plan));
    out
}

/// GitHub's limit on the length of a pull-request comment, in characters: a markdown plan
/// never passes it (bytes are counted, which is never fewer).
pub const COMMENT_LIMIT: usize = 65_536;

/// Room kept for the note that says what did not fit.
const NOTE_ROOM: usize = 600;

/// The plan as a pull-request comment: the summary, what happens to each deployment, the
/// notes, a table of the changes by deployment, then each change's diff collapsed, its
/// generated texts whole inside a `<details>` of their own. What would pass [`COMMENT_LIMIT`] is
/// left out, in that order of importance, and a note at the end says how much and where the
/// whole plan is.
pub fn markdown(plan: &Plan) -> String {
    markdown_within(plan, COMMENT_LIMIT)
}

fn markdown_within(plan: &Plan, limit: usize) -> String {
    let mut out = String::from("### anycloud plan\n\n");
    let active: Vec<&Change> = plan.active().collect();
    let placed = crate::render::story::placement_lines(plan, &escape::markdown_text);
    for line in &placed {
        let _ = writeln!(out, "- {line}");
    }
    if !placed.is_empty() {
        out.push('\n');
    }
    if active.is_empty() {
        out.push_str("No changes. The infrastructure matches the configuration.\n\n");
    } else {
        let _ = writeln!(out, "**{}**\n", plan.summary_line());
        let sweeps = crate::plan::sweeps::summary_lines(plan);
        if !sweeps.is_empty() {
            // A sweep's name comes from the config: shown as text, never as markdown.
            for line in sweeps.lines() {
                let _ = writeln!(out, "{}  ", escape::markdown_text(line));
            }
            out.push('\n');
        }
    }
    let room = limit.saturating_sub(NOTE_ROOM);
    let mut left_out = LeftOut::default();
    if !active.is_empty() {
        // At most half the comment: the table and the diffs come after it.
        let story_room = room / 2;
        let story = story(plan, &escape::markdown_text);
        let mut lines: Vec<String> = story
            .lines
            .iter()
            .map(|l| format!("- {}\n", l.text))
            .collect();
        lines.extend(story.untouched_line().map(|l| format!("- {l}\n")));
        for piece in lines {
            if out.len() + piece.len() <= story_room && left_out.story == 0 {
                out.push_str(&piece);
            } else {
                left_out.story += 1;
            }
        }
        if !story.is_empty() {
            out.push('\n');
        }
    }
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
            format!("> **Warning:** {}\n\n", visible(w)),
            &mut left_out.notes,
        );
    }
    for u in &plan.unread {
        let piece = format!(
            "> **Left out:** deployment `{}`: `{}` could not be read: {}\n\n",
            u.deployment,
            u.address,
            escape::markdown_text(&u.error)
        );
        add(&mut out, piece, &mut left_out.notes);
    }
    for j in &plan.jobs {
        let mut piece = format!("> **Job:** {}\n\n", shown(j, escape::markdown_text));
        if !j.last_lines.is_empty() {
            // Each line on one line of the quote, and the fence longer than any run of
            // backticks in them: a job's output stays inside its code block.
            let lines: Vec<_> = j.last_lines.iter().map(|l| visible(l)).collect();
            let fence = escape::fence(&lines.join("\n"));
            let _ = writeln!(piece, "> {fence}");
            for line in &lines {
                let _ = writeln!(piece, "> {line}");
            }
            let _ = writeln!(piece, "> {fence}\n");
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
                format!(" ({})", escape::html(&why))
            };
            let block = change_block(c, false);
            let fence = escape::fence(&block);
            let mut texts = String::new();
            for (key, body) in generated_texts(c) {
                let fence = escape::fence(&body);
                let (what, lang) = if matches!(c.action, Action::Update | Action::Replace) {
                    ("the diff", "diff")
                } else {
                    ("the whole text", "")
                };
                let _ = write!(
                    texts,
                    "\n<details><summary><code>{}</code>: {what}</summary>\n\n{fence}{lang}\n{body}{fence}\n</details>\n",
                    escape::html(&key),
                );
            }
            let piece = format!(
                "<details><summary><code>{}</code>: {}{why}</summary>\n\n{fence}diff\n{block}{fence}\n{texts}</details>\n\n",
                escape::html(&c.address),
                c.action.as_str(),
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
    /// Lines of what happens to each deployment.
    story: usize,
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
        if self.story > 0 {
            parts.push(format!(
                "{} lines of what happens to each deployment",
                self.story
            ));
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

/// What a plan says of an ended job, with what its machine reported (when it finished,
/// Docker's error) made safe by `safe`, for a terminal or a comment.
fn shown(j: &EndedJob, safe: impl Fn(&str) -> String) -> String {
    EndedJob {
        finished_at: safe(&j.finished_at),
        error: safe(&j.error),
        idle_stop: safe(&j.idle_stop),
        ..j.clone()
    }
    .describe()
}

pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plans serialise");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{EndedJob, Summary};

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
        let text = change_block(&change, true);
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        assert!(text.contains("\\u{1b}[2J\\u{d}fake"), "{text}");
        assert!(text.contains("= <<-EOT1\n"), "{text}");
        assert!(
            text.contains("\n         EOT\n"),
            "the value's EOT is content: {text}"
        );
        assert!(text.contains("\n         EOT1\n"), "{text}");
    }

    /// What a job printed last, hostile: a window title set, the screen cleared, a line
    /// of backticks then a heading, an HTML tag; and Docker's error of a job that never
    /// started, with the same.
    const HOSTILE: [&str; 5] = [
        "\u{1b}]0;pwned\u{7}",
        "\u{1b}[2J",
        "```",
        "# injected heading",
        "<img src=x onerror=alert(1)>",
    ];

    fn plan_with_jobs(jobs: Vec<EndedJob>) -> Plan {
        Plan {
            jobs,
            ..Plan::of_changes(vec![])
        }
    }

    fn hostile_jobs() -> Vec<EndedJob> {
        vec![
            EndedJob {
                address: "deployment.a.container".into(),
                state: "failed".into(),
                exit_code: Some(3),
                finished_at: "2026-12-04T15:25:10Z\u{1b}[2J".into(),
                error: String::new(),
                idle_stop: String::new(),
                last_lines: HOSTILE.iter().map(|l| l.to_string()).collect(),
            },
            EndedJob {
                address: "deployment.b.container".into(),
                state: "never-started".into(),
                exit_code: Some(127),
                finished_at: String::new(),
                error: "exec: <img src=x onerror=alert(1)> \u{1b}]0;pwned\u{7}\n# injected heading"
                    .into(),
                idle_stop: String::new(),
                last_lines: vec![],
            },
        ]
    }

    #[test]
    fn a_jobs_output_reaches_the_terminal_escaped() {
        let plan = plan_with_jobs(hostile_jobs());
        for text in [human(&plan), human_with(&plan, true)] {
            let unstyled = text.replace("\u{1b}[0m", "").replace("\u{1b}[1m", "");
            let unstyled = unstyled
                .replace("\u{1b}[1m\u{1b}[31m", "")
                .replace("\u{1b}[31m", "");
            assert!(!unstyled.contains(['\u{1b}', '\u{7}']), "{text:?}");
            assert!(text.contains("    | \\u{1b}]0;pwned\\u{7}\n"), "{text}");
            assert!(text.contains("    | \\u{1b}[2J\n"), "{text}");
            assert!(
                text.contains("at 2026-12-04T15:25:10Z\\u{1b}[2J;"),
                "{text}"
            );
            assert!(
                text.contains("never started: exec: <img src=x onerror=alert(1)> \\u{1b}]0;pwned\\u{7}\\u{a}# injected heading."),
                "{text}"
            );
        }
        // Styled, the only escape sequences are anycloud's own styles.
        let styled = human_with(&plan, true);
        let mut stripped = Vec::new();
        let mut stream = anstream::StripStream::new(&mut stripped);
        std::io::Write::write_all(&mut stream, styled.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(stripped).unwrap(), human(&plan));
    }

    /// The code blocks of a comment's quotes, as a CommonMark reader finds them (a fence of
    /// `n` backticks closes only at a later quoted line of at least `n` backticks alone):
    /// each fence's length and the lines inside; and the lines outside any block.
    fn quoted_code_blocks(md: &str) -> (Vec<(usize, Vec<&str>)>, Vec<&str>) {
        let mut blocks = Vec::new();
        let mut outside = Vec::new();
        let mut open: Option<(usize, Vec<&str>)> = None;
        for line in md.lines() {
            let Some(quoted) = line.strip_prefix("> ") else {
                assert!(
                    open.is_none(),
                    "a quoted code block ends with its quote: {line:?}"
                );
                outside.push(line);
                continue;
            };
            let ticks = quoted.chars().take_while(|&c| c == '`').count();
            let fence_only = ticks >= 3 && quoted[ticks..].trim().is_empty();
            match open.take() {
                None if ticks >= 3 => open = Some((ticks, vec![])),
                None => outside.push(quoted),
                Some((n, body)) if fence_only && ticks >= n => blocks.push((n, body)),
                Some((n, mut body)) => {
                    body.push(quoted);
                    open = Some((n, body));
                }
            }
        }
        assert!(open.is_none(), "unclosed: {md}");
        (blocks, outside)
    }

    #[test]
    fn a_jobs_output_stays_in_its_code_block_in_a_comment() {
        let md = markdown(&plan_with_jobs(hostile_jobs()));
        assert!(!md.contains(['\u{1b}', '\u{7}', '\r']), "{md:?}");
        let (blocks, outside) = quoted_code_blocks(&md);
        assert_eq!(blocks.len(), 1, "{md}");
        let (fence, body) = &blocks[0];
        assert_eq!(*fence, 4, "longer than the job's ``` line: {md}");
        assert_eq!(
            body,
            &[
                "\\u{1b}]0;pwned\\u{7}",
                "\\u{1b}[2J",
                "```",
                "# injected heading",
                "<img src=x onerror=alert(1)>",
            ],
            "every line inside the block, the heading and the tag as text: {md}"
        );
        // Outside code, no line is a heading and no tag is HTML.
        assert!(!outside.iter().any(|l| l.starts_with("# ")), "{md}");
        let outside = outside.join("\n");
        assert!(
            !outside.replace("`exec: <img", "").contains("<img"),
            "only in a code span: {md}"
        );
        assert!(
            outside.contains("never started: `exec: <img src=x onerror=alert(1)> \\u{1b}]0;pwned\\u{7}\\u{a}# injected heading`."),
            "Docker's error in a code span, on one line: {md}"
        );
        assert!(
            outside.contains("at `2026-12-04T15:25:10Z\\u{1b}[2J`;"),
            "{md}"
        );
    }

    #[test]
    fn machine_text_in_a_comments_html_is_escaped() {
        let change = Change {
            address: "deployment.a.vm".into(),
            kind: anycloud_provider::Kind::Vm,
            provider: "test".into(),
            action: Action::Replace,
            reason: Some("gone: <img src=x onerror=alert(1)> & \u{1b}[2J".into()),
            before: Some(serde_json::from_value(serde_json::json!({"s": "a\n"})).unwrap()),
            after: Some(
                serde_json::from_value(serde_json::json!({"s": "a\n```\n# injected heading\n"}))
                    .unwrap(),
            ),
            private: None,
            keep_on_destroy: false,
            after_unknown: vec![],
            replace_paths: vec![],
            dependencies: vec![],
            prior_dependencies: vec![],
        };
        let mut plan = plan_with_jobs(vec![]);
        plan.summary.replace = 1;
        plan.changes = vec![change];
        let md = markdown(&plan);
        assert!(
            md.contains("<summary><code>deployment.a.vm</code>: replace (gone: &lt;img src=x onerror=alert(1)&gt; &amp; \\u{1b}[2J)</summary>"),
            "{md}"
        );
        assert!(!md.contains('\u{1b}'), "{md:?}");
        // The diff's fence outlasts the value's backticks.
        assert!(md.contains("\n````diff\n"), "{md}");
        assert!(md.contains("\n````\n</details>"), "{md}");
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
            warnings: vec!["far away".into()],
            summary: Summary::default(),
            ..Plan::of_changes(vec![change])
        };
        let styled = human_with(&plan, true);
        assert!(styled.contains("\u{1b}["));
        let mut stripped = Vec::new();
        let mut stream = anstream::StripStream::new(&mut stripped);
        std::io::Write::write_all(&mut stream, styled.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(stripped).unwrap(), human(&plan));
    }
}
