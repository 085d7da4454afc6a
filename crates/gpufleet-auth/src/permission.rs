//! Permissions and the role → permissions table.
//!
//! A [`PermissionTable`] is one bitset per role, so [`PermissionTable::allows`] is an index and a
//! mask. The inline default ([`PermissionTable::default`]):
//!
//! | role | permissions |
//! |---|---|
//! | admin | everything (fixed: config cannot change it, so key management can never be locked out) |
//! | operator | everything except `KeysManage` and `AuditRead` |
//! | user | viewer's + `GatewayUse`, `JobsSubmit` (own jobs) |
//! | viewer | `TelemetryRead`, `FleetRead`, `JobsRead`, `MetricsRead`, `BrokerRead` |
//!
//! # Refining it in config
//! ```toml
//! [permissions]
//! operator = ["+KeysManage", "-DlqManage"]      # edits of the default
//! viewer = ["TelemetryRead", "FleetRead"]       # a full list replaces the default
//! ```
//! Each role's list is either all edits (`+Name`/`-Name`) or all plain names (a full list); mixing
//! them, an unknown role or permission name, or an entry for `admin` is an error naming the entry.

use crate::role::Role;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, str::FromStr};
use thiserror::Error;

macro_rules! permissions {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One thing a request may need to be allowed to do.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Permission { $($(#[$doc])* $name,)* }

        impl Permission {
            /// Every permission, in bit order.
            pub const ALL: &'static [Permission] = &[$(Permission::$name,)*];

            /// The name used in config (the variant name, e.g. `FleetWrite`).
            pub fn as_str(self) -> &'static str {
                match self { $(Permission::$name => stringify!($name),)* }
            }
        }
    };
}

permissions! {
    /// Read GPU telemetry, inventory and staleness.
    TelemetryRead,
    /// Ingest telemetry (`POST /api/v1/telemetry`).
    TelemetryWrite,
    /// Read hosts, health, score cards, alerts and worker status.
    FleetRead,
    /// Change the fleet: hosts, silences, container restarts.
    FleetWrite,
    /// Use the inference gateway (within the key's allowed models).
    GatewayUse,
    /// Read jobs.
    JobsRead,
    /// Submit jobs and manage (cancel, read logs of) one's own.
    JobsSubmit,
    /// Manage anyone's jobs.
    JobsManageAny,
    /// List, inspect, retry and discard dead letters.
    DlqManage,
    /// Create, list, rotate and revoke API keys.
    KeysManage,
    /// Read the audit log and verify its chain.
    AuditRead,
    /// Scrape `/metrics`.
    MetricsRead,
    /// Read broker topics, groups and stats.
    BrokerRead,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = PermissionConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| PermissionConfigError::UnknownPermission(s.to_owned()))
    }
}

/// A set of permissions as a bitset.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u32);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission.
    pub fn all() -> Self {
        Self::of(Permission::ALL)
    }

    /// The set of the given permissions.
    pub fn of(perms: &[Permission]) -> Self {
        perms.iter().fold(Self::EMPTY, |s, &p| s.with(p))
    }

    /// This set plus `p`.
    pub fn with(self, p: Permission) -> Self {
        Self(self.0 | bit(p))
    }

    /// This set minus `p`.
    pub fn without(self, p: Permission) -> Self {
        Self(self.0 & !bit(p))
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & bit(p) != 0
    }

    /// The permissions in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.iter().copied().filter(move |&p| self.contains(p))
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

fn bit(p: Permission) -> u32 {
    1 << (p as u32)
}

/// A bad `[permissions]` entry; the message names it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PermissionConfigError {
    /// A key of `[permissions]` that is not a role.
    #[error("[permissions]: unknown role {0:?} (expected operator, user or viewer)")]
    UnknownRole(String),
    /// `admin` cannot be refined.
    #[error("[permissions].admin: admin always holds every permission and cannot be changed")]
    AdminIsFixed,
    /// A name that is not a permission.
    #[error("[permissions]: unknown permission {0:?}")]
    UnknownPermission(String),
    /// A role's list mixes `+X`/`-X` edits with plain names.
    #[error("[permissions].{role}: entry {entry:?} mixes edits (+X/-X) with a full list; use one style per role")]
    MixedStyles {
        /// The role.
        role: Role,
        /// The entry that broke the style of the list.
        entry: String,
    },
    /// The TOML text does not parse.
    #[error("permission table: {0}")]
    Toml(String),
}

/// The `[permissions]` config table as written: role name → list of entries (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PermissionsConfig(pub BTreeMap<String, Vec<String>>);

/// Role → permissions, resolved and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionTable {
    sets: [PermissionSet; 4],
}

impl Default for PermissionTable {
    fn default() -> Self {
        use Permission::*;
        let viewer = PermissionSet::of(&[TelemetryRead, FleetRead, JobsRead, MetricsRead, BrokerRead]);
        let user = viewer.with(GatewayUse).with(JobsSubmit);
        let operator = PermissionSet::all().without(KeysManage).without(AuditRead);
        Self { sets: [PermissionSet::all(), operator, user, viewer] }
    }
}

impl PermissionTable {
    /// Whether `role` holds `perm`. O(1): an array index and a bit test.
    #[inline]
    pub fn allows(&self, role: Role, perm: Permission) -> bool {
        self.sets[role.index()].contains(perm)
    }

    /// Everything `role` holds.
    pub fn permissions(&self, role: Role) -> PermissionSet {
        self.sets[role.index()]
    }

    /// The default table refined by `config`.
    pub fn from_config(config: &PermissionsConfig) -> Result<Self, PermissionConfigError> {
        let mut table = Self::default();
        for (role_name, entries) in &config.0 {
            let role: Role = role_name.parse().map_err(|_| PermissionConfigError::UnknownRole(role_name.clone()))?;
            if role == Role::Admin {
                return Err(PermissionConfigError::AdminIsFixed);
            }
            table.sets[role.index()] = resolve(role, table.sets[role.index()], entries)?;
        }
        Ok(table)
    }

    /// Reads a TOML document holding a `[permissions]` table (other tables are ignored) and
    /// refines the default with it. A document without `[permissions]` gives the default.
    pub fn from_toml_str(text: &str) -> Result<Self, PermissionConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            permissions: PermissionsConfig,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| PermissionConfigError::Toml(e.to_string()))?;
        Self::from_config(&doc.permissions)
    }
}

fn resolve(role: Role, default: PermissionSet, entries: &[String]) -> Result<PermissionSet, PermissionConfigError> {
    let is_edit = |e: &str| e.starts_with('+') || e.starts_with('-');
    let edits = entries.first().is_some_and(|e| is_edit(e));
    let mut set = if edits { default } else { PermissionSet::EMPTY };
    for entry in entries {
        if is_edit(entry) != edits {
            return Err(PermissionConfigError::MixedStyles { role, entry: entry.clone() });
        }
        if !edits {
            set = set.with(entry.trim().parse()?);
            continue;
        }
        let perm: Permission = entry[1..].trim().parse()?;
        set = if entry.starts_with('+') { set.with(perm) } else { set.without(perm) };
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    #[test]
    fn default_table_matches_the_roles() {
        let t = PermissionTable::default();
        for &p in Permission::ALL {
            assert!(t.allows(Role::Admin, p), "{p}");
        }
        for p in [FleetWrite, DlqManage, JobsManageAny, TelemetryWrite, GatewayUse, FleetRead] {
            assert!(t.allows(Role::Operator, p), "{p}");
        }
        assert!(!t.allows(Role::Operator, KeysManage));
        assert!(!t.allows(Role::Operator, AuditRead));
        assert!(t.allows(Role::User, GatewayUse) && t.allows(Role::User, JobsSubmit));
        assert!(!t.allows(Role::User, JobsManageAny) && !t.allows(Role::User, FleetWrite));
        for p in [TelemetryRead, FleetRead, JobsRead, MetricsRead, BrokerRead] {
            assert!(t.allows(Role::Viewer, p), "{p}");
        }
        assert_eq!(t.permissions(Role::Viewer).iter().count(), 5);
    }

    #[test]
    fn edits_refine_the_default() {
        let t = PermissionTable::from_toml_str(
            "[server]\nport = 1\n[permissions]\noperator = [\"+KeysManage\", \"-DlqManage\"]\n",
        )
        .unwrap();
        assert!(t.allows(Role::Operator, KeysManage));
        assert!(!t.allows(Role::Operator, DlqManage));
        assert!(t.allows(Role::Operator, FleetWrite));
        assert_eq!(t.permissions(Role::User), PermissionTable::default().permissions(Role::User));
    }

    #[test]
    fn a_full_list_replaces_the_default() {
        let t = PermissionTable::from_toml_str("[permissions]\nviewer = [\"MetricsRead\"]\nuser = []\n").unwrap();
        assert_eq!(t.permissions(Role::Viewer), PermissionSet::of(&[MetricsRead]));
        assert_eq!(t.permissions(Role::User), PermissionSet::EMPTY);
        assert_eq!(PermissionTable::from_toml_str("").unwrap(), PermissionTable::default());
    }

    #[test]
    fn bad_entries_are_named() {
        let err = |s: &str| PermissionTable::from_toml_str(s).unwrap_err();
        assert_eq!(err("[permissions]\nguest = []"), PermissionConfigError::UnknownRole("guest".into()));
        assert_eq!(err("[permissions]\nadmin = [\"-KeysManage\"]"), PermissionConfigError::AdminIsFixed);
        assert_eq!(
            err("[permissions]\nuser = [\"+FleetWrites\"]"),
            PermissionConfigError::UnknownPermission("FleetWrites".into())
        );
        let mixed = err("[permissions]\nuser = [\"+FleetWrite\", \"DlqManage\"]");
        assert_eq!(mixed, PermissionConfigError::MixedStyles { role: Role::User, entry: "DlqManage".into() });
        assert!(mixed.to_string().contains("DlqManage"));
        assert!(matches!(err("[permissions]\nuser = 3"), PermissionConfigError::Toml(_)));
    }

    #[test]
    fn names_round_trip() {
        for &p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        assert!(Permission::ALL.len() <= 32, "the bitset is a u32");
    }
}
