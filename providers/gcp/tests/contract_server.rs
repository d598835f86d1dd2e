//! The GCP contract server itself (`support/contract.rs`), exercised with plain HTTP: the
//! provider's tests rely on it answering as the discovery documents say, and on it
//! catching requests outside them.

#[path = "support/contract.rs"]
mod contract;

use std::io::{Read, Write};
use std::net::TcpStream;

use contract::{Contract, ACCESS_TOKEN, CLIENT_ID, CLIENT_SECRET, PROJECT, REFRESH_TOKEN};
use serde_json::{json, Value};

/// One HTTP/1.1 exchange (a connection each, closed by the server's answer).
fn raw(
    c: &Contract,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> (u16, Vec<u8>) {
    let addr = c.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..at]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[at + 4..].to_vec())
}

/// A JSON call with the accepted token.
fn call(c: &Contract, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, out) = raw(
        c,
        method,
        path,
        "application/json",
        &bytes,
        Some(ACCESS_TOKEN),
    );
    (status, serde_json::from_slice(&out).unwrap_or(Value::Null))
}

fn bucket(c: &Contract, name: &str) -> (u16, Value) {
    call(
        c,
        "POST",
        &format!("/storage/v1/b?project={PROJECT}"),
        Some(
            json!({"name": name, "location": "europe-west1", "labels": {"anycloud": "yes"},
            "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": true}}}),
        ),
    )
}

#[test]
fn buckets_insert_get_and_list_in_pages() {
    let c = Contract::start();
    for n in ["b-one", "b-two", "b-three"] {
        let (status, b) = bucket(&c, n);
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["location"], "EUROPE-WEST1");
        assert_eq!(
            b["iamConfiguration"]["uniformBucketLevelAccess"]["enabled"],
            true
        );
    }
    let (status, e) = bucket(&c, "b-one");
    assert_eq!(status, 409);
    assert_eq!(e["error"]["errors"][0]["reason"], "conflict");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("you already own it"));
    c.with(|w| w.buckets_taken_elsewhere.insert("taken-name".into()));
    assert_eq!(bucket(&c, "taken-name").0, 409);
    assert_eq!(call(&c, "GET", "/storage/v1/b/taken-name", None).0, 403);

    let (status, b) = call(&c, "GET", "/storage/v1/b/b-two", None);
    assert_eq!(
        (status, b["labels"]["anycloud"].as_str()),
        (200, Some("yes"))
    );

    // page_size 2: three buckets are two pages.
    let (_, first) = call(&c, "GET", &format!("/storage/v1/b?project={PROJECT}"), None);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let token = first["nextPageToken"].as_str().unwrap();
    let (_, second) = call(
        &c,
        "GET",
        &format!("/storage/v1/b?project={PROJECT}&pageToken={token}"),
        None,
    );
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("nextPageToken").is_none());
    // Another project sees none of them, and the empty list has no items.
    let (_, none) = call(&c, "GET", "/storage/v1/b?project=elsewhere", None);
    assert_eq!(none, json!({"kind": "storage#buckets"}));

    // Labels merge; null removes one.
    let (status, b) = call(
        &c,
        "PATCH",
        "/storage/v1/b/b-two",
        Some(json!({"labels": {"anycloud": null, "role": "input"}})),
    );
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["labels"], json!({"role": "input"}));
    assert_eq!(b["metageneration"], "2");

    // A required query parameter left out is outside the contract.
    assert_eq!(call(&c, "GET", "/storage/v1/b", None).0, 400);
    assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
    assert!(c.violations()[0].contains("Required parameter: project"));
    assert_eq!(c.count("POST /storage/v1/b"), 5);
}

#[test]
fn set_iam_policy_needs_the_etag_it_read() {
    let c = Contract::start();
    bucket(&c, "policy-bucket");
    let path = "/storage/v1/b/policy-bucket/iam";
    let (status, policy) = call(
        &c,
        "GET",
        &format!("{path}?optionsRequestedPolicyVersion=3"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(policy["resourceId"], "projects/_/buckets/policy-bucket");
    assert_eq!(
        policy["bindings"][0]["role"],
        "roles/storage.legacyBucketOwner"
    );

    let (status, sa) = call(
        &c,
        "POST",
        &format!("/v1/projects/{PROJECT}/serviceAccounts"),
        Some(json!({"accountId": "dep-reader", "serviceAccount": {"displayName": "reader"}})),
    );
    assert_eq!(status, 200, "{sa}");
    let email = sa["email"].as_str().unwrap().to_owned();
    assert_eq!(
        email,
        format!("dep-reader@{PROJECT}.iam.gserviceaccount.com")
    );
    assert_eq!(sa["uniqueId"].as_str().unwrap().len(), 21);

    let mut new = policy.clone();
    new["version"] = json!(3);
    new["bindings"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "roles/storage.objectViewer", "members": [format!("serviceAccount:{email}")],
            "condition": {"title": "input", "expression": "resource.name.startsWith(\"projects/_/buckets/policy-bucket/objects/in/\")"}}));

    // A stale etag: 412, not a violation.
    let mut stale = new.clone();
    stale["etag"] = json!("c3RhbGU=");
    let (status, e) = call(&c, "PUT", path, Some(stale));
    assert_eq!(status, 412);
    assert_eq!(e["error"]["errors"][0]["reason"], "conditionNotMet");

    // Someone else writes first: 412 even with the etag read, and the etag moves on.
    c.with(|w| w.stale_etag_next = 1);
    assert_eq!(call(&c, "PUT", path, Some(new.clone())).0, 412);
    let (_, reread) = call(
        &c,
        "GET",
        &format!("{path}?optionsRequestedPolicyVersion=3"),
        None,
    );
    assert_ne!(reread["etag"], policy["etag"]);
    new["etag"] = reread["etag"].clone();
    let (status, set) = call(&c, "PUT", path, Some(new.clone()));
    assert_eq!(status, 200, "{set}");
    assert_ne!(set["etag"], reread["etag"]);
    assert_eq!(
        c.policy("policy-bucket").unwrap()["bindings"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(c.violations().is_empty(), "{:?}", c.violations());

    // A condition under version 1 is outside the contract.
    new["etag"] = set["etag"].clone();
    new["version"] = json!(1);
    assert_eq!(call(&c, "PUT", path, Some(new)).0, 400);
    assert_eq!(c.violations().len(), 1);
}

#[test]
fn a_new_account_is_unknown_to_policies_for_a_while() {
    let c = Contract::start();
    c.with(|w| w.unknown_member_polls = 2);
    bucket(&c, "fresh-bucket");
    let (_, sa) = call(
        &c,
        "POST",
        &format!("/v1/projects/{PROJECT}/serviceAccounts"),
        Some(json!({"accountId": "fresh-one", "serviceAccount": {}})),
    );
    let member = format!("serviceAccount:{}", sa["email"].as_str().unwrap());
    let path = "/storage/v1/b/fresh-bucket/iam";
    let mut answers = vec![];
    for _ in 0..3 {
        let (_, mut p) = call(&c, "GET", path, None);
        p["bindings"] = json!([{"role": "roles/storage.objectAdmin", "members": [member]}]);
        let (status, body) = call(&c, "PUT", path, Some(p));
        answers.push(status);
        if status == 400 {
            assert!(body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not exist"));
        }
    }
    assert_eq!(answers, [400, 400, 200]);
    assert!(c.violations().is_empty(), "{:?}", c.violations());

    // Accounts: get by email or unique id, list, delete.
    let email = sa["email"].as_str().unwrap();
    let by_id = format!(
        "/v1/projects/{PROJECT}/serviceAccounts/{}",
        sa["uniqueId"].as_str().unwrap()
    );
    assert_eq!(call(&c, "GET", &by_id, None).1["email"], email);
    let (_, listed) = call(
        &c,
        "GET",
        &format!("/v1/projects/{PROJECT}/serviceAccounts"),
        None,
    );
    assert_eq!(listed["accounts"][0]["email"], email);
    let (status, e) = call(
        &c,
        "POST",
        &format!("/v1/projects/{PROJECT}/serviceAccounts"),
        Some(json!({"accountId": "fresh-one"})),
    );
    assert_eq!(
        (status, e["error"]["status"].as_str()),
        (409, Some("ALREADY_EXISTS"))
    );
    let path = format!("/v1/projects/{PROJECT}/serviceAccounts/{email}");
    assert_eq!(call(&c, "DELETE", &path, None), (200, json!({})));
    assert_eq!(call(&c, "GET", &path, None).0, 404);
    assert!(c.violations().is_empty(), "{:?}", c.violations());
}

#[test]
fn requests_outside_the_contract_are_recorded() {
    let c = Contract::start();
    // An unknown body field.
    let (status, _) = call(
        &c,
        "POST",
        &format!("/storage/v1/b?project={PROJECT}"),
        Some(json!({"name": "ok-name", "labelz": {}})),
    );
    assert_eq!(status, 400);
    assert!(
        c.violations()[0].contains("unknown property 'labelz'"),
        "{:?}",
        c.violations()
    );
    // A wrong type deep down, an enum value that is not one.
    call(
        &c,
        "POST",
        &format!("/storage/v1/b?project={PROJECT}"),
        Some(
            json!({"name": "ok-name", "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": "yes"}}}),
        ),
    );
    assert!(
        c.violations()[1].contains("enabled: must be a boolean"),
        "{:?}",
        c.violations()
    );
    call(
        &c,
        "POST",
        &format!("/storage/v1/b?project={PROJECT}&predefinedAcl=everyone"),
        Some(json!({"name": "ok-name"})),
    );
    // A query parameter the method does not declare, a path no method has, no token.
    call(
        &c,
        "GET",
        "/storage/v1/b/ok-name?projection=full&colour=red",
        None,
    );
    assert_eq!(call(&c, "GET", "/storage/v1/nothing/here", None).0, 404);
    let (status, _) = raw(&c, "GET", "/storage/v1/b/ok-name", "", b"", None);
    assert_eq!(status, 401);
    // IAM: the account id's rule.
    let (status, e) = call(
        &c,
        "POST",
        &format!("/v1/projects/{PROJECT}/serviceAccounts"),
        Some(json!({"accountId": "Bad_Id"})),
    );
    assert_eq!(
        (status, e["error"]["status"].as_str()),
        (400, Some("INVALID_ARGUMENT"))
    );
    assert_eq!(c.violations().len(), 7, "{:#?}", c.violations());
}

fn instance_body(name: &str) -> Value {
    json!({
        "name": name,
        "machineType": "zones/europe-west1-b/machineTypes/e2-small",
        "disks": [{"boot": true, "autoDelete": true,
            "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12", "diskSizeGb": "20"}}],
        "networkInterfaces": [{"network": "global/networks/default",
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}],
        "serviceAccounts": [{"email": format!("vm@{PROJECT}.iam.gserviceaccount.com"),
            "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
        "metadata": {"items": [{"key": "ssh-keys", "value": "anycloud:ssh-ed25519 AAAA anycloud"}]},
        "scheduling": {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE",
            "automaticRestart": false, "onHostMaintenance": "TERMINATE"},
        "labels": {"anycloud-deployment": "dep-1"},
        "tags": {"items": ["anycloud-ssh"]},
    })
}

#[test]
fn an_instance_insert_is_an_operation() {
    let c = Contract::start();
    c.with(|w| w.slow_polls = 2);
    let zone = format!("/compute/v1/projects/{PROJECT}/zones/europe-west1-b");
    let (status, op) = call(
        &c,
        "POST",
        &format!("{zone}/instances?requestId=5f0c6a53-0000-4000-8000-000000000001"),
        Some(instance_body("vm-1")),
    );
    assert_eq!(status, 200, "{op}");
    assert_eq!(
        (op["kind"].as_str(), op["status"].as_str()),
        (Some("compute#operation"), Some("RUNNING"))
    );
    // The same requestId again: the same operation, no conflict.
    let (_, again) = call(
        &c,
        "POST",
        &format!("{zone}/instances?requestId=5f0c6a53-0000-4000-8000-000000000001"),
        Some(instance_body("vm-1")),
    );
    assert_eq!(again["name"], op["name"]);
    assert_eq!(
        call(
            &c,
            "POST",
            &format!("{zone}/instances"),
            Some(instance_body("vm-1"))
        )
        .0,
        409
    );

    let name = op["name"].as_str().unwrap();
    let statuses: Vec<String> = (0..3)
        .map(|i| {
            let verb = if i == 0 { "POST" } else { "GET" };
            let path = if i == 0 {
                format!("{zone}/operations/{name}/wait")
            } else {
                format!("{zone}/operations/{name}")
            };
            let vm = c.instance("vm-1").unwrap();
            if i < 2 {
                assert_eq!(vm["status"], "PROVISIONING");
            }
            call(&c, verb, &path, None).1["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(statuses, ["RUNNING", "RUNNING", "DONE"]);
    let (_, vm) = call(&c, "GET", &format!("{zone}/instances/vm-1"), None);
    assert_eq!(vm["status"], "RUNNING");
    assert!(vm["networkInterfaces"][0]["networkIP"]
        .as_str()
        .unwrap()
        .starts_with("10.128.0."));
    assert!(vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
        .as_str()
        .unwrap()
        .starts_with("203.0.113."));
    assert!(vm["metadata"]["fingerprint"].is_string());

    // Lists filter by label.
    let (_, listed) = call(
        &c,
        "GET",
        &format!("{zone}/instances?filter=labels.anycloud-deployment%3Ddep-1"),
        None,
    );
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (_, none) = call(
        &c,
        "GET",
        &format!("{zone}/instances?filter=labels.other%3A*"),
        None,
    );
    assert!(none.get("items").is_none());

    // Firewalls answer global operations.
    let (_, op) = call(
        &c,
        "POST",
        &format!("/compute/v1/projects/{PROJECT}/global/firewalls"),
        Some(
            json!({"name": "anycloud-ssh", "network": "global/networks/default", "direction": "INGRESS",
            "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "sourceRanges": ["203.0.113.0/24"], "targetTags": ["anycloud-ssh"]}),
        ),
    );
    assert!(op.get("zone").is_none());
    let (status, _) = call(
        &c,
        "GET",
        &format!(
            "/compute/v1/projects/{PROJECT}/global/operations/{}",
            op["name"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 200);
    assert!(c.firewall("anycloud-ssh").is_some());

    // A Spot VM whose termination action is DELETE disappears when preempted.
    c.preempt("vm-1");
    assert_eq!(
        call(&c, "GET", &format!("{zone}/instances/vm-1"), None).0,
        404
    );
    assert!(c.violations().is_empty(), "{:?}", c.violations());

    // An instance with two boot disks is outside the contract.
    let mut two = instance_body("vm-2");
    let disk = two["disks"][0].clone();
    two["disks"].as_array_mut().unwrap().push(disk);
    assert_eq!(
        call(&c, "POST", &format!("{zone}/instances"), Some(two)).0,
        400
    );
    assert_eq!(c.violations().len(), 1);
}

#[test]
fn throttling_tokens_and_objects() {
    let c = Contract::start();
    bucket(&c, "data-bucket");
    c.with(|w| w.throttle_next = 1);
    let (status, e) = call(&c, "GET", "/storage/v1/b/data-bucket", None);
    assert_eq!(status, 429);
    assert_eq!(e["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(e["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(call(&c, "GET", "/storage/v1/b/data-bucket", None).0, 200);

    // The refresh-token grant issues a token the APIs accept.
    let form = format!(
        "grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={}",
        REFRESH_TOKEN.replace('/', "%2F")
    );
    let (status, out) = raw(
        &c,
        "POST",
        "/token",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
        None,
    );
    assert_eq!(status, 200);
    let t: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (t["expires_in"].as_u64(), t["token_type"].as_str()),
        (Some(3599), Some("Bearer"))
    );
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(
        raw(&c, "GET", "/storage/v1/b/data-bucket", "", b"", Some(token)).0,
        200
    );
    assert_eq!(c.with(|w| w.token_requests), 1);

    // The JWT-bearer grant: the audience must be this token endpoint.
    let scope = "https://www.googleapis.com/auth/cloud-platform";
    let iss = format!("anycloud@{PROJECT}.iam.gserviceaccount.com");
    for (aud, want) in [
        (c.token_url(), 200),
        ("https://oauth2.googleapis.com/token".into(), 400),
    ] {
        let assertion = contract::unsigned_assertion(&iss, scope, &aud);
        let form = format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}");
        let (status, _) = raw(
            &c,
            "POST",
            "/token",
            "application/x-www-form-urlencoded",
            form.as_bytes(),
            None,
        );
        assert_eq!(status, want);
    }
    assert_eq!(c.violations().len(), 1, "{:?}", c.violations());
    c.with(|w| w.violations.clear());

    // Objects: a simple media upload, a list with a delimiter, the bytes back.
    for name in ["in/a.txt", "in/b.txt", "out/c.txt"] {
        let (status, o) = raw(
            &c,
            "POST",
            &format!("/upload/storage/v1/b/data-bucket/o?uploadType=media&name={name}&ifGenerationMatch=0"),
            "text/plain",
            name.as_bytes(),
            Some(ACCESS_TOKEN),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&o));
    }
    let (status, _) = raw(
        &c,
        "POST",
        "/upload/storage/v1/b/data-bucket/o?uploadType=media&name=in/a.txt&ifGenerationMatch=0",
        "text/plain",
        b"again",
        Some(ACCESS_TOKEN),
    );
    assert_eq!(status, 412);
    let (_, listed) = call(&c, "GET", "/storage/v1/b/data-bucket/o?delimiter=/", None);
    assert_eq!(listed["prefixes"], json!(["in/", "out/"]));
    let (_, listed) = call(&c, "GET", "/storage/v1/b/data-bucket/o?prefix=in/", None);
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let (status, bytes) = raw(
        &c,
        "GET",
        "/storage/v1/b/data-bucket/o/in%2Fb.txt?alt=media",
        "",
        b"",
        Some(ACCESS_TOKEN),
    );
    assert_eq!((status, bytes.as_slice()), (200, b"in/b.txt".as_slice()));
    assert_eq!(call(&c, "DELETE", "/storage/v1/b/data-bucket", None).0, 409);
    assert_eq!(
        call(&c, "DELETE", "/storage/v1/b/data-bucket/o/in%2Fa.txt", None).0,
        204
    );
    assert!(c.violations().is_empty(), "{:?}", c.violations());
}
