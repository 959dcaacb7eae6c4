use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with one-second resolution, sent as an RFC 3339 UTC string (`2026-11-25T18:06:29Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time, truncated to the second.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp())
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0
    }

    /// The RFC 3339 form.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp(self.0, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| Timestamp(t.timestamp()))
            .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp: {e}")))
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_rfc3339_utc() {
        let t = Timestamp(1_795_629_989);
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(text, "\"2026-11-25T18:06:29Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap(), t);
    }
}
