//! `aq pack push`: upload a pack to a sync-server. The server is asked which chunks it lacks;
//! only those travel, in frames over parallel connections; the signed manifest goes last. Each
//! frame is durable on the server when its answer arrives, so an interrupted push resumes
//! where it stopped: the next run finds those chunks present.

use std::sync::Arc;

use anyhow::Context;
use aq_pack::Digest;
use aq_store::Registry;
use aq_sync_proto::api::{DigestList, MissingChunks, PackUpload, PushReport, UploadReport};
use aq_sync_proto::frame::{self, ChunkEntry};
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use crate::cli::PushArgs;
use crate::printer::{Printer, Progress, human_bytes};
use crate::remote::Client;
use crate::settings::Settings;

#[derive(Serialize)]
pub struct Out {
    pub id: String,
    pub digest: String,
    pub server: String,
    pub created: bool,
    pub chunks_total: usize,
    pub chunks_uploaded: usize,
    pub bytes_uploaded: u64,
    pub pack_bytes: u64,
    pub tags: Vec<String>,
}

pub fn run(args: PushArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let out = push(&args.reference, &args.tags, &args.remote, settings, printer)?;
    printer.result(&out, || {
        format!(
            "{} {} to {}\n  digest    {}\n  uploaded  {} of {} chunks ({}; the pack is {})",
            if out.created {
                "Pushed"
            } else {
                "Already on the server:"
            },
            out.id,
            out.server,
            out.digest,
            out.chunks_uploaded,
            out.chunks_total,
            human_bytes(out.bytes_uploaded),
            human_bytes(out.pack_bytes),
        )
    });
    Ok(())
}

/// Pushes a local pack; `aq deploy` reuses it.
pub fn push(
    reference: &str,
    tags: &[String],
    remote_args: &crate::cli::RemoteArgs,
    settings: &Settings,
    printer: &Printer,
) -> anyhow::Result<Out> {
    let reference = super::super::parse_ref(reference)?;
    for tag in tags {
        aq_pack::reference::validate_tag(tag)
            .map_err(|e| crate::exit::user_error(crate::exit::ExitCode::InvalidInput, e))?;
    }
    let registry = Arc::new(super::super::open_registry(settings)?);
    let pack = registry.get(&reference)?;
    let signed = pack.signed.clone();
    let id = signed.manifest.id();
    let remote = super::super::remote(remote_args)?;
    let what = || format!("failed to push {id} to {}", remote_args.server);
    let jobs = usize::from(remote_args.jobs);
    let runtime = super::super::runtime()?;
    let (report, uploaded) = runtime
        .block_on(async {
            let mut client = Client::new(remote.clone());
            let chunks = signed.manifest.unique_chunks();
            let wanted = DigestList {
                digests: chunks.iter().map(|c| c.digest).collect(),
            };
            let missing: MissingChunks = client
                .json(Method::POST, "/v1/chunks/missing", Some(&wanted))
                .await?;
            let batches = batches(&registry, &missing.missing)?;
            let total: u64 = batches.iter().flatten().map(|(_, size)| *size).sum();
            let progress = Arc::new(printer.progress(&format!("push {id}"), total));
            let uploaded = upload(
                remote.clone(),
                registry.clone(),
                batches,
                jobs,
                progress.clone(),
            )
            .await?;
            progress.finish();
            let upload = PackUpload {
                manifest: String::from_utf8(signed.manifest_bytes.clone())
                    .context("the stored manifest is not UTF-8")?,
                signature: signed
                    .signature
                    .as_ref()
                    .map(|s| String::from_utf8_lossy(&s.to_bytes()).into_owned()),
                tags: tags.to_vec(),
            };
            let report: PushReport = client
                .json(Method::POST, "/v1/packs", Some(&upload))
                .await?;
            anyhow::Ok((report, uploaded))
        })
        .with_context(what)?;
    Ok(Out {
        id: report.id,
        digest: report.digest,
        server: remote.url().to_owned(),
        created: report.created,
        chunks_total: signed.manifest.unique_chunks().len(),
        // Every chunk sent: new to the server, or already there (a client that sends what the
        // server has shows here).
        chunks_uploaded: uploaded.chunks_new + uploaded.chunks_present,
        bytes_uploaded: uploaded.bytes_new,
        pack_bytes: signed.manifest.total_size(),
        tags: report.tags,
    })
}

/// Groups the missing chunks into frames: (digest, size) each.
fn batches(registry: &Registry, missing: &[Digest]) -> anyhow::Result<Vec<Vec<(Digest, u64)>>> {
    let sized = missing
        .iter()
        .map(|d| {
            let size = registry.chunk_size(d).with_context(|| {
                format!("the server asked for chunk {d}, which this pack does not have")
            })?;
            Ok((*d, size))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(crate::transfer::frames(sized))
}

/// Uploads the frames over `jobs` connections.
async fn upload(
    remote: Arc<crate::remote::Remote>,
    registry: Arc<Registry>,
    batches: Vec<Vec<(Digest, u64)>>,
    jobs: usize,
    progress: Arc<Progress>,
) -> anyhow::Result<UploadReport> {
    let reports =
        crate::transfer::over_connections(remote, batches, jobs, move |mut client, batch| {
            let (registry, progress) = (registry.clone(), progress.clone());
            async move {
                let stored: Vec<Vec<u8>> = batch
                    .iter()
                    .map(|(d, _)| registry.stored_chunk(d))
                    .collect::<Result<_, _>>()?;
                let entries: Vec<ChunkEntry<'_>> = batch
                    .iter()
                    .zip(&stored)
                    .map(|((digest, size), bytes)| ChunkEntry {
                        digest: *digest,
                        size: *size,
                        stored: bytes,
                    })
                    .collect();
                let body = Bytes::from(frame::encode(&entries));
                let answer = client
                    .send(Method::POST, "/v1/chunks", Some(frame::CONTENT_TYPE), body)
                    .await?;
                let report: UploadReport = serde_json::from_slice(&answer.body)
                    .context("the server's upload report does not decode")?;
                progress.advance(batch.iter().map(|(_, size)| size).sum());
                Ok((client, report))
            }
        })
        .await?;
    Ok(reports.into_iter().fold(
        UploadReport {
            chunks_new: 0,
            chunks_present: 0,
            bytes_new: 0,
        },
        |sum, r| UploadReport {
            chunks_new: sum.chunks_new + r.chunks_new,
            chunks_present: sum.chunks_present + r.chunks_present,
            bytes_new: sum.bytes_new + r.bytes_new,
        },
    ))
}
