//! Avro single-object encoding of perfpilot records.
//!
//! Every record on a perfpilot topic is `C3 01` + the 8-byte little-endian Rabin
//! fingerprint of the writer schema's canonical form + the Avro binary body, as the Avro
//! specification defines it. A reader can therefore tell which schema wrote any record
//! without a registry, and a record of the wrong type is recognised instead of being
//! misread.

use super::{Anomaly, DeadLetter, Decision, Forecast, MetricEvent, Recommendation};
use apache_avro::{rabin::Rabin, Schema};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::OnceLock;

/// The two marker bytes that open every single-object encoded record.
pub const MARKER: [u8; 2] = [0xC3, 0x01];
/// Marker plus fingerprint.
pub const HEADER_LEN: usize = 10;

/// A parsed schema with its single-object header, computed once per record type.
#[derive(Debug)]
pub struct SchemaInfo {
    /// The parsed schema.
    pub schema: Schema,
    /// Rabin fingerprint of the canonical form.
    pub fingerprint: u64,
    /// Marker plus fingerprint, the prefix of every encoded record.
    pub header: [u8; HEADER_LEN],
    /// Record name, for messages.
    pub name: &'static str,
}

impl SchemaInfo {
    fn parse(name: &'static str, json: &str) -> Result<Self, apache_avro::Error> {
        let schema = Schema::parse_str(json)?;
        let bytes = schema.fingerprint::<Rabin>().bytes;
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[..8]);
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&MARKER);
        header[2..].copy_from_slice(&fp);
        Ok(SchemaInfo {
            schema,
            fingerprint: u64::from_le_bytes(fp),
            header,
            name,
        })
    }
}

/// A Rust type that mirrors one `.avsc` file in `schemas/`.
pub trait AvroRecord: Serialize + DeserializeOwned + Sized {
    /// Record name, equal to the `.avsc` file's stem.
    const NAME: &'static str;
    /// The schema text (the `.avsc` file, embedded at compile time).
    const SCHEMA_JSON: &'static str;
    /// The parsed schema and its header.
    fn schema_info() -> &'static SchemaInfo;
    /// A hand-written reader of the binary body, for records on the hot path; `None`
    /// means the generic apache-avro path.
    fn read_body(_body: &[u8]) -> Option<Result<Self, String>> {
        None
    }
}

/// The record types, listed once: this drives each one's codec (`AvroRecord`, with the
/// schema of the same name under `schemas/`), [`AnyRecord`] and its decoding by
/// fingerprint, and the names in errors.
macro_rules! records {
    ($( $(#[$doc:meta])* $ty:ident $(read = $reader:path)? ),* $(,)?) => {
        $(
            impl AvroRecord for $ty {
                $(
                    fn read_body(body: &[u8]) -> Option<Result<Self, String>> {
                        Some($reader(body))
                    }
                )?
                const NAME: &'static str = stringify!($ty);
                const SCHEMA_JSON: &'static str = include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/schemas/",
                    stringify!($ty),
                    ".avsc"
                ));
                fn schema_info() -> &'static SchemaInfo {
                    static INFO: OnceLock<SchemaInfo> = OnceLock::new();
                    INFO.get_or_init(|| {
                        // The schema is part of the binary, not input: a parse failure
                        // is a build defect, caught by the schema tests before anything
                        // ships.
                        SchemaInfo::parse(stringify!($ty), Self::SCHEMA_JSON)
                            .expect("embedded schema parses (checked by tests/schemas.rs)") // ok: compile-time constant
                    })
                }
            }
        )*

        /// The name of the record type whose schema has this fingerprint.
        fn record_name_of(fingerprint: u64) -> Option<&'static str> {
            $(
                if fingerprint == $ty::schema_info().fingerprint {
                    return Some($ty::NAME);
                }
            )*
            None
        }

        /// Any perfpilot record, told apart by its fingerprint. Used by `tail` and by
        /// stages that read more than one record type.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum AnyRecord {
            $( $(#[$doc])* $ty($ty), )*
        }

        impl AnyRecord {
            /// Decodes any perfpilot record.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                let (fp, body) = split_header(bytes)?;
                $(
                    if fp == $ty::schema_info().fingerprint {
                        return decode_body(body).map(AnyRecord::$ty);
                    }
                )*
                Err(DecodeError::UnknownFingerprint { fingerprint: fp })
            }

            /// Its record type's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $( AnyRecord::$ty(_) => $ty::NAME, )*
                }
            }
        }
    };
}

records!(
    /// A metric event.
    MetricEvent read = super::binary::read_metric_event,
    /// An anomaly.
    Anomaly,
    /// A forecast.
    Forecast,
    /// A recommendation.
    Recommendation,
    /// A decision.
    Decision,
    /// A dead letter.
    DeadLetter,
);

/// Why a record could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {record}: {source}")]
pub struct EncodeError {
    record: &'static str,
    #[source]
    source: apache_avro::Error,
}

/// Why bytes could not be decoded into a record. Each variant is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 10-byte header, or empty.
    #[error("record is {len} bytes, shorter than the 10-byte single-object header")]
    Truncated {
        /// Length seen.
        len: usize,
    },
    /// The first two bytes are not `C3 01`.
    #[error("not Avro single-object encoding: first bytes are {found:02X?}, expected C3 01")]
    BadMarker {
        /// Bytes found.
        found: [u8; 2],
    },
    /// Confluent Schema Registry framing, read without a registry.
    #[error("Confluent Schema Registry framing (magic byte 0, schema id {schema_id}), not Avro single-object encoding: read it with --schema-registry URL")]
    ConfluentFraming {
        /// The writer schema's registry id.
        schema_id: u32,
    },
    /// A fingerprint no perfpilot schema has.
    #[error("unknown schema fingerprint {fingerprint:016x}")]
    UnknownFingerprint {
        /// The fingerprint.
        fingerprint: u64,
    },
    /// A perfpilot record, but not of the type this reader expects.
    #[error("expected a {expected} record, found a {found} record")]
    WrongRecordType {
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// The body does not match the schema (cut short, corrupt, or trailing bytes).
    #[error("body does not decode as {record}: {detail}")]
    BadBody {
        /// Record type.
        record: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl DecodeError {
    /// Machine-readable reason, used in dead letters and as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::BadMarker { .. } => "bad_marker",
            DecodeError::ConfluentFraming { .. } => "confluent_framing",
            DecodeError::UnknownFingerprint { .. } => "unknown_fingerprint",
            DecodeError::WrongRecordType { .. } => "wrong_record_type",
            DecodeError::BadBody { .. } => "bad_body",
        }
    }
}

/// Encodes a record with its single-object header.
pub fn encode<T: AvroRecord>(record: &T) -> Result<Vec<u8>, EncodeError> {
    let info = T::schema_info();
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&info.header);
    apache_avro::write_avro_datum_ref(&info.schema, record, &mut buf).map_err(|source| {
        EncodeError {
            record: T::NAME,
            source,
        }
    })?;
    Ok(buf)
}

/// Reads the header of single-object encoded bytes and returns the fingerprint and body.
pub fn split_header(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    if let Some(schema_id) = super::confluent::confluent_schema_id(bytes) {
        return Err(DecodeError::ConfluentFraming { schema_id });
    }
    if bytes.len() < HEADER_LEN {
        // Two bytes are enough to tell a foreign format from a cut-short record.
        if bytes.len() >= 2 && bytes[..2] != MARKER {
            return Err(DecodeError::BadMarker {
                found: [bytes[0], bytes[1]],
            });
        }
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    if bytes[..2] != MARKER {
        return Err(DecodeError::BadMarker {
            found: [bytes[0], bytes[1]],
        });
    }
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&bytes[2..HEADER_LEN]);
    Ok((u64::from_le_bytes(fp), &bytes[HEADER_LEN..]))
}

fn decode_body<T: AvroRecord>(body: &[u8]) -> Result<T, DecodeError> {
    let info = T::schema_info();
    let bad = |detail: String| DecodeError::BadBody {
        record: T::NAME,
        detail,
    };
    match T::read_body(body) {
        Some(read) => read.map_err(bad),
        None => read_generic(&info.schema, body).map_err(bad),
    }
}

/// The largest length apache-avro may take from one length prefix while decoding: a
/// string's bytes, or a map's or array's item count, which it reserves room for at once
/// (about 80 bytes per map entry). A record is bounded by Kafka's message size (1 MB by
/// default), so a larger prefix is corruption; unbounded, one flipped bit in a record's
/// labels asked for 43 GB and aborted the process.
pub const MAX_DECODE_LEN: usize = 1 << 20;

/// The generic apache-avro path: the body into a `Value` tree, then into `T`. (The
/// hand-written readers are tested against it.)
pub(crate) fn read_generic<T: AvroRecord>(schema: &Schema, body: &[u8]) -> Result<T, String> {
    let value = read_generic_value(schema, body)?;
    apache_avro::from_value::<T>(&value).map_err(|e| e.to_string())
}

/// A body into apache-avro's `Value` tree, safely: lengths checked against the bytes
/// first, and no trailing bytes.
pub(crate) fn read_generic_value(
    schema: &Schema,
    body: &[u8],
) -> Result<apache_avro::types::Value, String> {
    // apache-avro keeps the first limit it is given, and takes its default on the first
    // decode: set ours before any.
    static LIMIT: std::sync::Once = std::sync::Once::new();
    LIMIT.call_once(|| {
        apache_avro::util::max_allocation_bytes(MAX_DECODE_LEN);
    });
    // Lengths and counts are checked against the bytes first: apache-avro reserves
    // room for a block's items from its count alone.
    super::skim::skim(schema, body).map_err(|e| e.0)?;
    let mut reader = body;
    let value =
        apache_avro::from_avro_datum(schema, &mut reader, None).map_err(|e| e.to_string())?;
    if !reader.is_empty() {
        return Err(format!("{} trailing bytes after the record", reader.len()));
    }
    Ok(value)
}

/// Decodes single-object encoded bytes into `T`, checking marker and fingerprint.
pub fn decode<T: AvroRecord>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (fingerprint, body) = split_header(bytes)?;
    if fingerprint != T::schema_info().fingerprint {
        return Err(match record_name_of(fingerprint) {
            Some(found) => DecodeError::WrongRecordType {
                expected: T::NAME,
                found,
            },
            None => DecodeError::UnknownFingerprint { fingerprint },
        });
    }
    decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Avro's zig-zag varint.
    fn varint(n: i64) -> Vec<u8> {
        let mut v = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn a_corrupt_item_count_is_refused_without_reserving_room_for_it() {
        // Empty source, target and metric, no pool, then labels claiming 400 million
        // entries: apache-avro's own limit let that through and reserved ~30 GB. The
        // skim refuses any count larger than the bytes left, before apache-avro runs.
        for count in [400_000_000, MAX_DECODE_LEN as i64 + 1] {
            let mut body = vec![0, 0, 0, 0];
            body.extend(varint(count));
            body.extend([2, b'k', 2, b'v']);
            let schema = &MetricEvent::schema_info().schema;
            let err = read_generic::<MetricEvent>(schema, &body).unwrap_err();
            assert!(err.contains("larger than the bytes left"), "{err}");
        }
        // The limit leaves real records alone.
        let bytes = encode(&event()).unwrap();
        let schema = &MetricEvent::schema_info().schema;
        assert_eq!(
            read_generic::<MetricEvent>(schema, &bytes[HEADER_LEN..]).unwrap(),
            event()
        );
    }

    #[test]
    fn round_trip_and_header() {
        let bytes = encode(&event()).unwrap();
        assert_eq!(&bytes[..2], &MARKER);
        assert_eq!(
            u64::from_le_bytes(bytes[2..10].try_into().unwrap()),
            MetricEvent::schema_info().fingerprint
        );
        assert_eq!(decode::<MetricEvent>(&bytes).unwrap(), event());
    }

    #[test]
    fn every_failure_has_its_reason() {
        let good = encode(&event()).unwrap();
        assert_eq!(
            decode::<MetricEvent>(&[]).unwrap_err().reason(),
            "truncated"
        );
        assert_eq!(
            decode::<MetricEvent>(&good[..5]).unwrap_err().reason(),
            "truncated"
        );
        assert_eq!(
            decode::<MetricEvent>(b"{\"json\":1}").unwrap_err().reason(),
            "bad_marker"
        );
        // Confluent's framing is named as such, with the way to read it.
        let confluent = super::super::confluent::to_confluent(&good, 42);
        let e = decode::<MetricEvent>(&confluent).unwrap_err();
        assert_eq!(e.reason(), "confluent_framing");
        assert!(
            e.to_string().contains("schema id 42") && e.to_string().contains("--schema-registry"),
            "{e}"
        );
        let mut unknown = good.clone();
        unknown[2] ^= 0xFF;
        assert_eq!(
            decode::<MetricEvent>(&unknown).unwrap_err().reason(),
            "unknown_fingerprint"
        );
        assert_eq!(
            decode::<Anomaly>(&good).unwrap_err().reason(),
            "wrong_record_type"
        );
        assert_eq!(
            decode::<MetricEvent>(&good[..good.len() - 3])
                .unwrap_err()
                .reason(),
            "bad_body"
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            decode::<MetricEvent>(&trailing).unwrap_err().reason(),
            "bad_body"
        );
    }

    #[test]
    fn any_record_tells_types_apart() {
        let bytes = encode(&event()).unwrap();
        assert!(matches!(
            AnyRecord::decode(&bytes),
            Ok(AnyRecord::MetricEvent(_))
        ));
    }
}
