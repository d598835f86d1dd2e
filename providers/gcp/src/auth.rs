//! The operator's access token for Google's APIs, from the standard sources in the order
//! Google's own tools use: `GOOGLE_OAUTH_ACCESS_TOKEN` (a token minted elsewhere, e.g. by a CI
//! job's workload identity federation), the Application Default Credentials file
//! (`GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's
//! `~/.config/gcloud/application_default_credentials.json`: a service account's key, signed
//! here as an RS256 JWT, or a user's refresh token), then the metadata server when anycloud
//! itself runs on Compute Engine. A token is kept in memory until shortly before it expires
//! and is never written anywhere, logged or put in a message.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anycloud_provider::answers;
use anycloud_provider::{ErrorCode, ProviderError, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::api::HttpClient;

/// What every call asks for: Cloud Storage, IAM and Compute Engine.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "169.254.169.254";
/// A token this close to its expiry is renewed first.
const EARLY: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
enum Source {
    Token(String),
    ServiceAccount {
        email: String,
        key_pem: String,
        token_uri: String,
    },
    User {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    Metadata(String),
    Missing(String),
}

pub struct Credential {
    source: Source,
    cached: Mutex<Option<(String, SystemTime)>>,
}

fn adc_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    Some(config.join("application_default_credentials.json")).filter(|p| p.is_file())
}

fn on_compute_engine() -> bool {
    std::fs::read_to_string("/sys/class/dmi/id/product_name").is_ok_and(|p| p.contains("Google"))
}

fn source_from_file(path: &std::path::Path) -> Source {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Source::Missing(format!("cannot read Google credentials {shown}: {e}")),
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Source::Missing(format!("Google credentials {shown} are not JSON"));
    };
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).map(String::from);
    match field("type").as_deref() {
        Some("service_account") => match (field("client_email"), field("private_key")) {
            (Some(email), Some(key_pem)) => Source::ServiceAccount {
                email,
                key_pem,
                token_uri: field("token_uri").unwrap_or_else(|| TOKEN_URI.into()),
            },
            _ => Source::Missing(format!(
                "Google credentials {shown}: a service account key needs client_email and private_key"
            )),
        },
        Some("authorized_user") => {
            match (
                field("client_id"),
                field("client_secret"),
                field("refresh_token"),
            ) {
                (Some(client_id), Some(client_secret), Some(refresh_token)) => Source::User {
                    client_id,
                    client_secret,
                    refresh_token,
                    token_uri: field("token_uri").unwrap_or_else(|| TOKEN_URI.into()),
                },
                _ => Source::Missing(format!(
                    "Google credentials {shown}: an authorized_user file needs client_id, client_secret and refresh_token"
                )),
            }
        }
        other => Source::Missing(format!(
            "Google credentials {shown} are of type {other:?}: anycloud reads service_account and authorized_user files"
        )),
    }
}

impl Credential {
    /// The standard chain, read from this process's environment.
    pub fn from_env() -> Credential {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let source = if let Some(token) = var("GOOGLE_OAUTH_ACCESS_TOKEN") {
            Source::Token(token)
        } else if let Some(file) = adc_file() {
            source_from_file(&file)
        } else if let Some(host) = var("GCE_METADATA_HOST") {
            Source::Metadata(host)
        } else if on_compute_engine() {
            Source::Metadata(METADATA_HOST.into())
        } else {
            Source::Missing(
                "no Google credentials: run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file, or GOOGLE_OAUTH_ACCESS_TOKEN".into(),
            )
        };
        Credential {
            source,
            cached: Mutex::new(None),
        }
    }

    /// The credentials of one ADC file (a service account's key, a user's refresh token).
    pub fn from_file(path: &std::path::Path) -> Credential {
        Credential {
            source: source_from_file(path),
            cached: Mutex::new(None),
        }
    }

    /// Drops `token` from the cache (the service refused it: revoked, or its clock is off);
    /// whether a new one can be asked for.
    pub async fn forget(&self, token: &str) -> bool {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == token) {
            *cached = None;
            return true;
        }
        false
    }

    /// A valid bearer token.
    pub async fn token(&self, http: &HttpClient) -> Result<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if SystemTime::now() + EARLY < *expires {
                return Ok(token.clone());
            }
        }
        let (token, expires) = match &self.source {
            Source::Token(t) => return Ok(t.clone()),
            Source::Missing(why) => {
                return Err(ProviderError::new(ErrorCode::Permission, why.clone()))
            }
            Source::ServiceAccount {
                email,
                key_pem,
                token_uri,
            } => {
                check_token_uri(token_uri)?;
                let assertion = signed_assertion(email, key_pem, token_uri)?;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("assertion", &assertion)
                    .finish();
                exchange(http, Method::POST, token_uri, Some(form)).await?
            }
            Source::User {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                check_token_uri(token_uri)?;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "refresh_token")
                    .append_pair("client_id", client_id)
                    .append_pair("client_secret", client_secret)
                    .append_pair("refresh_token", refresh_token)
                    .finish();
                exchange(http, Method::POST, token_uri, Some(form)).await?
            }
            Source::Metadata(host) => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                exchange(http, Method::GET, &url, None).await?
            }
        };
        *cached = Some((token.clone(), expires));
        Ok(token)
    }
}

/// The JWT a service account signs to ask for a token (RFC 7523), valid for an hour.
fn signed_assertion(email: &str, key_pem: &str, token_uri: &str) -> Result<String> {
    use rustls_pki_types::pem::PemObject;
    let bad_key = |why: String| {
        ProviderError::new(
            ErrorCode::Invalid,
            format!("the private key of service account {email} cannot be used: {why}"),
        )
    };
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad_key(e.to_string()))?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
        .map_err(|e| bad_key(e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600})
            .to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|e| bad_key(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// A credentials file's `token_uri` gets a signed assertion or a refresh token and client
/// secret: in the clear only to this machine.
fn check_token_uri(uri: &str) -> Result<()> {
    anycloud_provider::declare::check_url(uri).map_err(|why| {
        ProviderError::new(
            ErrorCode::Invalid,
            format!("the Google credentials' token_uri {why}"),
        )
    })
}

/// One call to a token endpoint (or the metadata server): the token and when it expires.
async fn exchange(
    http: &HttpClient,
    method: Method,
    url: &str,
    form: Option<String>,
) -> Result<(String, SystemTime)> {
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header("metadata-flavor", "Google");
    if form.is_some() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("{url}: {e}")))?;
    let unavailable = |e: String| {
        ProviderError::new(
            ErrorCode::Unavailable,
            format!("signing in to Google at {url}: {e}"),
        )
    };
    let response = http
        .request(request)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let status = response.status();
    let bytes = answers::read(response.into_body(), answers::API_LIMIT)
        .await
        .map_err(|(code, e)| {
            ProviderError::new(code, format!("signing in to Google at {url}: {e}"))
        })?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        // The error's own words only: the request carried a secret, the answer does not.
        let said = body
            .get("error_description")
            .or_else(|| body.get("error"))
            .map(|e| e.to_string())
            .unwrap_or_default();
        let code = if status.is_server_error() || status.as_u16() == 429 {
            ErrorCode::Unavailable
        } else {
            ErrorCode::Permission
        };
        return Err(ProviderError::new(
            code,
            format!("signing in to Google at {url}: {status} {said}"),
        ));
    }
    let token = body
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Failed,
                format!("signing in to Google at {url}: no access_token in the answer"),
            )
        })?;
    let lifetime = body
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .unwrap_or(3599);
    Ok((
        token.to_owned(),
        SystemTime::now() + Duration::from_secs(lifetime),
    ))
}
