//! A check of an Avro body against its schema that allocates nothing, run before the
//! generic decoder: every length, block count, enum index and union branch must fit in
//! the bytes that are left.
//!
//! apache-avro reserves room for an array's or a map's items from the block count
//! alone (some 50–80 bytes per item), so a 434-byte Forecast whose count said 3 000
//! points allocated 170 KB at once, and a count of 1 << 20 (its length limit) would take
//! 80 MB (found by `tests/fuzz.rs`). Every item takes at least one byte, so a count
//! larger than the bytes left is corruption; after this check, what the decoder
//! reserves is bounded by the record's own size.

use apache_avro::schema::Schema;

/// Why a body does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SkimError(pub(crate) String);

struct Skim<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Skim<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn fail<T>(&self, what: &str) -> Result<T, SkimError> {
        Err(SkimError(format!("{what} at byte {}", self.at)))
    }

    fn long(&mut self) -> Result<i64, SkimError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                return self.fail("truncated number");
            };
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        self.fail("number longer than 10 bytes")
    }

    /// A length or a count that must fit in what is left, `min_item` bytes each.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, SkimError> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item) <= self.left() => Ok(n),
            _ => self.fail(&format!(
                "{what} {n} larger than the {} bytes left",
                self.left()
            )),
        }
    }

    fn skip(&mut self, n: usize) -> Result<(), SkimError> {
        if n > self.left() {
            return self.fail("truncated value");
        }
        self.at += n;
        Ok(())
    }

    /// The blocks of an array or a map; `item` skims one item.
    fn blocks(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), SkimError>,
    ) -> Result<(), SkimError> {
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                // A negative count is followed by the block's size in bytes.
                n = n.checked_neg().map_or(-1, |n| n);
                self.long()?;
            }
            let n = match usize::try_from(n) {
                Ok(n) if n <= self.left() => n,
                _ => return self.fail(&format!("{what} count {n} larger than the bytes left")),
            };
            for _ in 0..n {
                item(self)?;
            }
        }
    }

    fn value(&mut self, schema: &Schema) -> Result<(), SkimError> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.skip(4),
            Schema::Double => self.skip(8),
            Schema::Bytes | Schema::String | Schema::Uuid | Schema::BigDecimal => {
                let n = self.count("length", 1)?;
                self.skip(n)
            }
            Schema::Fixed(f) => self.skip(f.size),
            Schema::Duration => self.skip(12),
            Schema::Decimal(d) => self.value(&d.inner),
            Schema::Enum(e) => {
                let i = self.long()?;
                if usize::try_from(i).is_ok_and(|i| i < e.symbols.len()) {
                    Ok(())
                } else {
                    self.fail(&format!("enum index {i} of {} symbols", e.symbols.len()))
                }
            }
            Schema::Union(u) => {
                let i = self.long()?;
                match usize::try_from(i).ok().and_then(|i| u.variants().get(i)) {
                    Some(branch) => self.value(branch),
                    None => self.fail(&format!("union branch {i} of {}", u.variants().len())),
                }
            }
            Schema::Record(r) => {
                for f in &r.fields {
                    self.value(&f.schema)?;
                }
                Ok(())
            }
            Schema::Array(a) => self.blocks("array", |s| s.value(&a.items)),
            Schema::Map(m) => self.blocks("map", |s| {
                let n = s.count("key length", 1)?;
                s.skip(n)?;
                s.value(&m.types)
            }),
            // perfpilot's schemas define every named type inline.
            Schema::Ref { name } => self.fail(&format!("unsupported named reference {name}")),
        }
    }
}

/// Checks that `body` is one whole value of `schema` with nothing after it.
pub(crate) fn skim(schema: &Schema, body: &[u8]) -> Result<(), SkimError> {
    let mut s = Skim { bytes: body, at: 0 };
    s.value(schema)?;
    if s.left() > 0 {
        return Err(SkimError(format!(
            "{} trailing bytes after the record",
            s.left()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_larger_than_the_bytes_left_is_refused_before_any_allocation() {
        let schema = Schema::parse_str(r#"{"type":"array","items":"long"}"#).unwrap();
        // Three items, then the end.
        assert_eq!(skim(&schema, &[6, 2, 4, 6, 0]), Ok(()));
        // A count of 3 000 in a 5-byte body.
        let err = skim(&schema, &[0xf0, 0x2e, 2, 4, 0]).unwrap_err();
        assert!(err.0.contains("array count 3000"), "{err:?}");
        // A negative count carries a block size; -3 is three items.
        assert_eq!(skim(&schema, &[5, 6, 2, 4, 6, 0]), Ok(()));
        assert!(skim(&schema, &[6, 2, 4, 6, 0, 0]).is_err(), "trailing byte");
    }

    #[test]
    fn lengths_enum_indices_and_union_branches_must_fit() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
            {"name":"s","type":"string"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
            {"name":"u","type":["null","double"]}]}"#,
        )
        .unwrap();
        let good = [4, b'h', b'i', 2, 0];
        assert_eq!(skim(&s, &good), Ok(()));
        assert!(
            skim(&s, &[40, b'h', b'i', 2, 0]).is_err(),
            "length past the end"
        );
        assert!(
            skim(&s, &[4, b'h', b'i', 4, 0]).is_err(),
            "enum index 2 of 2"
        );
        assert!(
            skim(&s, &[4, b'h', b'i', 2, 4]).is_err(),
            "union branch 2 of 2"
        );
        assert!(
            skim(&s, &[4, b'h', b'i', 2, 2, 0]).is_err(),
            "double cut short"
        );
    }
}
