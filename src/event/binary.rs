//! A hand-written reader of the Avro binary body of a MetricEvent, the record every
//! detector and forecaster instance decodes per event.
//!
//! apache-avro decodes through a generic `Value` tree and then serde (about 1.7 µs per
//! event, more than all the analytics); reading the fields in schema order straight into
//! the struct takes a fraction of that. It reads exactly what the generic path reads and
//! refuses exactly what it refuses (a property test compares the two on arbitrary
//! records and on arbitrary bytes); any change to `schemas/MetricEvent.avsc` fails that
//! test until this reader follows.

use super::{Labels, MetricEvent};

/// Why a body could not be read.
pub type ReadError = String;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, ReadError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or_else(|| "truncated varint".to_string())?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                // Zig-zag.
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated: {n} bytes expected, {} left",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, ReadError> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| format!("negative string length {len}"))?;
        let raw = self.bytes(len)?;
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|e| format!("string is not UTF-8: {e}"))
    }

    fn double(&mut self) -> Result<f64, ReadError> {
        let raw = self.bytes(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(raw);
        Ok(f64::from_le_bytes(b))
    }

    fn map_of_strings(&mut self) -> Result<Labels, ReadError> {
        let mut out = Labels::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(out);
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                let size = self.long()?;
                if size < 0 {
                    return Err(format!("negative map block size {size}"));
                }
            }
            for _ in 0..count.unsigned_abs() {
                let key = self.string()?;
                let value = self.string()?;
                out.insert(key, value);
            }
        }
    }
}

/// Reads a MetricEvent body (after the single-object header).
pub fn read_metric_event(body: &[u8]) -> Result<MetricEvent, ReadError> {
    let mut r = Reader { buf: body };
    let source = r.string()?;
    let target = r.string()?;
    let pool = match r.long()? {
        0 => None,
        1 => Some(r.string()?),
        i => return Err(format!("union index {i} out of range for pool")),
    };
    let metric = r.string()?;
    let labels = r.map_of_strings()?;
    let timestamp_ms = r.long()?;
    let value = r.double()?;
    let unit = r.string()?;
    if !r.buf.is_empty() {
        return Err(format!("{} trailing bytes after the record", r.buf.len()));
    }
    Ok(MetricEvent {
        source,
        target,
        pool,
        metric,
        labels,
        timestamp_ms,
        value,
        unit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::codec::{AvroRecord, HEADER_LEN};
    use proptest::prelude::*;

    /// The generic apache-avro path, for comparison.
    fn generic(body: &[u8]) -> Result<MetricEvent, String> {
        crate::event::codec::read_generic(&MetricEvent::schema_info().schema, body)
    }

    /// Equal, comparing the value by its bits (NaN is not equal to itself).
    fn same(a: &MetricEvent, b: &MetricEvent) -> bool {
        a.value.to_bits() == b.value.to_bits()
            && MetricEvent {
                value: 0.0,
                ..a.clone()
            } == MetricEvent {
                value: 0.0,
                ..b.clone()
            }
    }

    fn event_strategy() -> impl Strategy<Value = MetricEvent> {
        (
            ".{0,12}",
            ".{0,20}",
            proptest::option::of(".{0,8}"),
            ".{0,16}",
            proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
            any::<i64>(),
            any::<f64>(),
            ".{0,4}",
        )
            .prop_map(
                |(source, target, pool, metric, labels, timestamp_ms, value, unit)| MetricEvent {
                    source,
                    target,
                    pool,
                    metric,
                    labels,
                    timestamp_ms,
                    value,
                    unit,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn reads_what_apache_avro_writes(e in event_strategy()) {
            let bytes = crate::event::encode(&e).unwrap();
            let body = &bytes[HEADER_LEN..];
            let fast = read_metric_event(body).unwrap();
            let slow = generic(body).unwrap();
            prop_assert!(same(&fast, &e) && same(&fast, &slow), "{:?} / {:?} / {:?}", fast, slow, e);
        }

        #[test]
        fn refuses_what_apache_avro_refuses(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let fast = read_metric_event(&bytes);
            let slow = generic(&bytes);
            prop_assert_eq!(fast.is_ok(), slow.is_ok(), "fast {:?} slow {:?}", fast, slow);
        }

        #[test]
        fn truncations_and_corruptions_of_real_records(e in event_strategy(), cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let bytes = crate::event::encode(&e).unwrap();
            let body = &bytes[HEADER_LEN..];
            let cut = cut.min(body.len());
            prop_assert_eq!(read_metric_event(&body[..cut]).is_ok(), generic(&body[..cut]).is_ok());
            let mut corrupt = body.to_vec();
            if !corrupt.is_empty() {
                let i = flip % corrupt.len();
                corrupt[i] ^= 1 << bit;
            }
            let (fast, slow) = (read_metric_event(&corrupt), generic(&corrupt));
            prop_assert_eq!(fast.is_ok(), slow.is_ok(), "fast {:?} slow {:?}", fast, slow);
            if let (Ok(f), Ok(s)) = (fast, slow) {
                prop_assert!(same(&f, &s), "{:?} / {:?}", f, s);
            }
        }
    }
}
