//! The one owner of what anycloud prints (cargo's `Shell` is the model): results on stdout,
//! everything else (progress, warnings, errors, `-v` details) on stderr or stdout as the
//! command says, in colour on a terminal and never under `NO_COLOR`, `--no-color` or a pipe
//! (anstream decides, and strips the styles where they must not go).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anstream::{AutoStream, ColorChoice};
use anycloud_provider::Diagnostic;

use crate::escape::visible_lines;

#[derive(Clone)]
pub struct Shell {
    inner: Arc<Inner>,
}

struct Inner {
    choice: ColorChoice,
    quiet: bool,
    verbose: bool,
    /// `--json-stream`: stdout is the stream's, and people's text goes to stderr.
    stream: Option<Arc<crate::stream::Stream>>,
}

impl Shell {
    pub fn new(no_color: bool, quiet: bool, verbose: bool) -> Shell {
        let choice = if no_color {
            ColorChoice::Never
        } else {
            ColorChoice::Auto
        };
        Shell {
            inner: Arc::new(Inner {
                choice,
                quiet,
                verbose,
                stream: None,
            }),
        }
    }

    /// A shell for `--json-stream`: the stream on stdout, everything else on stderr.
    pub fn streaming(
        no_color: bool,
        quiet: bool,
        verbose: bool,
        stream: crate::stream::Stream,
    ) -> Shell {
        let mut shell = Shell::new(no_color, quiet, verbose);
        Arc::get_mut(&mut shell.inner).expect("just made").stream = Some(Arc::new(stream));
        shell
    }

    /// The JSON stream, under `--json-stream`.
    pub fn stream(&self) -> Option<&crate::stream::Stream> {
        self.inner.stream.as_deref()
    }

    /// A shell that prints plainly (tests, benchmarks).
    pub fn plain() -> Shell {
        Shell::new(true, false, false)
    }

    pub fn quiet(&self) -> bool {
        self.inner.quiet
    }

    pub fn verbose(&self) -> bool {
        self.inner.verbose
    }

    /// Whether stdout gets colour: renderers style their text only then.
    pub fn stdout_styled(&self) -> bool {
        if self.inner.stream.is_some() {
            return false;
        }
        AutoStream::new(std::io::stdout(), self.inner.choice).current_choice() != ColorChoice::Never
    }

    fn write(&self, to_stdout: bool, text: &str) {
        // Not println!: a closed pipe (`| head`) must not panic, and is not an error.
        if to_stdout && self.inner.stream.is_none() {
            let mut out = AutoStream::new(std::io::stdout().lock(), self.inner.choice);
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        } else {
            let mut err = AutoStream::new(std::io::stderr().lock(), self.inner.choice);
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// A command's result (a plan, a listing): always shown.
    pub fn out(&self, text: &str) {
        self.write(true, text);
    }

    /// A job's own output (`logs`, `run` following its job): on a terminal with its control
    /// characters shown escaped ([`crate::escape`]), so no escape sequence of the job's is
    /// obeyed; piped or redirected, as the job wrote it (as `docker logs` and `kubectl logs`
    /// keep it): a saved log is the job's, for `grep`, a diff or `less -R`, and not
    /// anycloud's to change. Never styled, and never stripped either.
    pub fn job_output(&self, text: &str) {
        let to_stdout = self.inner.stream.is_none();
        let terminal = if to_stdout {
            std::io::stdout().is_terminal()
        } else {
            std::io::stderr().is_terminal()
        };
        let shown = job_text(text, terminal);
        if to_stdout {
            let _ = std::io::stdout().lock().write_all(shown.as_bytes());
            let _ = std::io::stdout().flush();
        } else {
            let _ = std::io::stderr().lock().write_all(shown.as_bytes());
        }
    }

    /// What a command is doing: not under `-q`.
    pub fn status(&self, text: &str) {
        if !self.inner.quiet {
            self.write(true, text);
        }
    }

    /// Details for `-v`, on stderr.
    pub fn detail(&self, text: &str) {
        if self.inner.verbose {
            self.write(false, &format!("{text}\n"));
        }
    }

    /// Problems, on stderr, styled where stderr is a terminal. What they say may be a
    /// machine's words (an SSH command's stderr, a cloud's error): its control characters
    /// are shown escaped, and only the styles are sent.
    pub fn diagnostics(&self, diagnostics: &[Diagnostic]) {
        let mut text = String::new();
        for d in diagnostics {
            text.push_str(&shown(d).render(true));
        }
        self.write(false, &text);
    }

    /// Free text on stderr (a failed apply's summary, a machine's error), never styled:
    /// its control characters are shown escaped.
    pub fn err(&self, text: &str) {
        self.write(false, &visible_lines(text));
    }
}

/// A diagnostic with its words' control characters escaped, for [`Shell::diagnostics`].
fn shown(d: &Diagnostic) -> Diagnostic {
    let shown = |t: &str| visible_lines(t).into_owned();
    Diagnostic {
        message: shown(&d.message),
        help: d.help.as_deref().map(shown),
        source_line: d.source_line.as_deref().map(shown),
        address: d.address.as_deref().map(shown),
        ..d.clone()
    }
}

/// A job's output as [`Shell::job_output`] writes it: for a terminal, escaped; else as it is.
pub fn job_text(text: &str, terminal: bool) -> Cow<'_, str> {
    if terminal {
        visible_lines(text)
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use anycloud_provider::Diagnostic;

    use super::{job_text, shown};

    /// A terminal never receives a job's escape sequences (a title set, the screen
    /// cleared, a line rewritten); a file gets the job's bytes.
    #[test]
    fn a_terminal_sees_a_jobs_escapes_and_a_pipe_gets_its_bytes() {
        let log = "\u{1b}]0;pwned\u{7}\n\u{1b}[2J\nstep 1\r\u{9b}1m\tdone\n";
        let shown = job_text(log, true);
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "\\u{1b}]0;pwned\\u{7}\n\\u{1b}[2J\nstep 1\\u{d}\\u{9b}1m\tdone\n"
        );
        assert_eq!(job_text(log, false), log);
    }

    /// A machine's error (an SSH command's stderr) in a diagnostic: escaped, while the
    /// diagnostic's own styles stay.
    #[test]
    fn a_diagnostic_sends_only_its_styles() {
        let mut d = Diagnostic::error("docker: \u{1b}]0;pwned\u{7}\u{1b}[2J failed\nsecond line");
        d.help = Some("\u{9b}31m".into());
        let text = shown(&d).render(true);
        let mut stripped = Vec::new();
        let mut stream = anstream::StripStream::new(&mut stripped);
        stream.write_all(text.as_bytes()).unwrap();
        let plain = String::from_utf8(stripped).unwrap();
        assert_eq!(plain, shown(&d).render(false), "only styles were sent");
        assert!(!plain.contains(['\u{1b}', '\u{7}', '\u{9b}']), "{plain:?}");
        assert!(
            plain.contains("docker: \\u{1b}]0;pwned\\u{7}\\u{1b}[2J failed\nsecond line"),
            "{plain}"
        );
    }
}
