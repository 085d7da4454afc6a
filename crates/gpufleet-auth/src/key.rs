//! API keys: generation, parsing of a request's credential, and the stored hash.
//!
//! A key reads `gf_<prefix>_<secret>`: `prefix` is 8 characters of `[a-z0-9]` (public; it names the
//! key in listings, logs and the audit log and is how the key is looked up), `secret` is 32 bytes
//! from the OS random source as unpadded base64url (43 characters). The whole key is shown once, at
//! creation; only its [`KeyHash`] is stored.
//!
//! # Why SHA-256 and not argon2id
//! argon2id exists to slow down guessing of *low-entropy* secrets (passwords a person chose). Our
//! keys carry 256 random bits: no amount of hashing speed makes an offline search of 2^256 secrets
//! feasible, so a slow hash buys nothing. It would cost a lot: argon2id at recommended parameters
//! takes ~10 ms and ~19 MiB per verification, on *every* request, against a budget of 50 µs for
//! authentication, permission check and audit together — and it would turn each request into a
//! cheap way to burn the server's CPU. SHA-256 of the full key takes well under a microsecond. The
//! stored hash is compared in constant time ([`subtle`]) so a timing side channel cannot reveal how
//! much of a guessed hash matched. Keys typed by people (passwords) must never go through this path.
//!
//! Secrets never appear in `Debug` or `Display`: [`ApiKey`] prints only its prefix.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::{rngs::OsRng, Rng, RngCore};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Literal start of every key.
const KEY_START: &str = "gf_";
/// Length of the public prefix.
pub const PREFIX_LEN: usize = 8;
/// Length of the base64url secret (32 bytes, unpadded).
pub const SECRET_LEN: usize = 43;
/// Length of a whole key: `gf_` + prefix + `_` + secret.
pub const KEY_LEN: usize = KEY_START.len() + PREFIX_LEN + 1 + SECRET_LEN;
const PREFIX_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a credential is not a well-formed key. Messages never contain the credential itself.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyParseError {
    /// Nothing but whitespace (or a bare `Bearer`).
    #[error("the credential is empty")]
    Empty,
    /// An `Authorization` value with a scheme other than `Bearer`.
    #[error("unsupported authorization scheme (use `Bearer <key>`)")]
    UnsupportedScheme,
    /// Not valid UTF-8 / not ASCII.
    #[error("the credential contains non-ASCII bytes")]
    NotAscii,
    /// Not `gf_<8 chars>_<43 chars>`.
    #[error("the credential is not a gpufleet key (expected gf_<8-char prefix>_<43-char secret>)")]
    BadFormat,
    /// The prefix has characters outside `[a-z0-9]`.
    #[error("the key prefix must be 8 characters of [a-z0-9]")]
    BadPrefix,
    /// The secret has characters outside base64url.
    #[error("the key secret must be 43 base64url characters")]
    BadSecret,
}

/// The public, non-secret part of a key: 8 characters of `[a-z0-9]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPrefix([u8; PREFIX_LEN]);

impl KeyPrefix {
    /// Reads a prefix (exactly 8 characters of `[a-z0-9]`).
    pub fn parse(s: &str) -> Result<Self, KeyParseError> {
        let b = s.as_bytes();
        if b.len() != PREFIX_LEN {
            return Err(KeyParseError::BadPrefix);
        }
        if !b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(KeyParseError::BadPrefix);
        }
        let mut out = [0u8; PREFIX_LEN];
        out.copy_from_slice(b);
        Ok(Self(out))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII `[a-z0-9]` is ever stored (checked in `parse`, produced by `generate`).
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }

    fn generate() -> Self {
        let mut out = [0u8; PREFIX_LEN];
        for c in &mut out {
            *c = PREFIX_ALPHABET[OsRng.gen_range(0..PREFIX_ALPHABET.len())];
        }
        Self(out)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for KeyPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// SHA-256 of a whole key, the only form in which a key is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Hashes a key's full text.
    pub fn of(key: &ApiKey) -> Self {
        Self(Sha256::digest(key.text.as_bytes()).into())
    }

    /// Wraps stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads stored bytes; `None` unless exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `key` hashes to this value, compared in constant time.
    pub fn matches(&self, key: &ApiKey) -> bool {
        self.ct_eq_hash(&Self::of(key))
    }

    /// Constant-time equality of two hashes.
    pub fn ct_eq_hash(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A whole API key (prefix and secret). Its text is reachable only through [`ApiKey::expose_secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    text: String,
    prefix: KeyPrefix,
}

impl ApiKey {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        let prefix = KeyPrefix::generate();
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let text = format!("{KEY_START}{prefix}_{}", URL_SAFE_NO_PAD.encode(secret));
        Self { text, prefix }
    }

    /// Reads a bare key (`gf_…`), surrounding whitespace ignored.
    pub fn parse(s: &str) -> Result<Self, KeyParseError> {
        Self::parse_bytes(s.as_bytes())
    }

    /// Reads a credential header value: `Bearer <key>` (`Authorization`) or a bare key
    /// (`X-Api-Key`). Never panics; garbage gives a [`KeyParseError`].
    pub fn parse_header(value: &[u8]) -> Result<Self, KeyParseError> {
        let v = value.trim_ascii();
        if v.is_empty() {
            return Err(KeyParseError::Empty);
        }
        if v.starts_with(KEY_START.as_bytes()) {
            return Self::parse_bytes(v);
        }
        let (scheme, rest) = match v.iter().position(|c| c.is_ascii_whitespace()) {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return if scheme.iter().all(u8::is_ascii_alphabetic) && !rest.is_empty() {
                Err(KeyParseError::UnsupportedScheme)
            } else {
                Self::parse_bytes(v)
            };
        }
        let rest = rest.trim_ascii();
        if rest.is_empty() {
            return Err(KeyParseError::Empty);
        }
        Self::parse_bytes(rest)
    }

    fn parse_bytes(b: &[u8]) -> Result<Self, KeyParseError> {
        let b = b.trim_ascii();
        if b.is_empty() {
            return Err(KeyParseError::Empty);
        }
        if !b.is_ascii() {
            return Err(KeyParseError::NotAscii);
        }
        if b.len() != KEY_LEN || !b.starts_with(KEY_START.as_bytes()) || b[KEY_START.len() + PREFIX_LEN] != b'_' {
            return Err(KeyParseError::BadFormat);
        }
        // ASCII was checked above, so every byte index is a char boundary.
        let text = std::str::from_utf8(b).map_err(|_| KeyParseError::NotAscii)?;
        let prefix = KeyPrefix::parse(&text[KEY_START.len()..KEY_START.len() + PREFIX_LEN])?;
        let secret = &b[KEY_LEN - SECRET_LEN..];
        if !secret.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            return Err(KeyParseError::BadSecret);
        }
        Ok(Self { text: text.to_owned(), prefix })
    }

    /// The public prefix.
    pub fn prefix(&self) -> KeyPrefix {
        self.prefix
    }

    /// The stored form of this key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self)
    }

    /// The whole key text. Call only to show it once to its owner.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(gf_{}_<redacted>)", self.prefix)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gf_{}_<redacted>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_key_has_the_documented_shape_and_parses_back() {
        let k = ApiKey::generate();
        let s = k.expose_secret();
        assert_eq!(s.len(), KEY_LEN);
        assert!(s.starts_with("gf_"));
        assert_eq!(&s[11..12], "_");
        let back = ApiKey::parse(s).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.prefix(), k.prefix());
    }

    #[test]
    fn generated_keys_differ() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(!a.hash().ct_eq_hash(&b.hash()));
    }

    #[test]
    fn hash_is_sha256_of_the_whole_key_and_matches_only_that_key() {
        let k = ApiKey::parse("gf_abcd1234_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let expected: [u8; 32] = Sha256::digest(k.expose_secret().as_bytes()).into();
        assert_eq!(k.hash().as_bytes(), &expected);
        assert!(k.hash().matches(&k));
        let other = ApiKey::parse("gf_abcd1234_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB").unwrap();
        assert!(!k.hash().matches(&other));
        assert_eq!(KeyHash::from_slice(k.hash().as_bytes()), Some(k.hash()));
        assert_eq!(KeyHash::from_slice(&[0u8; 31]), None);
    }

    #[test]
    fn header_forms_are_accepted() {
        let k = ApiKey::generate();
        let s = k.expose_secret();
        for v in [s.to_owned(), format!("Bearer {s}"), format!("bearer   {s}  "), format!("  {s}\t")] {
            assert_eq!(ApiKey::parse_header(v.as_bytes()).unwrap(), k, "{v:?}");
        }
    }

    #[test]
    fn garbage_is_rejected_with_typed_errors() {
        let ok = ApiKey::generate();
        let s = ok.expose_secret();
        assert_eq!(ApiKey::parse_header(b""), Err(KeyParseError::Empty));
        assert_eq!(ApiKey::parse_header(b"Bearer   "), Err(KeyParseError::Empty));
        assert_eq!(ApiKey::parse_header(format!("Basic {s}").as_bytes()), Err(KeyParseError::UnsupportedScheme));
        assert_eq!(ApiKey::parse_header(b"gf_abc"), Err(KeyParseError::BadFormat));
        assert_eq!(ApiKey::parse_header("gf_é".as_bytes()), Err(KeyParseError::NotAscii));
        let upper = format!("gf_ABCD1234_{}", &s[12..]);
        assert_eq!(ApiKey::parse(&upper), Err(KeyParseError::BadPrefix));
        let bad_secret = format!("{}+{}", &s[..12], &s[13..]);
        assert_eq!(ApiKey::parse(&bad_secret), Err(KeyParseError::BadSecret));
        let no_sep = format!("{}-{}", &s[..11], &s[12..]);
        assert_eq!(ApiKey::parse(&no_sep), Err(KeyParseError::BadFormat));
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let k = ApiKey::generate();
        let secret = &k.expose_secret()[12..];
        for shown in [format!("{k:?}"), format!("{k}"), format!("{:?}", Some(&k)), format!("{:#?}", k)] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(k.prefix().as_str()), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
    }

    proptest! {
        #[test]
        fn parse_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = ApiKey::parse_header(&bytes);
        }

        #[test]
        fn parse_header_accepts_only_well_formed_keys(s in "(Bearer )?gf_[a-z0-9]{8}_[A-Za-z0-9_-]{43}") {
            let k = ApiKey::parse_header(s.as_bytes()).unwrap();
            prop_assert!(s.ends_with(k.expose_secret()));
        }

        #[test]
        fn near_misses_are_rejected(s in "gf_[a-z0-9]{8}_[A-Za-z0-9_-]{0,42}|gf_[a-z0-9]{8}_[A-Za-z0-9_-]{44,50}|gf_[a-z0-9]{7}_[A-Za-z0-9_-]{44}") {
            prop_assert!(ApiKey::parse_header(s.as_bytes()).is_err());
        }
    }
}
