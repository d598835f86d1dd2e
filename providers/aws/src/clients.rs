//! The SDK clients: one base configuration from the standard chain (profile, environment,
//! instance role), then a client per service and region, every one counting its calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anycloud_provider::retry;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::sync::OnceCell;

use crate::settings::Settings;

/// Counts every attempt (retries included): what `plan -v` reports.
#[derive(Debug, Clone)]
struct CountCalls(Arc<AtomicU64>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "anycloud-count-calls"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The SDK's retries without its retry quota: by default a process may retry only ~100
/// times in all, after which a throttled call fails at its first attempt; an apply of many
/// deployments must retry every call its full [`retry::ATTEMPTS`].
fn retry_partition() -> RetryPartition {
    static PARTITION: std::sync::OnceLock<RetryPartition> = std::sync::OnceLock::new();
    PARTITION
        .get_or_init(|| {
            RetryPartition::custom("anycloud")
                .token_bucket(TokenBucket::unlimited())
                .build()
        })
        .clone()
}

/// IAM is global; its API lives in us-east-1.
const IAM_REGION: &str = "us-east-1";

pub struct Clients {
    settings: Settings,
    base: OnceCell<SdkConfig>,
    calls: Arc<AtomicU64>,
    s3: PerRegion<aws_sdk_s3::Client>,
    ec2: PerRegion<aws_sdk_ec2::Client>,
}

/// Clients already made, by region.
struct PerRegion<C>(Mutex<HashMap<String, C>>);

impl<C: Clone> PerRegion<C> {
    fn new() -> Self {
        PerRegion(Mutex::new(HashMap::new()))
    }

    fn get(&self, region: &str) -> Option<C> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(region)
            .cloned()
    }

    fn put(&self, region: &str, client: C) -> C {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(region.to_owned(), client.clone());
        client
    }
}

impl Clients {
    pub fn new(settings: Settings) -> Clients {
        Clients {
            settings,
            base: OnceCell::new(),
            calls: Arc::new(AtomicU64::new(0)),
            s3: PerRegion::new(),
            ec2: PerRegion::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                // rustls with ring: the SDK's default TLS stack (aws-lc) is slow to build.
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                    .build_https();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http)
                    .region(Region::new(IAM_REGION))
                    // Throttling, 5xx and transport errors are retried here, per call, with
                    // anycloud's one retry policy; what the SDK gives up on the engine does
                    // not retry again (`errors::classify`).
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(retry::ATTEMPTS as u32)
                            .with_initial_backoff(retry::FIRST_DELAY)
                            .with_max_backoff(retry::MAX_DELAY),
                    );
                if let Some(p) = &self.settings.profile {
                    loader = loader.profile_name(p);
                }
                loader.load().await
            })
            .await
    }

    async fn regional(&self, region: &str) -> SdkConfig {
        self.base()
            .await
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }

    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        if let Some(c) = self.s3.get(region) {
            return c;
        }
        let config = self.regional(region).await;
        let mut builder = aws_sdk_s3::config::Builder::from(&config)
            .interceptor(CountCalls(self.calls.clone()))
            .retry_partition(retry_partition());
        if let Some(url) = &self.settings.endpoints.s3 {
            builder = builder.endpoint_url(url);
        }
        // S3-compatible stores (and moto) want bucket names in the path, and many refuse
        // the checksums the SDK adds to every request by default.
        if matches!(self.settings.s3_endpoint(), Ok(Some(_))) {
            builder = builder.force_path_style(true).request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        }
        let client = aws_sdk_s3::Client::from_conf(builder.build());
        self.s3.put(region, client)
    }

    pub async fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        if let Some(c) = self.ec2.get(region) {
            return c;
        }
        let config = self.regional(region).await;
        let mut builder = aws_sdk_ec2::config::Builder::from(&config)
            .interceptor(CountCalls(self.calls.clone()))
            .retry_partition(retry_partition());
        if let Some(url) = &self.settings.endpoints.ec2 {
            builder = builder.endpoint_url(url);
        }
        let client = aws_sdk_ec2::Client::from_conf(builder.build());
        self.ec2.put(region, client)
    }

    pub async fn iam(&self) -> aws_sdk_iam::Client {
        let config = self.base().await;
        let mut builder = aws_sdk_iam::config::Builder::from(config)
            .interceptor(CountCalls(self.calls.clone()))
            .retry_partition(retry_partition());
        if let Some(url) = &self.settings.endpoints.iam {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_iam::Client::from_conf(builder.build())
    }

    /// Systems Manager in `region`: only to read the public parameters naming AWS's images.
    pub async fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let config = self.regional(region).await;
        let builder = aws_sdk_ssm::config::Builder::from(&config)
            .interceptor(CountCalls(self.calls.clone()))
            .retry_partition(retry_partition());
        aws_sdk_ssm::Client::from_conf(builder.build())
    }

    /// Service Quotas in `region`: only to read EC2's vCPU quotas before any change.
    pub async fn service_quotas(&self, region: &str) -> aws_sdk_servicequotas::Client {
        let config = self.regional(region).await;
        let builder = aws_sdk_servicequotas::config::Builder::from(&config)
            .interceptor(CountCalls(self.calls.clone()))
            .retry_partition(retry_partition());
        aws_sdk_servicequotas::Client::from_conf(builder.build())
    }
}
