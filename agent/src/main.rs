//! `aq`: the Aquilia Edge agent and developer CLI.
//!
//! Flags, environment and defaults are resolved into [`settings::Settings`] before a command
//! runs; each command is a module under `commands/` with a `run(args, &Settings, &Printer)`
//! function; all output goes through [`printer::Printer`]; errors become documented exit
//! codes in [`exit`].

mod cli;
mod commands;
mod exit;
mod printer;
mod settings;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
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
