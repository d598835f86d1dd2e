//! The account's limits before any change (issue 23, item 5): a sweep of 1,000 deployments
//! plans within the limits of each cloud's test peer, and a limit short by one fails the
//! plan naming it, with the figures, and nothing is made (no state, no new object in the
//! peer).
//!
//! AWS: moto's server, whose IAM answers GetAccountSummary (RolesQuota 1,000, as AWS's
//! default) and whose Service Quotas answers EC2's vCPU quotas through
//! tests/fixtures/moto_quotas.py (moto 5.2.6 knows only `vpc` quotas).

mod common;

#[cfg(feature = "azure")]
#[path = "../providers/azure/tests/support/contract.rs"]
mod azure_contract;

#[cfg(feature = "gcp")]
#[path = "../providers/gcp/tests/support/contract.rs"]
mod gcp_contract;

use common::moto::{xml_all, Moto};
use common::{Project, Run};
use serde_json::json;

/// 1,000 deployments as four sweeps of 250 (a matrix makes at most 256), each with a
/// checkpoint of its own and shared input and output buckets.
fn sweep(provider: &str, region: &str, vm: &str, providers: &str) -> String {
    let mut text = format!("project: limits\nproviders:\n{providers}deployments:\n");
    for s in 0..4 {
        text.push_str(&format!(
            "  s{s}:\n    provider: {provider}\n    region: {region}\n    vm: {vm}\n    matrix: {{ a: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], b: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24] }}\n    container: {{ image: busybox, command: [sh, -c, \"echo ${{{{ matrix.a }}}} ${{{{ matrix.b }}}}\"] }}\n    buckets: {{ input: limits-input, output: limits-output, checkpoint: true }}\n"
        ));
    }
    text
}

fn plan(p: &Project, env: &[(String, String)]) -> Run {
    let out = p
        .command(&["plan", "-no-color"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// No resource recorded: the state is absent, or records nothing.
fn assert_no_state(p: &Project) {
    if let Some(state) = p.state_json() {
        assert_eq!(state["resources"], json!({}), "{state}");
    }
}

/// The lines of `run`'s output that name a limit.
fn limit_errors(run: &Run) -> Vec<String> {
    format!("{}\n{}", run.stdout, run.stderr)
        .lines()
        .filter(|l| l.contains("limit: "))
        .map(String::from)
        .collect()
}

#[cfg(feature = "aws")]
mod aws {
    use super::*;

    const STANDARD: &str = "L-1216C47A";

    fn role_names(moto: &Moto) -> Vec<String> {
        xml_all(
            &moto.query("iam", "Action=ListRoles&Version=2010-05-08"),
            "RoleName",
        )
    }

    fn bucket_names(moto: &Moto) -> Vec<String> {
        xml_all(&moto.http("GET", "/", None).1, "Name")
    }

    #[test]
    fn a_sweep_of_1000_plans_within_the_limits_and_one_short_fails_naming_it() {
        let moto = Moto::start_with_quotas("127.0.0.1");
        // t3.micro has 2 vCPUs: 1,000 of them need 2,000 of the Standard On-Demand quota.
        moto.set_ec2_quotas(&json!({"us-east-1": {STANDARD: 2000}}));
        assert!(moto.http("PUT", "/limits-input", None).0 < 300);
        let p = Project::new(&sweep(
            "aws",
            "us-east-1",
            "{ type: t3.micro }",
            "  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }\n",
        ));
        let env = moto.env();

        let start = std::time::Instant::now();
        let ok = plan(&p, &env);
        assert_eq!(ok.code, 0, "{ok:?}");
        eprintln!("a plan of 1,000 AWS deployments: {:?}", start.elapsed());
        assert!(ok.stdout.contains("Plan: "), "{ok:?}");
        assert!(limit_errors(&ok).is_empty(), "{ok:?}");

        // Another role in the account: 1,000 new roles no longer fit in RolesQuota.
        moto.query(
            "iam",
            "Action=CreateRole&Version=2010-05-08&RoleName=someone-elses&AssumeRolePolicyDocument=%7B%7D",
        );
        // And an instance already running in the region: 2 of the 2,001 vCPUs in use.
        moto.set_ec2_quotas(&json!({"us-east-1": {STANDARD: 2001}}));
        moto.query(
            "ec2",
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-12345678&MinCount=1&MaxCount=1&InstanceType=t3.micro",
        );
        let buckets_before = bucket_names(&moto);

        let short = plan(&p, &env);
        assert_eq!(short.code, 1, "{short:?}");
        assert_eq!(
            limit_errors(&short),
            vec![
                "Error: limit: IAM roles in the account: this plan needs 1000 more, 1 are used and 1000 are allowed (IAM GetAccountSummary Roles/RolesQuota), short by 1. Nothing was changed. Ask AWS for a higher IAM quota (Service Quotas, IAM), or destroy deployments you no longer need: each deployment has a role and an instance profile.".to_owned(),
                "Error: limit: EC2 vCPUs of Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances in us-east-1: this plan needs 2000 more, 2 are used and 2001 are allowed (Service Quotas ec2/L-1216C47A; usage from DescribeInstances), short by 1. Nothing was changed. Ask for an increase of that quota in the region (Service Quotas console, or `aws service-quotas request-service-quota-increase --service-code ec2 --quota-code CODE`), use another family or region, or fewer deployments at once.".to_owned(),
            ],
            "{short:?}"
        );
        // Nothing made: no state, no role or bucket beyond what the test made.
        assert_no_state(&p);
        assert_eq!(role_names(&moto), vec!["someone-elses".to_owned()]);
        assert_eq!(bucket_names(&moto), buckets_before);

        // apply makes the same plan first, and stops there.
        let apply = p
            .command(&["apply", "-auto-approve", "-no-color"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_eq!(apply.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&apply.stderr).contains("short by 1"));
        assert_no_state(&p);
        assert_eq!(role_names(&moto), vec!["someone-elses".to_owned()]);
        assert_eq!(bucket_names(&moto), buckets_before);
    }

    #[test]
    fn a_quota_service_quotas_does_not_answer_is_noted_not_guessed() {
        // Spot G instances: the fixture knows no quota of theirs.
        let moto = Moto::start_with_quotas("127.0.0.1");
        assert!(moto.http("PUT", "/limits-input", None).0 < 300);
        let p = Project::new(
            &sweep(
                "aws",
                "us-east-1",
                "{ type: g5.xlarge, spot: true }",
                "  aws: { ami: ami-12345678, ssh_cidr: 10.0.0.0/8 }\n",
            )
            .replace("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]", "[0]"),
        );
        let run = plan(&p, &moto.env());
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains("EC2 vCPU quota L-3819A6DF (All G and VT Spot Instance Requests) in us-east-1 was not checked: Service Quotas did not answer it"),
            "{run:?}"
        );
        // Set, it is checked: 40 spot G deployments of 4 vCPUs need 160.
        moto.set_ec2_quotas(&json!({"us-east-1": {"L-3819A6DF": 159}}));
        let run = plan(&p, &moto.env());
        assert_eq!(run.code, 1, "{run:?}");
        assert_eq!(limit_errors(&run).len(), 1, "{run:?}");
        assert!(
            limit_errors(&run)[0].starts_with("Error: limit: EC2 vCPUs of All G and VT Spot Instance Requests in us-east-1: this plan needs 160 more, 0 are used and 159 are allowed"),
            "{run:?}"
        );
    }
}

/// Azure: Resource Manager is the contract server written from the REST specifications
/// (`providers/azure/tests/support/contract.rs`), which answers Compute's `usages` from the
/// VMs it holds and the limits a test sets, and lists the role assignments it holds.
#[cfg(feature = "azure")]
mod azure {
    use super::*;

    use super::azure_contract::Contract;

    const SUBSCRIPTION: &str = "11a17500-aaaa-4bbb-8ccc-0123456789ab";

    /// The continent's account exists already, with the input container the user filled.
    fn seed_storage(c: &Contract) {
        let account = anycloud_provider_azure::naming::storage_account("eu", SUBSCRIPTION);
        c.with(|w| {
            // Role assignments and usages in few pages, however many there are.
            w.page_size = 5000;
            w.accounts.insert(
                account.clone(),
                (
                    SUBSCRIPTION.into(),
                    "anycloud-storage-eu".into(),
                    json!({
                        "id": format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/anycloud-storage-eu/providers/Microsoft.Storage/storageAccounts/{account}"),
                        "name": account, "location": "westeurope", "tags": {},
                        "properties": {"provisioningState": "Succeeded"},
                    }),
                    0,
                ),
            );
            w.containers.insert(
                (account.clone(), "limits-input".into()),
                json!({"name": "limits-input", "properties": {"metadata": {}}}),
            );
        });
    }

    /// `n` role assignments someone else made in the subscription.
    fn others_assignments(c: &Contract, n: usize) {
        c.with(|w| {
            for i in 0..n {
                let name = format!("0000{i:04}-0000-4000-8000-000000000000");
                w.assignments.insert(
                    name.clone(),
                    json!({
                        "id": format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleAssignments/{name}"),
                        "name": name, "type": "Microsoft.Authorization/roleAssignments",
                        "properties": {
                            "scope": format!("/subscriptions/{SUBSCRIPTION}"),
                            "roleDefinitionId": format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"),
                            "principalId": "99999999-0000-4000-8000-000000000000",
                            "principalType": "User",
                        },
                    }),
                );
            }
        });
    }

    #[test]
    fn a_sweep_of_1000_plans_within_the_limits_and_one_short_fails_naming_it() {
        let c = Contract::start();
        seed_storage(&c);
        // Standard_B2s has 2 vCPUs: 1,000 Spot ones need 2,000 of the region's Spot vCPUs.
        c.with(|w| {
            w.vcpu_limits
                .insert(("westeurope".into(), "lowPriorityCores".into()), 2000);
        });
        let p = Project::new(&sweep(
            "azure",
            "westeurope",
            "{ type: Standard_B2s, spot: true }",
            &format!(
                "  azure:\n    subscription_id: {SUBSCRIPTION}\n    ssh_cidr: 10.0.0.0/8\n    endpoints: {{ resource_manager: \"{}\" }}\n",
                c.url
            ),
        ));
        let env: Vec<(String, String)> = c
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();

        let start = std::time::Instant::now();
        let ok = plan(&p, &env);
        assert_eq!(ok.code, 0, "{ok:?}");
        eprintln!("a plan of 1,000 Azure deployments: {:?}", start.elapsed());
        assert!(ok.stdout.contains("Plan: "), "{ok:?}");
        assert!(limit_errors(&ok).is_empty(), "{ok:?}");

        // 3,000 new assignments (one per bucket of each deployment) beside 1,001 others';
        // and one Spot vCPU fewer than the sweep needs.
        others_assignments(&c, 1001);
        c.with(|w| {
            w.vcpu_limits
                .insert(("westeurope".into(), "lowPriorityCores".into()), 1999);
        });
        let short = plan(&p, &env);
        assert_eq!(short.code, 1, "{short:?}");
        assert_eq!(
            limit_errors(&short),
            vec![
                format!("Error: limit: role assignments in subscription {SUBSCRIPTION}: this plan needs 3000 more, 1001 are used and 4000 are allowed (Azure's limit per subscription; usage from the role assignments list), short by 1. Nothing was changed. Azure does not raise this limit: remove role assignments no longer needed, or spread the deployments over more subscriptions (each deployment has one per bucket)."),
                "Error: limit: Total Regional Spot vCPUs (lowPriorityCores) in westeurope: this plan needs 2000 more, 0 are used and 1999 are allowed (Compute usages), short by 1. Nothing was changed. Ask for more in the Azure portal (Subscriptions, Usage + quotas) or `az quota create`, use another size family or region, or fewer deployments at once.".to_owned(),
            ],
            "{short:?}"
        );
        // Nothing made: no state, and nothing but reads reached Resource Manager.
        assert_no_state(&p);
        let writes: Vec<String> = c.with(|w| {
            w.requests
                .iter()
                .filter(|r| !r.starts_with("GET ") && !r.contains("/oauth2/"))
                .cloned()
                .collect()
        });
        assert_eq!(writes, Vec::<String>::new());
        assert_eq!(c.violations(), Vec::<String>::new());
    }

    #[test]
    fn on_demand_vms_count_against_their_family_and_the_regions_total() {
        let c = Contract::start();
        seed_storage(&c);
        // 40 D4s_v5 of 4 vCPUs: 160 of standardDSv5Family and of cores, whose limit is 100.
        let p = Project::new(
            &sweep(
                "azure",
                "westeurope",
                "{ type: Standard_D4s_v5 }",
                &format!(
                    "  azure:\n    subscription_id: {SUBSCRIPTION}\n    ssh_cidr: 10.0.0.0/8\n    endpoints: {{ resource_manager: \"{}\" }}\n",
                    c.url
                ),
            )
            .replace("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]", "[0]"),
        );
        let env: Vec<(String, String)> = c
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let run = plan(&p, &env);
        assert_eq!(run.code, 1, "{run:?}");
        let errors = limit_errors(&run);
        assert_eq!(errors.len(), 2, "{run:?}");
        assert!(errors[0].starts_with("Error: limit: Total Regional vCPUs (cores) in westeurope: this plan needs 160 more, 0 are used and 100 are allowed"), "{run:?}");
        assert!(errors[1].starts_with("Error: limit: Standard D4s_v5 Family vCPUs (standardDSv5Family) in westeurope: this plan needs 160 more, 0 are used and 100 are allowed"), "{run:?}");
        c.with(|w| {
            for name in ["cores", "standardDSv5Family"] {
                w.vcpu_limits
                    .insert(("westeurope".into(), name.into()), 160);
            }
        });
        let run = plan(&p, &env);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(c.violations(), Vec::<String>::new());
    }
}

/// GCP: Compute Engine, IAM and the bucket's control plane are the contract server driven
/// by Google's discovery documents (`providers/gcp/tests/support/contract.rs`), whose
/// `regions.get` reports the quotas a test sets and the usage of the instances it holds.
#[cfg(feature = "gcp")]
mod gcp {
    use super::*;

    use super::gcp_contract::Contract;

    const PROJECT: &str = "limits-project";
    const REGION: &str = "europe-west1";

    fn set_quota(c: &Contract, metric: &str, limit: f64) {
        c.with(|w| {
            w.quota_limits.insert((REGION.into(), metric.into()), limit);
        });
    }

    /// `n` deployments of `vm` sharing input and output (1,000 of them with their own
    /// checkpoints would pass the bucket policy's 100 conditional bindings: see docs/gcp.md),
    /// with the input uploaded first (which makes the continent's bucket).
    fn project(c: &Contract, vm: &str, members: &str) -> (Project, Vec<(String, String)>) {
        let text = sweep(
            "gcp",
            REGION,
            vm,
            &format!(
                "  gcp: {{ project: {PROJECT}, ssh_cidr: 10.0.0.0/8, endpoints: {{ storage: \"{u}\", iam: \"{u}\", compute: \"{u}\" }} }}\n",
                u = c.url
            ),
        )
        .replace(", checkpoint: true", "")
        .replace("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]", members);
        let p = Project::new(&text);
        let env: Vec<(String, String)> = c
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        std::fs::create_dir_all(p.path().join("input")).unwrap();
        std::fs::write(p.path().join("input/data.txt"), "input\n").unwrap();
        let up = p
            .command(&["bucket", "upload", "limits-input", "input"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(up.status.success(), "{up:?}");
        (p, env)
    }

    /// Every request since `from` that is not a read.
    fn writes_since(c: &Contract, from: usize) -> Vec<String> {
        c.with(|w| {
            w.requests[from..]
                .iter()
                .filter(|r| !r.starts_with("GET "))
                .cloned()
                .collect()
        })
    }

    #[test]
    fn a_sweep_of_1000_plans_within_the_limits_and_one_short_fails_naming_it() {
        let c = Contract::start();
        c.with(|w| w.page_size = 5000);
        // e2-small has 2 vCPUs: 1,000 need 2,000 of the region's CPUS.
        set_quota(&c, "CPUS", 2000.0);
        let (p, env) = project(
            &c,
            "{ type: e2-small }",
            "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]",
        );
        let start = std::time::Instant::now();
        let ok = plan(&p, &env);
        assert_eq!(ok.code, 0, "{ok:?}");
        eprintln!("a plan of 1,000 GCP deployments: {:?}", start.elapsed());
        assert!(ok.stdout.contains("Plan: "), "{ok:?}");
        assert!(limit_errors(&ok).is_empty(), "{ok:?}");

        set_quota(&c, "CPUS", 1999.0);
        let before = c.with(|w| w.requests.len());
        let short = plan(&p, &env);
        assert_eq!(short.code, 1, "{short:?}");
        assert_eq!(
            limit_errors(&short),
            vec!["Error: limit: quota CPUS in europe-west1: this plan needs 2000 more, 0 are used and 1999 are allowed (Compute Engine regions.get), short by 1. Nothing was changed. Ask for more in the console (IAM & Admin, Quotas) or with `gcloud alpha services quota update`, use another machine family or region, or fewer deployments at once.".to_owned()],
            "{short:?}"
        );
        assert_no_state(&p);
        assert_eq!(writes_since(&c, before), Vec::<String>::new());
        assert_eq!(c.violations(), Vec::<String>::new());
    }

    #[test]
    fn spot_gpu_machines_count_against_the_preemptible_gpu_quota() {
        let c = Contract::start();
        // 40 Spot g2-standard-4: 160 vCPUs and 40 L4 GPUs, one GPU more than allowed.
        set_quota(&c, "PREEMPTIBLE_CPUS", 160.0);
        set_quota(&c, "PREEMPTIBLE_NVIDIA_L4_GPUS", 39.0);
        let (p, env) = project(&c, "{ type: g2-standard-4, spot: true }", "[0]");
        let before = c.with(|w| w.requests.len());
        let run = plan(&p, &env);
        assert_eq!(run.code, 1, "{run:?}");
        let errors = limit_errors(&run);
        assert_eq!(errors.len(), 1, "{run:?}");
        assert!(
            errors[0].starts_with("Error: limit: quota PREEMPTIBLE_NVIDIA_L4_GPUS in europe-west1: this plan needs 40 more, 0 are used and 39 are allowed (Compute Engine regions.get), short by 1."),
            "{run:?}"
        );
        assert_eq!(writes_since(&c, before), Vec::<String>::new());
        set_quota(&c, "PREEMPTIBLE_NVIDIA_L4_GPUS", 40.0);
        let run = plan(&p, &env);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(c.violations(), Vec::<String>::new());
    }
}
