//! The `aq` binary: everything lives in the library; see `lib.rs`.

fn main() -> std::process::ExitCode {
    aq_agent::run(std::env::args_os())
}
