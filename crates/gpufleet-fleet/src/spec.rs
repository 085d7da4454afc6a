//! What a caller gives to register or change a host: [`HostInput`] (the JSON body of
//! `POST /api/v1/hosts` and a `[[fleet.hosts]]` config entry, as written), its validation into
//! [`HostSpec`] (every refusal names the field), and [`HostPatch`] for `PUT` (given fields replace).
//!
//! Rules: `name` 1–253 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit, not all digits
//! (so `/hosts/{id}` can take an id or a name); `agent_url` an `http`/`https` URL with a host and
//! no query or fragment (a trailing `/` is dropped); `address` defaults to the URL's host; groups
//! 1–64 bytes of the name alphabet, sorted and deduplicated; at most 64 tags, keys 1–64 bytes of
//! `[A-Za-z0-9._/-]`, values at most 256 bytes without control characters.

use crate::error::FleetError;
use crate::model::HostStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A host as written by a client or in the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInput {
    /// Unique name.
    pub name: String,
    /// Address for people and tools; default: the host part of `agent_url`.
    #[serde(default)]
    pub address: Option<String>,
    /// Base URL of the agent (`http://10.0.0.5:9100`).
    pub agent_url: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `true`: status `maintenance`. Default false.
    #[serde(default)]
    pub maintenance: Option<bool>,
    /// `active`, `inactive` or `maintenance` (instead of `maintenance`; both must agree).
    #[serde(default)]
    pub status: Option<String>,
    /// Whether the watchdog may restart its containers. Default false.
    #[serde(default)]
    pub watchdog: Option<bool>,
}

/// A validated host registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    /// Valid name.
    pub name: String,
    /// Non-empty address.
    pub address: String,
    /// Normalised agent URL (no trailing `/`).
    pub agent_url: String,
    /// Sorted, deduplicated groups.
    pub groups: Vec<String>,
    /// Valid tags.
    pub tags: BTreeMap<String, String>,
    /// Status.
    pub status: HostStatus,
    /// Watchdog opt-in.
    pub watchdog: bool,
}

/// A change to a host (`PUT /api/v1/hosts/{id}`): every given field replaces the stored one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPatch {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New address.
    #[serde(default)]
    pub address: Option<String>,
    /// New agent URL.
    #[serde(default)]
    pub agent_url: Option<String>,
    /// New groups (the whole list).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// New tags (the whole map).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// `true` → maintenance, `false` → active.
    #[serde(default)]
    pub maintenance: Option<bool>,
    /// New status.
    #[serde(default)]
    pub status: Option<String>,
    /// New watchdog opt-in.
    #[serde(default)]
    pub watchdog: Option<bool>,
}

impl HostInput {
    /// Validates into a [`HostSpec`]; the error names the first bad field.
    pub fn validate(&self) -> Result<HostSpec, FleetError> {
        let name = check_name(&self.name)?;
        let (agent_url, url_host) = check_agent_url(&self.agent_url)?;
        let address = match &self.address {
            Some(a) => check_address(a)?,
            None => url_host,
        };
        let status = resolve_status(self.status.as_deref(), self.maintenance)?.unwrap_or_default();
        Ok(HostSpec {
            name,
            address,
            agent_url,
            groups: check_groups(&self.groups)?,
            tags: check_tags(&self.tags)?,
            status,
            watchdog: self.watchdog.unwrap_or(false),
        })
    }
}

impl HostSpec {
    /// The registry fields of a stored host (to apply a patch to, or compare with).
    pub fn of(h: &crate::model::Host) -> Self {
        Self {
            name: h.name.clone(),
            address: h.address.clone(),
            agent_url: h.agent_url.clone(),
            groups: h.groups.clone(),
            tags: h.tags.clone(),
            status: h.status,
            watchdog: h.watchdog,
        }
    }
}

impl HostPatch {
    /// Applies the given fields to `spec` (the host as stored), validating each.
    pub fn apply(&self, mut spec: HostSpec) -> Result<HostSpec, FleetError> {
        if let Some(n) = &self.name {
            spec.name = check_name(n)?;
        }
        if let Some(u) = &self.agent_url {
            spec.agent_url = check_agent_url(u)?.0;
        }
        if let Some(a) = &self.address {
            spec.address = check_address(a)?;
        }
        if let Some(g) = &self.groups {
            spec.groups = check_groups(g)?;
        }
        if let Some(t) = &self.tags {
            spec.tags = check_tags(t)?;
        }
        if let Some(s) = resolve_status(self.status.as_deref(), self.maintenance)? {
            spec.status = s;
        }
        if let Some(w) = self.watchdog {
            spec.watchdog = w;
        }
        Ok(spec)
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == HostPatch::default()
    }
}

fn resolve_status(status: Option<&str>, maintenance: Option<bool>) -> Result<Option<HostStatus>, FleetError> {
    let parsed = status.map(|s| s.parse::<HostStatus>().map_err(|e| FleetError::invalid("status", e))).transpose()?;
    match (parsed, maintenance) {
        (Some(s), Some(m)) if m != (s == HostStatus::Maintenance) => Err(FleetError::invalid(
            "maintenance",
            format!("maintenance = {m} contradicts status = {s:?}; give one of them"),
        )),
        (Some(s), _) => Ok(Some(s)),
        (None, Some(true)) => Ok(Some(HostStatus::Maintenance)),
        (None, Some(false)) => Ok(Some(HostStatus::Active)),
        (None, None) => Ok(None),
    }
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A valid host name, or the error naming `name`.
pub fn check_name(name: &str) -> Result<String, FleetError> {
    let bad = |p: &str| Err(FleetError::invalid("name", p.to_owned()));
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if !name.bytes().all(name_byte) || !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad(&format!("{name:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return bad(&format!("{name:?}: a name cannot be all digits (it would read as a host id)"));
    }
    Ok(name.to_owned())
}

/// `(normalised URL, its host)`, or the error naming `agent_url`.
fn check_agent_url(url: &str) -> Result<(String, String), FleetError> {
    let bad = |p: String| FleetError::invalid("agent_url", p);
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("{url:?}: the scheme must be http or https")));
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad(format!("{url:?} has no host")))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(format!("{url:?}: give the agent's base URL without a query or fragment")));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((parsed.as_str().trim_end_matches('/').to_owned(), host))
}

fn check_address(a: &str) -> Result<String, FleetError> {
    if a.is_empty() || a.len() > 255 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FleetError::invalid("address", format!("{a:?}: 1 to 255 characters, no spaces")));
    }
    Ok(a.to_owned())
}

fn check_groups(groups: &[String]) -> Result<Vec<String>, FleetError> {
    let mut out = Vec::with_capacity(groups.len());
    for (i, g) in groups.iter().enumerate() {
        if g.is_empty() || g.len() > 64 || !g.bytes().all(name_byte) {
            return Err(FleetError::invalid(format!("groups[{i}]"), format!("{g:?}: 1 to 64 letters, digits, '.', '_' or '-'")));
        }
        out.push(g.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, FleetError> {
    if tags.len() > 64 {
        return Err(FleetError::invalid("tags", format!("{} tags; at most 64", tags.len())));
    }
    for (k, v) in tags {
        let key_ok = !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| name_byte(b) || b == b'/');
        if !key_ok {
            return Err(FleetError::invalid("tags", format!("key {k:?}: 1 to 64 letters, digits, '.', '_', '-' or '/'")));
        }
        if v.len() > 256 || v.chars().any(char::is_control) {
            return Err(FleetError::invalid(format!("tags.{k}"), "at most 256 characters, no control characters"));
        }
    }
    Ok(tags.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, url: &str) -> HostInput {
        HostInput { name: name.into(), agent_url: url.into(), ..Default::default() }
    }

    fn field_of(r: Result<HostSpec, FleetError>) -> String {
        match r {
            Err(FleetError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_host_gets_defaults_from_its_url() {
        let s = input("gpu-01", "http://10.0.0.5:9100/").validate().unwrap();
        assert_eq!(s.agent_url, "http://10.0.0.5:9100");
        assert_eq!(s.address, "10.0.0.5");
        assert_eq!((s.status, s.watchdog), (HostStatus::Active, false));
        let v6 = input("h", "http://[::1]:9100").validate().unwrap();
        assert_eq!(v6.address, "::1");
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(field_of(input("", "http://a").validate()), "name");
        assert_eq!(field_of(input("-x", "http://a").validate()), "name");
        assert_eq!(field_of(input("a b", "http://a").validate()), "name");
        assert_eq!(field_of(input("1234", "http://a").validate()), "name");
        assert_eq!(field_of(input("h", "ftp://a").validate()), "agent_url");
        assert_eq!(field_of(input("h", "not a url").validate()), "agent_url");
        assert_eq!(field_of(input("h", "http://a/?x=1").validate()), "agent_url");
        let mut i = input("h", "http://a");
        i.groups = vec!["ok".into(), "no spaces".into()];
        assert_eq!(field_of(i.validate()), "groups[1]");
        let mut i = input("h", "http://a");
        i.tags.insert("rack".into(), "a\u{7}".into());
        assert_eq!(field_of(i.validate()), "tags.rack");
        let mut i = input("h", "http://a");
        i.status = Some("broken".into());
        assert_eq!(field_of(i.validate()), "status");
        let mut i = input("h", "http://a");
        i.status = Some("active".into());
        i.maintenance = Some(true);
        assert_eq!(field_of(i.validate()), "maintenance");
        let mut i = input("h", "http://a");
        i.address = Some("two words".into());
        assert_eq!(field_of(i.validate()), "address");
    }

    #[test]
    fn groups_are_sorted_and_deduplicated_and_maintenance_sets_the_status() {
        let mut i = input("h", "https://agent.example:9100");
        i.groups = vec!["b".into(), "a".into(), "b".into()];
        i.maintenance = Some(true);
        let s = i.validate().unwrap();
        assert_eq!(s.groups, vec!["a", "b"]);
        assert_eq!(s.status, HostStatus::Maintenance);
    }

    #[test]
    fn a_patch_replaces_only_given_fields() {
        let spec = input("h", "http://a:1").validate().unwrap();
        let patch = HostPatch { maintenance: Some(true), groups: Some(vec!["g".into()]), ..Default::default() };
        let out = patch.apply(spec.clone()).unwrap();
        assert_eq!(out.status, HostStatus::Maintenance);
        assert_eq!(out.groups, vec!["g"]);
        assert_eq!((out.name.as_str(), out.agent_url.as_str()), ("h", "http://a:1"));
        assert!(HostPatch::default().is_empty());
        let bad = HostPatch { agent_url: Some("x".into()), ..Default::default() };
        assert!(matches!(bad.apply(spec), Err(FleetError::Invalid { field, .. }) if field == "agent_url"));
    }
}
