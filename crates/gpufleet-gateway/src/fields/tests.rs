use super::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn serde(b: &[u8]) -> Result<Routing<'_>, serde_json::Error> {
    serde_json::from_slice(b)
}

#[test]
fn a_usual_body_is_read_by_the_scan_and_borrowed() {
    let body = br#" {"model":"qwen3-8b","messages":[{"role":"user","content":"Say \"hello\" {[}]"}],"max_tokens":16,"stream":true,"priority":"high","async":false,"temperature":-1.5e-3,"stop":null} "#;
    let r = scan(body).expect("the scan reads it");
    assert_eq!(r.model.as_deref(), Some("qwen3-8b"));
    assert!(matches!(r.model, Some(Cow::Borrowed(_))));
    assert_eq!((r.stream, r.run_async, r.priority.as_deref()), (Some(true), Some(false), Some("high")));
    assert_eq!(r, serde(body).unwrap());
}

#[test]
fn the_serde_fallback_borrows_unless_escaped() {
    let plain = serde(br#"{"messages":[{"content":"x"}],"model":"m1","priority":"high"}"#).unwrap();
    assert!(matches!(plain.model, Some(Cow::Borrowed("m1"))));
    assert!(matches!(plain.priority, Some(Cow::Borrowed("high"))));
    let escaped = routing(br#"{"model":"m\u0031","priority":null}"#).unwrap();
    assert_eq!(escaped.model.as_deref(), Some("m1"));
    assert!(escaped.priority.is_none());
}

#[test]
fn endpoint_and_nulls() {
    let body = br#"{"endpoint":"embeddings","model":null,"stream":null}"#;
    let r = routing(body).unwrap();
    assert_eq!((r.endpoint, r.model, r.stream), (Some(Endpoint::Embeddings), None, None));
    assert_eq!(routing(b"{}").unwrap(), Routing::default());
}

#[test]
fn what_the_scan_leaves_to_serde_is_read_or_refused_as_serde_does() {
    // An escape in the model: serde decodes it.
    let r = routing(br#"{"model":"a\"b"}"#).unwrap();
    assert_eq!(r.model.as_deref(), Some("a\"b"));
    assert!(scan(br#"{"model":"a\"b"}"#).is_none());
    // Refusals, each with serde's message.
    for bad in [
        &br#"{"model":"a","model":"b"}"#[..],
        br#"{"model":5}"#,
        br#"{"stream":"yes"}"#,
        br#"{"endpoint":"images"}"#,
        br#"{"model":"m"} x"#,
        br#"{"model":"m""#,
        b"not json",
        b"",
        b"[1]",
    ] {
        let ours = routing(bad).map_err(|e| e.to_string());
        let theirs = serde(bad).map_err(|e| e.to_string());
        assert!(ours.is_err(), "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(ours, theirs);
    }
}

#[test]
fn other_values_are_skipped_not_validated() {
    // The contract: parsed only as far as routing needs; the backend validates the rest.
    let body = br#"{"model":"m","messages":[tru, {"a" 1}]}"#;
    assert_eq!(routing(body).unwrap().model.as_deref(), Some("m"));
    assert!(serde(body).is_err());
    // Structure is still checked: brackets must match, strings must end.
    for bad in [&br#"{"model":"m","x":[}"#[..], br#"{"model":"m","x":"abc}"#, br#"{"model":"m","x":}"#] {
        assert!(scan(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        assert!(routing(bad).is_err());
    }
}

#[test]
fn long_strings_with_escapes_anywhere_are_skipped_whole() {
    for at in [0, 1, 15, 16, 17, 40, 199] {
        let mut content = "x}]{[,".repeat(34);
        content.insert_str(at, "\\\"");
        let body = format!(r#"{{"messages":[{{"content":"{content}"}}],"model":"m"}}"#);
        let r = scan(body.as_bytes()).expect("scanned");
        assert_eq!(r.model.as_deref(), Some("m"), "escape at {at}");
        assert_eq!(r, serde(body.as_bytes()).unwrap());
    }
}

#[test]
fn deep_nesting_goes_to_serde() {
    let deep = format!(r#"{{"model":"m","x":{}{}}}"#, "[".repeat(100), "]".repeat(100));
    assert!(scan(deep.as_bytes()).is_none());
    assert_eq!(routing(deep.as_bytes()).unwrap().model.as_deref(), Some("m"));
}

/// Any JSON value (strings with quotes, backslashes, control characters and non-ASCII).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z\"\\\\/{}\\[\\],:\u{0}-\u{1f}é😀 ]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z\"\\\\]{0,6}", inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A routing field's value: usually the right type, sometimes not.
fn routing_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9.-]{1,10}".prop_map(Value::String),
        "(chat|completions|embeddings|high|low|normal)".prop_map(Value::String),
        "[a\"\\\\\u{1}é]{0,5}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!(7)),
        Just(json!(["x"])),
    ]
}

fn body() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let keys = prop::sample::subsequence(vec!["model", "stream", "async", "priority", "endpoint"], 0..=5);
    (prop::collection::vec(("[a-z_]{1,8}", any_json()), 0..5), keys, prop::collection::vec(routing_value(), 5), any::<bool>()).prop_map(
        |(others, keys, values, pretty)| {
            let mut m = Map::new();
            for (k, v) in others {
                m.insert(k, v);
            }
            for (k, v) in keys.into_iter().zip(values) {
                m.insert(k.to_owned(), v);
            }
            let v = Value::Object(m);
            let text = if pretty { serde_json::to_vec_pretty(&v) } else { serde_json::to_vec(&v) };
            (text.unwrap(), pretty)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// On valid JSON the scan and serde_json agree: same fields, or both refuse.
    #[test]
    fn the_scan_agrees_with_serde_on_valid_json((b, _pretty) in body()) {
        let ours = routing(&b).map_err(|e| e.to_string());
        let theirs = serde(&b).map_err(|e| e.to_string());
        prop_assert_eq!(ours, theirs);
    }

    /// Duplicated routing keys are refused as serde refuses them.
    #[test]
    fn a_routing_key_twice_is_refused((b, _) in body(), key in "(model|stream|priority)") {
        let text = String::from_utf8(b).unwrap();
        let twice = text.replacen('{', &format!("{{\"{key}\":null,\"{key}\":null,"), 1);
        prop_assert!(routing(twice.as_bytes()).is_err());
    }

    /// Nothing panics, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = routing(&b);
    }

    /// Nor valid bodies cut or with a byte changed.
    #[test]
    fn damaged_bodies_never_panic((b, _) in body(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut b = b;
        let i = at.index(b.len());
        if cut { b.truncate(i) } else { b[i] = byte }
        let _ = routing(&b);
    }
}
