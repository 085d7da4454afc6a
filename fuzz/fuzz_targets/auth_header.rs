//! Fuzzes API-key header parsing: `Authorization`/`X-Api-Key` values are attacker-controlled.
//! Parsing must never panic, and an accepted key must round-trip: its text parses to the same key
//! and prefix, its hash matches it, and its Debug form never shows the secret.
#![no_main]

use gpufleet_auth::{ApiKey, KeyPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = ApiKey::parse_header(data) {
        let text = key.expose_secret().to_owned();
        let again = ApiKey::parse(&text).expect("an accepted key re-parses");
        assert_eq!(again.prefix(), key.prefix());
        assert!(key.hash().matches(&again));
        // `gf_` + 8-char prefix + `_` + secret: the secret part must never appear in Debug output.
        // (Only the whole secret is checked: a short piece of it can coincide with the prefix.)
        let secret = &text[12..];
        assert!(!format!("{key:?}").contains(secret), "Debug leaks the secret");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = KeyPrefix::parse(s) {
            assert_eq!(KeyPrefix::parse(p.as_str()).ok(), Some(p));
        }
    }
});
