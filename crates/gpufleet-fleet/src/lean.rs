//! [`LeanReport`]: reads a [`HealthReport`] without the `detail` of its `ok` components, except
//! containers and model servers.
//!
//! A simulated 8-GPU host's report is ~7 KB, most of it `detail` objects of CPU, memory, disks
//! and GPUs that nothing on the server reads while they are `ok`; parsing them into
//! `serde_json::Value` trees was the largest cost of a 10,000-host cycle. The agent writes `kind`
//! and `status` before `detail`, so such a component has its `detail` skipped unparsed
//! (`IgnoredAny`). Kept: every detail of a component that is not `ok`, every container and model
//! server detail (the watchdog reads container states from them, healthy ones included), and any
//! detail that comes before its kind or status.

use gpufleet_agent::wire::{Component, ComponentKind, HealthReport, Status};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A health report whose ok components have `detail: null`.
#[derive(Debug)]
pub(crate) struct LeanReport(pub(crate) HealthReport);

#[derive(Deserialize)]
struct Raw {
    host: String,
    agent_version: String,
    time_ms: i64,
    status: Status,
    components: Vec<LeanComponent>,
}

impl<'de> Deserialize<'de> for LeanReport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Raw::deserialize(d)?;
        Ok(LeanReport(HealthReport {
            host: r.host,
            agent_version: r.agent_version,
            time_ms: r.time_ms,
            status: r.status,
            components: r.components.into_iter().map(|c| c.0).collect(),
        }))
    }
}

struct LeanComponent(Component);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Name,
    Kind,
    Status,
    Message,
    Detail,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for LeanComponent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ComponentVisitor)
    }
}

/// Whether an `ok` component of this kind may lose its detail.
fn skippable(kind: ComponentKind) -> bool {
    !matches!(kind, ComponentKind::Container | ComponentKind::ModelServer)
}

struct ComponentVisitor;

impl<'de> Visitor<'de> for ComponentVisitor {
    type Value = LeanComponent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a health report component")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LeanComponent, A::Error> {
        let (mut name, mut kind, mut status, mut message) = (None::<String>, None::<ComponentKind>, None::<Status>, None::<String>);
        let mut detail = serde_json::Value::Null;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Name => name = Some(map.next_value()?),
                Field::Kind => kind = Some(map.next_value()?),
                Field::Status => status = Some(map.next_value()?),
                Field::Message => message = Some(map.next_value()?),
                Field::Detail if status == Some(Status::Ok) && kind.is_some_and(skippable) => {
                    map.next_value::<IgnoredAny>()?;
                }
                Field::Detail => detail = map.next_value()?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let status = status.ok_or_else(|| de::Error::missing_field("status"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        if status == Status::Ok && skippable(kind) {
            detail = serde_json::Value::Null;
        }
        Ok(LeanComponent(Component {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            kind,
            status,
            message: message.ok_or_else(|| de::Error::missing_field("message"))?,
            detail,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ok_details_are_dropped_and_others_kept() {
        let full = HealthReport::new(
            "h",
            "1",
            5,
            vec![
                Component { name: "cpu".into(), kind: ComponentKind::Cpu, status: Status::Ok, message: "fine".into(), detail: json!({"big": [1, 2, 3]}) },
                Component { name: "disk:/".into(), kind: ComponentKind::Disk, status: Status::Warn, message: "88 %".into(), detail: json!({"used": 88}) },
            ],
        );
        let text = serde_json::to_string(&full).unwrap();
        let lean = serde_json::from_str::<LeanReport>(&text).unwrap().0;
        assert_eq!((lean.host.as_str(), lean.time_ms, lean.status), ("h", 5, Status::Warn));
        assert_eq!(lean.components[0].detail, serde_json::Value::Null);
        assert_eq!(lean.components[1].detail, json!({"used": 88}));
        assert_eq!(lean.components[1].message, "88 %");
        let containers = HealthReport::new(
            "h",
            "1",
            5,
            vec![Component { name: "container:web".into(), kind: ComponentKind::Container, status: Status::Ok, message: "running".into(), detail: json!({"id": "abc"}) }],
        );
        let lean = serde_json::from_str::<LeanReport>(&serde_json::to_string(&containers).unwrap()).unwrap().0;
        assert_eq!(lean.components[0].detail, json!({"id": "abc"}), "container details are kept, ok or not");
    }

    #[test]
    fn a_detail_before_its_status_unknown_fields_and_missing_fields() {
        let text = r#"{"host":"h","agent_version":"1","time_ms":1,"status":"critical","extra":1,
            "components":[{"detail":{"x":1},"name":"gpu:0","kind":"gpu","status":"critical","message":"xid","new":[1]}]}"#;
        let lean = serde_json::from_str::<LeanReport>(text).unwrap().0;
        assert_eq!(lean.components[0].detail, json!({"x": 1}));
        let missing = r#"{"host":"h","agent_version":"1","time_ms":1,"status":"ok","components":[{"name":"a","kind":"cpu","message":""}]}"#;
        let err = serde_json::from_str::<LeanReport>(missing).unwrap_err().to_string();
        assert!(err.contains("missing field `status`"), "{err}");
        assert!(serde_json::from_str::<LeanReport>("{\"not\": \"a report\"}").is_err());
    }
}
