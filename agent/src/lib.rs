//! `aq`: the Aquilia Edge agent and developer CLI, as a library so benchmarks and tests can
//! drive exactly what the binary runs.
//!
//! Flags, environment and defaults are resolved into [`settings::Settings`] before a command
//! runs; each command is a module under `commands/`; all output goes through
//! [`printer::Printer`]; errors become documented exit codes in [`exit`].

mod cli;
mod commands;
mod daemon;
pub mod exit;
pub mod memory;
mod printer;
pub mod profile;
pub mod remote;
mod settings;
mod transfer;

use std::ffi::OsString;

use clap::Parser;

/// Runs `aq` with these arguments (the first is the program name) and returns its exit code.
pub fn run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and usage errors itself; usage errors exit 2.
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    aq_runtime::install_quiet_panic_hook();
    let printer = printer::Printer::new(cli.global.json, cli.global.quiet);
    let result = settings::Settings::resolve(&cli.global)
        .and_then(|settings| commands::dispatch(cli.command, &settings, &printer));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::code_for(&err);
            printer.error(&err, code);
            std::process::ExitCode::from(code.as_u8())
        }
    }
}
