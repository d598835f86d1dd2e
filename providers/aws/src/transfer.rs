//! `anycloud bucket ls|upload|download` on S3: fill an input bucket before a run, fetch the
//! results after, without another tool. Large files go in parts (S3 takes at most 5 GB in
//! one request), and every byte sent or received moves the caller's progress bar.

use std::path::Path;

use anycloud_provider::{files, ProviderError, Result, Transfer};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use crate::clients::Clients;
use crate::errors::classify;
use crate::s3;

/// Files larger than this go in parts of this size (S3's least part is 5 MiB).
pub const PART: u64 = 16 * 1024 * 1024;

fn io(what: String) -> impl Fn(std::io::Error) -> ProviderError {
    move |e| ProviderError::permanent(format!("{what}: {e}"))
}

/// Every object in `bucket`, name and size, sorted by name.
pub async fn list(clients: &Clients, bucket: &str) -> Result<Vec<(String, u64)>> {
    let region = s3::region_of(clients, bucket).await?;
    let pages = clients
        .s3(&region)
        .await
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify(&format!("ListObjectsV2 {bucket}"), e))?;
    let mut out: Vec<(String, u64)> = pages
        .iter()
        .flat_map(|p| p.contents())
        .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0).max(0) as u64)))
        .collect();
    out.sort();
    Ok(out)
}

/// Uploads a file (as an object named after it) or a directory tree (its relative paths
/// as the keys) into `bucket`. Returns the number of files.
pub async fn upload(
    clients: &Clients,
    bucket: &str,
    source: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let region = s3::region_of(clients, bucket).await?;
    let files = files::upload_list(source).map_err(io(format!("reading {}", source.display())))?;
    progress.total(files.iter().map(|(_, _, size)| size).sum());
    let mut done = 0;
    for (key, path, size) in &files {
        if *size <= PART {
            put_whole(clients, &region, bucket, key, path).await?;
            done += size;
            progress.done(done);
        } else {
            put_in_parts(clients, &region, bucket, key, path, |sent| {
                progress.done(done + sent)
            })
            .await?;
            done += size;
        }
    }
    Ok(files.len())
}

async fn put_whole(
    clients: &Clients,
    region: &str,
    bucket: &str,
    key: &str,
    path: &Path,
) -> Result<()> {
    let body = ByteStream::from_path(path)
        .await
        .map_err(|e| ProviderError::permanent(format!("reading {}: {e}", path.display())))?;
    clients
        .s3(region)
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .map_err(|e| classify(&format!("PutObject {bucket}/{key}"), e))?;
    Ok(())
}

/// A multipart upload, aborted when a part fails so no half-upload is left to pay for.
async fn put_in_parts(
    clients: &Clients,
    region: &str,
    bucket: &str,
    key: &str,
    path: &Path,
    sent: impl Fn(u64),
) -> Result<()> {
    let s3 = clients.s3(region).await;
    let started = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&format!("CreateMultipartUpload {bucket}/{key}"), e))?;
    let id = started.upload_id().unwrap_or_default().to_owned();
    let parts = async {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io(format!("reading {}", path.display())))?;
        let mut parts = Vec::new();
        let mut total = 0u64;
        loop {
            let mut chunk = Vec::with_capacity(PART as usize);
            (&mut file)
                .take(PART)
                .read_to_end(&mut chunk)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            if chunk.is_empty() {
                break;
            }
            let number = parts.len() as i32 + 1;
            let len = chunk.len() as u64;
            let part = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| classify(&format!("UploadPart {bucket}/{key} #{number}"), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(part.e_tag().map(String::from))
                    .build(),
            );
            total += len;
            sent(total);
        }
        s3.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(&format!("CompleteMultipartUpload {bucket}/{key}"), e))?;
        Ok(())
    }
    .await;
    if parts.is_err() {
        let _ = s3
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await;
    }
    parts
}

/// Downloads every object of `bucket` into `dest` (keys as relative paths; a key that would
/// land outside `dest` is refused). Each file appears whole or not at all. Returns the
/// number of files.
pub async fn download(
    clients: &Clients,
    bucket: &str,
    dest: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let region = s3::region_of(clients, bucket).await?;
    let objects = list(clients, bucket).await?;
    let mut wanted = Vec::new();
    for (key, size) in objects {
        let to = files::under(dest, &key).map_err(|e| ProviderError::permanent(e.to_string()))?;
        if let Some(to) = to {
            wanted.push((key, to, size));
        }
    }
    progress.total(wanted.iter().map(|(_, _, size)| size).sum());
    let s3 = clients.s3(&region).await;
    let mut done = 0u64;
    for (key, to, _) in &wanted {
        let object = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&format!("GetObject {bucket}/{key}"), e))?;
        let writing = io(format!("writing {}", to.display()));
        let mut staged = files::Staged::beside(to).await.map_err(&writing)?;
        let mut body = object.body;
        while let Some(bytes) = body
            .try_next()
            .await
            .map_err(|e| ProviderError::permanent(format!("reading {bucket}/{key}: {e}")))?
        {
            staged.write(&bytes).await.map_err(&writing)?;
            done += bytes.len() as u64;
            progress.done(done);
        }
        staged.persist().await.map_err(&writing)?;
    }
    Ok(wanted.len())
}
