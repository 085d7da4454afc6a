//! [`Scenario`]: how one simulated host behaves, and [`assign`], which spreads a scenario mix over
//! a fleet reproducibly from a seed.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a simulated host does. Text form (CLI flags, [`FromStr`]/[`fmt::Display`]):
/// `healthy`, `unreachable`, `slow:250` (ms), `degraded`, `disk-filling:20` (% per day),
/// `container-flapping:10000` (ms per phase), `gpu-xid`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scenario {
    /// Everything `ok`.
    #[default]
    Healthy,
    /// Its listener is closed and its open connections dropped: connections are refused, like a
    /// host that is down.
    Unreachable,
    /// Every answer waits this long first (ms).
    Slow {
        /// Delay per request, ms.
        ms: u64,
    },
    /// Overall `warn`: 3 % memory available and its model server down.
    Degraded,
    /// The `/data` disk starts at 70 % and fills at this rate from the moment the scenario is set
    /// (so it passes 85 % → `warn` and 95 % → `critical`; capped at 100 %). Use a large rate in
    /// tests (8640 %/day = 1 % every 10 s).
    DiskFilling {
        /// Percent of the disk per day.
        percent_per_day: f64,
    },
    /// The `inference` container cycles every `period_ms`: running but `unhealthy`, then
    /// `restarting` (restart count +1 per cycle). `warn`.
    ContainerFlapping {
        /// Length of one phase, ms.
        period_ms: u64,
    },
    /// GPU 3 reported XID 79 (fallen off the bus): `critical`.
    GpuXid,
}

impl Scenario {
    /// Default delay of `slow`.
    pub const DEFAULT_SLOW_MS: u64 = 250;
    /// Default rate of `disk-filling`.
    pub const DEFAULT_FILL_PERCENT_PER_DAY: f64 = 20.0;
    /// Default phase of `container-flapping`.
    pub const DEFAULT_FLAP_MS: u64 = 10_000;

    /// Whether the host answers at all.
    pub fn is_reachable(&self) -> bool {
        !matches!(self, Scenario::Unreachable)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scenario::Healthy => f.write_str("healthy"),
            Scenario::Unreachable => f.write_str("unreachable"),
            Scenario::Slow { ms } => write!(f, "slow:{ms}"),
            Scenario::Degraded => f.write_str("degraded"),
            Scenario::DiskFilling { percent_per_day } => write!(f, "disk-filling:{percent_per_day}"),
            Scenario::ContainerFlapping { period_ms } => write!(f, "container-flapping:{period_ms}"),
            Scenario::GpuXid => f.write_str("gpu-xid"),
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let num = |default: f64| -> Result<f64, String> {
            match arg {
                None => Ok(default),
                Some(a) => a.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| format!("{name}: {a:?} is not a non-negative number")),
            }
        };
        let no_arg = |v: Scenario| match arg {
            None => Ok(v),
            Some(_) => Err(format!("{name} takes no argument")),
        };
        match name.replace('_', "-").as_str() {
            "healthy" => no_arg(Scenario::Healthy),
            "unreachable" => no_arg(Scenario::Unreachable),
            "degraded" => no_arg(Scenario::Degraded),
            "gpu-xid" => no_arg(Scenario::GpuXid),
            "slow" => Ok(Scenario::Slow { ms: num(Scenario::DEFAULT_SLOW_MS as f64)? as u64 }),
            "disk-filling" => Ok(Scenario::DiskFilling { percent_per_day: num(Scenario::DEFAULT_FILL_PERCENT_PER_DAY)? }),
            "container-flapping" => Ok(Scenario::ContainerFlapping { period_ms: (num(Scenario::DEFAULT_FLAP_MS as f64)? as u64).max(1) }),
            other => Err(format!(
                "unknown scenario {other:?}: use healthy, unreachable, slow[:ms], degraded, disk-filling[:%/day], container-flapping[:ms] or gpu-xid"
            )),
        }
    }
}

/// The scenario of each of `hosts` hosts: every host `Healthy`, then for each `(scenario, fraction)`
/// of `mix` that many hosts (rounded) taken from a seeded shuffle (so the same seed gives the same
/// fleet, and mixes do not overlap), then the explicit `(index, scenario)` pairs of `assign`.
/// Fractions summing over 1 stop when the hosts run out; an index out of range is ignored.
pub fn assign(hosts: usize, mix: &[(Scenario, f64)], assign: &[(usize, Scenario)], seed: u64) -> Vec<Scenario> {
    let mut out = vec![Scenario::Healthy; hosts];
    let mut order: Vec<usize> = (0..hosts).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut next = order.into_iter();
    for (scenario, fraction) in mix {
        let n = (hosts as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        for i in next.by_ref().take(n) {
            out[i] = scenario.clone();
        }
    }
    for (i, s) in assign {
        if let Some(slot) = out.get_mut(*i) {
            *slot = s.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_nonsense() {
        for s in ["healthy", "unreachable", "slow:40", "degraded", "disk-filling:8640", "container-flapping:500", "gpu-xid"] {
            assert_eq!(s.parse::<Scenario>().unwrap().to_string(), s);
        }
        assert_eq!("slow".parse::<Scenario>().unwrap(), Scenario::Slow { ms: 250 });
        assert!("slow:-1".parse::<Scenario>().is_err());
        assert!("healthy:3".parse::<Scenario>().is_err());
        assert!("on-fire".parse::<Scenario>().unwrap_err().contains("unknown scenario"));
    }

    #[test]
    fn mix_is_seeded_disjoint_and_overridden() {
        let mix = [(Scenario::Unreachable, 0.1), (Scenario::Degraded, 0.2)];
        let a = assign(100, &mix, &[(0, Scenario::GpuXid)], 7);
        assert_eq!(a, assign(100, &mix, &[(0, Scenario::GpuXid)], 7));
        assert_ne!(a, assign(100, &mix, &[(0, Scenario::GpuXid)], 8));
        assert_eq!(a[0], Scenario::GpuXid);
        let count = |s: &Scenario| a.iter().filter(|x| *x == s).count();
        let un = count(&Scenario::Unreachable);
        let de = count(&Scenario::Degraded);
        assert!((9..=10).contains(&un) && (19..=20).contains(&de), "{un} {de}");
        assert_eq!(assign(3, &[(Scenario::Degraded, 5.0)], &[(9, Scenario::GpuXid)], 1), vec![Scenario::Degraded; 3]);
    }
}
