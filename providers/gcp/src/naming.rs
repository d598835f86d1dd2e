//! The names anycloud gives Google Cloud's objects (DESIGN §6, the seed): each a pure function
//! of the config and the project, so every plan, every machine and every team member derives
//! the same ones.

use sha2::{Digest, Sha256};

/// Service account ids: 6–30 characters of `[a-z0-9-]`, a letter first, no `-` last.
pub const ACCOUNT_ID_MAX: usize = 30;
/// Deployment ids up to this length give `ac-{id}` as they are.
const PLAIN_ID_MAX: usize = ACCOUNT_ID_MAX - 3;
/// How much of a longer id its account id keeps, before `--` and the hash.
const KEPT: usize = 15;
/// Characters of the hash (base32, 5 bits each): 50 bits, so even 10,000 ids sharing their
/// first characters meet with a chance of about 4 in 100 million.
const HASHED: usize = 10;

/// The project's part of a bucket name: the project id, a domain-scoped project's
/// `example.com:proj` written `example-com-proj` (a dot would make the bucket name a domain
/// GCS wants verified). Project ids are global, so the bucket names are too.
pub fn project_prefix(project: &str) -> String {
    project
        .chars()
        .map(|c| match c {
            '.' | ':' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The continent's shared bucket, `anycloud-{C}-{projectPrefix}`.
pub fn continent_bucket(continent: &str, project: &str) -> String {
    format!("anycloud-{continent}-{}", project_prefix(project))
}

/// Whether GCS accepts `name` as a bucket name without a domain check: 3–63 characters of
/// `[a-z0-9_-]`, a letter or digit at both ends, not starting with `goog`, no `google`.
pub fn is_bucket_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-' || c == '_')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && !name.starts_with("goog")
        && !name.contains("google")
}

/// The deployment's service account id: `ac-{id}` when it fits (ids up to 27 characters),
/// else `ac-`, the id's first 15 characters, `--` and 10 base32 characters of the id's
/// sha256. The
/// two forms never meet: deployment ids have no `--`. Ids are at least 3 characters, so
/// every account id has the 6 Google asks for.
pub fn account_id(deployment: &str) -> String {
    if deployment.len() <= PLAIN_ID_MAX {
        return format!("ac-{deployment}");
    }
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = Sha256::digest(deployment.as_bytes());
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let hash: String = (0..HASHED)
        .map(|i| ALPHABET[(bits >> (59 - 5 * i) & 31) as usize] as char)
        .collect();
    let kept = deployment[..KEPT].trim_end_matches('-');
    format!("ac-{kept}--{hash}")
}

/// Whether IAM accepts `id` as a service account id.
pub fn is_account_id(id: &str) -> bool {
    (6..=ACCOUNT_ID_MAX).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub fn account_email(deployment: &str, project: &str) -> String {
    format!(
        "{}@{project}.iam.gserviceaccount.com",
        account_id(deployment)
    )
}

/// The deployment's instance, `anycloud-{id}`.
pub fn instance(deployment: &str) -> String {
    format!("anycloud-{deployment}")
}

/// The deployment's firewall rule admitting SSH to its instance (by network tag).
pub fn firewall(deployment: &str) -> String {
    format!("anycloud-ssh-{deployment}")
}

/// The top-level prefix a deployment's "bucket" is in its continent's bucket (DESIGN §4).
pub fn prefix(bucket: &str) -> String {
    format!("{bucket}/")
}

/// Where anycloud marks a prefix it made: outside every prefix, so no sync ever copies it.
pub fn marker(bucket: &str) -> String {
    format!(".anycloud/prefixes/{bucket}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_continents_bucket_name_is_valid_and_fits() {
        // The longest project id Google allows is 30 characters; domain-scoped ones add theirs.
        for project in [
            "acme-ml-prod",
            "a23456-b0123456789-c123456789z",
            "example.com:ml",
        ] {
            for (continent, _) in crate::REGIONS {
                let name = continent_bucket(continent, project);
                assert!(is_bucket_name(&name), "{name}");
            }
        }
        assert_eq!(
            continent_bucket("latam", "acme-ml-prod"),
            "anycloud-latam-acme-ml-prod"
        );
        assert_eq!(
            continent_bucket("eu", "example.com:ml"),
            "anycloud-eu-example-com-ml"
        );
    }

    #[test]
    fn account_ids_are_valid_stable_and_distinct() {
        let table = [
            ("job", "ac-job"),
            ("train", "ac-train"),
            (
                "a23456789012345678901234567",
                "ac-a23456789012345678901234567",
            ),
            (
                "a234567890123456789012345678",
                "ac-a23456789012345--msa44lqgww",
            ),
            (
                "sweep-lr-0001-bs-0064-seed-0001",
                "ac-sweep-lr-0001-b--5k2hwil3uw",
            ),
            (
                "sweep-lr-0001-bs-0064-seed-0002",
                "ac-sweep-lr-0001-b--adziecxcek",
            ),
        ];
        for (id, expected) in table {
            let got = account_id(id);
            assert!(is_account_id(&got), "{id} → {got}");
            assert_eq!(got, expected, "{id}");
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..20000 {
            let id = format!("sweep-learning-rate-{i:05}-batch-64");
            assert!(seen.insert(account_id(&id)), "{id} collides");
        }
        for i in 0..5000 {
            assert!(seen.insert(account_id(&format!("job-{i}"))));
        }
    }
}
