//! Confluent Schema Registry framing: magic byte `0`, the writer schema's 4-byte
//! big-endian registry id, then the Avro binary body written with that schema. Pure:
//! the registry itself is asked by the runtime; here a writer schema already fetched
//! is resolved against ours, so compatible evolution (a field added with a default, a
//! field the writer has and we do not) reads, and the body is turned into our
//! single-object encoding for the stages' decoders.

use super::codec::{read_generic_value, HEADER_LEN};
use super::{
    Anomaly, AvroRecord, DeadLetter, Decision, Forecast, MetricEvent, Recommendation, SchemaInfo,
};
use apache_avro::Schema;

/// The first byte of a Confluent-framed record.
pub const CONFLUENT_MAGIC: u8 = 0;

/// Magic byte plus schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// The registry id of a Confluent-framed record's writer schema, if it is one.
pub fn confluent_schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [CONFLUENT_MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Single-object encoded bytes (what [`super::encode`] makes) in Confluent framing with
/// schema `id`: the same body behind a different header.
pub fn to_confluent(single_object: &[u8], id: u32) -> Vec<u8> {
    let body = single_object.get(HEADER_LEN..).unwrap_or_default();
    let mut out = Vec::with_capacity(CONFLUENT_HEADER_LEN + body.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The six record types: (name, schema text, parsed schema).
pub fn all_schemas() -> [(&'static str, &'static str, &'static SchemaInfo); 6] {
    fn one<T: AvroRecord>() -> (&'static str, &'static str, &'static SchemaInfo) {
        (T::NAME, T::SCHEMA_JSON, T::schema_info())
    }
    [
        one::<MetricEvent>(),
        one::<Anomaly>(),
        one::<Forecast>(),
        one::<Recommendation>(),
        one::<Decision>(),
        one::<DeadLetter>(),
    ]
}

/// Why a Confluent-framed record cannot be read. Each is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfluentError {
    /// The registry's schema text does not parse as Avro.
    #[error("schema {id} from the registry is not an Avro schema: {detail}")]
    NotAvro {
        /// Registry id.
        id: u32,
        /// The parser's message.
        detail: String,
    },
    /// The writer schema is not a record perfpilot knows, nor can it be read as the
    /// record the stage expects.
    #[error("schema {id} ({name}) cannot be read as a perfpilot record: {detail}")]
    Mismatch {
        /// Registry id.
        id: u32,
        /// The writer schema's name.
        name: String,
        /// Why.
        detail: String,
    },
}

impl ConfluentError {
    /// Machine-readable reason, for dead letters and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ConfluentError::NotAvro { .. } => "schema_not_avro",
            ConfluentError::Mismatch { .. } => "schema_mismatch",
        }
    }
}

/// A writer schema from the registry, paired with the perfpilot schema it is read as.
#[derive(Debug)]
pub struct WriterSchema {
    id: u32,
    writer: Schema,
    reader: &'static SchemaInfo,
    reader_name: &'static str,
    /// The writer is our schema (same canonical form): the body is ours as it is.
    same: bool,
}

impl WriterSchema {
    /// Parses the registry's schema text. The reader is the perfpilot record of the
    /// same (unqualified) name; a record of another name is read as `expected` (the
    /// record the stage reads), as Avro's resolution of two records allows.
    pub fn parse(
        id: u32,
        text: &str,
        expected: Option<&'static str>,
    ) -> Result<Self, ConfluentError> {
        let writer = Schema::parse_str(text).map_err(|e| ConfluentError::NotAvro {
            id,
            detail: e.to_string(),
        })?;
        let writer_name = match &writer {
            Schema::Record(r) => r.name.name.clone(),
            other => {
                return Err(ConfluentError::Mismatch {
                    id,
                    name: format!("{:?}", apache_avro::schema::SchemaKind::from(other)),
                    detail: "not a record".into(),
                })
            }
        };
        let schemas = all_schemas();
        let chosen = schemas
            .iter()
            .find(|(name, _, _)| *name == writer_name)
            .or_else(|| schemas.iter().find(|(name, _, _)| Some(*name) == expected))
            .ok_or_else(|| ConfluentError::Mismatch {
                id,
                name: writer_name.clone(),
                detail: "no perfpilot record has this name".into(),
            })?;
        let same = writer.canonical_form() == chosen.2.schema.canonical_form();
        let ours = WriterSchema {
            id,
            writer,
            reader: chosen.2,
            reader_name: chosen.0,
            same,
        };
        // An incompatible writer is refused now, once, rather than per record.
        ours.check_resolution()
            .map_err(|detail| ConfluentError::Mismatch {
                id,
                name: writer_name,
                detail,
            })?;
        Ok(ours)
    }

    /// The perfpilot record this schema is read as.
    pub fn reader_name(&self) -> &'static str {
        self.reader_name
    }

    /// Every field of ours without a default must be in the writer's, with a type that
    /// resolves; apache-avro finds out only when a record is read.
    fn check_resolution(&self) -> Result<(), String> {
        let (Schema::Record(w), Schema::Record(r)) = (&self.writer, &self.reader.schema) else {
            return Err("not a record".into());
        };
        for field in &r.fields {
            let theirs = w.fields.iter().find(|f| f.name == field.name);
            match theirs {
                None if field.default.is_none() => {
                    return Err(format!(
                        "field {:?} is missing and has no default in {}",
                        field.name, self.reader_name
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A Confluent-framed record's body as single-object encoded bytes of our schema.
    /// Written with our own schema, the body is ours already: only the header changes
    /// (the stage's decoder checks the body as it does any). Otherwise it is decoded
    /// with the writer's schema and resolved to ours, which costs some 10 µs a record.
    pub fn to_single_object(&self, body: &[u8]) -> Result<Vec<u8>, ConfluentError> {
        if self.same {
            let mut out = Vec::with_capacity(self.reader.header.len() + body.len());
            out.extend_from_slice(&self.reader.header);
            out.extend_from_slice(body);
            return Ok(out);
        }
        let mismatch = |detail: String| ConfluentError::Mismatch {
            id: self.id,
            name: self.reader_name.to_string(),
            detail,
        };
        let value = read_generic_value(&self.writer, body)
            .map_err(|e| mismatch(format!("the body does not decode: {e}")))?;
        let resolved = value
            .resolve(&self.reader.schema)
            .map_err(|e| mismatch(format!("cannot be resolved to {}: {e}", self.reader_name)))?;
        let mut out = self.reader.header.to_vec();
        let body = apache_avro::to_avro_datum(&self.reader.schema, resolved)
            .map_err(|e| mismatch(e.to_string()))?;
        out.extend_from_slice(&body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, encode};

    fn event() -> MetricEvent {
        MetricEvent {
            source: "agent-1".into(),
            target: "checkout".into(),
            pool: Some("shop".into()),
            metric: "cpu_utilization".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            timestamp_ms: 1_700_000_000_000,
            value: 0.42,
            unit: "ratio".into(),
        }
    }

    #[test]
    fn framing_is_told_apart_by_its_magic_byte() {
        let single = encode(&event()).unwrap();
        assert_eq!(confluent_schema_id(&single), None);
        let framed = to_confluent(&single, 258);
        assert_eq!(&framed[..5], &[0, 0, 0, 1, 2]);
        assert_eq!(confluent_schema_id(&framed), Some(258));
        assert_eq!(
            confluent_schema_id(&[0, 0, 0]),
            None,
            "too short to hold an id"
        );
    }

    #[test]
    fn our_own_schema_reads_back_what_we_framed() {
        let w = WriterSchema::parse(7, MetricEvent::SCHEMA_JSON, None).unwrap();
        assert_eq!(w.reader_name(), "MetricEvent");
        assert!(w.same, "our own schema is recognised: no resolution needed");
        let framed = to_confluent(&encode(&event()).unwrap(), 7);
        let single = w.to_single_object(&framed[CONFLUENT_HEADER_LEN..]).unwrap();
        assert_eq!(decode::<MetricEvent>(&single).unwrap(), event());
    }

    /// A team's producer with an older schema (no `unit`, which has a default) and an
    /// extra field of its own, under another namespace: read as a MetricEvent.
    const EVOLVED: &str = r#"{"type":"record","name":"MetricEvent","namespace":"com.acme.metrics",
      "fields":[
        {"name":"source","type":"string"},
        {"name":"target","type":"string"},
        {"name":"pool","type":["null","string"],"default":null},
        {"name":"metric","type":"string"},
        {"name":"labels","type":{"type":"map","values":"string"},"default":{}},
        {"name":"timestamp_ms","type":"long"},
        {"name":"value","type":"double"},
        {"name":"datacenter","type":"string","default":"eu-1"}
      ]}"#;

    #[test]
    fn a_compatible_writer_schema_is_resolved_to_ours() {
        let w = WriterSchema::parse(3, EVOLVED, None).unwrap();
        assert!(!w.same);
        let writer = Schema::parse_str(EVOLVED).unwrap();
        let mut record = apache_avro::types::Record::new(&writer).unwrap();
        record.put("source", "host-1");
        record.put("target", "checkout");
        record.put(
            "pool",
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        );
        record.put("metric", "cpu");
        record.put(
            "labels",
            std::collections::HashMap::<String, apache_avro::types::Value>::new(),
        );
        record.put("timestamp_ms", 1_700_000_000_000i64);
        record.put("value", 0.5);
        record.put("datacenter", "us-2");
        let body = apache_avro::to_avro_datum(&writer, record).unwrap();
        let e = decode::<MetricEvent>(&w.to_single_object(&body).unwrap()).unwrap();
        assert_eq!(
            (e.target.as_str(), e.value, e.unit.as_str()),
            ("checkout", 0.5, "")
        );
        assert_eq!(e.pool, None);
    }

    #[test]
    fn writers_that_cannot_be_read_are_refused_with_a_reason() {
        let not_avro = WriterSchema::parse(1, "{\"type\": \"nope\"}", None).unwrap_err();
        assert_eq!(not_avro.reason(), "schema_not_avro");
        let stranger = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
        let e = WriterSchema::parse(2, stranger, None).unwrap_err();
        assert_eq!(e.reason(), "schema_mismatch");
        // Read as the expected MetricEvent, it lacks fields without defaults.
        let e = WriterSchema::parse(2, stranger, Some("MetricEvent")).unwrap_err();
        assert!(e.to_string().contains("missing and has no default"), "{e}");
        // A body that does not match the writer schema: refused when resolving, and,
        // written with our own schema, by the stage's decoder as any bad body.
        let evolved = WriterSchema::parse(3, EVOLVED, None).unwrap();
        assert_eq!(
            evolved.to_single_object(&[0xff; 4]).unwrap_err().reason(),
            "schema_mismatch"
        );
        let ours = WriterSchema::parse(7, MetricEvent::SCHEMA_JSON, None).unwrap();
        let single = ours.to_single_object(&[0xff; 4]).unwrap();
        assert_eq!(
            decode::<MetricEvent>(&single).unwrap_err().reason(),
            "bad_body"
        );
    }
}
