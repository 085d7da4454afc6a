//! Key names, message ids (`ms-seq` ⇄ [`MessageId`]), name checks and the parsing of stream
//! entries (messages and dead letters) out of raw Redis replies.

use super::error::bad_reply;
use crate::{dead_letter_topic, BrokerError, DeadLetter, MessageId};
use bytes::Bytes;
use gpufleet_core::{GroupName, TopicName};
use redis::Value;

/// Longest topic or group name accepted from callers (the embedded backend's limit).
const MAX_NAME: usize = 200;

/// Rejects a topic or group name the embedded backend would reject too, so both backends accept
/// the same names (and no name holds `:` or glob characters).
pub(super) fn check_name(name: &str) -> Result<(), BrokerError> {
    if crate::embedded::valid_name(name) && name.len() <= MAX_NAME {
        Ok(())
    } else {
        Err(BrokerError::InvalidName(name.to_string()))
    }
}

/// The key names of one prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The stream of a topic.
    pub(super) fn stream(&self, topic: &TopicName) -> String {
        format!("{}:t:{topic}", self.prefix)
    }

    /// The dead-letter stream of a topic.
    pub(super) fn dead(&self, topic: &TopicName) -> String {
        self.stream(&dead_letter_topic(topic))
    }

    /// The hash of nack reasons of a group.
    pub(super) fn reasons(&self, topic: &TopicName, group: &GroupName) -> String {
        format!("{}:nack:{topic}:{group}", self.prefix)
    }

    /// `{prefix}:` with the glob characters of the prefix escaped, for `SCAN MATCH`.
    pub(super) fn prefix_pattern(&self) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 1);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push(':');
        out
    }

    /// The `SCAN MATCH` pattern of every stream.
    pub(super) fn stream_pattern(&self) -> String {
        format!("{}t:*", self.prefix_pattern())
    }

    /// The topic a stream key belongs to, if it is one of this prefix.
    pub(super) fn topic_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix(":t:")
    }
}

/// `ms-seq` as a [`MessageId`].
pub(super) fn parse_id(id: &[u8]) -> Result<MessageId, BrokerError> {
    let text = std::str::from_utf8(id).map_err(|_| bad_reply("non-UTF-8 stream id"))?;
    let (ms, seq) = text
        .split_once('-')
        .ok_or_else(|| bad_reply(&format!("stream id {text:?}")))?;
    let parse = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| bad_reply(&format!("stream id {text:?}")))
    };
    Ok(MessageId(
        (u128::from(parse(ms)?) << 64) | u128::from(parse(seq)?),
    ))
}

/// A [`MessageId`] as the `ms-seq` Redis knows.
pub(super) fn format_id(id: MessageId) -> String {
    // Two u64s: formatting the u128 halves directly is several times slower.
    let (ms, seq) = ((id.0 >> 64) as u64, id.0 as u64);
    format!("{ms}-{seq}")
}

/// The bytes of a bulk-string (or simple-string) reply.
pub(super) fn bytes_of(value: Value) -> Result<Vec<u8>, BrokerError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Okay => Ok(b"OK".to_vec()),
        other => Err(bad_reply(&format!("expected a string, got {other:?}"))),
    }
}

/// The integer of an integer (or numeric string) reply.
pub(super) fn int_of(value: &Value) -> Result<i64, BrokerError> {
    match value {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_reply("expected an integer")),
        Value::SimpleString(s) => s.parse().map_err(|_| bad_reply("expected an integer")),
        other => Err(bad_reply(&format!("expected an integer, got {other:?}"))),
    }
}

/// The elements of an array reply (`Nil` is an empty array).
pub(super) fn array_of(value: Value) -> Result<Vec<Value>, BrokerError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad_reply(&format!("expected an array, got {other:?}"))),
    }
}

/// A flat `[field, value, field, value, …]` (or RESP3 map) reply as pairs with string fields.
pub(super) fn fields_of(value: Value) -> Result<Vec<(String, Value)>, BrokerError> {
    if let Value::Map(pairs) = value {
        return pairs
            .into_iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&bytes_of(k)?).into_owned(), v)))
            .collect();
    }
    let mut items = array_of(value)?.into_iter();
    let mut out = Vec::with_capacity(items.len() / 2);
    while let Some(field) = items.next() {
        let field = String::from_utf8_lossy(&bytes_of(field)?).into_owned();
        out.push((field, items.next().unwrap_or(Value::Nil)));
    }
    Ok(out)
}

/// A stream entry's `payload` field (the first field's value when there is no `payload`, so
/// entries added by other tools are still delivered). No allocation but the payload's own.
pub(super) fn payload_of(fields: Value) -> Result<Bytes, BrokerError> {
    let mut items = match fields {
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => array_of(other)?,
    };
    let is_payload = |v: &Value| match v {
        Value::BulkString(b) => b == b"payload",
        Value::SimpleString(s) => s == "payload",
        _ => false,
    };
    let at = items
        .iter()
        .step_by(2)
        .position(is_payload)
        .map_or(1, |field| field * 2 + 1);
    if at >= items.len() {
        return Ok(Bytes::new());
    }
    Ok(Bytes::from(bytes_of(items.swap_remove(at))?))
}

/// The entries `[[id, [field, value, …]], …]` of an `XRANGE`/`XCLAIM` reply; deleted entries
/// (a nil in place of the fields) are skipped.
pub(super) fn entries_of(value: Value) -> Result<Vec<(MessageId, Value)>, BrokerError> {
    let mut out = Vec::new();
    for entry in array_of(value)? {
        let mut parts = array_of(entry)?.into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            continue;
        };
        if fields == Value::Nil {
            continue;
        }
        out.push((parse_id(&bytes_of(id)?)?, fields));
    }
    Ok(out)
}

/// The entries of an `XREADGROUP` reply for a single stream (`Nil` when it timed out).
pub(super) fn read_reply_entries(value: Value) -> Result<Vec<(MessageId, Value)>, BrokerError> {
    let Some(stream) = array_of(value)?.into_iter().next() else {
        return Ok(Vec::new());
    };
    let mut parts = array_of(stream)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(_key), Some(entries)) => entries_of(entries),
        _ => Err(bad_reply("XREADGROUP stream without entries")),
    }
}

/// A string field of a dead-letter entry.
fn text_field(fields: &[(String, Value)], name: &str) -> Option<String> {
    let (_, value) = fields.iter().find(|(f, _)| f == name)?;
    bytes_of(value.clone())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Decodes one entry of a dead stream.
pub(super) fn dead_letter_of(
    topic: &TopicName,
    id: MessageId,
    fields: Value,
) -> Result<DeadLetter, BrokerError> {
    let fields = fields_of(fields)?;
    let missing = |what: &str| bad_reply(&format!("dead letter {id} without {what}"));
    let original = text_field(&fields, "original_id").ok_or_else(|| missing("original_id"))?;
    let number = |name: &str| {
        fields
            .iter()
            .find(|(f, _)| f == name)
            .and_then(|(_, v)| int_of(v).ok())
            .ok_or_else(|| missing(name))
    };
    let payload = fields
        .iter()
        .find(|(f, _)| f == "payload")
        .map(|(_, v)| bytes_of(v.clone()))
        .transpose()?
        .unwrap_or_default();
    Ok(DeadLetter {
        id,
        topic: text_field(&fields, "topic").map_or_else(|| topic.clone(), TopicName::new),
        group: GroupName::new(text_field(&fields, "group").unwrap_or_default()),
        original_id: parse_id(original.as_bytes())?,
        reason: text_field(&fields, "reason").unwrap_or_default(),
        attempts: u32::try_from(number("attempts")?).unwrap_or(u32::MAX),
        dead_at_ms: number("dead_at_ms")?,
        payload: Bytes::from(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order_like_redis() {
        for text in [
            "0-1",
            "1700000000000-0",
            "1700000000000-42",
            "18446744073709551615-18446744073709551615",
        ] {
            let id = parse_id(text.as_bytes()).expect("valid id");
            assert_eq!(format_id(id), text);
        }
        let a = parse_id(b"5-9").expect("id");
        let b = parse_id(b"6-0").expect("id");
        assert!(a < b);
        for bad in ["", "5", "5-", "-5", "a-1", "1-2-3"] {
            assert!(parse_id(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_keys() {
        let keys = Keys::new("gf*test");
        let t = TopicName::new("telemetry");
        assert_eq!(keys.stream(&t), "gf*test:t:telemetry");
        assert_eq!(keys.dead(&t), "gf*test:t:telemetry.dead");
        assert_eq!(keys.stream_pattern(), "gf\\*test:t:*");
        assert_eq!(
            keys.topic_of("gf*test:t:telemetry.dead"),
            Some("telemetry.dead")
        );
        assert_eq!(keys.topic_of("other:t:x"), None);
        assert!(check_name("ok.name-1_2").is_ok());
        for bad in ["", "a:b", "a*", ".hidden", &"x".repeat(201)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_prefers_the_payload_field() {
        let fields = Value::Array(vec![
            Value::BulkString(b"other".to_vec()),
            Value::BulkString(b"x".to_vec()),
            Value::BulkString(b"payload".to_vec()),
            Value::BulkString(b"body".to_vec()),
        ]);
        assert_eq!(
            payload_of(fields).expect("payload"),
            Bytes::from_static(b"body")
        );
        let foreign = Value::Array(vec![
            Value::BulkString(b"f".to_vec()),
            Value::BulkString(b"v".to_vec()),
        ]);
        assert_eq!(
            payload_of(foreign).expect("payload"),
            Bytes::from_static(b"v")
        );
        assert_eq!(
            payload_of(Value::Array(vec![])).expect("payload"),
            Bytes::new()
        );
    }
}
