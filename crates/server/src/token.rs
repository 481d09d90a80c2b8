//! Bearer tokens: opaque to clients, self-contained and HMAC-signed for segmart.
//!
//! A token is `base64url(payload || HMAC-SHA256(key, payload))` with the payload
//! `version(1) client_id(16) permissions(1) client_generation(4) expires_at_secs(8) nonce(8)`.
//! Verification is a constant-time MAC check, an expiry check and a lookup of the client (which
//! must exist, not be revoked, and have the generation the token was issued for, so rotating a
//! secret or revoking a client invalidates its tokens). Tokens survive restarts and work on every
//! node that shares the signing key; nothing secret is stored per token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use segmart_domain::{ClientId, PermissionSet, Timestamp};
use sha2::Sha256;
use uuid::Uuid;

const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 16 + 1 + 4 + 8 + 8;
const MAC_LEN: usize = 32;

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    pub client: ClientId,
    pub permissions: PermissionSet,
    pub client_generation: u32,
    pub expires_at: Timestamp,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    BadSignature,
    Expired,
}

/// Issues and checks tokens with one deployment-wide key.
#[derive(Clone)]
pub struct TokenSigner {
    key: [u8; 32],
}

impl TokenSigner {
    pub fn new(key: [u8; 32]) -> Self {
        TokenSigner { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("hmac takes any key length")
    }

    /// Appends a nonce to `bytes` (version and claims), signs them and encodes the token.
    fn seal(&self, mut bytes: Vec<u8>) -> String {
        bytes.extend_from_slice(&crate::secrets::random_bytes::<8>());
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decodes a token of `version` with a `len`-byte payload and checks its MAC in constant
    /// time; the payload starts with the version byte.
    fn open(&self, token: &str, version: u8, len: usize) -> Result<Vec<u8>, TokenError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != len + MAC_LEN || bytes[0] != version {
            return Err(TokenError::Malformed);
        }
        let tag = bytes.split_off(len);
        let mut mac = self.mac();
        mac.update(&bytes);
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(bytes)
    }

    pub fn issue(&self, claims: &TokenClaims) -> String {
        let mut bytes = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(claims.client.0.as_bytes());
        bytes.push(claims.permissions.bits());
        bytes.extend_from_slice(&claims.client_generation.to_le_bytes());
        bytes.extend_from_slice(&claims.expires_at.secs().to_le_bytes());
        self.seal(bytes)
    }

    pub fn verify(&self, token: &str, now: Timestamp) -> Result<TokenClaims, TokenError> {
        let payload = self.open(token, VERSION, PAYLOAD_LEN)?;
        let payload = payload.as_slice();
        let client =
            ClientId(Uuid::from_slice(&payload[1..17]).map_err(|_| TokenError::Malformed)?);
        let permissions = PermissionSet::from_bits(payload[17]).ok_or(TokenError::Malformed)?;
        let client_generation = u32::from_le_bytes(payload[18..22].try_into().expect("4 bytes"));
        let expires_secs = i64::from_le_bytes(payload[22..30].try_into().expect("8 bytes"));
        let expires_at = Timestamp::from_secs(expires_secs);
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(TokenClaims {
            client,
            permissions,
            client_generation,
            expires_at,
        })
    }
}

/// Version byte of session tokens (`POST /auth`); part of the MAC, so a session token can never
/// pass as a client token or the other way round.
const SESSION_VERSION: u8 = 2;
const SESSION_PAYLOAD_LEN: usize = 1 + 8 + 4 + 8 + 8;

/// What a valid session token says: a signed-in user, the generation of its password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClaims {
    pub user_id: i64,
    pub user_generation: u32,
    pub expires_at: Timestamp,
}

impl TokenSigner {
    /// A session token: `base64url(2 | user id | generation | expiry | nonce | HMAC)`.
    pub fn issue_session(&self, claims: &SessionClaims) -> String {
        let mut bytes = Vec::with_capacity(SESSION_PAYLOAD_LEN + MAC_LEN);
        bytes.push(SESSION_VERSION);
        bytes.extend_from_slice(&claims.user_id.to_le_bytes());
        bytes.extend_from_slice(&claims.user_generation.to_le_bytes());
        bytes.extend_from_slice(&claims.expires_at.secs().to_le_bytes());
        self.seal(bytes)
    }

    pub fn verify_session(&self, token: &str, now: Timestamp) -> Result<SessionClaims, TokenError> {
        let payload = self.open(token, SESSION_VERSION, SESSION_PAYLOAD_LEN)?;
        let payload = payload.as_slice();
        let user_id = i64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
        let user_generation = u32::from_le_bytes(payload[9..13].try_into().expect("4 bytes"));
        let expires_at = Timestamp::from_secs(i64::from_le_bytes(
            payload[13..21].try_into().expect("8 bytes"),
        ));
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(SessionClaims {
            user_id,
            user_generation,
            expires_at,
        })
    }
}

/// Version byte of buyer client tokens.
const BUYER_VERSION: u8 = 3;
const BUYER_PAYLOAD_LEN: usize = 1 + 16 + 8 + 1 + 8 + 8;

/// What a valid buyer token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuyerClaims {
    pub client: ClientId,
    pub buyer_id: i64,
    pub permissions: segmart_domain::BuyerPermissions,
    pub expires_at: Timestamp,
}

impl TokenSigner {
    /// A buyer token: `base64url(3 | client | buyer | permissions | expiry | nonce | HMAC)`.
    pub fn issue_buyer(&self, claims: &BuyerClaims) -> String {
        let mut bytes = Vec::with_capacity(BUYER_PAYLOAD_LEN + MAC_LEN);
        bytes.push(BUYER_VERSION);
        bytes.extend_from_slice(claims.client.0.as_bytes());
        bytes.extend_from_slice(&claims.buyer_id.to_le_bytes());
        bytes.push(claims.permissions.bits());
        bytes.extend_from_slice(&claims.expires_at.secs().to_le_bytes());
        self.seal(bytes)
    }

    pub fn verify_buyer(&self, token: &str, now: Timestamp) -> Result<BuyerClaims, TokenError> {
        let payload = self.open(token, BUYER_VERSION, BUYER_PAYLOAD_LEN)?;
        let payload = payload.as_slice();
        let client =
            ClientId(Uuid::from_slice(&payload[1..17]).map_err(|_| TokenError::Malformed)?);
        let buyer_id = i64::from_le_bytes(payload[17..25].try_into().expect("8 bytes"));
        let permissions = segmart_domain::BuyerPermissions::from_bits(payload[25])
            .ok_or(TokenError::Malformed)?;
        let expires_at = Timestamp::from_secs(i64::from_le_bytes(
            payload[26..34].try_into().expect("8 bytes"),
        ));
        if now >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(BuyerClaims {
            client,
            buyer_id,
            permissions,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            client: ClientId::random(),
            permissions: PermissionSet::ALL,
            client_generation: 3,
            expires_at: Timestamp::from_secs(10_000),
        }
    }

    #[test]
    fn session_and_client_tokens_never_pass_for_each_other() {
        let signer = TokenSigner::new([7; 32]);
        let session = signer.issue_session(&SessionClaims {
            user_id: 42,
            user_generation: 1,
            expires_at: Timestamp::from_secs(100),
        });
        assert_eq!(
            signer
                .verify_session(&session, Timestamp::from_secs(99))
                .map(|c| c.user_id),
            Ok(42)
        );
        assert_eq!(
            signer.verify_session(&session, Timestamp::from_secs(100)),
            Err(TokenError::Expired)
        );
        assert!(signer.verify(&session, Timestamp::from_secs(0)).is_err());
        let client = signer.issue(&claims());
        assert!(
            signer
                .verify_session(&client, Timestamp::from_secs(0))
                .is_err()
        );
    }

    #[test]
    fn tokens_round_trip_until_they_expire() {
        let signer = TokenSigner::new([7; 32]);
        let claims = claims();
        let token = signer.issue(&claims);
        assert_eq!(
            signer.verify(&token, Timestamp::from_secs(9_999)),
            Ok(claims)
        );
        assert_eq!(
            signer.verify(&token, Timestamp::from_secs(10_000)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let signer = TokenSigner::new([7; 32]);
        let token = signer.issue(&claims());
        let other = TokenSigner::new([8; 32]);
        assert_eq!(
            other.verify(&token, Timestamp::from_secs(0)),
            Err(TokenError::BadSignature)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[17] = 0xff;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert!(signer.verify(&forged, Timestamp::from_secs(0)).is_err());
        assert_eq!(
            signer.verify("garbage", Timestamp::from_secs(0)),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn two_tokens_for_the_same_claims_differ() {
        let signer = TokenSigner::new([7; 32]);
        let claims = claims();
        assert_ne!(signer.issue(&claims), signer.issue(&claims));
    }
}
