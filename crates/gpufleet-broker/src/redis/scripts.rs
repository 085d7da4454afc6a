//! The Lua scripts that make a fetch, a nack and a trim one atomic step inside Redis, their
//! loading (`SCRIPT LOAD`, `EVALSHA`), and the parsing of their replies. Redis runs a script without interleaving other commands and writes
//! its effects to the AOF as one `MULTI`/`EXEC`, which is what makes a dead letter (XADD to the
//! dead stream + XACK of the original) all-or-nothing across crashes.

use super::{
    error::bad_reply,
    keys::{bytes_of, int_of, parse_id},
};
use crate::{BrokerError, Message};
use bytes::Bytes;
use redis::{aio::ConnectionLike, Cmd, RedisResult, Value};
use std::time::Duration;

/// Helpers shared by the scripts: `payload_of(fields)` and `dead_letter(…)`, which moves one
/// pending entry to the dead stream and acks it.
const PRELUDE: &str = r#"
local function payload_of(fields)
  if type(fields) ~= 'table' then return '' end
  for i = 1, #fields, 2 do
    if fields[i] == 'payload' then return fields[i + 1] end
  end
  return fields[2] or ''
end

local function dead_letter(stream, dead, reasons, group, topic, dead_maxlen, id, count, reason)
  local entry = redis.call('XRANGE', stream, id, id)
  local payload = ''
  if entry[1] then
    payload = payload_of(entry[1][2])
  else
    reason = reason .. ' (the entry was no longer in the stream)'
  end
  local t = redis.call('TIME')
  local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  if dead_maxlen > 0 then
    redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'payload', payload, 'topic', topic,
      'group', group, 'original_id', id, 'reason', reason, 'attempts', count, 'dead_at_ms', now)
  else
    redis.call('XADD', dead, '*', 'payload', payload, 'topic', topic, 'group', group,
      'original_id', id, 'reason', reason, 'attempts', count, 'dead_at_ms', now)
  end
  redis.call('XACK', stream, group, id)
  redis.call('HDEL', reasons, id)
end
"#;

/// KEYS: stream, dead stream, nack reasons. ARGV: group, consumer, topic, visibility ms, max
/// messages, max attempts, dead-stream max len (0: none), grace ms (an entry out of attempts is
/// dead-lettered only once idle for visibility + grace).
/// Returns `{ms until a pending entry may come due, dead letters written, id, payload, attempt,
/// id, payload, attempt, …}` for the entries it claimed (none: new entries are read outside).
const RECLAIM: &str = r#"
local stream, dead, reasons = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, topic = ARGV[1], ARGV[2], ARGV[3]
local vis, want, max_attempts = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local dead_maxlen, grace = tonumber(ARGV[7]), tonumber(ARGV[8])

-- Redis filters the pending entries list by idle time itself (in C), so this costs little when
-- nothing is due. Entries out of attempts but still in their grace time take no room in `due`;
-- a few more pages are read past them.
local due, counts, dead_n, next_due, start = {}, {}, 0, nil, '-'
for page = 1, 4 do
  local idle_ones = redis.call('XPENDING', stream, group, 'IDLE', vis, start, '+', want)
  for _, p in ipairs(idle_ones) do
    local id, idle, count = p[1], p[3], p[4]
    if count < max_attempts then
      if #due < want then
        due[#due + 1] = id
        counts[id] = count
      end
    elseif idle >= vis + grace then
      local reason = redis.call('HGET', reasons, id)
      if not reason then
        reason = 'visibility timeout expired after ' .. count .. ' deliveries'
      end
      dead_letter(stream, dead, reasons, group, topic, dead_maxlen, id, count, reason)
      dead_n = dead_n + 1
    elseif next_due == nil or vis + grace - idle < next_due then
      next_due = vis + grace - idle
    end
  end
  if #due >= want or #idle_ones < want then break end
  start = '(' .. idle_ones[#idle_ones][1]
end
-- Besides those, a guess: the pending entry with the smallest id is usually the one delivered
-- longest ago. A wrong guess only makes a waiting fetch look again later, within the visibility
-- timeout.
local oldest = redis.call('XPENDING', stream, group, '-', '+', 1)
if oldest[1] and oldest[1][3] < vis then
  local guess = vis - oldest[1][3]
  if next_due == nil or guess < next_due then next_due = guess end
end
if next_due == nil then next_due = vis end

local out = {next_due, dead_n}
for i = 1, #due, 500 do
  local claimed = redis.call('XCLAIM', stream, group, consumer, vis, unpack(due, i, math.min(i + 499, #due)))
  for _, e in ipairs(claimed) do
    if type(e) == 'table' and type(e[2]) == 'table' then
      out[#out + 1] = e[1]
      out[#out + 1] = payload_of(e[2])
      out[#out + 1] = counts[e[1]] + 1
    end
  end
end
return out
"#;

/// KEYS: stream, dead stream, nack reasons. ARGV: group, topic, id, reason, visibility ms, max
/// attempts, dead-stream max len. Returns 0 (not pending), 1 (due at once) or 2 (dead-lettered).
const NACK: &str = r#"
local stream, dead, reasons = KEYS[1], KEYS[2], KEYS[3]
local group, topic, id, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local vis, max_attempts, dead_maxlen = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local p = redis.call('XPENDING', stream, group, id, id, 1)
if #p == 0 then return 0 end
if p[1][4] >= max_attempts then
  dead_letter(stream, dead, reasons, group, topic, dead_maxlen, id, p[1][4], reason)
  return 2
end
redis.call('HSET', reasons, id, reason)
redis.call('XCLAIM', stream, group, p[1][2], 0, id, 'IDLE', vis, 'JUSTID')
return 1
"#;

/// KEYS: stream. ARGV: idle ms after which a consumer with nothing pending is forgotten.
/// Trims entries below the oldest pending-or-undelivered entry of every group. Returns
/// `{entries trimmed, consumers forgotten}`.
const TRIM: &str = r#"
local stream, forget_ms = KEYS[1], tonumber(ARGV[1])
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end
local best, best_ms, best_seq, forgotten = nil, 0, 0, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local name = field(g, 'name')
  local bound = field(g, 'last-delivered-id')
  local summary = redis.call('XPENDING', stream, name)
  if summary[1] > 0 then bound = summary[2] end
  local ms, seq = string.match(bound, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if best == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best, best_ms, best_seq = bound, ms, seq
  end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, name)) do
    if field(c, 'pending') == 0 and field(c, 'idle') > forget_ms then
      redis.call('XGROUP', 'DELCONSUMER', stream, name, field(c, 'name'))
      forgotten = forgotten + 1
    end
  end
end
if best == nil then return {0, forgotten} end
return {redis.call('XTRIM', stream, 'MINID', '~', best), forgotten}
"#;

/// A Lua script known to the server by its SHA1 (`SCRIPT LOAD`); invoked with `EVALSHA`.
pub(super) struct LuaScript {
    source: String,
    sha: String,
}

impl LuaScript {
    /// Loads `source` into the script cache of the server behind `conn`.
    async fn load(source: String, conn: &mut impl ConnectionLike) -> RedisResult<Self> {
        let sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(&source)
            .query_async(conn)
            .await?;
        Ok(Self { source, sha })
    }

    /// `SCRIPT LOAD` again (after a Redis restart emptied the cache: `NOSCRIPT`).
    pub(super) fn reload_cmd(&self) -> Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(&self.source);
        cmd
    }

    /// `EVALSHA sha <keys…>`; add the arguments to it.
    pub(super) fn invocation(&self, keys: &[&str]) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        cmd
    }
}

/// The three scripts.
pub(super) struct Scripts {
    pub(super) reclaim: LuaScript,
    pub(super) nack: LuaScript,
    pub(super) trim: LuaScript,
}

impl Scripts {
    /// Loads the scripts on the server behind `conn`.
    pub(super) async fn load(conn: &mut impl ConnectionLike) -> RedisResult<Self> {
        Ok(Self {
            reclaim: LuaScript::load(format!("{PRELUDE}{RECLAIM}"), conn).await?,
            nack: LuaScript::load(format!("{PRELUDE}{NACK}"), conn).await?,
            trim: LuaScript::load(TRIM.to_string(), conn).await?,
        })
    }
}

/// What one run of the reclaim script did.
#[derive(Debug)]
pub(super) struct Reclaimed {
    /// How long until a pending entry may come due (a guess when none was idle enough).
    pub(super) next_due: Duration,
    /// Dead letters written.
    pub(super) dead: u64,
    /// Redelivered messages.
    pub(super) messages: Vec<Message>,
}

/// Parses the reclaim script's reply.
pub(super) fn parse_reclaimed(value: Value) -> Result<Reclaimed, BrokerError> {
    let Value::Array(items) = value else {
        return Err(bad_reply("reclaim script did not return an array"));
    };
    let mut items = items.into_iter();
    let (Some(next_due), Some(dead)) = (items.next(), items.next()) else {
        return Err(bad_reply("reclaim script reply too short"));
    };
    let next_due = Duration::from_millis(u64::try_from(int_of(&next_due)?).unwrap_or(0));
    let dead = u64::try_from(int_of(&dead)?).unwrap_or(0);
    let mut messages = Vec::with_capacity(items.len() / 3);
    while let (Some(id), Some(payload), Some(attempt)) = (items.next(), items.next(), items.next())
    {
        messages.push(Message {
            id: parse_id(&bytes_of(id)?)?,
            payload: Bytes::from(bytes_of(payload)?),
            attempt: u32::try_from(int_of(&attempt)?).map_err(|_| bad_reply("attempt"))?,
        });
    }
    Ok(Reclaimed {
        next_due,
        dead,
        messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reclaim_reply() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            Value::Int(120),
            Value::Int(2),
            bulk("5-2"),
            bulk("hello"),
            Value::Int(3),
            bulk("6-0"),
            bulk(""),
            Value::Int(2),
        ]);
        let found = parse_reclaimed(reply).expect("valid reply");
        assert_eq!(
            (found.next_due, found.dead),
            (Duration::from_millis(120), 2)
        );
        let got: Vec<_> = found
            .messages
            .iter()
            .map(|m| (m.id, &m.payload[..], m.attempt))
            .collect();
        assert_eq!(
            got,
            vec![
                (crate::MessageId((5 << 64) | 2), &b"hello"[..], 3),
                (crate::MessageId(6 << 64), &b""[..], 2)
            ]
        );
        assert!(parse_reclaimed(Value::Array(vec![Value::Int(1)])).is_err());
        assert!(parse_reclaimed(Value::Nil).is_err());
    }
}
