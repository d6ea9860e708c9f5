//! How `tail` prints a record: JSON lines, or one compact text line, with bytes readable.

use crate::event::AnyRecord;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{Map, Value};

/// Output formats of `tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailFormat {
    /// One JSON object per record (the record's fields, with `type`).
    Json,
    /// One line per record: where it was read, its key, its type, then `field=value`
    /// for every scalar field (nested ones as compact JSON).
    Text,
}

/// Where a record was read and with which Kafka key.
pub struct Origin<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The record's Kafka key.
    pub key: Option<&'a [u8]>,
}

/// Bytes as text when they are UTF-8, base64 otherwise: the value and the field-name
/// suffix that says which (`""` or `"_base64"`).
fn readable(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), ""),
        Err(_) => (BASE64.encode(bytes), "_base64"),
    }
}

/// The record as a JSON object. A dead letter's `key` is text when it is UTF-8 and
/// `key_base64` otherwise; its `payload` (arbitrary bytes) is always `payload_base64`.
pub fn to_json(record: &AnyRecord) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(record)?;
    if let (AnyRecord::DeadLetter(d), Value::Object(map)) = (record, &mut value) {
        map.remove("key");
        map.remove("payload");
        if let Some(k) = &d.key {
            let (text, suffix) = readable(k);
            map.insert(format!("key{suffix}"), Value::String(text));
        }
        if let Some(p) = &d.payload {
            map.insert("payload_base64".into(), Value::String(BASE64.encode(p)));
        }
    }
    Ok(value)
}

/// One compact line: `topic/partition@offset key=… Type field=value …`.
pub fn to_text(origin: &Origin<'_>, record: &Value) -> String {
    let mut line = format!("{}/{}@{}", origin.topic, origin.partition, origin.offset);
    if let Some(k) = origin.key {
        let (text, suffix) = readable(k);
        line.push_str(&format!(" key{suffix}={}", quoted(&text)));
    }
    let empty = Map::new();
    let fields = record.as_object().unwrap_or(&empty);
    if let Some(Value::String(t)) = fields.get("type") {
        line.push(' ');
        line.push_str(t);
    }
    for (name, value) in fields {
        if name == "type" {
            continue;
        }
        let shown = match value {
            Value::Null => continue,
            Value::String(s) => quoted(s),
            Value::Array(a) if a.is_empty() => continue,
            Value::Object(o) if o.is_empty() => continue,
            other => other.to_string(),
        };
        line.push_str(&format!(" {name}={shown}"));
    }
    line
}

/// A string as is when it has no spaces, quotes or control characters; JSON-quoted
/// otherwise, so every line splits unambiguously on spaces.
fn quoted(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c.is_control())
    {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DeadLetter;

    fn dead_letter(key: Option<Vec<u8>>, payload: Option<Vec<u8>>) -> AnyRecord {
        AnyRecord::DeadLetter(DeadLetter {
            stage: "detector".into(),
            reason: "bad_marker".into(),
            detail: "not Avro".into(),
            source_topic: "perfpilot.metrics".into(),
            source_partition: 2,
            source_offset: 7,
            key,
            payload,
            dead_lettered_ms: 1,
            original_size: None,
            original_hash: None,
        })
    }

    #[test]
    fn dead_letter_bytes_are_text_or_base64_not_integer_arrays() {
        let v = to_json(&dead_letter(
            Some(b"web-1".to_vec()),
            Some(vec![0xff, 0, 1]),
        ))
        .unwrap();
        assert_eq!(v["key"], "web-1");
        assert_eq!(v["payload_base64"], "/wAB");
        assert!(v.get("payload").is_none());
        let v = to_json(&dead_letter(Some(vec![0xc3, 0x28]), None)).unwrap();
        assert_eq!(v["key_base64"], "wyg=");
        assert!(v.get("key").is_none() && v.get("payload_base64").is_none());
    }

    #[test]
    fn a_text_line_says_where_what_and_every_scalar_field() {
        let record = dead_letter(None, Some(b"x".to_vec()));
        let v = to_json(&record).unwrap();
        let origin = Origin {
            topic: "perfpilot.deadletter",
            partition: 0,
            offset: 41,
            key: Some(b"web 1"),
        };
        let line = to_text(&origin, &v);
        assert!(
            line.starts_with(r#"perfpilot.deadletter/0@41 key="web 1" DeadLetter "#),
            "{line}"
        );
        assert!(line.contains(r#" detail="not Avro""#), "{line}");
        assert!(line.contains(" source_offset=7"), "{line}");
        assert!(line.contains(" payload_base64=eA=="), "{line}");
        assert!(
            !line.contains("original_size"),
            "null fields are left out: {line}"
        );
    }
}
