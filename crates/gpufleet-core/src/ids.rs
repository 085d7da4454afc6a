//! Newtype names. Cheap to clone (`Arc<str>`), compared and hashed by content.

use serde::{Deserialize, Serialize};
use std::{fmt, sync::Arc};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a name.
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A host name as reported by the source (`Hostname` in DCGM).
    HostName
);
name_type!(
    /// A GPU's UUID (`GPU-…`). Empty for host-level series.
    GpuUuid
);
name_type!(
    /// A canonical metric name (DCGM style, e.g. `DCGM_FI_DEV_GPU_UTIL`).
    MetricName
);
name_type!(
    /// A broker topic.
    TopicName
);
name_type!(
    /// A broker consumer group.
    GroupName
);
name_type!(
    /// One consumer inside a group.
    ConsumerName
);
