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

    /// Prints a command's result: `value` as JSON, or `human` as text.
    pub fn result<T: Serialize>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: failed to encode output as JSON: {e}"),
            }
        } else if !self.quiet {
            let text = human();
            if !text.is_empty() {
                println!("{}", text.trim_end_matches('\n'));
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
