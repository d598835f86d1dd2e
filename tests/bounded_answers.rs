//! What a cloud's endpoint answers is read whole only up to a limit: a service (or whatever
//! answers at a configured endpoint) sending 17 MiB where an API answers kilobytes fails the
//! plan with the limit named, and the machine running anycloud keeps its memory. GCP and
//! Azure each against a stand-in on this machine (plain http, as allowed there).

mod common;

use bytes::Bytes;
use common::Project;
use http_body_util::Full;
use hyper::Response;

/// Past the 16 MiB of an API answer.
const HUGE: usize = 17 << 20;

/// A stand-in for a cloud's APIs: a token to whoever signs in, `HUGE` bytes to anything
/// else. Its URL.
fn huge_answers() -> String {
    let addr = common::http_server::serve("127.0.0.1", |req| async move {
        let body = if req.uri().path().ends_with("/oauth2/v2.0/token") {
            Bytes::from_static(br#"{"access_token":"stand-in","expires_in":3600}"#)
        } else {
            Bytes::from(vec![b' '; HUGE])
        };
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(body))
            .unwrap()
    });
    format!("http://{addr}")
}

fn refused_with_the_limit(p: &Project) {
    let r = p.run(&["plan"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("answer larger than 16777216 bytes"),
        "{r:?}"
    );
}

#[cfg(feature = "gcp")]
#[test]
fn a_huge_answer_of_google_apis_is_refused_at_the_limit() {
    let url = huge_answers();
    let mut p = Project::new(&format!(
        r#"
project: huge
providers:
  gcp: {{ project: acme-ml-prod, endpoints: {{ storage: "{url}", iam: "{url}", compute: "{url}" }} }}
deployments:
  huge-g:
    provider: gcp
    region: europe-west4
    vm: {{ type: e2-standard-4 }}
    container: {{ image: busybox }}
    buckets: {{ output: huge-g-results }}
"#
    ));
    p.env = vec![("GOOGLE_OAUTH_ACCESS_TOKEN".into(), "ya29.stand-in".into())];
    refused_with_the_limit(&p);
}

#[cfg(feature = "azure")]
#[test]
fn a_huge_answer_of_resource_manager_is_refused_at_the_limit() {
    let url = huge_answers();
    let mut p = Project::new(&format!(
        r#"
project: huge
providers:
  azure: {{ subscription_id: 9f3b1c2d-4e5f-4a6b-8c7d-0e1f2a3b4c5d, endpoints: {{ resource_manager: "{url}" }} }}
deployments:
  huge-a:
    provider: azure
    region: westeurope
    vm: {{ type: Standard_D2s_v5 }}
    container: {{ image: busybox }}
    buckets: {{ output: huge-a-results }}
"#
    ));
    p.env = vec![
        ("AZURE_TENANT_ID".into(), "tenant".into()),
        ("AZURE_CLIENT_ID".into(), "client".into()),
        ("AZURE_CLIENT_SECRET".into(), "secret".into()),
        ("AZURE_AUTHORITY_HOST".into(), url.clone()),
    ];
    refused_with_the_limit(&p);
}

/// The endpoints of the config take plain http to this machine only: the operator's
/// bearer token would cross the network in the clear to any other.
#[test]
fn plain_http_to_another_host_is_refused_naming_the_key_and_line() {
    for (provider, endpoints) in [
        (
            "gcp",
            r#"{ project: acme-ml-prod, endpoints: { storage: "http://example.com" } }"#,
        ),
        (
            "azure",
            r#"{ endpoints: { resource_manager: "http://example.com" } }"#,
        ),
    ] {
        let p = Project::new(&format!(
            "providers:\n  {provider}: {endpoints}\ndeployments: {{}}\n"
        ));
        let r = p.run(&["validate"]);
        assert_eq!(r.code, 1, "{provider}: {r:?}");
        assert!(
            r.stderr.contains("anycloud.yaml:2:")
                && r.stderr
                    .contains("'http://example.com' is plain http to another machine"),
            "{provider}: {r:?}"
        );
    }
}
