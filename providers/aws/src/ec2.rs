//! The VM: the deployment's key pair, a security group admitting SSH only, and an instance
//! (spot when asked) with the deployment's instance profile. Found again by its tags, so a
//! re-run after a crash adopts the instance it started instead of starting another.

use std::collections::BTreeMap;
use std::time::Duration;

use anycloud_provider::placement::Launched;
use anycloud_provider::{retry, ErrorCode, ProviderError, Result};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
    IamInstanceProfileSpecification, InstanceMarketOptionsRequest, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceStateName, InstanceType, IpPermission, IpRange,
    MarketType, Placement, ResourceType, ShutdownBehavior, Tag, TagSpecification,
};

use crate::clients::Clients;
use crate::errors::{classify, code, is_capacity, CapacityIsNotRetried};
use crate::owner::{self, Owner as Whose, Record, LINEAGE_TAG};

pub const DEPLOYMENT_TAG: &str = "anycloud:deployment";

/// How long an instance may take to start or to terminate.
const INSTANCE_WAIT: Duration = Duration::from_secs(600);

/// What anycloud tags an EC2 object with: whose it is, and which deployment's.
fn tag_spec(
    resource: ResourceType,
    deployment: &str,
    lineage: &str,
    project: Option<&str>,
) -> TagSpecification {
    let mut tags = vec![
        Tag::builder().key(DEPLOYMENT_TAG).value(deployment).build(),
        Tag::builder()
            .key("Name")
            .value(format!("anycloud-{deployment}"))
            .build(),
    ];
    for (k, v) in owner::tags(lineage, project) {
        tags.push(Tag::builder().key(k).value(v).build());
    }
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(tags))
        .build()
}

/// Whose an EC2 object is: EC2 tags what anycloud makes as it makes it, so no record
/// excuses a missing tag.
fn ownership_of(tags: &[Tag], lineage: &str) -> Whose {
    owner::of_pairs(
        tags.iter().map(|t| (t.key(), t.value())),
        lineage,
        Record::Nothing,
    )
}

/// Whose the key pair `name` is, if it exists.
async fn key_owner(
    clients: &Clients,
    region: &str,
    name: &str,
    lineage: &str,
) -> Result<Option<Whose>> {
    let ec2 = clients.ec2(region).await;
    match ec2.describe_key_pairs().key_names(name).send().await {
        Ok(out) => Ok(out
            .key_pairs()
            .first()
            .map(|k| ownership_of(k.tags(), lineage))),
        Err(e) if code(&e) == Some("InvalidKeyPair.NotFound") => Ok(None),
        Err(e) => Err(classify(&format!("DescribeKeyPairs {name}"), e)),
    }
}

/// The security group `name` (its id and whose it is), if it exists.
async fn group_named(
    clients: &Clients,
    region: &str,
    name: &str,
    lineage: &str,
) -> Result<Option<(aws_sdk_ec2::types::SecurityGroup, Whose)>> {
    let found = clients
        .ec2(region)
        .await
        .describe_security_groups()
        .filters(Filter::builder().name("group-name").values(name).build())
        .send()
        .await
        .map_err(|e| classify(&format!("DescribeSecurityGroups {name}"), e))?;
    Ok(found.security_groups().first().map(|g| {
        let owner = ownership_of(g.tags(), lineage);
        (g.clone(), owner)
    }))
}

/// What EC2 says about one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: String,
    pub public_ip: Option<String>,
    pub deployment: Option<String>,
    pub lifecycle: Option<String>,
    /// The lineage of the state that started it (none on an instance anycloud did not start
    /// for any state, which is never this state's).
    pub lineage: Option<String>,
}

impl Instance {
    pub fn alive(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "running")
    }
}

/// The VM's init is done over SSH: user data only says so.
pub const USER_DATA: &str =
    "#!/bin/sh\n# anycloud: this VM is set up over SSH; nothing runs at boot.\n";

/// Imports the deployment's public key as the key pair `name`, replacing one this state made
/// earlier (with another key); another state's key pair of that name is never touched.
pub async fn import_key(
    clients: &Clients,
    region: &str,
    name: &str,
    public_key: &str,
    owner: &Owner<'_>,
) -> Result<()> {
    let ec2 = clients.ec2(region).await;
    if let Some(found) = key_owner(clients, region, name, owner.lineage).await? {
        owner::must_be_ours(&found, &format!("key pair {name}"), owner.lineage)?;
        match ec2.delete_key_pair().key_name(name).send().await {
            Ok(_) => {}
            Err(e) if code(&e) == Some("InvalidKeyPair.NotFound") => {}
            Err(e) => return Err(classify(&format!("DeleteKeyPair {name}"), e)),
        }
    }
    match ec2
        .import_key_pair()
        .key_name(name)
        .public_key_material(Blob::new(public_key.as_bytes()))
        .tag_specifications(owner.tags(ResourceType::KeyPair))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // A parallel attempt imported the same deployment key a moment ago.
        Err(e) if code(&e) == Some("InvalidKeyPair.Duplicate") => Ok(()),
        Err(e) => Err(classify(&format!("ImportKeyPair {name}"), e)),
    }
}

/// Who made an object, and for which deployment: what it is tagged with and checked against.
pub struct Owner<'a> {
    pub deployment: &'a str,
    pub lineage: &'a str,
    pub project: Option<&'a str>,
}

impl Owner<'_> {
    fn tags(&self, resource: ResourceType) -> TagSpecification {
        tag_spec(resource, self.deployment, self.lineage, self.project)
    }
}

/// The security group `name`, admitting SSH from `cidr` only (this state's: another state's
/// group of that name is never changed). Returns its id.
pub async fn ensure_security_group(
    clients: &Clients,
    region: &str,
    name: &str,
    cidr: &str,
    owner: &Owner<'_>,
) -> Result<String> {
    let ec2 = clients.ec2(region).await;
    let found = group_named(clients, region, name, owner.lineage).await?;
    if let Some((_, whose)) = &found {
        owner::must_be_ours(whose, &format!("security group {name}"), owner.lineage)?;
    }
    let found = found.map(|(g, _)| g);
    let id = match found.as_ref().and_then(|g| g.group_id()) {
        Some(id) => id.to_owned(),
        None => match ec2
            .create_security_group()
            .group_name(name)
            .description("anycloud: SSH only")
            .tag_specifications(owner.tags(ResourceType::SecurityGroup))
            .send()
            .await
        {
            Ok(made) => made.group_id().unwrap_or_default().to_owned(),
            // A parallel attempt made it a moment ago: the retry finds it.
            Err(e) if code(&e) == Some("InvalidGroup.Duplicate") => {
                return Err(ProviderError::new(
                    ErrorCode::Busy,
                    format!("CreateSecurityGroup {name}: made by a parallel attempt"),
                ))
            }
            Err(e) => return Err(classify(&format!("CreateSecurityGroup {name}"), e)),
        },
    };
    // Rules from an earlier ssh_cidr go: changing it must close what it opened.
    let stale: Vec<IpPermission> = found
        .iter()
        .flat_map(|g| g.ip_permissions())
        .filter(|p| p.from_port() == Some(22))
        .flat_map(|p| p.ip_ranges())
        .filter_map(|r| r.cidr_ip())
        .filter(|c| *c != cidr)
        .map(|c| {
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(IpRange::builder().cidr_ip(c).build())
                .build()
        })
        .collect();
    if !stale.is_empty() {
        ec2.revoke_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(stale))
            .send()
            .await
            .map_err(|e| classify(&format!("RevokeSecurityGroupIngress {name}"), e))?;
    }
    let rule = IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(22)
        .to_port(22)
        .ip_ranges(
            IpRange::builder()
                .cidr_ip(cidr)
                .description("anycloud: SSH")
                .build(),
        )
        .build();
    match ec2
        .authorize_security_group_ingress()
        .group_id(&id)
        .ip_permissions(rule)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if code(&e) == Some("InvalidPermission.Duplicate") => {}
        Err(e) => {
            return Err(classify(
                &format!("AuthorizeSecurityGroupIngress {name}"),
                e,
            ))
        }
    }
    Ok(id)
}

pub struct Launch<'a> {
    pub region: &'a str,
    /// The availability zone it is launched in (`anycloud_provider::placement`).
    pub zone: &'a str,
    pub owner: Owner<'a>,
    /// Makes a retried RunInstances (its answer lost) return the instance it started.
    pub client_token: &'a str,
    pub ami: &'a str,
    pub instance_type: &'a str,
    pub spot: bool,
    pub disk_gb: Option<i32>,
    pub key_name: &'a str,
    pub security_group_id: &'a str,
    pub instance_profile: &'a str,
    /// `idle_shutdown`: the machine shuts itself down when its job is done, and EC2 then
    /// terminates it (`InstanceInitiatedShutdownBehavior=terminate`) rather than keep it
    /// stopped with its volume.
    pub terminate_on_shutdown: bool,
}

/// The region's availability zones that are available, by name: the order a VM's create
/// tries them in (local and wavelength zones, which need opting in, left out).
pub async fn zones(clients: &Clients, region: &str) -> Result<Vec<String>> {
    let out = clients
        .ec2(region)
        .await
        .describe_availability_zones()
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(|e| classify(&format!("DescribeAvailabilityZones in {region}"), e))?;
    let mut zones: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        .filter_map(|z| z.zone_name().map(String::from))
        .collect();
    zones.sort();
    if zones.is_empty() {
        return Err(ProviderError::permanent(format!(
            "EC2 lists no available zone in {region}"
        )));
    }
    Ok(zones)
}

/// The deployment's live instance if there is one in the region (an interrupted create),
/// else a new one in the launch's zone; no capacity there is said, not retried.
/// `started` hears of the instance as soon as EC2 names it, before it runs.
pub async fn ensure_instance(
    clients: &Clients,
    l: &Launch<'_>,
    started: impl Fn(&Instance),
) -> Result<Launched<Instance>> {
    if let Some(found) = find(clients, l.region, l.owner.deployment, l.owner.lineage).await? {
        // An earlier, interrupted run started it: wait for it as for a new one.
        started(&found);
        return Ok(Launched::Made(
            wait_running(clients, l.region, &found.id).await?,
        ));
    }
    let ec2 = clients.ec2(l.region).await;
    let mut run = ec2
        .run_instances()
        .image_id(l.ami)
        .instance_type(InstanceType::from(l.instance_type))
        .min_count(1)
        .max_count(1)
        .key_name(l.key_name)
        .security_group_ids(l.security_group_id)
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(l.instance_profile)
                .build(),
        )
        .user_data(aws_smithy_types::base64::encode(USER_DATA))
        .client_token(l.client_token)
        .placement(Placement::builder().availability_zone(l.zone).build())
        // IMDSv2 only, one hop: a container on the VM's bridge network (a second hop)
        // cannot obtain the instance role's credentials.
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(1)
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .build(),
        )
        .tag_specifications(l.owner.tags(ResourceType::Instance))
        .tag_specifications(l.owner.tags(ResourceType::Volume));
    if l.terminate_on_shutdown {
        run = run.instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate);
    }
    if l.spot {
        run = run.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .build(),
        );
    }
    if let Some(gb) = l.disk_gb {
        run = run.block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(gb)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        );
    }
    let answer = run
        .customize()
        .config_override(
            aws_sdk_ec2::config::Builder::default().retry_classifier(CapacityIsNotRetried),
        )
        .send()
        .await;
    let out = match answer {
        Ok(out) => out,
        Err(e) => match code(&e).filter(|c| is_capacity(c)) {
            Some(c) => {
                return Ok(Launched::NoCapacity {
                    code: c.to_owned(),
                    message: e
                        .as_service_error()
                        .and_then(|e| e.message())
                        .unwrap_or("(no message)")
                        .to_owned(),
                })
            }
            None => {
                return Err(classify(
                    &format!("RunInstances for {} in {}", l.owner.deployment, l.zone),
                    e,
                ))
            }
        },
    };
    let first = out.instances().first().ok_or_else(|| {
        ProviderError::new(ErrorCode::Unavailable, "RunInstances returned no instance")
    })?;
    let id = first.instance_id().unwrap_or_default().to_owned();
    started(&Instance {
        id: id.clone(),
        state: "pending".into(),
        public_ip: first.public_ip_address().map(String::from),
        deployment: Some(l.owner.deployment.to_owned()),
        lifecycle: first.instance_lifecycle().map(|l| l.as_str().to_owned()),
        lineage: Some(l.owner.lineage.to_owned()),
    });
    Ok(Launched::Made(wait_running(clients, l.region, &id).await?))
}

/// Sets what an OS shutdown does to a running instance (`idle_shutdown` added to or taken
/// from a deployment): `terminate`, or EC2's default, `stop`.
pub async fn set_shutdown_behavior(
    clients: &Clients,
    region: &str,
    id: &str,
    terminate: bool,
) -> Result<()> {
    let value = if terminate { "terminate" } else { "stop" };
    clients
        .ec2(region)
        .await
        .modify_instance_attribute()
        .instance_id(id)
        .instance_initiated_shutdown_behavior(AttributeValue::builder().value(value).build())
        .send()
        .await
        .map_err(|e| classify(&format!("ModifyInstanceAttribute {id}"), e))?;
    Ok(())
}

/// Polls until the instance runs and has a public address (a few minutes at most).
async fn wait_running(clients: &Clients, region: &str, id: &str) -> Result<Instance> {
    let poll = || async {
        let found = describe(
            clients,
            region,
            vec![Filter::builder().name("instance-id").values(id).build()],
        )
        .await?;
        match found.into_iter().next() {
            Some(i) if i.state == "running" && i.public_ip.is_some() => Ok(i),
            Some(i) if !i.alive() => Err(ProviderError::permanent(format!(
                "instance {id} is {} before it ever ran (spot capacity, quota?)",
                i.state
            ))),
            _ => Err(ProviderError::new(
                ErrorCode::Busy,
                format!(
                    "instance {id} did not reach running with a public address within {} minutes",
                    INSTANCE_WAIT.as_secs() / 60
                ),
            )),
        }
    };
    retry::wait_for(
        Duration::from_secs(2),
        Duration::from_secs(10),
        INSTANCE_WAIT,
        poll,
        |e: &ProviderError| e.is(ErrorCode::Busy),
        |_, _| anycloud_provider::output::line(&format!("waiting for instance {id} to run")),
    )
    .await
    // Waited the whole while already: the engine must not wait it all again.
    .map_err(ProviderError::retried)
}

/// This state's live instance of the deployment, found by its tags (another state's instance
/// of a deployment of the same name is not this one's).
pub async fn find(
    clients: &Clients,
    region: &str,
    deployment: &str,
    lineage: &str,
) -> Result<Option<Instance>> {
    let filters = vec![
        Filter::builder()
            .name(format!("tag:{DEPLOYMENT_TAG}"))
            .values(deployment)
            .build(),
        Filter::builder()
            .name("instance-state-name")
            .values("pending")
            .values("running")
            .build(),
    ];
    Ok(describe(clients, region, filters)
        .await?
        .into_iter()
        .find(|i| Whose::of(i.lineage.as_deref(), None, lineage, Record::Nothing).ours()))
}

/// Every anycloud instance in a region that is not terminated, by id: one call per page.
/// By the deployment tag, not the project's, so renaming the project loses no instance.
pub async fn in_region(clients: &Clients, region: &str) -> Result<BTreeMap<String, Instance>> {
    let filters = vec![
        Filter::builder()
            .name("tag-key")
            .values(DEPLOYMENT_TAG)
            .build(),
        Filter::builder()
            .name("instance-state-name")
            .values("pending")
            .values("running")
            .values("stopping")
            .values("stopped")
            .values("shutting-down")
            .build(),
    ];
    Ok(describe(clients, region, filters)
        .await?
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect())
}

async fn describe(clients: &Clients, region: &str, filters: Vec<Filter>) -> Result<Vec<Instance>> {
    let pages = clients
        .ec2(region)
        .await
        .describe_instances()
        .set_filters(Some(filters))
        .into_paginator()
        .send()
        .try_collect()
        .await
        .map_err(|e| classify("DescribeInstances", e))?;
    let mut out = Vec::new();
    for i in pages
        .iter()
        .flat_map(|p| p.reservations())
        .flat_map(|r| r.instances())
    {
        let tag = |k: &str| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(String::from)
        };
        out.push(Instance {
            id: i.instance_id().unwrap_or_default().to_owned(),
            state: i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            public_ip: i.public_ip_address().map(String::from),
            deployment: tag(DEPLOYMENT_TAG),
            lifecycle: i.instance_lifecycle().map(|l| l.as_str().to_owned()),
            lineage: tag(LINEAGE_TAG),
        });
    }
    Ok(out)
}

/// Terminates the instance and waits until it is gone (the security group cannot go before).
pub async fn terminate(clients: &Clients, region: &str, id: &str) -> Result<()> {
    let ec2 = clients.ec2(region).await;
    match ec2.terminate_instances().instance_ids(id).send().await {
        Ok(_) => {}
        Err(e) if code(&e) == Some("InvalidInstanceID.NotFound") => return Ok(()),
        Err(e) => return Err(classify(&format!("TerminateInstances {id}"), e)),
    }
    let poll = || async {
        let found = describe(
            clients,
            region,
            vec![Filter::builder().name("instance-id").values(id).build()],
        )
        .await?;
        if found
            .iter()
            .all(|i| i.state == InstanceStateName::Terminated.as_str())
        {
            Ok(())
        } else {
            Err(ProviderError::new(
                ErrorCode::Busy,
                format!(
                    "instance {id} is still not terminated after {} minutes",
                    INSTANCE_WAIT.as_secs() / 60
                ),
            ))
        }
    };
    retry::wait_for(
        Duration::from_secs(2),
        Duration::from_secs(10),
        INSTANCE_WAIT,
        poll,
        |e: &ProviderError| e.is(ErrorCode::Busy),
        |_, _| {},
    )
    .await
    // Waited the whole while already: the engine must not wait it all again.
    .map_err(ProviderError::retried)
}

/// Deletes this state's security group `name`; another state's stays.
pub async fn delete_security_group(
    clients: &Clients,
    region: &str,
    name: &str,
    lineage: &str,
) -> Result<()> {
    match group_named(clients, region, name, lineage).await? {
        None => return Ok(()),
        Some((_, whose)) if whose.leaves(&format!("security group {name}")) => return Ok(()),
        Some(_) => {}
    }
    let ec2 = clients.ec2(region).await;
    match ec2.delete_security_group().group_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("InvalidGroup.NotFound") => Ok(()),
        // Still in use by an instance that is shutting down: worth another try.
        Err(e) if code(&e) == Some("DependencyViolation") => Err(ProviderError::new(
            ErrorCode::Busy,
            format!("DeleteSecurityGroup {name}: still in use"),
        )),
        Err(e) => Err(classify(&format!("DeleteSecurityGroup {name}"), e)),
    }
}

/// Deletes this state's key pair `name`; another state's stays.
pub async fn delete_key(clients: &Clients, region: &str, name: &str, lineage: &str) -> Result<()> {
    match key_owner(clients, region, name, lineage).await? {
        None => return Ok(()),
        Some(whose) if whose.leaves(&format!("key pair {name}")) => return Ok(()),
        Some(_) => {}
    }
    let ec2 = clients.ec2(region).await;
    match ec2.delete_key_pair().key_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("InvalidKeyPair.NotFound") => Ok(()),
        Err(e) => Err(classify(&format!("DeleteKeyPair {name}"), e)),
    }
}

/// Debian's account, which publishes the Debian images.
const DEBIAN_OWNER: &str = "136693071363";

/// The newest Debian 12 image for amd64 in the region.
pub async fn latest_debian(clients: &Clients, region: &str) -> Result<String> {
    let out = clients
        .ec2(region)
        .await
        .describe_images()
        .owners(DEBIAN_OWNER)
        .filters(
            Filter::builder()
                .name("name")
                .values("debian-12-amd64-*")
                .build(),
        )
        .send()
        .await
        .map_err(|e| classify("DescribeImages", e))?;
    out.images()
        .iter()
        .filter_map(|i| Some((i.creation_date()?, i.image_id()?)))
        .max()
        .map(|(_, id)| id.to_owned())
        .ok_or_else(|| {
            ProviderError::permanent(format!(
                "no Debian 12 image found in {region}; set providers.aws.ami"
            ))
        })
}

/// The public SSM parameter AWS keeps pointing at the newest Deep Learning Base OSS NVIDIA
/// Driver AMI for x86_64 (Ubuntu 22.04): NVIDIA's driver, Docker and the NVIDIA container
/// toolkit installed.
pub const GPU_IMAGE_PARAMETER: &str =
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";
/// What [`GPU_IMAGE_PARAMETER`] names, for the plan.
pub const GPU_IMAGE_NAME: &str = "AWS Deep Learning Base OSS NVIDIA Driver AMI, Ubuntu 22.04";
/// Its login user.
pub const GPU_IMAGE_USER: &str = "ubuntu";

/// The parameter the default GPU image is read from: [`GPU_IMAGE_PARAMETER`], unless a test
/// names another (moto refuses to hold a parameter under `/aws/`, which AWS owns).
pub fn gpu_image_parameter() -> String {
    crate::settings::testing::value(crate::settings::testing::GPU_IMAGE_PARAMETER)
        .unwrap_or_else(|| GPU_IMAGE_PARAMETER.to_owned())
}

/// The AMI id an SSM parameter holds.
pub async fn image_of_parameter(clients: &Clients, region: &str, name: &str) -> Result<String> {
    let out = clients
        .ssm(region)
        .await
        .get_parameter()
        .name(name)
        .send()
        .await
        .map_err(|e| classify(&format!("GetParameter {name}"), e))?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::permanent(format!("SSM parameter {name} holds no value")))
}

/// An instance type's NVIDIA GPUs as EC2 describes them (`GpuInfo`): their count and names
/// ("1 NVIDIA A10G"); `None` when it has none (or only another maker's).
pub async fn nvidia_gpus(
    clients: &Clients,
    region: &str,
    instance_type: &str,
) -> Result<Option<String>> {
    let out = clients
        .ec2(region)
        .await
        .describe_instance_types()
        .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type))
        .send()
        .await
        .map_err(|e| classify(&format!("DescribeInstanceTypes {instance_type}"), e))?;
    let Some(info) = out.instance_types().first() else {
        return Err(ProviderError::permanent(format!(
            "EC2 does not know instance type {instance_type} in {region}"
        )));
    };
    let gpus: Vec<String> = info
        .gpu_info()
        .map(|g| g.gpus())
        .unwrap_or_default()
        .iter()
        .filter(|g| {
            g.manufacturer()
                .is_some_and(|m| m.eq_ignore_ascii_case("nvidia"))
        })
        .map(|g| {
            format!(
                "{} NVIDIA {}",
                g.count().unwrap_or(1),
                g.name().unwrap_or("GPU")
            )
        })
        .collect();
    Ok((!gpus.is_empty()).then(|| gpus.join(", ")))
}
