//! The operator's token for Resource Manager, from the standard sources in the order the
//! Azure SDKs use: a service principal in the environment (`AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`; `AZURE_AUTHORITY_HOST` for another cloud), then
//! the Azure CLI's login. A token is kept in memory until shortly before it expires and is
//! never written anywhere, logged or put in a message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anycloud_provider::answers;
use anycloud_provider::{ErrorCode, ProviderError, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;
use tokio::sync::Mutex;

const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";
/// A token this close to its expiry is renewed first.
const EARLY: Duration = Duration::from_secs(300);

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone, Debug)]
enum Source {
    ServicePrincipal {
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
    AzureCli,
}

pub struct Credential {
    /// The audience, e.g. `https://management.azure.com/`.
    resource: String,
    source: Source,
    cached: Mutex<Option<(String, SystemTime)>>,
}

impl Credential {
    /// The standard chain for `resource`, read from this process's environment.
    pub fn from_env(resource: &str) -> Credential {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let source = match (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
        ) {
            (Some(tenant), Some(client_id), Some(secret)) => Source::ServicePrincipal {
                authority: var("AZURE_AUTHORITY_HOST")
                    .unwrap_or_else(|| PUBLIC_AUTHORITY.to_owned()),
                tenant,
                client_id,
                secret,
            },
            _ => Source::AzureCli,
        };
        Credential {
            resource: resource.to_owned(),
            source,
            cached: Mutex::new(None),
        }
    }

    /// A valid bearer token.
    pub async fn token(&self, http: &Client<Https, Full<Bytes>>) -> Result<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref() {
            if SystemTime::now() + EARLY < *expires {
                return Ok(token.clone());
            }
        }
        let (token, expires) = match &self.source {
            Source::ServicePrincipal {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                self.client_credentials(http, authority, tenant, client_id, secret)
                    .await?
            }
            Source::AzureCli => self.azure_cli().await?,
        };
        *cached = Some((token.clone(), expires));
        Ok(token)
    }

    async fn client_credentials(
        &self,
        http: &Client<Https, Full<Bytes>>,
        authority: &str,
        tenant: &str,
        client_id: &str,
        secret: &str,
    ) -> Result<(String, SystemTime)> {
        // The client secret goes there.
        anycloud_provider::declare::check_url(authority).map_err(|why| {
            ProviderError::new(ErrorCode::Invalid, format!("AZURE_AUTHORITY_HOST {why}"))
        })?;
        let url = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            authority.trim_end_matches('/')
        );
        let scope = format!("{}/.default", self.resource.trim_end_matches('/'));
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("scope", &scope)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| ProviderError::new(ErrorCode::Invalid, format!("{url}: {e}")))?;
        let unavailable = |e: String| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!("signing in to Azure at {url}: {e}"),
            )
        };
        let response = http
            .request(request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let body = answers::read(response.into_body(), answers::API_LIMIT)
            .await
            .map_err(|(code, e)| {
                ProviderError::new(code, format!("signing in to Azure at {url}: {e}"))
            })?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // Entra ID's own words (`error`, `error_description`) hold no secret.
            let error = body.get("error").and_then(|e| e.as_str()).unwrap_or("");
            let code = if status.is_server_error() || status.as_u16() == 429 {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Permission
            };
            return Err(ProviderError::new(
                code,
                format!(
                    "signing in to Azure as the service principal {client_id} failed ({status} {error}); check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
                ),
            ));
        }
        let token = body
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| unavailable("the answer holds no access_token".into()))?;
        // Numbers may come as strings.
        let lifetime = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3600);
        Ok((
            token.to_owned(),
            SystemTime::now() + Duration::from_secs(lifetime),
        ))
    }

    async fn azure_cli(&self) -> Result<(String, SystemTime)> {
        let out = tokio::process::Command::new("az")
            .args([
                "account",
                "get-access-token",
                "--resource",
                &self.resource,
                "--output",
                "json",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| {
                ProviderError::new(
                    ErrorCode::Permission,
                    format!(
                        "no Azure credentials: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET, or sign in with the Azure CLI (`az login`; running `az` failed: {e})"
                    ),
                )
            })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            return Err(ProviderError::new(
                ErrorCode::Permission,
                format!(
                    "no Azure credentials: `az account get-access-token` failed ({}); run `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
                    said.trim().lines().last().unwrap_or("")
                ),
            ));
        }
        let body: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let token = body
            .get("accessToken")
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                ProviderError::permanent("`az account get-access-token` printed no accessToken")
            })?;
        let expires = body
            .get("expires_on")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(600));
        Ok((token.to_owned(), expires))
    }
}
