//! Turning Redis errors into [`BrokerError`]s, and URLs into text that is safe to show.

use crate::BrokerError;
use gpufleet_core::{GroupName, TopicName};
use redis::{ErrorKind, RedisError};

/// The error of a failed Redis call: `Corrupt` for replies of an unexpected shape and keys of the
/// wrong type (retrying cannot help), `Unavailable` (retryable) for everything else.
pub(super) fn backend(error: RedisError) -> BrokerError {
    if matches!(error.kind(), ErrorKind::TypeError) || error.code() == Some("WRONGTYPE") {
        return BrokerError::Corrupt(format!("unexpected reply from Redis: {error}"));
    }
    BrokerError::Unavailable(format!("redis: {error}"))
}

/// Like [`backend`], but `NOGROUP` means the group does not exist on the topic.
pub(super) fn for_group(error: RedisError, topic: &TopicName, group: &GroupName) -> BrokerError {
    if error.code() == Some("NOGROUP") {
        return BrokerError::UnknownGroup {
            topic: topic.clone(),
            group: group.clone(),
        };
    }
    backend(error)
}

/// Whether the call failed because its connection was dead (so retrying it once on a new
/// connection is worthwhile), as opposed to a timeout or an answer from the server.
pub(super) fn connection_lost(error: &RedisError) -> bool {
    error.is_connection_dropped()
        || error.is_connection_refusal()
        || (error.is_io_error() && error.is_unrecoverable_error())
}

/// A reply that does not have the shape the broker expects.
pub(super) fn bad_reply(what: &str) -> BrokerError {
    BrokerError::Corrupt(format!("unexpected reply from Redis: {what}"))
}

/// `url` with the password (and any query string, which may carry one) replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<invalid redis url>".to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (rest, query) = match rest.find('?') {
        Some(q) => (&rest[..q], "?***"),
        None => (rest, ""),
    };
    let shown = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host) = (&rest[..at], &rest[at..]);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => format!("{userinfo}{host}"),
            }
        }
        None => rest.to_string(),
    };
    format!("{scheme}{shown}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            (
                "redis://:pw@127.0.0.1:6379/2",
                "redis://:***@127.0.0.1:6379/2",
            ),
            ("rediss://bob:p%40ss@host:1", "rediss://bob:***@host:1"),
            ("redis://bob@host", "redis://bob@host"),
            ("redis://a:b:c@h?password=x", "redis://a:***@h?***"),
            ("not a url", "<invalid redis url>"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn nogroup_is_an_unknown_group_and_io_is_retryable() {
        let (t, g) = (TopicName::new("t"), GroupName::new("g"));
        let nogroup = redis::make_extension_error("NOGROUP".into(), Some("no such group".into()));
        assert!(matches!(
            for_group(nogroup, &t, &g),
            BrokerError::UnknownGroup { .. }
        ));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(connection_lost(&io));
        assert!(backend(io).is_retryable());
        let wrong = RedisError::from((ErrorKind::TypeError, "bad"));
        assert!(!backend(wrong).is_retryable());
    }
}
