//! `aq serve`: resolves `--model` arguments (registry references or files) into model bytes,
//! merges settings (defaults < config file < flags), starts the server and runs it until
//! SIGINT or SIGTERM. `aq dev` reuses all of it and adds a file watcher.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aq_pack::manifest::ModelFormat;
use aq_serve::{ConfigFile, ModelSettings, ModelSource, Server, ServerHandle, ServerSettings};

use crate::cli::{LogFormat, ServeArgs, ServingArgs};
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::settings::Settings;

pub fn run(args: ServeArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let config = load_config(&args.serving)?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    for spec in &args.models {
        wanted.push(split_alias(spec));
    }
    // Models the config file names with a source are served too, unless a flag names them.
    for (name, (source, _)) in &config.models {
        if let Some(source) = source
            && !wanted.iter().any(|(n, _)| n == name)
        {
            wanted.push((name.clone(), source.clone()));
        }
    }
    if wanted.is_empty() {
        return Err(user_error(
            ExitCode::InvalidInput,
            "nothing to serve: give --model NAME[:VERSION] or --model FILE (or models with a source in --config)",
        ));
    }
    let sources = resolve_all(&wanted, &config, &args.serving, settings)?;
    serve(sources, &config, &args.serving, printer, |_| {})
}

/// Reads the config file named by `--config` (or returns the defaults).
pub fn load_config(args: &ServingArgs) -> anyhow::Result<ConfigFile> {
    let Some(path) = &args.config else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read config {}", path.display()))?;
    ConfigFile::parse(&text).with_context(|| format!("in config {}", path.display()))
}

/// `ALIAS=MODEL` or `MODEL`; the alias defaults to the pack name or the file stem.
pub fn split_alias(spec: &str) -> (String, String) {
    if let Some((alias, model)) = spec.split_once('=')
        && !alias.is_empty()
        && !alias.contains('/')
    {
        return (alias.to_owned(), model.to_owned());
    }
    let name = if looks_like_file(spec) {
        Path::new(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_owned())
    } else {
        spec.split(':').next().unwrap_or(spec).to_owned()
    };
    (name, spec.to_owned())
}

fn looks_like_file(spec: &str) -> bool {
    spec.contains('/')
        || spec.ends_with(".onnx")
        || spec.ends_with(".tflite")
        || Path::new(spec).is_file()
}

/// Applies the command-line flags over a model's settings.
fn apply_flags(mut s: ModelSettings, args: &ServingArgs) -> anyhow::Result<ModelSettings> {
    let positive = |flag: &str, v: usize| {
        if v == 0 {
            Err(user_error(
                ExitCode::InvalidInput,
                format!("--{flag} must be at least 1"),
            ))
        } else {
            Ok(v)
        }
    };
    if let Some(v) = args.max_batch {
        s.max_batch = positive("max-batch", v)?;
    }
    if let Some(v) = args.queue {
        s.queue_capacity = positive("queue", v)?;
    }
    if let Some(v) = args.workers {
        s.workers = positive("workers", v)?;
    }
    if let Some(v) = &args.max_delay {
        s.max_delay = parse_duration("--max-delay", v)?;
    }
    if let Some(v) = &args.max_queue_delay {
        s.max_queue_delay = aq_serve::QueueDelay::parse(v)
            .map_err(|e| user_error(ExitCode::InvalidInput, format!("--max-queue-delay: {e}")))?;
    }
    if let Some(v) = &args.timeout {
        s.timeout = parse_duration("--timeout", v)?;
    }
    if args.no_calibrate {
        s.calibrate_batches = false;
    }
    Ok(s)
}

pub fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text).map_err(|e| {
        user_error(
            ExitCode::InvalidInput,
            format!("{flag}: {text:?} is not a duration ({e})"),
        )
    })
}

fn resolve_all(
    wanted: &[(String, String)],
    config: &ConfigFile,
    args: &ServingArgs,
    settings: &Settings,
) -> anyhow::Result<Vec<ModelSource>> {
    let mut registry = None;
    let mut sources = Vec::new();
    let preferred = preferred_variants(args, settings)?;
    for (name, spec) in wanted {
        if sources.iter().any(|s: &ModelSource| &s.name == name) {
            return Err(user_error(
                ExitCode::InvalidInput,
                format!("two models would be served as {name:?}; name one with ALIAS=MODEL"),
            ));
        }
        let model_settings =
            with_profile_threads(apply_flags(config.settings_for(name), args)?, settings)?;
        let source = if looks_like_file(spec) {
            from_file(name, Path::new(spec), model_settings)?
        } else {
            if registry.is_none() {
                registry = Some(super::open_registry(settings)?);
            }
            let Some(registry) = &registry else {
                unreachable!("the registry was opened just above")
            };
            from_registry(registry, name, spec, &preferred, model_settings)?
        };
        sources.push(source);
    }
    // Dropping the registry releases its lock: `aq pack` commands work while we serve.
    drop(registry);
    Ok(sources)
}

/// A model file served directly; its version is a digest prefix so a change shows.
pub fn from_file(name: &str, path: &Path, settings: ModelSettings) -> anyhow::Result<ModelSource> {
    let format = aq_runtime::detect_format(path)?;
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(source_from_bytes(name, path, format, bytes, settings))
}

pub fn source_from_bytes(
    name: &str,
    path: &Path,
    format: ModelFormat,
    bytes: Vec<u8>,
    settings: ModelSettings,
) -> ModelSource {
    let digest = blake3::hash(&bytes).to_hex();
    ModelSource {
        name: name.to_owned(),
        version: format!("file-{}", &digest.as_str()[..12]),
        format,
        bytes: Arc::new(bytes),
        origin: path.display().to_string(),
        settings,
    }
}

/// A model from the local registry. Every chunk and the file digest are checked as the
/// bytes are read (the signature was checked when the pack entered the registry).
fn from_registry(
    registry: &aq_store::Registry,
    name: &str,
    spec: &str,
    preferred: &[String],
    settings: ModelSettings,
) -> anyhow::Result<ModelSource> {
    let reference = super::parse_ref(spec)?;
    let pack = registry.get(&reference)?;
    pack_source(registry, &pack, name, preferred, settings)
}

/// The model of a stored pack to serve: its first variant in `preferred`, else its main
/// model.
pub fn pack_source(
    registry: &aq_store::Registry,
    pack: &aq_store::StoredPack,
    name: &str,
    preferred: &[String],
    settings: ModelSettings,
) -> anyhow::Result<ModelSource> {
    let manifest = pack.manifest();
    let (variant, model) = manifest.select_model(preferred);
    let entry = &model.entry;
    let size = manifest
        .files
        .iter()
        .find(|f| &f.path == entry)
        .map(|f| f.size)
        .unwrap_or(0);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    registry
        .write_file(manifest, entry, &mut bytes)
        .with_context(|| format!("failed to read the model of {}", manifest.id()))?;
    Ok(ModelSource {
        name: name.to_owned(),
        version: manifest.version.to_string(),
        format: model.format,
        bytes: Arc::new(bytes),
        origin: match variant {
            Some(v) => format!("{} variant {v} ({})", manifest.id(), pack.signed.digest()),
            None => format!("{} ({})", manifest.id(), pack.signed.digest()),
        },
        settings,
    })
}

/// Variants to serve, best first: `--variant` (as given), else the device profile's.
pub fn preferred_variants(args: &ServingArgs, settings: &Settings) -> anyhow::Result<Vec<String>> {
    if !args.variants.is_empty() {
        return Ok(args.variants.clone());
    }
    let (profile, _) = settings.profile()?;
    Ok(profile.map(|(p, _)| p.variants).unwrap_or_default())
}

/// Installs the tracing subscriber that writes logs on stderr.
pub fn init_logs(args: &ServingArgs) -> anyhow::Result<()> {
    let level: tracing::Level = args.log_level.parse().map_err(|_| {
        user_error(
            ExitCode::InvalidInput,
            format!("unknown log level {:?}", args.log_level),
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests that run several servers in one process) keeps the first.
    let _ = result;
    Ok(())
}

/// Server settings: the config file's, then the flags.
pub fn server_settings(config: &ConfigFile, args: &ServingArgs) -> anyhow::Result<ServerSettings> {
    let mut server_settings: ServerSettings = config.server.clone();
    if let Some(addr) = &args.addr {
        server_settings.addr = addr
            .parse()
            .map_err(|e| user_error(ExitCode::InvalidInput, format!("--addr {addr:?}: {e}")))?;
    }
    if let Some(n) = args.max_body {
        server_settings.max_body_bytes = n;
    }
    Ok(server_settings)
}

/// Settings for a model whose name is not known in advance (the agent's): the config file's
/// defaults, then the flags.
pub fn model_settings(
    config: &ConfigFile,
    args: &ServingArgs,
    settings: &Settings,
) -> anyhow::Result<ModelSettings> {
    with_profile_threads(apply_flags(config.settings_for(""), args)?, settings)
}

/// A model left to share the machine (`threads = 0`) shares the device profile's thread
/// budget among its workers, when a profile is in use; otherwise the machine's cores. The
/// budget never exceeds the cores this process may run on (a generic profile's 4 threads
/// under a one-core `taskset` or cgroup would only contend).
fn with_profile_threads(
    mut s: ModelSettings,
    settings: &Settings,
) -> anyhow::Result<ModelSettings> {
    if s.threads == 0
        && let (Some((profile, _)), _) = settings.profile()?
        && profile.threads > 0
    {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        s.threads = profile_threads(profile.threads as usize, cores, s.workers);
    }
    Ok(s)
}

/// Threads per run: the profile's budget, capped by the usable cores, shared by the workers.
fn profile_threads(budget: usize, cores: usize, workers: usize) -> usize {
    (budget.min(cores) / workers.max(1)).max(1)
}

/// Starts the server on a tokio runtime, prints where it listens, runs `with_handle` (the
/// dev watcher hooks in there), and serves until a shutdown signal.
pub fn serve(
    sources: Vec<ModelSource>,
    config: &ConfigFile,
    args: &ServingArgs,
    printer: &Printer,
    with_handle: impl FnOnce(ServerHandle),
) -> anyhow::Result<()> {
    init_logs(args)?;
    let server_settings = server_settings(config, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aq-http")
        // Below the model workers, which the set starts at this thread's priority.
        .on_thread_start(aq_serve::priority::lower_each_thread(args.http_nice))
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let server = Server::start(server_settings, &sources).await?;
        let addr = server
            .local_addr()
            .context("failed to read the bound address")?;
        let models: Vec<serde_json::Value> = sources
            .iter()
            .map(
                |s| serde_json::json!({ "name": s.name, "version": s.version, "origin": s.origin }),
            )
            .collect();
        printer.result(
            &serde_json::json!({ "listening": format!("http://{addr}"), "models": models }),
            || {
                let names: Vec<String> = sources
                    .iter()
                    .map(|s| format!("{} {}", s.name, s.version))
                    .collect();
                format!("listening on http://{addr} ({})", names.join(", "))
            },
        );
        with_handle(server.handle());
        server.run(aq_serve::shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    // Workers finish their batches; nothing to wait for beyond the drain.
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_profile_budget_is_capped_by_the_usable_cores() {
        use super::profile_threads;
        assert_eq!(profile_threads(4, 1, 1), 1, "one usable core");
        assert_eq!(profile_threads(4, 16, 1), 4, "the profile's budget");
        assert_eq!(profile_threads(4, 16, 2), 2, "shared by the workers");
        assert_eq!(profile_threads(4, 2, 4), 1, "never none");
    }
}
