//! Versioned per-key state snapshots: what a stage's state changelog stores, and what a
//! new owner of a partition restores from.
//!
//! A snapshot is one version byte followed by the state. The version written is
//! postcard, a compact binary serde format: a detector state takes ~400 bytes and about
//! half a microsecond to encode, where version 1 (JSON, still read, so a changelog
//! written by an earlier build restores) took ~1.1 KB and ~5 µs. Checkpoints encode every
//! changed series on the stage's loop and exactly-once writes nearly one state per event
//! at 100 k series, so both numbers show in latency and throughput. Binary is not
//! tolerant of added fields: a change to a state type must bump the version, and a build
//! refuses (and counts) a version it cannot read instead of misreading it.

use serde::{de::DeserializeOwned, Serialize};

/// The snapshot format this build writes: postcard. Earlier postcard versions are
/// refused and counted, and those series relearn: 2 was the states before the likelihood
/// scoring and the slot forecaster, 3 before value novelty, 4 before the detector's
/// daily recurrence and the stage's burst count, 5 before the persistent detectors'
/// recurrence, 6 before the routine's size.
pub const SNAPSHOT_VERSION: u8 = 7;

/// The JSON format of earlier builds, still read.
pub const SNAPSHOT_VERSION_JSON: u8 = 1;

/// Why a snapshot could not be used. The key then starts cold; nothing crashes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    /// No bytes at all.
    #[error("empty snapshot")]
    Empty,
    /// Written by a build with another format.
    #[error(
        "snapshot version {found} is not supported (this build reads versions {SNAPSHOT_VERSION_JSON} and {SNAPSHOT_VERSION})"
    )]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The bytes do not decode as this stage's state.
    #[error("snapshot does not decode: {0}")]
    Decode(String),
    /// The stage already holds its maximum number of series.
    #[error("the stage already holds its maximum of {max} series")]
    Full {
        /// The limit.
        max: usize,
    },
}

/// Encodes a state. `None` only if serde refuses it (a sequence of unknown length,
/// which no state type has; each stage's restore tests encode its state).
pub fn encode<T: Serialize>(state: &T) -> Option<Vec<u8>> {
    try_encode(state).ok()
}

/// Encodes a state, or says why serde refused it.
fn try_encode<T: Serialize>(state: &T) -> Result<Vec<u8>, postcard::Error> {
    // Into a buffer sized for a typical state (half the time of `to_allocvec`, which
    // grows from empty).
    let mut out = Vec::with_capacity(512);
    out.push(SNAPSHOT_VERSION);
    postcard::to_extend(state, out)
}

/// A key whose state could not be encoded for the changelog: a defect (the state's
/// type holds something the format cannot write). The stage stops on it rather than
/// checkpoint without it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the state of key {key:?} cannot be encoded: {reason}")]
pub struct UnencodableState {
    /// The key.
    pub key: String,
    /// The encoder's error.
    pub reason: String,
}

/// Encodes the state of `key` for the changelog.
pub fn encode_change<T: Serialize>(key: &str, state: &T) -> Result<Vec<u8>, UnencodableState> {
    try_encode(state).map_err(|e| UnencodableState {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes a state written by [`encode`], or by an earlier build as JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RestoreError> {
    let bad = |e: String| RestoreError::Decode(e);
    match bytes.split_first() {
        None => Err(RestoreError::Empty),
        Some((&SNAPSHOT_VERSION, body)) => match postcard::take_from_bytes(body) {
            Ok((state, [])) => Ok(state),
            Ok((_, rest)) => Err(bad(format!("{} trailing bytes", rest.len()))),
            Err(e) => Err(bad(e.to_string())),
        },
        Some((&SNAPSHOT_VERSION_JSON, body)) => {
            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))
        }
        Some((&found, _)) => Err(RestoreError::Version { found }),
    }
}

/// Decodes one key's state restored from `partition` of the changelog: decodable, well
/// formed (see [`Partitioned::well_formed`]), and told its partition.
pub fn decode_partitioned<T: DeserializeOwned + Partitioned>(
    partition: i32,
    bytes: &[u8],
) -> Result<T, RestoreError> {
    let mut state: T = decode(bytes)?;
    if !state.well_formed() {
        return Err(RestoreError::Decode(
            "the state decodes but is not well formed (lengths, times or indices out of range)"
                .into(),
        ));
    }
    state.set_partition(partition);
    Ok(state)
}

/// A minimal per-key state for the tests of the state tables.
#[cfg(test)]
#[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct TestCount {
    pub n: u32,
    #[serde(skip)]
    pub partition: i32,
}

#[cfg(test)]
impl Partitioned for TestCount {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn set_partition(&mut self, partition: i32) {
        self.partition = partition;
    }
}

/// Per-key state that remembers the partition its key came from.
pub trait Partitioned {
    /// The partition of the key.
    fn partition(&self) -> i32;
    /// Sets it (after a restore, which does not store it).
    fn set_partition(&mut self, partition: i32);
    /// Whether a decoded state can be used: lengths and indices that the code relies on
    /// are in range (a damaged or foreign record can decode and still not be).
    fn well_formed(&self) -> bool {
        true
    }
}

/// `#[serde(with = "f32s")]`: a long `Vec<f32>` as one byte string in the binary format
/// (element by element it took 10 µs per recommender state, the larger part of a
/// checkpoint), as a list of numbers in JSON.
pub mod f32s {
    use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the floats.
    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return v.serialize(s);
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_bytes(&bytes)
    }

    /// Reads them back.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        if d.is_human_readable() {
            return Vec::<f32>::deserialize(d);
        }
        let bytes = <&[u8]>::deserialize(d)?;
        if bytes.len() % 4 != 0 {
            return Err(de::Error::invalid_length(
                bytes.len(),
                &"a multiple of 4 bytes",
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// `#[serde(with = "bytes")]`: a `Vec<u8>` as one byte string in the binary format, as
/// a list of numbers in JSON.
pub mod bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the bytes.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match s.is_human_readable() {
            true => v.serialize(s),
            false => s.serialize_bytes(v),
        }
    }

    /// Reads them back.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match d.is_human_readable() {
            true => Vec::<u8>::deserialize(d),
            false => <&[u8]>::deserialize(d).map(<[u8]>::to_vec),
        }
    }
}

/// `#[serde(with = "pairs")]`: a map whose keys JSON cannot hold (tuples) as a list of
/// `[key, value]` pairs.
pub mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the map as a sequence of pairs.
    pub fn serialize<'a, S, M, K, V>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        &'a M: IntoIterator<Item = (&'a K, &'a V)>,
        K: Serialize + 'a,
        V: Serialize + 'a,
    {
        s.collect_seq(map)
    }

    /// Reads a sequence of pairs into the map.
    pub fn deserialize<'de, D, M, K, V>(d: D) -> Result<M, D::Error>
    where
        D: Deserializer<'de>,
        M: FromIterator<(K, V)>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct State {
        level: f64,
        count: u64,
        name: String,
        window: Vec<f64>,
        #[serde(with = "pairs")]
        by_pair: BTreeMap<(String, i64), f64>,
        last: Option<i64>,
    }

    fn state() -> State {
        State {
            level: 0.1 + 0.2,
            count: 7,
            name: "checkout".into(),
            window: vec![1.5, f64::MIN_POSITIVE, -3.0e300],
            by_pair: [(("a".to_string(), -4), 2.5)].into(),
            last: Some(-1),
        }
    }

    #[test]
    fn binary_round_trip_is_exact_and_smaller_than_json() {
        let bytes = encode(&state()).unwrap();
        assert_eq!(bytes[0], SNAPSHOT_VERSION);
        assert_eq!(decode::<State>(&bytes).unwrap(), state());
        let json = serde_json::to_vec(&state()).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
    }

    #[test]
    fn changelogs_of_earlier_builds_still_restore() {
        let mut v1 = vec![SNAPSHOT_VERSION_JSON];
        v1.extend(serde_json::to_vec(&state()).unwrap());
        assert_eq!(decode::<State>(&v1).unwrap(), state());
    }

    #[test]
    fn damaged_snapshots_are_errors() {
        let bytes = encode(&state()).unwrap();
        for cut in 1..bytes.len() {
            assert!(
                matches!(decode::<State>(&bytes[..cut]), Err(RestoreError::Decode(_))),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<State>(&longer),
            Err(RestoreError::Decode(e)) if e.contains("trailing")
        ));
        assert_eq!(decode::<State>(&[]), Err(RestoreError::Empty));
        assert_eq!(
            decode::<State>(&[9, 0]),
            Err(RestoreError::Version { found: 9 })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = vec![SNAPSHOT_VERSION];
            bytes.extend(body);
            let _ = decode::<State>(&bytes);
        }
    }
}
