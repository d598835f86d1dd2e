//! The one diagnostic type: every config, settings and plan problem is one of these, located
//! in a file (line and column, with the offending line) or at a resource address.

use std::fmt;

/// A place in the config file: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

impl Loc {
    pub const UNKNOWN: Loc = Loc { line: 0, column: 0 };

    pub fn new(line: u64, column: u64) -> Loc {
        Loc { line, column }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    /// What to do about it ("did you mean 'us-east-1'?").
    pub help: Option<String>,
    /// The file it is in; set by the config loader, which knows the file.
    pub file: Option<String>,
    /// 1-based; 0 when the problem is not in a file.
    pub line: u64,
    pub column: u64,
    /// The offending line of the file, for the snippet under the message.
    pub source_line: Option<String>,
    /// The resource it is about, for problems found while planning.
    pub address: Option<String>,
    /// Printed exactly as worded (a provider's own message whose words are fixed), with no
    /// `error:` in front.
    pub verbatim: bool,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            help: None,
            file: None,
            line: 0,
            column: 0,
            source_line: None,
            address: None,
            verbatim: false,
        }
    }

    /// A message printed exactly as it is worded.
    pub fn verbatim(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            verbatim: true,
            ..Diagnostic::error(message)
        }
    }

    /// An error at `at` in the file being checked.
    pub fn at(at: Loc, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::error(message);
        d.line = at.line;
        d.column = at.column;
        d
    }

    /// An error about the resource at `address`.
    pub fn of(address: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::error(message);
        d.address = Some(address.into());
        d
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }

    /// Places the diagnostic in `file`, whose text is `source`.
    pub fn in_file(mut self, file: &str, source: &str) -> Diagnostic {
        if self.line == 0 {
            self.line = 1;
            self.column = 1;
        } else {
            self.source_line = source
                .lines()
                .nth(self.line.saturating_sub(1) as usize)
                .map(String::from);
        }
        self.file = Some(file.to_owned());
        self
    }

    /// The diagnostic as text; with `styled`, its severity in colour (ANSI, for a terminal).
    pub fn render(&self, styled: bool) -> String {
        use anstyle::{AnsiColor, Style};
        if self.verbatim {
            return format!("{}\n", self.message);
        }
        let paint = |style: Style, text: &str| {
            if styled {
                format!("{}{text}{}", style.render(), style.render_reset())
            } else {
                text.to_owned()
            }
        };
        let (word, color) = ("error", AnsiColor::Red);
        let head = paint(Style::new().bold().fg_color(Some(color.into())), word);
        let dim = Style::new().fg_color(Some(AnsiColor::Blue.into()));
        let mut out = match (&self.file, &self.address) {
            // `file:line:column: message` first, as compilers print it: editors and CI
            // problem matchers jump straight to it.
            (Some(file), _) => format!(
                "{head}: {file}:{}:{}: {}\n",
                self.line, self.column, self.message
            ),
            (None, Some(address)) => format!("{head}: {address}: {}\n", self.message),
            (None, None) => format!("{head}: {}\n", self.message),
        };
        if let Some(src) = &self.source_line {
            let n = self.line.to_string();
            let pad = " ".repeat(n.len());
            let (src, caret_at) = window(src, (self.column.max(1) - 1) as usize);
            out.push_str(&paint(dim, &format!("{pad} |")));
            out.push('\n');
            out.push_str(&paint(dim, &format!("{n} |")));
            out.push_str(&format!(" {src}\n"));
            out.push_str(&paint(dim, &format!("{pad} |")));
            out.push_str(&format!(
                " {}{}\n",
                " ".repeat(caret_at.min(src.chars().count())),
                paint(Style::new().bold().fg_color(Some(color.into())), "^")
            ));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!(
                "  = {}: {help}\n",
                paint(Style::new().bold(), "help")
            ));
        }
        out
    }
}

/// The part of a long source line around the caret (a line of 200 KB is shown as a
/// hundred characters), with control characters made visible; and where the caret goes.
fn window(line: &str, caret: usize) -> (String, usize) {
    const WIDTH: usize = 100;
    let chars: Vec<char> = line.chars().collect();
    let visible = |cs: &[char]| -> String {
        cs.iter()
            .map(|c| {
                if c.is_control() && *c != '\t' {
                    '\u{fffd}'
                } else {
                    *c
                }
            })
            .collect()
    };
    if chars.len() <= WIDTH {
        return (visible(&chars), caret);
    }
    let start = caret.saturating_sub(WIDTH / 3).min(chars.len() - WIDTH);
    let end = start + WIDTH;
    let mut shown = String::new();
    let mut caret_at = caret - start;
    if start > 0 {
        shown.push('…');
        caret_at += 1;
    }
    shown.push_str(&visible(&chars[start..end]));
    if end < chars.len() {
        shown.push('…');
    }
    (shown, caret_at)
}

/// A value quoted in a message, cut short when long: an error names what it refuses, it
/// does not echo 200 KB of it.
pub fn clip(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostic {}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Edit distance is quadratic: a word far longer than any candidate is no typo of one.
    if word.len() > 64 {
        return None;
    }
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

pub fn did_you_mean(found: Option<&str>) -> Option<String> {
    found.map(|s| format!("did you mean '{s}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_shown_around_the_caret_and_a_long_value_clipped() {
        let line = format!("    region: {}", "x".repeat(5_000));
        let d = Diagnostic::at(Loc::new(1, 13), "unknown region").in_file("f.yaml", &line);
        let shown = d.render(false);
        assert!(shown.len() < 400, "{shown}");
        assert!(shown.contains("\n1 |     region: xxx"), "{shown}");
        assert!(shown.contains("x…\n"), "{shown}");
        assert_eq!(clip(&"y".repeat(100)).chars().count(), 65);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn renders_file_location_snippet_and_help() {
        let d = Diagnostic::at(Loc::new(2, 11), "unknown region 'us-est-1'")
            .with_help("did you mean 'us-east-1'?")
            .in_file("anycloud.yaml", "deployments:\n  region: us-est-1\n");
        assert_eq!(
            d.to_string(),
            "error: anycloud.yaml:2:11: unknown region 'us-est-1'\n  |\n2 |   region: us-est-1\n  |           ^\n  = help: did you mean 'us-east-1'?\n"
        );
        let styled = d.render(true);
        assert!(styled.contains("\u{1b}["), "{styled:?}");
    }

    #[test]
    fn renders_an_address() {
        let d = Diagnostic::of("deployment.a.vm", "it does not exist");
        assert_eq!(d.to_string(), "error: deployment.a.vm: it does not exist\n");
    }

    #[test]
    fn long_words_get_no_suggestion() {
        assert_eq!(
            suggest("us-est-1", ["us-east-1", "eu-west-1"]),
            Some("us-east-1")
        );
        assert_eq!(suggest(&"x".repeat(200_000), ["us-east-1"]), None);
    }
}
