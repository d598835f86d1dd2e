//! Checks across deployments: a bucket lives in one continent, a checkpoint bucket belongs
//! to its deployment alone, and no deployment uploads its output into a bucket that is some
//! job's read-only input.

use std::collections::BTreeMap;

use anycloud_provider::{BucketRole, Loc};

use super::Checker;

/// A bucket as one deployment names it.
pub(super) struct BucketUse {
    pub provider: &'static str,
    pub name: String,
    pub role: BucketRole,
    pub deployment: String,
    pub continent: String,
    pub at: Loc,
}

pub(super) fn check_roles(ck: &mut Checker) {
    // Grouped by (provider, name): linear in the number of buckets.
    let mut by_name: BTreeMap<(&str, &str), Vec<&BucketUse>> = BTreeMap::new();
    for u in &ck.buckets {
        by_name
            .entry((u.provider, u.name.as_str()))
            .or_default()
            .push(u);
    }
    let mut problems = Vec::new();
    for uses in by_name.values().filter(|uses| uses.len() > 1) {
        // The seed's rule: a bucket lives in the continent where it is first used, and a
        // deployment of another continent cannot use it, whichever comes first.
        let first = uses.iter().min_by_key(|u| u.at).expect("more than one");
        for u in uses.iter().filter(|u| u.continent != first.continent) {
            problems.push((
                u.at,
                format!(
                    "Bucket '{}' already exists in continent '{}' but you are deploying to continent '{}'.",
                    u.name, first.continent, u.continent
                ),
                format!(
                    "Please use a different bucket name in anycloud.yaml. (It is used by deployment '{}' in continent '{}'.)",
                    first.deployment, first.continent
                ),
            ));
        }
        let checkpoint_of = uses.iter().find(|u| u.role == BucketRole::Checkpoint);
        let input_of = uses.iter().find(|u| u.role == BucketRole::Input);
        for u in uses {
            let message = match (u.role, checkpoint_of, input_of) {
                (BucketRole::Input | BucketRole::Output, Some(c), _) => format!(
                    "bucket '{}' is the checkpoint bucket of deployment '{}' (named after it); {} cannot also use it as its {} bucket",
                    u.name, c.deployment, u.deployment, u.role
                ),
                (BucketRole::Output, None, Some(i)) => format!(
                    "bucket '{}' is the read-only input of deployment '{}'; {} cannot upload its output into it",
                    u.name, i.deployment, u.deployment
                ),
                _ => continue,
            };
            problems.push((
                u.at,
                message,
                "use a different bucket name in anycloud.yaml".to_owned(),
            ));
        }
    }
    problems.sort_by_key(|(at, _, _)| *at);
    for (at, message, help) in problems {
        ck.at(at, message, Some(help));
    }
}
