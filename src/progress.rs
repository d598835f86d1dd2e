//! What apply shows while it works: a live display of the operations in flight (with their
//! elapsed time) on a terminal, one plain line per event otherwise (CI logs, pipes).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::apply::human_duration;
use crate::escape::{visible, visible_lines};
use crate::plan::Action;
use crate::shell::Shell;

#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    live: Option<MultiProgress>,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    shell: Shell,
}

fn verb(a: Action) -> (&'static str, &'static str) {
    match a {
        Action::Create => ("Creating", "Creation complete"),
        Action::Update => ("Modifying", "Modifications complete"),
        Action::Replace => ("Replacing", "Replacement complete"),
        Action::Delete => ("Destroying", "Destruction complete"),
        Action::Read => ("Reading", "Read complete"),
        Action::NoOp => ("Checking", "Checked"),
    }
}

impl Progress {
    pub fn new(shell: &Shell) -> Progress {
        let live = (std::io::stdout().is_terminal() && !shell.quiet() && shell.stream().is_none())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Progress {
            inner: Arc::new(Inner {
                live,
                bars: Mutex::new(BTreeMap::new()),
                shell: shell.clone(),
            }),
        }
    }

    /// Nothing is shown at all (`-q` without a terminal display): skip even the formatting.
    fn silent(&self) -> bool {
        self.inner.live.is_none() && self.inner.shell.quiet()
    }

    fn line(&self, text: &str) {
        match &self.inner.live {
            Some(m) => {
                let _ = m.println(text);
            }
            None => self.inner.shell.status(&format!("{text}\n")),
        }
    }

    fn stream(&self) -> Option<&crate::stream::Stream> {
        self.inner.shell.stream()
    }

    pub fn note(&self, text: &str) {
        if let Some(s) = self.stream() {
            return s.log(text);
        }
        self.line(text);
    }

    pub fn started(&self, address: &str, action: Action) {
        if let Some(s) = self.stream() {
            return s.started(address, action);
        }
        if self.silent() {
            return;
        }
        let (doing, _) = verb(action);
        match &self.inner.live {
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                        .expect("valid template"),
                );
                bar.set_message(format!("{address}: {doing}..."));
                bar.enable_steady_tick(Duration::from_millis(120));
                self.inner
                    .bars
                    .lock()
                    .expect("not poisoned")
                    .insert(address.to_owned(), bar);
            }
            _ => self.line(&format!("{address}: {doing}...")),
        }
    }

    fn clear(&self, address: &str) {
        if let Some(bar) = self
            .inner
            .bars
            .lock()
            .expect("not poisoned")
            .remove(address)
        {
            bar.finish_and_clear();
        }
    }

    pub fn finished(&self, address: &str, action: Action, elapsed: Duration) {
        if let Some(s) = self.stream() {
            return s.finished(address, action, elapsed);
        }
        if self.silent() {
            return;
        }
        self.clear(address);
        let (_, done) = verb(action);
        self.line(&format!(
            "{address}: {done} after {}",
            human_duration(elapsed)
        ));
    }

    pub fn failed(&self, address: &str, message: &str, elapsed: Duration) {
        if let Some(s) = self.stream() {
            return s.errored(address, message, elapsed);
        }
        self.clear(address);
        self.line(&format!(
            "{address}: FAILED after {}: {}",
            human_duration(elapsed),
            visible_lines(message)
        ));
    }

    /// A line of a step's own output (a long install, a wait for SSH): next to its spinner
    /// on a terminal, as a line of its own otherwise.
    pub fn output(&self, address: &str, text: &str) {
        let text: String = text.chars().take(160).collect();
        if let Some(s) = self.stream() {
            return s.progress(address, &text);
        }
        // A machine's own text: shown, never obeyed, by the terminal.
        let text = visible(&text);
        let bars = self.inner.bars.lock().expect("not poisoned");
        match bars.get(address) {
            Some(bar) => bar.set_message(format!("{address}: {text}")),
            None => {
                drop(bars);
                self.line(&format!("{address}: | {text}"));
            }
        }
    }

    pub fn retrying(&self, address: &str, message: &str, after: Duration) {
        if let Some(s) = self.stream() {
            return s.retrying(address, message, after);
        }
        self.line(&format!(
            "{address}: retrying in {:.1}s after: {}",
            after.as_secs_f64(),
            visible_lines(message)
        ));
    }

    pub fn skipped(&self, address: &str) {
        if let Some(s) = self.stream() {
            return s.skipped(address);
        }
        self.line(&format!("{address}: skipped (a resource it needs failed)"));
    }
}
