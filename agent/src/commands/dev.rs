//! `aq dev`: serve one model file and swap in a new model whenever the file changes. The new
//! model is loaded and planned beside the old one and swapped in at once; requests queued on
//! the old one finish there, so a reload fails no request. A file that does not load leaves
//! the old model serving (and says why in the log).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::cli::DevArgs;
use crate::printer::Printer;
use crate::settings::Settings;

use super::serve::{from_file, load_config, parse_duration, serve, source_from_bytes, split_alias};

pub fn run(args: DevArgs, _settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let config = load_config(&args.serving)?;
    let poll = parse_duration("--poll", &args.poll)?;
    let (name, file) = split_alias(&args.model);
    let path = PathBuf::from(&file);
    let model_settings = config.settings_for(&name);
    let first = from_file(&name, &path, model_settings.clone())?;
    let first_version = first.version.clone();
    serve(
        vec![first],
        &config,
        &args.serving,
        printer,
        move |handle| {
            tokio::spawn(watch(
                path,
                name,
                first_version,
                model_settings,
                poll,
                handle,
            ));
        },
    )
}

/// The file's identity as far as a cheap `stat` can tell.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

async fn watch(
    path: PathBuf,
    name: String,
    mut version: String,
    settings: aq_serve::ModelSettings,
    poll: Duration,
    handle: aq_serve::ServerHandle,
) {
    let mut last = stamp(&path);
    loop {
        tokio::time::sleep(poll).await;
        let now = stamp(&path);
        if now.is_none() || now == last {
            continue;
        }
        // Wait for the writer to finish: the stamp must hold still for one more poll.
        tokio::time::sleep(poll).await;
        if stamp(&path) != now {
            continue;
        }
        last = now;
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let format = match aq_runtime::detect_format(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(model = %name, error = %e, "the changed file is not a model; still serving the old one");
                continue;
            }
        };
        let source = source_from_bytes(&name, &path, format, bytes, settings.clone());
        if source.version == version {
            continue;
        }
        tracing::info!(model = %name, from = %version, to = %source.version, "file changed; reloading");
        match handle.reload(&source).await {
            Ok(()) => version = source.version,
            Err(e) => {
                tracing::error!(model = %name, error = %e, "reload failed; still serving the old model")
            }
        }
    }
}
