//! Whether an image reference with an explicit registry host (`ghcr.io/acme/train:v1`,
//! `127.0.0.1:5000/job:v1`) is in that registry, asked at plan time for a cloud's machine,
//! which pulls it only after it is made (and paid for). Docker Registry HTTP API v2:
//! `HEAD /v2/<name>/manifests/<reference>` with the OCI and Docker manifest types, through
//! the anonymous bearer-token flow when the registry asks for a token.
//!
//! A reference without a registry host (`busybox`, `anycloud-e2e:v1`) is not asked: it may be
//! an image only on a daemon (a test's, built on this machine), and Docker Hub is not asked
//! for it, so plans need no network for it.

use std::time::Duration;

use anycloud_provider::ImageCheck;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// The whole check (token and manifest) must end within this: a plan never hangs on it.
const DEADLINE: Duration = Duration::from_secs(10);
/// A registry's error document or token: small.
const ANSWER_LIMIT: usize = 1 << 20;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws";

/// An image reference split as a registry reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Reference<'a> {
    pub host: &'a str,
    pub name: &'a str,
    /// The tag or `sha256:…` digest (`latest` when none is written).
    pub reference: &'a str,
}

/// The registry host, repository and tag of `image`; `None` without an explicit host (the
/// first component has no `.` or `:` and is not `localhost`, as Docker reads it).
pub fn parse(image: &str) -> Option<Reference<'_>> {
    let (host, rest) = image.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return None;
    }
    let (name, reference) = match rest.split_once('@') {
        Some((name, digest)) => (name, digest),
        None => match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (rest, "latest"),
        },
    };
    (!name.is_empty() && !reference.is_empty()).then_some(Reference {
        host,
        name,
        reference,
    })
}

/// Plain http only to this machine (a test's registry, as Docker itself allows).
fn scheme(host: &str) -> &'static str {
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if bare == "localhost" || bare == "127.0.0.1" || bare == "[::1]" {
        "http"
    } else {
        "https"
    }
}

/// The registry's answer about `image`, within [`DEADLINE`].
pub async fn check(image: &str) -> ImageCheck {
    let Some(r) = parse(image) else {
        return ImageCheck::Unchecked;
    };
    match tokio::time::timeout(DEADLINE, ask(image, &r)).await {
        Ok(answer) => answer,
        Err(_) => ImageCheck::Unknown(format!(
            "registry {} did not answer within {}s about image '{image}'",
            r.host,
            DEADLINE.as_secs()
        )),
    }
}

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

async fn get(
    http: &Http,
    method: http::Method,
    url: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("accept", ACCEPT)
        .header("user-agent", "anycloud");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let res = http.request(req).await.map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s = format!("{s}: {inner}");
            src = inner.source();
        }
        s
    })?;
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(res.into_body(), ANSWER_LIMIT)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        challenge,
        body,
    })
}

async fn ask(image: &str, r: &Reference<'_>) -> ImageCheck {
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(e) => {
            return ImageCheck::Unknown(format!(
                "no trusted root certificates to ask registry {}: {e}",
                r.host
            ))
        }
    };
    let http: Http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let url = format!(
        "{}://{}/v2/{}/manifests/{}",
        scheme(r.host),
        r.host,
        r.name,
        r.reference
    );
    let unreachable = |e: String| {
        ImageCheck::Unknown(format!(
            "registry {} could not be asked about image '{image}': {e}",
            r.host
        ))
    };
    let mut answer = match get(&http, http::Method::HEAD, &url, None).await {
        Ok(a) => a,
        Err(e) => return unreachable(e),
    };
    // The anonymous token flow: the registry names where to get a pull token.
    if answer.status == 401 {
        if let Some(token) = answer
            .challenge
            .as_deref()
            .and_then(|c| token_url(c, r.name))
        {
            if let Ok(t) = get(&http, http::Method::GET, &token, None).await {
                let value: serde_json::Value = serde_json::from_str(&t.body).unwrap_or_default();
                let token = value
                    .get("token")
                    .or_else(|| value.get("access_token"))
                    .and_then(|v| v.as_str());
                if let (200, Some(token)) = (t.status, token) {
                    answer = match get(&http, http::Method::HEAD, &url, Some(token)).await {
                        Ok(a) => a,
                        Err(e) => return unreachable(e),
                    };
                }
            }
        }
    }
    match answer.status {
        200..=299 => ImageCheck::Found,
        404 => {
            // HEAD has no body: ask again with GET for the registry's own words.
            let words = match get(&http, http::Method::GET, &url, None).await {
                Ok(a) => registry_words(&a.body),
                Err(_) => None,
            }
            .unwrap_or_else(|| "MANIFEST_UNKNOWN".into());
            ImageCheck::Missing {
                message: format!("image '{image}' is not in registry {}: {words}", r.host),
                help: format!("push it (`docker push {image}`) or fix the tag, then plan again"),
            }
        }
        401 | 403 => ImageCheck::Unknown(format!(
            "registry {} refused to say whether image '{image}' exists (HTTP {}): it is private to anonymous readers; the machine may have credentials for it",
            r.host, answer.status
        )),
        s => ImageCheck::Unknown(format!(
            "registry {} answered HTTP {s} about image '{image}'",
            r.host
        )),
    }
}

/// The codes and messages of a registry's error document (`{"errors":[{code,message}]}`).
fn registry_words(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let words: Vec<String> = value
        .get("errors")?
        .as_array()?
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            format!("{code} {message}").trim().to_owned()
        })
        .collect();
    (!words.is_empty()).then(|| words.join("; "))
}

/// `Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"` → the URL to
/// ask for an anonymous pull token.
fn token_url(challenge: &str, name: &str) -> Option<String> {
    let params = challenge.strip_prefix("Bearer ")?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in params.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim_matches('"');
        match k {
            "realm" => realm = Some(v.to_owned()),
            "service" | "scope" => query.push(format!("{k}={}", v.replace(' ', "%20"))),
            _ => {}
        }
    }
    if !query.iter().any(|q| q.starts_with("scope=")) {
        query.push(format!("scope=repository:{name}:pull"));
    }
    Some(format!("{}?{}", realm?, query.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_references_with_a_registry_host_are_asked() {
        assert_eq!(parse("busybox"), None);
        assert_eq!(parse("anycloud-e2e:v1"), None);
        assert_eq!(parse("acme/train:v1"), None);
        assert_eq!(
            parse("ghcr.io/acme/train:v1"),
            Some(Reference {
                host: "ghcr.io",
                name: "acme/train",
                reference: "v1"
            })
        );
        assert_eq!(
            parse("127.0.0.1:5000/job"),
            Some(Reference {
                host: "127.0.0.1:5000",
                name: "job",
                reference: "latest"
            })
        );
        assert_eq!(
            parse("localhost/a/b@sha256:00"),
            Some(Reference {
                host: "localhost",
                name: "a/b",
                reference: "sha256:00"
            })
        );
        assert_eq!(scheme("127.0.0.1:5000"), "http");
        assert_eq!(scheme("ghcr.io"), "https");
    }

    #[test]
    fn the_token_url_comes_from_the_challenge() {
        assert_eq!(
            token_url(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/train:pull""#,
                "acme/train"
            )
            .as_deref(),
            Some("https://ghcr.io/token?service=ghcr.io&scope=repository:acme/train:pull")
        );
    }
}
