//! The four roles a key can hold. What each role may do lives in [`crate::permission`].

use serde::{Deserialize, Serialize};
use std::{fmt, str::FromStr};
use thiserror::Error;

/// A key's role, from most to least powerful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including key management and the audit log.
    Admin,
    /// Fleet actions: restarts, silences, DLQ retry, cancelling anyone's jobs.
    Operator,
    /// Submits and manages own jobs; uses the inference gateway within its allowed models.
    User,
    /// Read-only.
    Viewer,
}

/// A role name that is not one of `admin`, `operator`, `user`, `viewer`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown role {0:?} (expected admin, operator, user or viewer)")]
pub struct UnknownRole(pub String);

impl Role {
    /// Every role, in table order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::User, Role::Viewer];

    /// The lowercase name used in config, storage and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::User => "user",
            Role::Viewer => "viewer",
        }
    }

    /// Position in [`Role::ALL`], for table lookups.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(Role::ALL[r.index()], r);
        }
        assert_eq!("Admin".parse::<Role>(), Err(UnknownRole("Admin".into())));
        assert_eq!(serde_json::to_string(&Role::Operator).unwrap(), "\"operator\"");
    }
}
