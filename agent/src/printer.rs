//! All human and machine output goes through the printer: text on stdout for people, JSON on
//! stdout with `--json`, errors on stderr (as JSON with `--json`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use serde::Serialize;

use crate::exit::ExitCode;

pub struct Printer {
    json: bool,
    quiet: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool) -> Self {
        Printer { json, quiet }
    }

    /// Prints a command's result: `value` as JSON, or `human` as text. A closed stdout (a
    /// pipe into `head`) is not an error worth a panic: the output is dropped.
    pub fn result<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        use std::io::Write;
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(text) => {
                    let _ = writeln!(std::io::stdout().lock(), "{text}");
                }
                Err(e) => eprintln!("error: failed to encode output as JSON: {e}"),
            }
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                let _ = writeln!(std::io::stdout().lock(), "{}", text.trim_end_matches('\n'));
            }
        }
    }

    /// Prints a warning on stderr (also in JSON mode, where stdout stays machine-readable).
    pub fn warn(&self, message: &str) {
        if self.json {
            eprintln!("{}", serde_json::json!({ "warning": message }));
        } else {
            eprintln!("warning: {message}");
        }
    }

    /// Prints a failure with its chain of causes.
    pub fn error(&self, err: &anyhow::Error, code: ExitCode) {
        let causes: Vec<String> = err.chain().skip(1).map(ToString::to_string).collect();
        if self.json {
            let body = serde_json::json!({
                "error": {
                    "kind": code.kind(),
                    "exit_code": code.as_u8(),
                    "message": err.to_string(),
                    "causes": causes,
                }
            });
            eprintln!("{body}");
        } else {
            eprintln!("error: {err}");
            for cause in causes {
                eprintln!("  caused by: {cause}");
            }
        }
    }
}

/// Formats a byte count for people (powers of 1000, as `ls -h --si` does).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A progress bar on stderr for transfers; drawn only on a terminal, and never with `--json`
/// or `--quiet`. Safe to advance from several tasks.
pub struct Progress {
    label: String,
    total: u64,
    enabled: bool,
    started: std::time::Instant,
    state: std::sync::Mutex<(u64, Option<std::time::Instant>)>,
}

impl Printer {
    pub fn progress(&self, label: &str, total: u64) -> Progress {
        use std::io::IsTerminal;
        Progress {
            label: label.to_owned(),
            total,
            enabled: !self.json && !self.quiet && std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            state: std::sync::Mutex::new((0, None)),
        }
    }
}

impl Progress {
    pub fn advance(&self, n: u64) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.0 += n;
        let now = std::time::Instant::now();
        if !self.enabled
            || state
                .1
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        state.1 = Some(now);
        self.draw(state.0);
    }

    fn draw(&self, done: u64) {
        const WIDTH: u64 = 30;
        let filled = (done.min(self.total) * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{} [{}{}] {} / {}  {}/s   ",
            self.label,
            "#".repeat(filled as usize),
            ".".repeat((WIDTH - filled) as usize),
            human_bytes(done),
            human_bytes(self.total),
            human_bytes((done as f64 / secs) as u64),
        );
    }

    /// Draws the final state and ends the line.
    pub fn finish(&self) {
        if !self.enabled {
            return;
        }
        let done = self.state.lock().map(|s| s.0).unwrap_or(self.total);
        self.draw(done);
        eprintln!();
    }
}
