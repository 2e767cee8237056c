//! The `aq` binary: everything lives in the library; see `lib.rs`.

fn main() -> std::process::ExitCode {
    aq_agent::memory::give_back_freed_memory();
    let _ = aq_serve::batcher::IDLE_HOOK.set(aq_agent::memory::trim);
    aq_agent::run(std::env::args_os())
}
