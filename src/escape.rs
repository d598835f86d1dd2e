//! Text that came from a job or a machine (a job's output, a Docker error, a provider's
//! fact), made safe to show: on a terminal, where an escape sequence would be obeyed (clear
//! the screen, set the window title, rewrite the line), and in a pull-request comment, where
//! a line of backticks would end a code block and what follows would be read as markdown.
//!
//! Control characters are *shown*, not stripped: a reviewer sees that something was there.
//! Every control character (C0 but the tab, DEL, C1 — ESC among them) and the bidirectional
//! overrides and isolates (which reorder what a reader sees) become Rust's escape of the
//! character, `\u{1b}`: visible, and never a control sequence itself.

use std::borrow::Cow;

/// Whether `c` is shown escaped: a control character but the tab (`\n` too: the callers
/// that keep lines say so), or a bidirectional override or isolate.
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One line as it may be shown: every control character (a newline too) escaped, tabs kept.
pub fn visible(line: &str) -> Cow<'_, str> {
    escape_but(line, '\t')
}

/// Text of several lines as it may be shown: as [`visible`], but newlines kept.
pub fn visible_lines(text: &str) -> Cow<'_, str> {
    escape_but(text, '\n')
}

fn escape_but(text: &str, keep: char) -> Cow<'_, str> {
    if !text.chars().any(|c| hidden(c) && c != keep) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) && c != keep {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Text safe inside an HTML element (a `<summary>`), and on one line.
pub fn html(text: &str) -> String {
    visible(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    let (mut longest, mut run) = (0, 0);
    for ch in text.chars() {
        run = if ch == c { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// A markdown code fence for `body`: backticks, at least three and more than any run of
/// them in it, so no line of it can close the block (CommonMark: a fence closes only with
/// at least as many backticks as opened it).
pub fn fence(body: &str) -> String {
    "`".repeat((longest_run(body, '`') + 1).max(3))
}

/// Text from a machine placed in the prose of a markdown comment: as it is when it holds
/// nothing markdown or HTML could read (a timestamp, a plain message), else a code span
/// (delimited by more backticks than any run in it), where nothing is markup: no emphasis,
/// link, HTML tag or @mention. Never more than one line.
pub fn markdown_text(text: &str) -> String {
    let text = visible(text);
    let plain = |c: char| c.is_alphanumeric() || " -:.,+'()=%".contains(c);
    if text.chars().all(plain) {
        return text.into_owned();
    }
    let ticks = "`".repeat(longest_run(&text, '`') + 1);
    // A span that starts or ends with a backtick needs a space between it and the delimiter
    // (one space each side is taken off again).
    if text.starts_with('`') || text.ends_with('`') || text.starts_with(' ') {
        format!("{ticks} {text} {ticks}")
    } else {
        format!("{ticks}{text}{ticks}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        let line = "a\u{1b}]0;pwned\u{7}b\u{1b}[2J\r\u{7f}\u{9b}31m\tc\u{202e}d";
        let shown = visible(line);
        assert_eq!(
            shown,
            "a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2J\\u{d}\\u{7f}\\u{9b}31m\tc\\u{202e}d"
        );
        assert!(!shown.chars().any(|c| c.is_control() && c != '\t'));
        assert_eq!(visible("a\nb"), "a\\u{a}b");
        assert_eq!(visible_lines("a\u{1b}\nb\n"), "a\\u{1b}\nb\n");
        assert!(matches!(visible("plain text, ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn fences_outlast_every_run_of_backticks() {
        assert_eq!(fence("plain"), "```");
        assert_eq!(fence("```"), "````");
        assert_eq!(fence("a ````` b\n``"), "``````");
    }

    #[test]
    fn machine_text_in_markdown_prose_is_literal() {
        assert_eq!(
            markdown_text("2026-12-04T15:25:10Z"),
            "2026-12-04T15:25:10Z"
        );
        assert_eq!(
            markdown_text("<img src=x onerror=alert(1)>"),
            "`<img src=x onerror=alert(1)>`"
        );
        assert_eq!(markdown_text("a `b` @c"), "``a `b` @c``");
        assert_eq!(markdown_text("`x"), "`` `x ``");
        assert_eq!(markdown_text("a\n# b\u{1b}"), "`a\\u{a}# b\\u{1b}`");
        assert_eq!(html("<b>&\"\u{1b}"), "&lt;b&gt;&amp;&quot;\\u{1b}");
    }
}
