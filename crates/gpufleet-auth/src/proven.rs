//! [`ProvenKey`]: a credential one connection has already proven, so its next request with the
//! same bytes skips parsing the key and hashing it. The key's cache entry is still consulted on
//! every request (revocation, expiry, reload after `cache_ttl`), rate limits and permissions
//! still apply: only the SHA-256 of an identical credential is not computed again. A server keeps
//! one per connection and never shares it; it is cleared when a different credential arrives.

use crate::key::{KeyHash, KeyPrefix};

/// The last credential a connection proved, with the key it names.
#[derive(Default)]
pub struct ProvenKey {
    credential: Vec<u8>,
    key: Option<(KeyPrefix, KeyHash)>,
}

impl std::fmt::Debug for ProvenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("ProvenKey").field("proven", &self.key.is_some()).finish()
    }
}

impl ProvenKey {
    /// The key `credential` was proven to be, when it is byte for byte the proven one
    /// (compared in constant time).
    pub(crate) fn get(&self, credential: &[u8]) -> Option<(KeyPrefix, KeyHash)> {
        let (prefix, hash) = self.key?;
        ct_eq(&self.credential, credential).then_some((prefix, hash))
    }

    /// Remembers that `credential` proved the key `prefix` whose stored hash is `hash`.
    pub(crate) fn set(&mut self, credential: &[u8], prefix: KeyPrefix, hash: KeyHash) {
        self.clear();
        self.credential.extend_from_slice(credential);
        self.key = Some((prefix, hash));
    }

    /// Forgets the credential (its bytes are overwritten).
    pub fn clear(&mut self) {
        self.credential.fill(0);
        self.credential.clear();
        self.key = None;
    }
}

/// Equality whose time depends on the lengths only, eight bytes at a time (a connection may be
/// shared by several clients behind a proxy: how much of another's credential matched must not
/// show in the answer time). `subtle`'s byte-wise compare cost more than the rest of the check.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    let mut diff = 0u64;
    for (x, y) in a8.iter().zip(b8) {
        diff |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_rest.iter().zip(b_rest) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

impl Drop for ProvenKey {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::ct_eq;

    #[test]
    fn equality_over_every_length_and_position() {
        for len in 0..40usize {
            let a: Vec<u8> = (0..len as u8).collect();
            assert!(ct_eq(&a, &a.clone()));
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!ct_eq(&a, &b), "len {len} byte {i}");
            }
            assert!(!ct_eq(&a, &[a.as_slice(), b"x"].concat()));
        }
    }
}
