//! The dead-letter envelope: what the embedded broker appends to `<topic>.dead`.
//!
//! Layout (little endian): `[version = 1: u8][topic len: u16][topic][group len: u16][group]
//! [original id: u128][attempts: u32][dead at, epoch ms: i64][reason len: u32][reason][payload…]`.

use crate::{DeadLetter, MessageId};
use bytes::Bytes;
use gpufleet_core::{GroupName, TopicName};

const VERSION: u8 = 1;

/// Everything a dead letter records except its own id.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub(crate) topic: &'a TopicName,
    pub(crate) group: &'a GroupName,
    pub(crate) original_id: MessageId,
    pub(crate) reason: &'a str,
    pub(crate) attempts: u32,
    pub(crate) dead_at_ms: i64,
    pub(crate) payload: &'a [u8],
}

impl Envelope<'_> {
    /// The bytes appended to the dead-letter topic.
    pub(crate) fn encode(&self) -> Bytes {
        let (topic, group) = (
            self.topic.as_str().as_bytes(),
            self.group.as_str().as_bytes(),
        );
        // Names are validated (at most 200 bytes); reasons longer than 64 KiB are cut.
        let reason = truncate_utf8(self.reason, 64 << 10).as_bytes();
        let mut buf = Vec::with_capacity(
            1 + 2 + topic.len() + 2 + group.len() + 32 + reason.len() + self.payload.len(),
        );
        buf.push(VERSION);
        buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        buf.extend_from_slice(topic);
        buf.extend_from_slice(&(group.len() as u16).to_le_bytes());
        buf.extend_from_slice(group);
        buf.extend_from_slice(&self.original_id.0.to_le_bytes());
        buf.extend_from_slice(&self.attempts.to_le_bytes());
        buf.extend_from_slice(&self.dead_at_ms.to_le_bytes());
        buf.extend_from_slice(&(reason.len() as u32).to_le_bytes());
        buf.extend_from_slice(reason);
        buf.extend_from_slice(self.payload);
        Bytes::from(buf)
    }
}

/// Decodes an envelope stored at `id` in a dead-letter topic.
pub(crate) fn decode(id: MessageId, bytes: &Bytes) -> Result<DeadLetter, &'static str> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(1)?[0] != VERSION {
        return Err("unknown dead-letter envelope version");
    }
    let topic = r.string(2)?;
    let group = r.string(2)?;
    let original_id = MessageId(u128::from_le_bytes(r.array()?));
    let attempts = u32::from_le_bytes(r.array()?);
    let dead_at_ms = i64::from_le_bytes(r.array()?);
    let reason = r.string(4)?;
    Ok(DeadLetter {
        id,
        topic: TopicName::new(topic),
        group: GroupName::new(group),
        original_id,
        reason: reason.to_string(),
        attempts,
        dead_at_ms,
        payload: bytes.slice(r.at..),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let out = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or("dead-letter envelope cut short")?;
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?
            .try_into()
            .map_err(|_| "dead-letter envelope cut short")
    }

    /// A string preceded by its length in `width` (2 or 4) bytes.
    fn string(&mut self, width: usize) -> Result<&'a str, &'static str> {
        let len = self
            .take(width)?
            .iter()
            .rev()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        std::str::from_utf8(self.take(len)?).map_err(|_| "dead-letter envelope holds invalid UTF-8")
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let (topic, group) = (TopicName::new("t"), GroupName::new("g"));
        let env = Envelope {
            topic: &topic,
            group: &group,
            original_id: MessageId(42),
            reason: "parse error: ünïcode",
            attempts: 5,
            dead_at_ms: 1_700_000_000_000,
            payload: b"payload",
        };
        let dl = decode(MessageId(7), &env.encode()).unwrap();
        assert_eq!(
            (dl.id, dl.original_id, dl.attempts),
            (MessageId(7), MessageId(42), 5)
        );
        assert_eq!(
            (dl.topic.as_str(), dl.group.as_str(), dl.reason.as_str()),
            ("t", "g", "parse error: ünïcode")
        );
        assert_eq!(
            (dl.dead_at_ms, &dl.payload[..]),
            (1_700_000_000_000, &b"payload"[..])
        );
        assert!(decode(MessageId(7), &Bytes::from_static(b"\x01\x05")).is_err());
    }
}
