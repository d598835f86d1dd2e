//! `anycloud bucket ls|upload|download` on Google Cloud: a deployment's bucket is a prefix of
//! its continent's bucket, reached through Cloud Storage's JSON API as the operator. Files
//! above [`CHUNK`] go by a resumable upload in chunks, as the API asks of large objects;
//! every byte moves the caller's progress bar. Downloads land whole or not at all, never
//! outside the destination.

use std::path::Path;

use anycloud_provider::{files, ErrorCode, ProviderError, Result, Transfer};
use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::{classify, encode, segment, Google};
use crate::settings::Settings;

/// Files larger than this go by a resumable upload, in chunks of this size (a multiple of
/// the 256 KiB the API asks of every chunk but the last).
pub const CHUNK: u64 = 16 * 1024 * 1024;

fn io(what: String) -> impl Fn(std::io::Error) -> ProviderError {
    move |e| ProviderError::permanent(format!("{what}: {e}"))
}

async fn call(
    g: &Google,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<(http::HeaderMap, Bytes)> {
    let (status, headers, bytes) = g.raw(method.clone(), url, headers, body).await?;
    if status.is_success() {
        return Ok((headers, bytes));
    }
    let reply = crate::api::Reply {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    };
    let class = classify(status.as_u16(), reply.reason());
    let hint = if class == ErrorCode::Permission {
        " (the operator needs Storage Object Admin on the bucket)"
    } else {
        ""
    };
    Err(ProviderError::new(
        class,
        format!(
            "Cloud Storage: {method} {}: {status} {}{hint}",
            url.split('?').next().unwrap_or(url),
            reply.message()
        ),
    ))
}

/// Every object under `prefix` of `bucket`: its name relative to the prefix, and its size,
/// sorted by name.
pub async fn list(
    g: &Google,
    s: &Settings,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, u64)>> {
    let items = g
        .list(
            &format!("{}/b/{bucket}/o?prefix={}", s.storage(), encode(prefix)),
            "items",
        )
        .await?;
    let mut out: Vec<(String, u64)> = items
        .iter()
        .filter_map(|o| {
            let name = o.get("name")?.as_str()?.strip_prefix(prefix)?.to_owned();
            let size = o
                .get("size")
                .and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or(s.as_u64()))
                .unwrap_or(0);
            Some((name, size))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Uploads a file (as an object named after it) or a directory tree (its relative paths as
/// the names) under `prefix` of `bucket`. Returns the number of files.
pub async fn upload(
    g: &Google,
    s: &Settings,
    bucket: &str,
    prefix: &str,
    source: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let files = files::upload_list(source).map_err(io(format!("reading {}", source.display())))?;
    progress.total(files.iter().map(|(_, _, size)| size).sum());
    let mut done = 0u64;
    for (name, path, size) in &files {
        let object = format!("{prefix}{name}");
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io(format!("reading {}", path.display())))?;
        let octets = [("content-type", "application/octet-stream".to_owned())];
        if *size <= CHUNK {
            let mut bytes = Vec::with_capacity(*size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            let url = format!(
                "{}/b/{bucket}/o?uploadType=media&name={}",
                s.upload(),
                encode(&object)
            );
            call(g, Method::POST, &url, &octets, Bytes::from(bytes)).await?;
            done += size;
            progress.done(done);
            continue;
        }
        // A resumable session, then the chunks: the object exists only once all are in.
        let start = format!(
            "{}/b/{bucket}/o?uploadType=resumable&name={}",
            s.upload(),
            encode(&object)
        );
        let (headers, _) = call(
            g,
            Method::POST,
            &start,
            &[
                ("content-type", "application/json".to_owned()),
                ("x-upload-content-length", size.to_string()),
            ],
            Bytes::from_static(b"{}"),
        )
        .await?;
        let session = headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| ProviderError::permanent("Cloud Storage gave no upload session"))?
            .to_owned();
        let base = done;
        let mut offset = 0u64;
        loop {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            let mut chunk = Vec::with_capacity(CHUNK as usize);
            (&mut file)
                .take(CHUNK)
                .read_to_end(&mut chunk)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            let end = offset + chunk.len() as u64;
            let range = format!("bytes {offset}-{}/{size}", end.max(1) - 1);
            let (status, headers, _) = g
                .raw(
                    Method::PUT,
                    &session,
                    &[("content-range", range)],
                    Bytes::from(chunk),
                )
                .await?;
            match status.as_u16() {
                200 | 201 => {
                    done = base + size;
                    progress.done(done);
                    break;
                }
                // More to send: from the first byte the service has not kept (it may keep
                // less than a chunk, and says how much in `Range`).
                308 => {
                    offset = headers
                        .get("range")
                        .and_then(|r| r.to_str().ok())
                        .and_then(|r| r.rsplit('-').next()?.parse::<u64>().ok())
                        .map_or(0, |last| last + 1);
                    if offset >= *size {
                        return Err(ProviderError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "Cloud Storage kept all of {object} but did not finish the upload"
                            ),
                        ));
                    }
                    done = base + offset;
                    progress.done(done);
                }
                s => {
                    return Err(ProviderError::new(
                        classify(s, ""),
                        format!("Cloud Storage: uploading {object}: {status}"),
                    ))
                }
            }
        }
    }
    Ok(files.len())
}

/// Downloads every object under `prefix` of `bucket` into `dest` (names relative to the
/// prefix; one that would land outside `dest` is refused). Returns the number of files.
pub async fn download(
    g: &Google,
    s: &Settings,
    bucket: &str,
    prefix: &str,
    dest: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let mut wanted = Vec::new();
    for (name, size) in list(g, s, bucket, prefix).await? {
        // The console's "folder" placeholder, `prefix/` itself.
        if name.is_empty() {
            continue;
        }
        let to = files::under(dest, &name).map_err(|e| ProviderError::permanent(e.to_string()))?;
        if let Some(to) = to {
            wanted.push((name, to, size));
        }
    }
    progress.total(wanted.iter().map(|(_, _, size)| size).sum());
    let mut done = 0u64;
    let mut fetched = 0;
    for (name, to, _) in &wanted {
        let url = format!(
            "{}/b/{bucket}/o/{}?alt=media",
            s.storage(),
            segment(&format!("{prefix}{name}"))
        );
        let writing = io(format!("writing {}", to.display()));
        // A live prefix (a job's output) changes while it is read: an object listed a
        // moment ago may have been deleted since, or, on a store that replaces an object in
        // two steps (fake-gcs-server), be absent for an instant. Asked again a few times,
        // then taken as gone.
        let mut absent = 0;
        loop {
            let mut staged = files::Staged::beside(to).await.map_err(&writing)?;
            match g
                .download(&url, &mut staged, |n| {
                    done += n;
                    progress.done(done);
                })
                .await
            {
                Ok(()) => {
                    staged.persist().await.map_err(&writing)?;
                    fetched += 1;
                    break;
                }
                Err(e) if e.is(ErrorCode::NotFound) && absent < ABSENT_TRIES => {
                    absent += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) if e.is(ErrorCode::NotFound) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(fetched)
}

/// How often a listed object that is not found is asked for again before it is taken as
/// deleted since the listing.
const ABSENT_TRIES: u32 = 3;
