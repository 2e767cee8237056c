//! One module per command; `dispatch` routes the parsed command line to them.

mod agent;
mod check;
mod dev;
mod device;
#[cfg(feature = "export")]
mod export;
mod key;
#[cfg(feature = "export")]
mod optimize;
mod pack;
mod rollout;
pub(crate) mod serve;
#[cfg(feature = "export")]
mod variant;

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use aq_pack::{PackRef, TrustPolicy};
use aq_store::Registry;

use crate::cli::{AgentCommand, Command, DeviceCommand, KeyCommand, PackCommand, TrustArgs};
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::settings::Settings;

pub fn dispatch(command: Command, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    match command {
        Command::Key(KeyCommand::Gen(args)) => key::gen_key(args, printer),
        Command::Key(KeyCommand::Show(args)) => key::show(args, printer),
        Command::Key(KeyCommand::Trust(args)) => key::trust(args, settings, printer),
        Command::Device(DeviceCommand::Profile(args)) => device::profile(args, settings, printer),
        Command::Serve(args) => serve::run(args, settings, printer),
        Command::Check(args) => check::run(args, settings, printer),
        Command::Dev(args) => dev::run(args, settings, printer),
        Command::Agent(AgentCommand::Enroll(args)) => agent::enroll(args, settings, printer),
        Command::Agent(AgentCommand::Run(args)) => agent::run(args, settings, printer),
        Command::Rollout(cmd) => rollout::run(cmd, printer),
        Command::Deploy(args) => rollout::deploy(args, settings, printer),
        #[cfg(feature = "export")]
        Command::Export(args) => export::run(args, settings, printer),
        #[cfg(feature = "export")]
        Command::Optimize(crate::cli::OptimizeCommand::Quantize(args)) => {
            optimize::quantize(args, settings, printer)
        }
        #[cfg(not(feature = "export"))]
        Command::Export(_) | Command::Optimize(_) => Err(user_error(
            ExitCode::InvalidInput,
            "this aq was built without export passes (cargo feature `export`, left out of device \
             builds): run aq export or aq optimize on a build machine",
        )),
        Command::Pack(cmd) => match cmd {
            PackCommand::Save(args) => pack::save::run(args, settings, printer),
            PackCommand::List => pack::list::run(settings, printer),
            PackCommand::Inspect(args) => pack::inspect::run(args, settings, printer),
            PackCommand::Verify(args) => pack::verify::run(args, settings, printer),
            PackCommand::Tag(args) => pack::tag::run(args, settings, printer),
            PackCommand::Untag(args) => pack::tag::untag(args, settings, printer),
            PackCommand::Rm(args) => pack::rm::run(args, settings, printer),
            PackCommand::Gc => pack::gc::run(settings, printer),
            PackCommand::Export(args) => pack::export::run(args, settings, printer),
            PackCommand::Import(args) => pack::import::run(args, settings, printer),
            PackCommand::Unpack(args) => pack::unpack::run(args, settings, printer),
            PackCommand::Push(args) => pack::push::run(args, settings, printer),
            PackCommand::Pull(args) => pack::pull::run(args, settings, printer),
        },
    }
}

/// Opens the registry in the data directory.
pub fn open_registry(settings: &Settings) -> anyhow::Result<Registry> {
    Registry::open(&settings.data_dir).with_context(|| {
        format!(
            "failed to open the registry in {}",
            settings.data_dir.display()
        )
    })
}

/// Parses a user-typed pack reference.
pub fn parse_ref(text: &str) -> anyhow::Result<PackRef> {
    text.parse::<PackRef>()
        .map_err(|e| user_error(ExitCode::InvalidInput, e.to_string()))
}

/// Loads the trust policy named by `--trust`, or the data directory's, or an empty one.
pub fn load_policy(args: &TrustArgs, settings: &Settings) -> anyhow::Result<TrustPolicy> {
    let path = match &args.trust {
        Some(p) => p.clone(),
        None => {
            let default = settings.trust_file();
            if !default.exists() {
                return Ok(TrustPolicy::empty());
            }
            default
        }
    };
    read_policy(&path)
}

pub fn read_policy(path: &Path) -> anyhow::Result<TrustPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read trust policy {}", path.display()))?;
    TrustPolicy::parse(&text).with_context(|| format!("in trust policy {}", path.display()))
}

/// Connects settings for a sync-server: URL, token (flag, environment or file) and CA.
pub fn remote(
    args: &crate::cli::RemoteArgs,
) -> anyhow::Result<std::sync::Arc<crate::remote::Remote>> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("failed to read the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(crate::remote::Remote::new(&crate::remote::RemoteOptions {
        url: args.server.clone(),
        token,
        ca: args.ca.clone(),
    })?)
}

/// A runtime for commands that talk to a server.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

pub fn now() -> SystemTime {
    SystemTime::now()
}
