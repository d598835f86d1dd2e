//! sha256, as lowercase hex: config digests, upload checks, names derived from paths.

use sha2::Digest;

pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(sha2::Sha256::digest(bytes.as_ref()))
}

/// The first 12 hex digits: a stable short suffix for names derived from longer text.
pub fn short_hash(text: &str) -> String {
    sha256_hex(text)[..12].to_owned()
}
