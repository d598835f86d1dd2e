//! The names anycloud gives Azure's objects (DESIGN §6, the seed): each a pure function of
//! the config and the subscription, so every plan, every machine and every team member
//! derives the same ones.

use uuid::Uuid;

/// `anycloud` + continent + subscription prefix, the prefix being the seed's: the
/// subscription id's first 8 characters (its example: `anycloudus12345678`), so the account
/// the seed made for a subscription is the one found. 8 + 5 (`latam`, the longest code) + 8.
const ACCOUNT_PREFIX_LEN: usize = 8;
/// What an earlier anycloud took instead: 11 hex digits. A state that recorded such a name
/// keeps it (the provider's `recall`); this one is never made anew.
const EARLIER_PREFIX_LEN: usize = 11;
/// Storage account names: 3–24 characters, lower-case letters and digits only.
pub const ACCOUNT_MAX: usize = 24;

/// The continent's shared storage account, `anycloud{C}{subscriptionPrefix}`. The prefix is
/// the subscription id's first hex digits: account names are global across Azure, so two
/// subscriptions must not derive the same one, and the same subscription always must.
pub fn storage_account(continent: &str, subscription_id: &str) -> String {
    account_with_prefix(continent, subscription_id, ACCOUNT_PREFIX_LEN)
}

/// The name an earlier anycloud gave the continent's account, with 11 digits of the
/// subscription id: kept where a state recorded it, looked for where none is recorded.
pub fn earlier_storage_account(continent: &str, subscription_id: &str) -> String {
    account_with_prefix(continent, subscription_id, EARLIER_PREFIX_LEN)
}

fn account_with_prefix(continent: &str, subscription_id: &str, len: usize) -> String {
    let digits: String = subscription_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .take(len)
        .collect();
    format!("anycloud{continent}{digits}")
}

/// Whether Azure accepts `name` as a storage account name.
pub fn is_account_name(name: &str) -> bool {
    (3..=ACCOUNT_MAX).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The resource group of a continent's storage account, in the region of the first
/// deployment of that continent.
pub fn storage_group(continent: &str) -> String {
    format!("anycloud-storage-{continent}")
}

/// The resource group of a region's VMs and identities.
pub fn region_group(region: &str) -> String {
    format!("anycloud-{region}")
}

/// The deployment's user-assigned managed identity (and, later, its VM): the seed's
/// `anycloud-{deploymentId}`.
pub fn identity(deployment: &str) -> String {
    format!("anycloud-{deployment}")
}

/// Blob container names beyond the rules every cloud shares (3–63 characters, lower-case
/// letters, digits and `-`, starting and ending with a letter or digit): no `.` and no `--`.
pub fn check_container_name(name: &str) -> Result<(), String> {
    if name.contains('.') || name.contains("--") {
        return Err(format!(
            "bucket name '{name}' is not a valid Azure container name: no '.' and no '--'"
        ));
    }
    Ok(())
}

/// Built-in roles: data-plane access to blobs, nothing of the account's control plane.
pub const BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
pub const BLOB_DATA_READER: &str = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1";

/// anycloud's namespace for the role assignments' names (a UUID v5 space of its own).
const ASSIGNMENTS: Uuid = Uuid::from_u128(0x6b1e_6f5c_2a0d_4c43_9d0e_61a7_c10d_a55e);

/// A role assignment's name is any GUID: derived from what it grants, so creating it twice
/// is the same PUT and a lost answer is never a second assignment.
pub fn role_assignment(scope: &str, identity_id: &str, role_definition: &str) -> String {
    let key = format!(
        "{}\n{}\n{}",
        scope.to_ascii_lowercase(),
        identity_id.to_ascii_lowercase(),
        role_definition
    );
    Uuid::new_v5(&ASSIGNMENTS, key.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBSCRIPTION: &str = "9f3b1c2d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";

    #[test]
    fn every_continents_account_name_is_valid_and_fits() {
        let longest = crate::REGIONS.iter().map(|(c, _)| c.len()).max();
        assert_eq!(longest, Some("latam".len()), "latam is the longest code");
        for (continent, _) in crate::REGIONS {
            let name = storage_account(continent, SUBSCRIPTION);
            assert!(is_account_name(&name), "{continent}: {name}");
            assert!(name.len() <= ACCOUNT_MAX, "{continent}: {name}");
            assert_eq!(name, format!("anycloud{continent}9f3b1c2d"));
            // The names an earlier anycloud recorded were valid too (and are kept).
            let earlier = earlier_storage_account(continent, SUBSCRIPTION);
            assert!(is_account_name(&earlier), "{continent}: {earlier}");
            assert_eq!(earlier, format!("anycloud{continent}9f3b1c2d4e5"));
        }
        assert_eq!(
            storage_account("latam", SUBSCRIPTION),
            "anycloudlatam9f3b1c2d"
        );
        assert_eq!(storage_account("latam", SUBSCRIPTION).len(), 21);
        assert_eq!(earlier_storage_account("latam", SUBSCRIPTION).len(), 24);
    }

    #[test]
    fn the_account_name_is_the_seeds() {
        // The seed's own example: the subscription id's first 8 characters.
        assert_eq!(
            storage_account("us", "12345678-9abc-4def-8123-456789abcdef"),
            "anycloudus12345678"
        );
    }

    #[test]
    fn account_names_follow_the_subscription() {
        let other = "0f3b1c2d-4e5f-4a6b-8c7d-0e1f2a3b4c5d";
        assert_eq!(
            storage_account("eu", SUBSCRIPTION),
            storage_account("eu", &SUBSCRIPTION.to_uppercase())
        );
        assert_ne!(
            storage_account("eu", SUBSCRIPTION),
            storage_account("eu", other)
        );
    }

    #[test]
    fn container_names_refuse_dots_and_double_dashes() {
        assert!(check_container_name("train-results").is_ok());
        assert!(check_container_name("train.results").is_err());
        assert!(check_container_name("train--results").is_err());
    }

    #[test]
    fn assignment_names_are_stable_guids_per_grant() {
        let a = role_assignment("/s/x", "/i/a", BLOB_DATA_READER);
        assert_eq!(a, role_assignment("/S/X", "/i/a", BLOB_DATA_READER));
        assert_ne!(a, role_assignment("/s/x", "/i/a", BLOB_DATA_CONTRIBUTOR));
        assert_ne!(a, role_assignment("/s/y", "/i/a", BLOB_DATA_READER));
        assert!(Uuid::parse_str(&a).is_ok());
    }
}
