//! The `aq` binary: everything lives in the library; see `lib.rs`.

fn main() -> std::process::ExitCode {
    aq_agent::memory::give_back_freed_memory();
    aq_agent::run(std::env::args_os())
}
