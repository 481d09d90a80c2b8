//! Secrets: random generation, argon2 hashing of client secrets, constant-time comparison.
//!
//! Hashing and verification are deliberately slow (argon2id); callers run them on the blocking
//! pool, never on the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` bytes from the thread-local CSPRNG (ChaCha, seeded and reseeded from the OS).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

/// A new client secret: 32 random bytes, base64url (43 characters).
pub fn new_client_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// The PHC string of the argon2id hash of `secret`.
pub fn hash_secret(secret: &str) -> String {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

/// True when `secret` matches the stored PHC hash (argon2's comparison is constant-time).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// SHA-256 of a high-entropy token, hex-encoded (for tokens that are not passwords).
pub fn sha256_hex(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let secret = new_client_secret();
        assert_eq!(secret.len(), 43);
        let phc = hash_secret(&secret);
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains(&secret));
        assert!(verify_secret(&secret, &phc));
        assert!(!verify_secret("wrong", &phc));
        assert!(!verify_secret(&secret, "not a phc string"));
    }

    #[test]
    fn random_secrets_differ() {
        assert_ne!(new_client_secret(), new_client_secret());
    }
}
