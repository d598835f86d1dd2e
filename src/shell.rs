//! The one owner of what anycloud prints (cargo's `Shell` is the model): results on stdout,
//! everything else (progress, warnings, errors, `-v` details) on stderr or stdout as the
//! command says, in colour on a terminal and never under `NO_COLOR`, `--no-color` or a pipe
//! (anstream decides, and strips the styles where they must not go).

use std::io::Write;
use std::sync::Arc;

use anstream::{AutoStream, ColorChoice};
use anycloud_provider::Diagnostic;

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

    /// Problems, on stderr, styled where stderr is a terminal.
    pub fn diagnostics(&self, diagnostics: &[Diagnostic]) {
        let mut text = String::new();
        for d in diagnostics {
            text.push_str(&d.render(true));
        }
        self.write(false, &text);
    }

    /// Free text on stderr (a failed apply's summary).
    pub fn err(&self, text: &str) {
        self.write(false, text);
    }
}
