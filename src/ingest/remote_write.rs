//! Prometheus remote-write 1.0 requests: a snappy-compressed (block format) protobuf
//! `WriteRequest`. Pure: bytes in, series out. The messages are declared here with
//! prost's derive rather than generated, since only these four are needed.

use super::mapping::MetricKind;

/// Largest request body accepted, compressed (Prometheus sends a few MB at most).
pub const MAX_COMPRESSED_BYTES: usize = 32 * 1024 * 1024;

/// Largest request accepted once decompressed.
pub const MAX_DECOMPRESSED_BYTES: usize = 128 * 1024 * 1024;

/// More than snappy's block format can expand a body (64 bytes from a 2-byte copy).
const SNAPPY_MAX_RATIO: usize = 32;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series and their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Types of metric families (sent from time to time, often alone).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// `MetricType`: 1 counter, 2 gauge, 3 histogram, 4 gauge histogram, 5 summary.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
}

impl MetricMetadata {
    /// The kind of the family's own samples (a histogram's series are counters).
    pub fn kind(&self) -> MetricKind {
        match self.r#type {
            1 | 3 | 5 => MetricKind::Counter,
            2 | 4 => MetricKind::Gauge,
            _ => MetricKind::Unknown,
        }
    }
}

/// Why a request body cannot be read. Prometheus drops a request answered with 400;
/// none of these would succeed on a retry.
#[derive(Debug, thiserror::Error)]
pub enum WriteRequestError {
    /// Larger than [`MAX_COMPRESSED_BYTES`] or [`MAX_DECOMPRESSED_BYTES`].
    #[error("the request is {0} bytes, more than accepted")]
    TooLarge(usize),
    /// Not snappy block format.
    #[error("not snappy-compressed (block format): {0}")]
    Snappy(#[from] snap::Error),
    /// Not a protobuf `WriteRequest`.
    #[error("not a remote-write WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl WriteRequestError {
    /// Machine-readable reason, for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            WriteRequestError::TooLarge(_) => "too_large",
            WriteRequestError::Snappy(_) => "not_snappy",
            WriteRequestError::Protobuf(_) => "not_protobuf",
        }
    }
}

/// Decompresses and decodes one request body.
pub fn decode(body: &[u8]) -> Result<WriteRequest, WriteRequestError> {
    if body.len() > MAX_COMPRESSED_BYTES {
        return Err(WriteRequestError::TooLarge(body.len()));
    }
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(WriteRequestError::TooLarge(len));
    }
    // Snappy's densest copy makes 64 bytes of 2; a length beyond that is a lie, and
    // believing it would allocate it.
    if len > body.len().saturating_mul(SNAPPY_MAX_RATIO) {
        return Err(WriteRequestError::Snappy(snap::Error::TooBig {
            given: len as u64,
            max: body.len().saturating_mul(SNAPPY_MAX_RATIO) as u64,
        }));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(prost::Message::decode(raw.as_slice())?)
}

/// Encodes a request as Prometheus sends it (tests and `bench` use it).
pub fn encode(request: &WriteRequest) -> Vec<u8> {
    let raw = prost::Message::encode_to_vec(request);
    // Compressing a vector in memory cannot fail short of its size overflowing.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "instance".into(),
                        value: "h:9100".into(),
                    },
                ],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            }],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
            }],
        }
    }

    #[test]
    fn a_request_round_trips_through_snappy_and_protobuf() {
        let body = encode(&request());
        assert_eq!(decode(&body).unwrap(), request());
        assert_eq!(request().metadata[0].kind(), MetricKind::Counter);
    }

    #[test]
    fn bodies_that_are_not_remote_write_are_refused_with_a_reason() {
        let raw = prost::Message::encode_to_vec(&request());
        let e = decode(&raw).unwrap_err();
        assert!(
            matches!(e.reason(), "not_snappy" | "not_protobuf"),
            "uncompressed protobuf: {e}"
        );
        let junk = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap();
        assert_eq!(decode(&junk).unwrap_err().reason(), "not_protobuf");
        assert_eq!(decode(&[0xff; 3]).unwrap_err().reason(), "not_snappy");
    }
}
