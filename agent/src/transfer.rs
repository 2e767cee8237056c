//! Moving packs from a sync-server into the local registry, for `aq pack pull` and the agent:
//! the manifest's signature is checked against the local trust policy before any chunk is
//! asked for; chunks come in frames over parallel connections, each decompressed and checked
//! against its digest before it is kept (durable and loose, so an interrupted transfer
//! resumes); the pack becomes visible in one commit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use aq_pack::signature::SignedManifest;
use aq_pack::trust::Verdict;
use aq_pack::{Digest, TrustPolicy};
use aq_store::{LooseChunk, Registry, StoreError};
use aq_sync_proto::api::{DigestList, PackInfo};
use aq_sync_proto::frame;
use bytes::Bytes;
use hyper::Method;
use serde::Serialize;

use crate::exit::{ExitCode, user_error};
use crate::printer::{Printer, Progress};
use crate::remote::{Client, Remote};

/// Uncompressed chunk bytes per frame, both ways (stored bytes are at most this plus zstd's
/// small bound).
const FRAME_BYTES: u64 = 8 << 20;

/// Groups chunks (digest, uncompressed size) into frames of about [`FRAME_BYTES`], for upload
/// and download alike.
pub fn frames(chunks: impl IntoIterator<Item = (Digest, u64)>) -> Vec<Vec<(Digest, u64)>> {
    let mut out: Vec<Vec<(Digest, u64)>> = Vec::new();
    let mut current = 0;
    for (digest, size) in chunks {
        match out.last_mut() {
            Some(last) if current + size <= FRAME_BYTES => last.push((digest, size)),
            _ => {
                out.push(vec![(digest, size)]);
                current = 0;
            }
        }
        current += size;
    }
    out
}

/// What a fetch did.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub id: String,
    pub digest: String,
    pub server: String,
    /// False when the registry already had the pack.
    pub created: bool,
    pub signed_by: Option<String>,
    pub chunks_total: usize,
    pub chunks_downloaded: usize,
    pub bytes_downloaded: u64,
    pub pack_bytes: u64,
}

/// Fetches the pack `reference` (`NAME[:VERSION|:TAG]` or a pack digest) from the server into
/// the registry. `printer` draws a progress bar when given.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_pack(
    remote: Arc<Remote>,
    registry: Arc<Registry>,
    reference: &str,
    policy: &TrustPolicy,
    allow_unsigned: bool,
    now: std::time::SystemTime,
    jobs: usize,
    printer: Option<&Printer>,
) -> anyhow::Result<Fetched> {
    let mut client = Client::new(remote.clone());
    let path = format!("/v1/packs/{reference}");
    let info: PackInfo = client.json(Method::GET, &path, None::<&()>).await?;
    let signed = SignedManifest::parse(
        info.manifest.as_bytes(),
        info.signature.as_deref().map(str::as_bytes),
    )
    .context("the server sent a manifest that does not parse")?;
    if signed.digest().to_string() != info.digest {
        return Err(user_error(
            ExitCode::Verification,
            format!(
                "the server's manifest hashes to {}, not the digest {} it claims",
                signed.digest(),
                info.digest
            ),
        ));
    }
    let verdict = policy.verify(&signed, now, allow_unsigned)?;
    let signed_by = match verdict {
        Verdict::Trusted { key_id, .. } => Some(key_id),
        Verdict::UnsignedAllowed => None,
    };
    let id = signed.manifest.id();
    let chunks = signed.manifest.unique_chunks();
    let base = Fetched {
        id: id.clone(),
        digest: info.digest.clone(),
        server: remote.url().to_owned(),
        created: false,
        signed_by,
        chunks_total: chunks.len(),
        chunks_downloaded: 0,
        bytes_downloaded: 0,
        pack_bytes: signed.manifest.total_size(),
    };
    let exact = id
        .parse::<aq_pack::PackRef>()
        .map_err(|e| user_error(ExitCode::InvalidInput, e.to_string()))?;
    match registry.get(&exact) {
        Ok(local) if local.signed.digest() == signed.digest() => return Ok(base),
        // The server's copy gained variants (`aq export` elsewhere): take them.
        Ok(local) if signed.manifest.extends(local.manifest()) => {}
        Ok(local) => {
            return Err(StoreError::AlreadyExists {
                id,
                digest: local.signed.digest().to_string(),
            }
            .into());
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let wanted: Vec<Digest> = chunks.iter().map(|c| c.digest).collect();
    let missing: HashSet<Digest> = registry.missing_chunks(&wanted)?.into_iter().collect();
    let batches = frames(
        chunks
            .iter()
            .filter(|c| missing.contains(&c.digest))
            .map(|c| (c.digest, c.size)),
    );
    let total: u64 = batches.iter().flatten().map(|(_, s)| s).sum();
    let progress = Arc::new(match printer {
        Some(p) => p.progress(&format!("pull {id}"), total),
        None => Printer::new(false, true).progress("", total),
    });
    let (downloaded, bytes) = download(
        remote.clone(),
        registry.clone(),
        batches,
        jobs,
        progress.clone(),
    )
    .await?;
    progress.finish();
    let report = registry.begin_pack(signed)?.commit()?;
    Ok(Fetched {
        created: true,
        chunks_downloaded: downloaded,
        bytes_downloaded: bytes,
        digest: report.digest,
        ..base
    })
}

/// Runs `work` on every frame over `jobs` connections (a [`Client`] per worker, handed to
/// `work` and given back with its result), for uploads and downloads alike. The first error
/// ends the transfer; results come in completion order.
pub async fn over_connections<T, F, Fut>(
    remote: Arc<Remote>,
    frames: Vec<Vec<(Digest, u64)>>,
    jobs: usize,
    work: F,
) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Client, Vec<(Digest, u64)>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(Client, T)>> + Send + 'static,
{
    let queue = Arc::new(Mutex::new(frames.into_iter()));
    let work = Arc::new(work);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let (remote, queue, work) = (remote.clone(), queue.clone(), work.clone());
        workers.spawn(async move {
            let mut client = Client::new(remote);
            let mut results = Vec::new();
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.next());
                let Some(frame) = next else { break };
                let (back, result) = work(client, frame).await?;
                client = back;
                results.push(result);
            }
            anyhow::Ok(results)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.extend(joined.context("a transfer task failed")??);
    }
    Ok(all)
}

/// Fetches the batches over `jobs` connections and stores each frame as it arrives.
/// Returns (chunks stored, stored bytes received).
async fn download(
    remote: Arc<Remote>,
    registry: Arc<Registry>,
    batches: Vec<Vec<(Digest, u64)>>,
    jobs: usize,
    progress: Arc<Progress>,
) -> anyhow::Result<(usize, u64)> {
    let results = over_connections(remote, batches, jobs, move |mut client, batch| {
        let (registry, progress) = (registry.clone(), progress.clone());
        async move {
            let request = DigestList {
                digests: batch.iter().map(|(d, _)| *d).collect(),
            };
            let body = Bytes::from(serde_json::to_vec(&request)?);
            let answer = client
                .send(
                    Method::POST,
                    "/v1/chunks/fetch",
                    Some("application/json"),
                    body,
                )
                .await?;
            let received = answer.body;
            let (chunks, bytes, size) =
                tokio::task::spawn_blocking(move || store_frame(&registry, &batch, &received))
                    .await
                    .context("a download task failed")??;
            progress.advance(size);
            Ok((client, (chunks, bytes)))
        }
    })
    .await?;
    Ok(results
        .into_iter()
        .fold((0, 0), |(c, b), (dc, db)| (c + dc, b + db)))
}

/// Checks that a fetched frame holds exactly the chunks asked for, with the sizes the manifest
/// gives, and stores them (each verified against its digest). Returns (chunks, stored bytes,
/// uncompressed bytes).
fn store_frame(
    registry: &Registry,
    asked: &[(Digest, u64)],
    body: &[u8],
) -> anyhow::Result<(usize, u64, u64)> {
    let entries = frame::decode(body).context("the server's chunk frame does not decode")?;
    let mismatch = |m: String| user_error(ExitCode::Verification, m);
    if entries.len() != asked.len() {
        return Err(mismatch(format!(
            "asked the server for {} chunks, it sent {}",
            asked.len(),
            entries.len()
        )));
    }
    let mut loose = Vec::with_capacity(entries.len());
    for e in &entries {
        let Some((_, size)) = asked.iter().find(|(d, _)| *d == e.digest) else {
            return Err(mismatch(format!(
                "the server sent chunk {}, which was not asked for",
                e.digest
            )));
        };
        if *size != e.size {
            return Err(mismatch(format!(
                "the server says chunk {} is {} bytes; the manifest says {size}",
                e.digest, e.size
            )));
        }
        loose.push(LooseChunk {
            digest: e.digest,
            size: e.size,
            compressed: e.stored,
        });
    }
    registry.put_chunks(&loose, std::time::SystemTime::now())?;
    Ok((
        entries.len(),
        entries.iter().map(|e| e.stored.len() as u64).sum(),
        entries.iter().map(|e| e.size).sum(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stay_under_the_limit_and_keep_order() {
        let d = |i: u8| Digest::of(&[i]);
        assert!(frames([]).is_empty());
        let big = FRAME_BYTES + 1;
        let out = frames([
            (d(0), 3 << 20),
            (d(1), 3 << 20),
            (d(2), 3 << 20),
            (d(3), big),
            (d(4), 1),
        ]);
        let sizes: Vec<Vec<u64>> = out
            .iter()
            .map(|f| f.iter().map(|c| c.1).collect())
            .collect();
        assert_eq!(
            sizes,
            vec![vec![3 << 20, 3 << 20], vec![3 << 20], vec![big], vec![1]]
        );
        let order: Vec<Digest> = out.iter().flatten().map(|c| c.0).collect();
        assert_eq!(order, (0..5).map(d).collect::<Vec<_>>());
    }
}
