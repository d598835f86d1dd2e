//! `anycloud bucket ls|upload|download` on Azure: the blob service's REST API, signed in as
//! the operator (Entra ID, audience `https://storage.azure.com/`; the accounts anycloud makes
//! accept no shared key). Files above [`BLOCK`] go in blocks, as the service asks of large
//! blobs, and every byte moves the caller's progress bar. Downloads stream to disk and land
//! whole or not at all, never outside the destination.

use std::path::Path;

use anycloud_provider::{files, ErrorCode, ProviderError, Result, Transfer};
use bytes::Bytes;
use http::Method;
use tokio::io::AsyncReadExt;

use crate::arm::{classify, Arm};
use crate::auth::Credential;

/// Files larger than this go in blocks of this size.
pub const BLOCK: u64 = 16 * 1024 * 1024;
pub(crate) const VERSION: &str = "2021-08-06";
/// The token audience of every account's blob service.
const AUDIENCE: &str = "https://storage.azure.com/";

/// The blob service at `endpoint` (`https://{account}.{suffix}`), signed in as the operator.
pub fn service(endpoint: &str) -> Result<Arm> {
    Arm::new(endpoint, Credential::from_env(AUDIENCE))
}

fn io(what: String) -> impl Fn(std::io::Error) -> ProviderError {
    move |e| ProviderError::permanent(format!("{what}: {e}"))
}

/// A blob name as a URL path: every byte but the unreserved ones and `/` escaped.
pub(crate) fn escaped(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text of every `<tag>…</tag>` in `xml`, entities decoded.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

async fn call(
    blobs: &Arm,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<Bytes> {
    let mut all = vec![("x-ms-version", VERSION.to_owned())];
    all.extend(headers.iter().cloned());
    let (status, _, bytes) = blobs.raw(method.clone(), path, &all, body).await?;
    if status.is_success() {
        return Ok(bytes);
    }
    Err(failure(&method, path, status, &bytes))
}

/// The classified error of a failed answer of the blob service.
pub(crate) fn failure(
    method: &Method,
    path: &str,
    status: http::StatusCode,
    bytes: &[u8],
) -> ProviderError {
    let text = String::from_utf8_lossy(bytes);
    let code = elements(&text, "Code")
        .first()
        .copied()
        .unwrap_or("")
        .to_owned();
    let class = match (status.as_u16(), code.as_str()) {
        (404, _) => ErrorCode::NotFound,
        (403, _) | (401, _) => ErrorCode::Permission,
        // A condition the request named (`If-Match`) is false: the caller's answer.
        (412, _) => ErrorCode::Conflict,
        (s, c) => classify(s, c),
    };
    let hint = if class == ErrorCode::Permission {
        " (the operator needs the Storage Blob Data Contributor role on the account or container)"
    } else {
        ""
    };
    ProviderError::new(
        class,
        format!(
            "Azure blob service: {method} {}: {status} {code}{hint}",
            path.split('?').next().unwrap_or(path)
        ),
    )
}

/// Every blob in `container` whose name starts with `prefix`, name and size, sorted by name.
pub async fn list(blobs: &Arm, container: &str, prefix: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut marker = String::new();
    loop {
        let mut path = format!("/{container}?restype=container&comp=list");
        if !prefix.is_empty() {
            path.push_str(&format!("&prefix={}", escaped(prefix)));
        }
        if !marker.is_empty() {
            path.push_str(&format!("&marker={}", escaped(&marker)));
        }
        let body = call(blobs, Method::GET, &path, &[], Bytes::new()).await?;
        let xml = String::from_utf8_lossy(&body).into_owned();
        for blob in elements(&xml, "Blob") {
            let name = elements(blob, "Name").first().map(|n| unescape(n));
            let size = elements(blob, "Content-Length")
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if let Some(name) = name {
                out.push((name, size));
            }
        }
        marker = elements(&xml, "NextMarker")
            .first()
            .map(|m| unescape(m))
            .unwrap_or_default();
        if marker.is_empty() {
            break;
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads a file (as a blob named after it) or a directory tree (its relative paths as the
/// names) into `container`. Returns the number of files.
pub async fn upload(
    blobs: &Arm,
    container: &str,
    source: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let files = files::upload_list(source).map_err(io(format!("reading {}", source.display())))?;
    progress.total(files.iter().map(|(_, _, size)| size).sum());
    let mut done = 0u64;
    for (name, path, size) in &files {
        let blob = format!("/{container}/{}", escaped(name));
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io(format!("reading {}", path.display())))?;
        if *size <= BLOCK {
            let mut bytes = Vec::with_capacity(*size as usize);
            file.read_to_end(&mut bytes)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            let blob_type = [("x-ms-blob-type", "BlockBlob".to_owned())];
            call(blobs, Method::PUT, &blob, &blob_type, Bytes::from(bytes)).await?;
            done += size;
            progress.done(done);
            continue;
        }
        // Blocks, then the list that commits them: until then the blob is unchanged.
        let mut ids = Vec::new();
        loop {
            let mut chunk = Vec::with_capacity(BLOCK as usize);
            (&mut file)
                .take(BLOCK)
                .read_to_end(&mut chunk)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            if chunk.is_empty() {
                break;
            }
            let id = b64(format!("anycloud-{:08}", ids.len()).as_bytes());
            let sent = chunk.len() as u64;
            call(
                blobs,
                Method::PUT,
                &format!("{blob}?comp=block&blockid={}", escaped(&id)),
                &[],
                Bytes::from(chunk),
            )
            .await?;
            ids.push(id);
            done += sent;
            progress.done(done);
        }
        let list: String = ids
            .iter()
            .map(|id| format!("<Latest>{id}</Latest>"))
            .collect();
        call(
            blobs,
            Method::PUT,
            &format!("{blob}?comp=blocklist"),
            &[("content-type", "application/xml".to_owned())],
            Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>{list}</BlockList>"
            )),
        )
        .await?;
    }
    Ok(files.len())
}

/// Downloads every blob of `container` into `dest` (names as relative paths; one that would
/// land outside `dest` is refused). Returns the number of files.
pub async fn download(
    blobs: &Arm,
    container: &str,
    dest: &Path,
    progress: &Transfer,
) -> Result<usize> {
    let mut wanted = Vec::new();
    for (name, size) in list(blobs, container, "").await? {
        let to = files::under(dest, &name).map_err(|e| ProviderError::permanent(e.to_string()))?;
        if let Some(to) = to {
            wanted.push((name, to, size));
        }
    }
    progress.total(wanted.iter().map(|(_, _, size)| size).sum());
    let mut done = 0u64;
    for (name, to, _) in &wanted {
        let path = format!("/{container}/{}", escaped(name));
        let writing = io(format!("writing {}", to.display()));
        let mut staged = files::Staged::beside(to).await.map_err(&writing)?;
        let version = [("x-ms-version", VERSION.to_owned())];
        let got = blobs
            .download(&path, &version, &mut staged, |n| {
                done += n;
                progress.done(done);
            })
            .await?;
        if let Err((status, body)) = got {
            return Err(failure(&Method::GET, &path, status, &body));
        }
        staged.persist().await.map_err(&writing)?;
    }
    Ok(wanted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_listings_read() {
        assert_eq!(escaped("a dir/b+c.txt"), "a%20dir/b%2Bc.txt");
        assert_eq!(b64(b"anycloud-00000000"), "YW55Y2xvdWQtMDAwMDAwMDA=");
        let xml = "<EnumerationResults><Blobs><Blob><Name>a &amp; b</Name><Properties><Content-Length>3</Content-Length></Properties></Blob></Blobs><NextMarker /></EnumerationResults>";
        let blobs = elements(xml, "Blob");
        assert_eq!(blobs.len(), 1);
        assert_eq!(unescape(elements(blobs[0], "Name")[0]), "a & b");
        assert!(elements(xml, "NextMarker").is_empty());
    }
}
