//! Process limits a long-running gpufleet process adjusts at start: the open-file limit.

use tracing::warn;

/// Lifts the soft `RLIMIT_NOFILE` to at least `wanted` (at most the hard limit); returns the soft
/// limit in force afterwards. Never lowers it.
pub fn raise_nofile(wanted: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let target = lim.maximum.map_or(wanted, |h| wanted.min(h));
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: lim.maximum }) {
        Ok(()) => target,
        Err(error) => {
            warn!(%error, soft, target, "could not raise the open-file limit");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_toward_the_hard_one_and_never_lowered() {
        let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let soft = lim.current.unwrap_or(u64::MAX);
        assert_eq!(raise_nofile(1), soft, "asking for less changes nothing");
        let hard = lim.maximum.unwrap_or(u64::MAX);
        let got = raise_nofile(hard);
        assert_eq!(got, hard.max(soft));
        assert_eq!(rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX), got);
    }
}
