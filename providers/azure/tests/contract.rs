//! Azure's storage, containers, identities and role assignments against the contract server
//! (`support/contract.rs`: Resource Manager as its REST specifications define it). The verbs
//! are driven as the engine drives them: planned, then created in dependency order with the
//! engine's retry policy, read back in one refresh, and deleted in reverse.

#[path = "support/contract.rs"]
mod contract;
#[path = "../../api/tests/support/drive.rs"]
mod drive;
#[path = "../../host/tests/support/sshd.rs"]
mod sshd;

use std::sync::OnceLock;

use tokio::sync::{Mutex, MutexGuard};

use anycloud_provider::{
    BucketRole, BucketSpec, ContainerSpec, DeploymentSpec, ErrorCode, Kind, NodeSpec, Provider,
    VmSpec,
};
use anycloud_provider_azure::naming;
use anycloud_provider_azure::AzureProvider;
use contract::Contract;
use drive::{planned, Engine, Rec};
use serde_json::{json, Value};

/// One server for the binary: the credentials come from the process's environment, which
/// every test shares. Tests take turns, each in a subscription of its own.
async fn server() -> (MutexGuard<'static, ()>, Contract) {
    static SERVER: OnceLock<Contract> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::const_new(());
    let turn = TURN.lock().await;
    let c = SERVER.get_or_init(|| {
        let c = Contract::start();
        for (k, v) in c.env() {
            std::env::set_var(k, v);
        }
        c
    });
    c.with(|w| {
        w.throttle_next = 0;
        w.slow_polls = 0;
        w.page_size = 2;
    });
    (turn, c.clone())
}

fn provider(c: &Contract, subscription: &str) -> AzureProvider {
    let p = AzureProvider::new(std::env::temp_dir().join("anycloud-contract-keys"));
    p.configure(&json!({
        "subscription_id": subscription,
        "endpoints": {"resource_manager": c.url},
    }))
    .unwrap();
    p
}

fn deployment(id: &str, region: &str, input: &str) -> DeploymentSpec {
    let bucket = |name: &str| BucketSpec {
        name: name.to_owned(),
        continent: "eu".into(),
        region: region.into(),
    };
    DeploymentSpec {
        id: id.into(),
        provider: "azure".into(),
        project: Some("contract".into()),
        region: region.into(),
        continent: "eu".into(),
        vm: VmSpec::default(),
        container: ContainerSpec::default(),
        buckets: [
            (BucketRole::Input, bucket(input)),
            (BucketRole::Output, bucket(&format!("{id}-results"))),
            (BucketRole::Checkpoint, bucket(id)),
        ]
        .into(),
        sync_interval_secs: 60,
        idle_shutdown_secs: None,
        check: Default::default(),
    }
}

fn sub(n: u32) -> String {
    format!("{n:08x}-1111-4222-8333-444455556666")
}

/// The input container exists already (the user made it and filled it).
fn seed_input(c: &Contract, subscription: &str, name: &str) {
    let account = naming::storage_account("eu", subscription);
    c.with(|w| {
        w.containers.insert(
            (account.clone(), name.to_owned()),
            json!({"name": name, "properties": {"metadata": {}}}),
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_converges_least_privilege_and_destroy_keeps_what_it_must() {
    let (_turn, c) = server().await;
    let subscription = sub(1);
    let p = provider(&c, &subscription);
    let d = deployment("train", "westeurope", "train-input");
    let recs = planned(&p, &d);
    // The plan names the account, its group and the region it lives in.
    let storage = &recs[0].attrs;
    // The seed's name: the subscription id's first 8 characters.
    assert_eq!(storage["account"], json!("anycloudeu00000001"));
    assert_eq!(storage["resource_group"], json!("anycloud-storage-eu"));
    assert_eq!(storage["region"], json!("westeurope"));

    // Throttled calls and a slow account: the engine's retries and the LRO polls carry on.
    c.with(|w| {
        w.throttle_next = 3;
        w.slow_polls = 3;
    });
    let mut engine = Engine::new(&p, "lineage-one");
    // The storage first: the user's input container lives in the account it makes.
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&c, &subscription, "train-input");
    engine.apply(&recs).await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
    assert!(
        c.count("GET /_operations/storage/") >= 2,
        "the account's Location was polled"
    );

    let account = naming::storage_account("eu", &subscription);
    c.with(|w| {
        let (_, group, a, _) = &w.accounts[&account];
        assert_eq!(group, "anycloud-storage-eu");
        assert_eq!(a["location"], json!("westeurope"));
        assert_eq!(a["properties"]["allowSharedKeyAccess"], json!(false));
        assert_eq!(a["tags"]["anycloud-lineage"], json!("lineage-one"));
        for made in ["train-results", "train"] {
            let m = &w.containers[&(account.clone(), made.to_owned())];
            assert_eq!(
                m["properties"]["metadata"]["anycloud_lineage"],
                json!("lineage-one")
            );
            assert_eq!(m["properties"]["publicAccess"], json!("None"));
        }
        // Least privilege: Contributor on output and checkpoint, Reader on input, each
        // scoped to exactly its container.
        let identity = w
            .identities
            .values()
            .find(|i| i["name"] == json!("anycloud-train"))
            .expect("the identity");
        let principal = identity["properties"]["principalId"].clone();
        let mut granted: Vec<(String, String)> = w
            .assignments
            .values()
            .filter(|a| a["properties"]["principalId"] == principal)
            .map(|a| {
                let scope = a["properties"]["scope"].as_str().unwrap().to_owned();
                let role = a["properties"]["roleDefinitionId"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned();
                assert!(
                    scope.contains("/blobServices/default/containers/"),
                    "no scope wider than a container: {scope}"
                );
                assert_eq!(a["properties"]["principalType"], json!("ServicePrincipal"));
                (scope.rsplit('/').next().unwrap().to_owned(), role)
            })
            .collect();
        granted.sort();
        assert_eq!(
            granted,
            vec![
                ("train".to_owned(), naming::BLOB_DATA_CONTRIBUTOR.to_owned()),
                (
                    "train-input".to_owned(),
                    naming::BLOB_DATA_READER.to_owned()
                ),
                (
                    "train-results".to_owned(),
                    naming::BLOB_DATA_CONTRIBUTOR.to_owned()
                ),
            ]
        );
    });

    // A refresh finds everything.
    let found = engine.refresh().await;
    for (address, f) in &found {
        assert!(f.is_some(), "{address} found missing");
    }
    let identity = found["deployment.train.role"].as_ref().unwrap();
    assert!(identity["client_id"].is_string() && identity["principal_id"].is_string());

    // Nothing recorded holds a secret or a token.
    let recorded = serde_json::to_string(
        &engine
            .state
            .values()
            .map(|r| (&r.attrs, &r.private))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!recorded.contains(contract::CLIENT_SECRET), "{recorded}");
    assert!(!recorded.contains("token-"), "{recorded}");
    assert!(
        !recorded.to_lowercase().contains("accountkey"),
        "{recorded}"
    );

    engine.destroy().await.unwrap();
    c.with(|w| {
        assert!(
            w.accounts.contains_key(&account),
            "the continent's account is kept"
        );
        let left: Vec<&String> = w
            .containers
            .keys()
            .filter(|(a, _)| *a == account)
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            left,
            vec!["train-input", "train-results"],
            "only the checkpoint container goes"
        );
        assert!(!w
            .identities
            .values()
            .any(|i| i["name"] == json!("anycloud-train")));
        assert!(w.assignments.values().all(|a| !a["properties"]["scope"]
            .as_str()
            .unwrap()
            .contains(&subscription)));
    });
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_applies_racing_for_the_account_both_end_with_the_one_account() {
    let (_turn, c) = server().await;
    let subscription = sub(2);
    let (a, b) = (provider(&c, &subscription), provider(&c, &subscription));
    let d = deployment("race", "northeurope", "race-input");
    let storage = planned(&a, &d).remove(0);
    c.with(|w| w.slow_polls = 2);
    let (mut ea, mut eb) = (Engine::new(&a, "lineage-a"), Engine::new(&b, "lineage-b"));
    let (ra, rb) = tokio::join!(ea.create(&storage), eb.create(&storage));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra["account"], rb["account"]);
    let account = naming::storage_account("eu", &subscription);
    assert_eq!(
        c.with(|w| w.accounts.keys().filter(|n| **n == account).count()),
        1
    );

    // Made meanwhile in another group of this subscription: adopted where it is.
    let subscription = sub(3);
    let p = provider(&c, &subscription);
    let account = naming::storage_account("eu", &subscription);
    c.with(|w| {
        w.accounts.insert(
            account.clone(),
            (
                subscription.clone(),
                "someones-group".into(),
                json!({"id": format!("/subscriptions/{subscription}/resourceGroups/someones-group/providers/Microsoft.Storage/storageAccounts/{account}"), "name": account, "properties": {}}),
                0,
            ),
        );
    });
    let storage = planned(&p, &d).remove(0);
    let made = Engine::new(&p, "lineage-c").create(&storage).await.unwrap();
    assert_eq!(made["resource_group"], json!("someones-group"));
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_name_taken_by_another_subscription_fails_naming_it() {
    let (_turn, c) = server().await;
    let subscription = sub(4);
    let p = provider(&c, &subscription);
    let account = naming::storage_account("eu", &subscription);
    c.with(|w| w.taken_elsewhere.insert(account.clone()));
    let d = deployment("taken", "westeurope", "taken-input");
    let storage = planned(&p, &d).remove(0);
    let target = anycloud_provider::Target {
        address: &storage.address,
        kind: storage.kind,
        attrs: &storage.attrs,
        private: &storage.private,
        deps: &[],
        lineage: "lineage-t",
    };
    let pre = p.preflight(&[target]).await.unwrap();
    assert_eq!(pre.errors.len(), 1, "{pre:?}");
    assert!(
        pre.errors[0].contains(&account) && pre.errors[0].contains("another Azure subscription"),
        "{pre:?}"
    );
    let err = Engine::new(&p, "lineage-t")
        .create(&storage)
        .await
        .unwrap_err();
    assert!(
        err.is(ErrorCode::Conflict) && err.message.contains(&account),
        "{err:?}"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identical_assignment_under_another_name_is_adopted_and_removed_with_the_grant() {
    let (_turn, c) = server().await;
    let subscription = sub(5);
    let p = provider(&c, &subscription);
    let d = deployment("adopt", "westeurope", "adopt-input");
    let recs = planned(&p, &d);
    let mut engine = Engine::new(&p, "lineage-adopt");
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&c, &subscription, "adopt-input");
    // Everything but the output grant, which someone made by hand under another name.
    let output_grant = recs
        .iter()
        .position(|r| r.address == "deployment.adopt.grant.output")
        .unwrap();
    let (before, after) = recs.split_at(output_grant);
    engine.apply(before).await.unwrap();
    let principal = engine.state["deployment.adopt.role"].attrs["principal_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let grant = &after[0];
    let scope = grant.attrs["scope"].as_str().unwrap().to_owned();
    let by_hand = "0f0f0f0f-0000-4000-8000-000000000001";
    c.with(|w| {
        w.assignments.insert(
            by_hand.into(),
            json!({"name": by_hand, "properties": {
                "scope": scope, "principalId": principal,
                "roleDefinitionId": grant.attrs["role_definition"], "principalType": "ServicePrincipal"}}),
        );
    });
    engine.apply(after).await.unwrap();
    assert_eq!(engine.state[&grant.address].attrs["name"], json!(by_hand));
    engine.destroy().await.unwrap();
    assert!(c.with(|w| !w.assignments.contains_key(by_hand)));
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn another_states_identity_and_checkpoint_are_never_adopted_or_deleted() {
    let (_turn, c) = server().await;
    let subscription = sub(6);
    let first = provider(&c, &subscription);
    let d = deployment("shared", "westeurope", "shared-input");
    let recs = planned(&first, &d);
    let mut one = Engine::new(&first, "lineage-first");
    one.apply(&recs[..1]).await.unwrap();
    seed_input(&c, &subscription, "shared-input");
    one.apply(&recs).await.unwrap();

    let second = provider(&c, &subscription);
    let mut two = Engine::new(&second, "lineage-second");
    let checkpoint = recs
        .iter()
        .find(|r| r.address == "deployment.shared.bucket.checkpoint")
        .unwrap();
    let identity = recs.iter().find(|r| r.kind == Kind::Role).unwrap();
    two.apply(&recs[..1]).await.unwrap();
    let err = two.create(checkpoint).await.unwrap_err();
    assert!(
        err.is(ErrorCode::Conflict) && err.message.contains("lineage-first"),
        "{err:?}"
    );
    let err = two.create(identity).await.unwrap_err();
    assert!(
        err.message.contains("managed identity anycloud-shared")
            && err.message.contains("lineage-first"),
        "{err:?}"
    );
    // A refresh of the second state does not take the first's identity for its own.
    two.state.insert(identity.address.clone(), identity.clone());
    assert_eq!(two.refresh().await[&identity.address], None);
    // Nor does its destroy delete it.
    two.destroy().await.unwrap();
    c.with(|w| {
        assert!(w
            .identities
            .values()
            .any(|i| i["name"] == json!("anycloud-shared")));
    });
    one.destroy().await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_costs_the_same_calls_for_10_and_200_deployments() {
    let (_turn, c) = server().await;
    let mut calls = vec![];
    for (i, n) in [10u32, 200].into_iter().enumerate() {
        let subscription = sub(100 + i as u32);
        let p = provider(&c, &subscription);
        let mut engine = Engine::new(&p, "lineage-scale");
        for k in 0..n {
            let d = deployment(&format!("job{k}"), "westeurope", "scale-input");
            let recs = planned(&p, &d);
            engine.apply(&recs[..1]).await.unwrap();
            seed_input(&c, &subscription, "scale-input");
            engine.apply(&recs).await.unwrap();
        }
        // Resource Manager's pages hold up to 1,000 items for these lists.
        c.with(|w| w.page_size = 1000);
        let before = c.total();
        let found = engine.refresh().await;
        calls.push(c.total() - before);
        assert!(found.values().all(Option::is_some));
        assert_eq!(found.len(), 1 + 7 * n as usize);
        c.with(|w| w.page_size = 2);
    }
    eprintln!(
        "refresh calls: 10 deployments {}, 200 deployments {}",
        calls[0], calls[1]
    );
    assert_eq!(calls[0], calls[1], "{calls:?}");
    assert!(calls[0] <= 6, "{calls:?}");
    assert_eq!(c.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_follow_next_link_and_a_wrong_request_is_a_violation() {
    let (_turn, c) = server().await;
    let subscription = sub(7);
    let p = provider(&c, &subscription);
    let mut engine = Engine::new(&p, "lineage-pages");
    for k in 0..5 {
        let d = deployment(&format!("page{k}"), "westeurope", "page-input");
        let recs = planned(&p, &d);
        engine.apply(&recs[..1]).await.unwrap();
        seed_input(&c, &subscription, "page-input");
        engine.apply(&recs).await.unwrap();
    }
    // Pages of two: every identity is still found.
    let found = engine.refresh().await;
    assert!(found.values().all(Option::is_some));
    assert!(c.with(|w| w
        .requests
        .iter()
        .any(|r| r.starts_with("GET") && r.contains("userAssignedIdentities"))));
    // The server is not lenient: a request outside the contract is answered 400 and noted.
    let arm = anycloud_provider_azure::arm::Arm::new(
        &c.url,
        anycloud_provider_azure::auth::Credential::from_env(&format!("{}/", c.url)),
    )
    .unwrap();
    let reply = arm
        .send(
            http::Method::PUT,
            &format!("/subscriptions/{subscription}/resourcegroups/bad"),
            Some("2019-01-01"),
            Some(&json!({"location": "westeurope"})),
        )
        .await
        .unwrap();
    assert_eq!(reply.status.as_u16(), 400);
    assert_eq!(c.with(|w| std::mem::take(&mut w.violations)).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_carries_its_identity_admits_ssh_from_the_cidr_only_and_an_eviction_is_seen() {
    let (_turn, c) = server().await;
    // The VM is reached at a test host whose login user is not root, as on Azure's images.
    let host = sshd::TestHost::start().with_sudo_user();
    std::env::set_var(
        anycloud_host::testing::SSH_ADDRESS,
        format!("{}:{}", host.address, host.port),
    );
    let keys = tempfile::tempdir().unwrap();
    let subscription = sub(8);
    let p = AzureProvider::new(keys.path().to_path_buf());
    p.configure(&json!({
        "subscription_id": subscription,
        "ssh_cidr": "203.0.113.7/32",
        "ssh_user": host.user,
        "endpoints": {"resource_manager": c.url},
    }))
    .unwrap();
    let key = anycloud_host::keys::ensure_deployment_key(keys.path(), "vmjob").unwrap();
    host.authorize(&key.public_key);
    let mut d = deployment("vmjob", "westeurope", "vmjob-input");
    d.vm = VmSpec {
        machine_type: Some("Standard_D2s_v5".into()),
        spot: true,
        disk_gb: Some(64),
        image: None,
        regions: vec![],
        settings: Value::Null,
    };
    let mut recs = planned(&p, &d);
    let vm_plan = p
        .plan(NodeSpec {
            kind: Kind::Vm,
            deployment: &d,
            bucket: None,
        })
        .unwrap();
    recs.push(Rec {
        address: "deployment.vmjob.vm".into(),
        kind: Kind::Vm,
        attrs: vm_plan.attrs,
        private: vm_plan.private,
        deps: vec!["deployment.vmjob.role".into()],
    });
    c.with(|w| w.slow_polls = 2);
    let mut engine = Engine::new(&p, "lineage-vm");
    engine.apply(&recs[..1]).await.unwrap();
    seed_input(&c, &subscription, "vmjob-input");
    engine.apply(&recs).await.unwrap();
    assert_eq!(c.violations(), Vec::<String>::new());
    assert!(
        c.count("GET /_operations/async/") >= 2,
        "operations were polled"
    );

    let vm = engine.state["deployment.vmjob.vm"].attrs.clone();
    assert_eq!(vm["ssh_user"], json!(host.user));
    assert!(vm["public_ip_address"]
        .as_str()
        .unwrap()
        .starts_with("203.0.113."));
    assert!(
        vm["host_key"].is_string(),
        "the host key is pinned on first contact"
    );
    c.with(|w| {
        let made = w
            .vms
            .values()
            .find(|v| v["name"] == json!("anycloud-vmjob"))
            .expect("the VM");
        let props = &made["properties"];
        assert_eq!(props["priority"], json!("Spot"));
        assert_eq!(props["evictionPolicy"], json!("Delete"));
        assert_eq!(props["osProfile"]["adminUsername"], json!(host.user));
        assert_eq!(
            props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"],
            json!(key.public_key)
        );
        assert_eq!(props["storageProfile"]["osDisk"]["diskSizeGB"], json!(64));
        let identities: Vec<&String> = made["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(identities.len(), 1);
        assert!(identities[0].ends_with("/userAssignedIdentities/anycloud-vmjob"));
        let nsg = w
            .network
            .values()
            .find(|n| {
                n["type"] == json!("Microsoft.Network/networkSecurityGroups")
                    && n["name"] == json!("anycloud-vmjob")
            })
            .expect("the NSG");
        let rules = nsg["properties"]["securityRules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0]["properties"]["sourceAddressPrefix"],
            json!("203.0.113.7/32")
        );
        assert_eq!(rules[0]["properties"]["destinationPortRange"], json!("22"));
        assert_eq!(rules[0]["properties"]["direction"], json!("Inbound"));
    });

    // A refresh sees it running; once evicted (policy Delete) it is gone, which plans a new one.
    let found = engine.refresh().await;
    assert_eq!(
        found["deployment.vmjob.vm"].as_ref().unwrap()["power_state"],
        json!("running")
    );
    c.evict("anycloud-vmjob");
    assert_eq!(engine.refresh().await["deployment.vmjob.vm"], None);

    // Destroy: the network objects go (the VM already has), the region's network stays.
    engine.destroy().await.unwrap();
    c.with(|w| {
        let left: Vec<String> = w
            .network
            .values()
            .filter(|n| n["id"].as_str().unwrap().contains(&subscription))
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            left,
            vec!["anycloud"],
            "only the region's virtual network is kept"
        );
    });
    assert_eq!(c.violations(), Vec::<String>::new());
    std::env::remove_var(anycloud_host::testing::SSH_ADDRESS);
}

/// A state written by an earlier anycloud recorded the continent's account with 11 digits of
/// the subscription id (the seed takes 8). Recalled, every node naming the account plans with
/// it and the storage says so; the deployment converges in it and no second account is made.
/// A state recording nothing is told, before any change, that the earlier account exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_eleven_digit_account_is_kept_and_no_second_one_is_made() {
    let (_turn, c) = server().await;
    let subscription = sub(9);
    let (earlier, seed) = (
        naming::earlier_storage_account("eu", &subscription),
        naming::storage_account("eu", &subscription),
    );
    assert_eq!(
        (earlier.as_str(), seed.as_str()),
        ("anycloudeu00000009111", "anycloudeu00000009")
    );
    let p = provider(&c, &subscription);
    let d = deployment("legacy", "westeurope", "legacy-input");
    // What the earlier anycloud did: made the account under its name and recorded it.
    let mut engine = Engine::new(&p, "lineage-legacy");
    let mut storage = planned(&p, &d).remove(0);
    storage.attrs.insert("account".into(), json!(earlier));
    engine.create(&storage).await.unwrap();
    c.with(|w| {
        w.containers.insert(
            (earlier.clone(), "legacy-input".into()),
            json!({"name": "legacy-input", "properties": {"metadata": {}}}),
        );
    });

    let recorded: Vec<anycloud_provider::Target> = engine
        .state
        .values()
        .map(|r| anycloud_provider::Target {
            address: &r.address,
            kind: r.kind,
            attrs: &r.attrs,
            private: &r.private,
            deps: &[],
            lineage: "lineage-legacy",
        })
        .collect();
    p.recall(&recorded);
    let said = p
        .plan(NodeSpec {
            kind: Kind::Storage,
            deployment: &d,
            bucket: None,
        })
        .unwrap();
    // Every attribute as recorded: no change, so no replacement.
    let before = &engine.state[&storage.address].attrs;
    for (k, v) in &said.attrs {
        assert_eq!(before.get(k), Some(v), "{k}");
    }
    assert_eq!(said.warnings.len(), 1, "{:?}", said.warnings);
    assert!(
        said.warnings[0].contains(&format!("'{earlier}'"))
            && said.warnings[0].contains(&format!("'{seed}'")),
        "{:?}",
        said.warnings
    );
    let recs = planned(&p, &d);
    for r in &recs {
        let text = serde_json::to_string(&r.attrs)
            .unwrap()
            .replace(&earlier, "RECORDED");
        assert!(!text.contains(&seed), "{}: {text}", r.address);
    }
    engine.apply(&recs).await.unwrap();
    c.with(|w| {
        // The server is shared: this subscription's accounts and requests only.
        let accounts: Vec<&String> = w
            .accounts
            .iter()
            .filter(|(_, (s, ..))| *s == subscription)
            .map(|(name, _)| name)
            .collect();
        assert_eq!(accounts, vec![&earlier], "no second account");
        let puts = w
            .requests
            .iter()
            .filter(|r| r.starts_with(&format!("PUT /subscriptions/{subscription}/")))
            .filter(|r| r.rsplit('/').nth(1) == Some("storageAccounts"))
            .count();
        assert_eq!(puts, 1, "the earlier anycloud's PUT only");
        for made in ["legacy-results", "legacy"] {
            assert!(w
                .containers
                .contains_key(&(earlier.clone(), made.to_owned())));
        }
        let scopes: Vec<&str> = w
            .assignments
            .values()
            .filter_map(|a| a["properties"]["scope"].as_str())
            .filter(|s| s.starts_with(&format!("/subscriptions/{subscription}/")))
            .collect();
        assert_eq!(scopes.len(), 3, "{scopes:?}");
        assert!(
            scopes
                .iter()
                .all(|s| s.contains(&format!("/storageAccounts/{earlier}/"))),
            "{scopes:?}"
        );
    });
    let found = engine.refresh().await;
    for (address, f) in &found {
        assert!(f.is_some(), "{address} found missing");
    }

    // Another state, recording nothing, in the same subscription: the plan's preflight says
    // the earlier account exists and the seed's will be made beside it.
    let fresh = provider(&c, &subscription);
    let storage = planned(&fresh, &d).remove(0);
    assert_eq!(storage.attrs["account"], json!(seed));
    let pre = fresh
        .preflight(&[anycloud_provider::Target {
            address: &storage.address,
            kind: storage.kind,
            attrs: &storage.attrs,
            private: &storage.private,
            deps: &[],
            lineage: "lineage-fresh",
        }])
        .await
        .unwrap();
    assert!(pre.errors.is_empty(), "{pre:?}");
    assert_eq!(pre.notes.len(), 1, "{pre:?}");
    assert!(
        pre.notes[0].contains(&format!("'{earlier}'"))
            && pre.notes[0].contains(&format!("'{seed}'")),
        "{pre:?}"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}

/// A job asking for GPUs: Azure is asked whether the size has GPUs (Resource SKUs of the
/// region, the `GPUs` capability); with them the plan names the image and why (by default
/// Azure's HPC image for Ubuntu, which carries NVIDIA's driver), without them it warns; a size
/// the region does not list fails the plan.
#[tokio::test(flavor = "multi_thread")]
async fn a_gpu_job_gets_the_hpc_image_and_a_size_without_gpus_is_warned_of() {
    let (_turn, c) = server().await;
    let subscription = sub(10);
    let p = provider(&c, &subscription);
    let preflight = |size: &str, image: Option<&str>| {
        let mut d = deployment("gpujob", "westeurope", "gpujob-input");
        d.vm.machine_type = Some(size.into());
        d.vm.image = image.map(String::from);
        d.container.image = "busybox".into();
        d.container.gpus = Some("all".into());
        let node = |kind| {
            p.plan(NodeSpec {
                kind,
                deployment: &d,
                bucket: None,
            })
            .unwrap()
        };
        let (vm, init) = (node(Kind::Vm), node(Kind::VmInit));
        let p = &p;
        async move {
            let deps = [anycloud_provider::Dep {
                kind: Kind::Vm,
                attrs: &vm.attrs,
                private: &vm.private,
            }];
            let target = anycloud_provider::Target {
                address: "deployment.gpujob.vm_init",
                kind: Kind::VmInit,
                attrs: &init.attrs,
                private: &init.private,
                deps: &deps,
                lineage: "lineage-gpu",
            };
            (vm.attrs.clone(), p.preflight(&[target]).await)
        }
    };
    let (vm, pre) = preflight("Standard_NC4as_T4_v3", None).await;
    assert_eq!(vm["image"], json!("microsoft-dsvm:ubuntu-hpc:2204:latest"));
    assert_eq!(
        pre.unwrap().notes,
        ["deployment.gpujob.vm: image microsoft-dsvm:ubuntu-hpc:2204:latest (Azure HPC image, Ubuntu 22.04, with NVIDIA's driver) because Standard_NC4as_T4_v3 has 1 GPU"]
    );
    let (_, pre) = preflight("Standard_D4s_v5", None).await;
    let notes = pre.unwrap().notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("deployment.gpujob.vm: the container asks for GPUs but VM size Standard_D4s_v5 has none (Azure Resource SKUs)"),
        "{notes:?}"
    );
    let mine = "Canonical:ubuntu-24_04-lts:server:latest";
    let (vm, pre) = preflight("Standard_NC24ads_A100_v4", Some(mine)).await;
    assert_eq!(vm["image"], json!(mine));
    assert_eq!(
        pre.unwrap().notes,
        [format!("deployment.gpujob.vm: image {mine} (vm.image; it must bring the NVIDIA driver) because Standard_NC24ads_A100_v4 has 1 GPU")]
    );
    let (_, pre) = preflight("Standard_NC999", None).await;
    let e = pre.unwrap_err();
    assert!(
        e.message
            .contains("Azure lists no VM size Standard_NC999 in westeurope"),
        "{e:?}"
    );
    assert_eq!(c.violations(), Vec::<String>::new());
}
