//! The naming rules every cloud shares, checked before any cloud is called (DESIGN §7); a
//! provider adds its own limits through its declaration.

use anycloud_provider::Declaration;

/// Deployment ids: `[a-z0-9-]`, starting with a letter, not ending with `-`, short enough
/// for every name the provider derives from them. (The checkpoint bucket's rules are
/// [`check_checkpoint_bucket`]'s, for the deployments that have one.)
pub fn check_deployment_id(id: &str, provider: &dyn Declaration) -> Result<(), String> {
    if id.is_empty() {
        return Err("a deployment id cannot be empty".into());
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "deployment id '{id}' must start with a lowercase letter"
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "deployment id '{id}' contains '{bad}'; use lowercase letters, digits and '-'"
        ));
    }
    if id.ends_with('-') || id.contains("--") {
        return Err(format!(
            "deployment id '{id}' cannot end with '-' or contain '--'"
        ));
    }
    let limit = provider.id_limit();
    if id.len() > limit.max {
        return Err(format!(
            "deployment id '{}' is {} characters; at most {} fit the names derived from it on {} ({})",
            anycloud_provider::diagnostic::clip(id),
            id.len(),
            limit.max,
            provider.name(),
            limit.because
        ));
    }
    Ok(())
}

/// A deployment with `checkpoint: true` keeps it in a bucket named after its id, so the id
/// must also be a bucket name; one without a checkpoint is not held to these rules.
pub fn check_checkpoint_bucket(id: &str, provider: &dyn Declaration) -> Result<(), String> {
    check_bucket_name(id, provider).map_err(|why| {
        format!("deployment '{id}' has `checkpoint: true`, whose bucket is named after the deployment: {why}")
    })
}

/// Bucket names: the strictest of S3's, Azure containers' and GCS's rules, so a config moves
/// between clouds unchanged (3–63 characters of `[a-z0-9-.]`, alphanumeric at both ends),
/// then the provider's own.
pub fn check_bucket_name(name: &str, provider: &dyn Declaration) -> Result<(), String> {
    let len = name.len();
    if !(3..=63).contains(&len) {
        return Err(format!(
            "bucket name '{}' is {len} characters; it must be 3 to 63",
            anycloud_provider::diagnostic::clip(name)
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "bucket name '{name}' contains '{bad}'; use lowercase letters, digits, '-' and '.'"
        ));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Err(format!(
            "bucket name '{name}' must start and end with a letter or digit"
        ));
    }
    if name.contains("..") {
        return Err(format!("bucket name '{name}' cannot contain '..'"));
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return Err(format!(
            "bucket name '{name}' cannot look like an IP address"
        ));
    }
    provider.check_bucket_name(name)
}
