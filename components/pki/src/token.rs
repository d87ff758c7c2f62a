//! Join tokens, k3s-style: `K10<sha256 of the CA certificate>::<id>.<secret>`. The hash lets a
//! joining agent check the server's CA before it sends anything; the id names the token in lists
//! and revocations; the secret proves the agent was given the token.
//!
//! Only [`hash_secret`] of a secret is ever stored, secrets are compared in constant time, and no
//! error message or `Debug` output of this module contains a secret.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::PkiError;

const PREFIX: &str = "K10";
const ID_LEN: usize = 6;
/// The shortest secret [`Token::parse`] accepts.
pub const MIN_SECRET_LEN: usize = 16;
/// The length of the secrets [`Token::generate`] makes (about 165 bits).
pub const SECRET_LEN: usize = 32;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    ca_hash: String,
    id: String,
    secret: String,
}

impl Token {
    /// A new token for the CA with pin `ca_hash` (see [`crate::Ca::pin`]): a random id of 6 and a
    /// random secret of [`SECRET_LEN`] lowercase letters and digits.
    pub fn generate(ca_hash: &str) -> Result<Token, PkiError> {
        check_ca_hash(ca_hash)?;
        Ok(Token {
            ca_hash: ca_hash.to_string(),
            id: random_string(ID_LEN),
            secret: random_string(SECRET_LEN),
        })
    }

    /// Parses `K10<64 hex>::<id>.<secret>`; the error says which part is wrong.
    pub fn parse(s: &str) -> Result<Token, PkiError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid(format!("does not start with {PREFIX:?}")))?;
        let (ca_hash, credentials) = rest
            .split_once("::")
            .ok_or_else(|| invalid("no \"::\" after the CA hash".into()))?;
        check_ca_hash(ca_hash)?;
        let (id, secret) = credentials
            .split_once('.')
            .ok_or_else(|| invalid("no \".\" between the token id and the secret".into()))?;
        if id.len() != ID_LEN || !id.bytes().all(|b| ALPHABET.contains(&b)) {
            return Err(invalid(format!(
                "token id must be {ID_LEN} lowercase letters or digits, got {} characters",
                id.chars().count()
            )));
        }
        if secret.is_empty() {
            return Err(invalid("the secret is missing".into()));
        }
        if !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(
                "the secret has characters other than letters and digits".into(),
            ));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(format!(
                "the secret is {} characters, at least {MIN_SECRET_LEN} are needed",
                secret.len()
            )));
        }
        Ok(Token {
            ca_hash: ca_hash.to_string(),
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The pin of the CA the token is for (64 lowercase hex digits).
    pub fn ca_hash(&self) -> &str {
        &self.ca_hash
    }

    /// The token's id (public: shown in lists, used to revoke).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret (sent only to a server whose CA matches [`Token::ca_hash`]).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether this token's secret hashes to `stored_hash`, compared in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        constant_time_eq(hash_secret(&self.secret).as_bytes(), stored_hash.as_bytes())
    }
}

/// The full token text, secret included: for printing once to the operator who created it.
impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The stored form of a secret: its SHA-256, lowercase hex.
pub fn hash_secret(secret: &str) -> String {
    crate::ca::hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths (never on where they
/// differ).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn check_ca_hash(hash: &str) -> Result<(), PkiError> {
    if hash.len() != 64 {
        return Err(invalid(format!(
            "the CA hash must be 64 hex digits (sha256), got {} characters",
            hash.chars().count()
        )));
    }
    if !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid("the CA hash must be lowercase hex digits".into()));
    }
    Ok(())
}

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn invalid(reason: String) -> PkiError {
    PkiError::Token { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn err(s: &str) -> String {
        Token::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn generate_and_parse_round_trip() {
        let token = Token::generate(HASH).unwrap();
        let text = token.to_string();
        assert!(text.starts_with(&format!("K10{HASH}::")), "{text}");
        let parsed = Token::parse(&text).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.ca_hash(), HASH);
        assert_eq!(parsed.id().len(), 6);
        assert!(parsed.secret().len() >= MIN_SECRET_LEN);
        assert!(parsed.id().bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(Token::generate(HASH).unwrap(), token);
    }

    #[test]
    fn rejections_name_what_is_wrong() {
        let secret = "abcdefghij0123456789";
        assert!(err(&format!("K11{HASH}::abc123.{secret}")).contains("does not start with"));
        assert!(err(&format!("K10{}::abc123.{secret}", &HASH[..63])).contains("64 hex digits"));
        assert!(
            err(&format!("K10{}::abc123.{secret}", HASH.to_uppercase())).contains("lowercase hex")
        );
        assert!(err(&format!("K10{HASH}abc123.{secret}")).contains("no \"::\""));
        assert!(err(&format!("K10{HASH}::abc123")).contains("no \".\""));
        assert!(err(&format!("K10{HASH}::abc123.")).contains("secret is missing"));
        assert!(err(&format!("K10{HASH}::abc12.{secret}")).contains("token id"));
        assert!(err(&format!("K10{HASH}::ABC123.{secret}")).contains("token id"));
        assert!(err(&format!("K10{HASH}::abc123.short")).contains("at least 16"));
        assert!(err(&format!("K10{HASH}::abc123.{secret}!")).contains("other than letters"));
        assert!(Token::generate("abc").is_err());
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let token = Token::generate(HASH).unwrap();
        assert!(!format!("{token:?}").contains(token.secret()));
        let bad = format!("K10{HASH}::ab.{}", token.secret());
        assert!(!err(&bad).contains(token.secret()));
    }

    #[test]
    fn only_the_hash_is_stored_and_it_matches() {
        let token = Token::generate(HASH).unwrap();
        let stored = hash_secret(token.secret());
        assert_eq!(stored.len(), 64);
        assert_ne!(stored, token.secret());
        assert!(token.matches(&stored));
        let other = Token::generate(HASH).unwrap();
        assert!(!other.matches(&stored));
        // Known vector: sha256("abc").
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
