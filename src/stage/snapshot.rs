//! Versioned per-key state snapshots: what a stage's state changelog will store, and
//! what a new owner of a partition restores from.
//!
//! A snapshot is one version byte followed by the state as JSON. JSON keeps snapshots
//! readable with standard tools and tolerant of added fields; the version byte lets a
//! later build refuse (and count) what it cannot read instead of misreading it.

use serde::{de::DeserializeOwned, Serialize};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Why a snapshot could not be used. The key then starts cold; nothing crashes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RestoreError {
    /// No bytes at all.
    #[error("empty snapshot")]
    Empty,
    /// Written by a build with another format.
    #[error(
        "snapshot version {found} is not supported (this build reads version {SNAPSHOT_VERSION})"
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

/// Encodes a state. `None` if it cannot be represented (a non-finite number would
/// otherwise become `null` and fail later, so it is refused here).
pub fn encode<T: Serialize>(state: &T) -> Option<Vec<u8>> {
    let mut out = vec![SNAPSHOT_VERSION];
    serde_json::to_writer(&mut out, state).ok()?;
    Some(out)
}

/// Decodes a state written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RestoreError> {
    match bytes.split_first() {
        None => Err(RestoreError::Empty),
        Some((&SNAPSHOT_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|e| RestoreError::Decode(e.to_string()))
        }
        Some((&found, _)) => Err(RestoreError::Version { found }),
    }
}

/// Per-key state that remembers the partition its key came from.
pub trait Partitioned {
    /// The partition of the key.
    fn partition(&self) -> i32;
    /// Sets it (after a restore, which does not store it).
    fn set_partition(&mut self, partition: i32);
}

/// The keys of `states` named in `changed` (drained), as state changes: the changelog
/// of a stage whose state is a map per key (the recommender per target, the
/// coordinator per pool). Keys gone from the map since are skipped.
pub fn take_changed<T: Serialize + Partitioned>(
    states: &std::collections::HashMap<String, T>,
    changed: &mut std::collections::HashSet<String>,
    out: &mut Vec<super::StateChange>,
) {
    for key in changed.drain() {
        if let Some(state) = states.get(&key) {
            if let Some(bytes) = encode(state) {
                out.push(super::StateChange {
                    partition: state.partition(),
                    key,
                    bytes: Some(bytes),
                });
            }
        }
    }
}

/// Decodes one key's snapshot of `partition` into `states`.
pub fn restore_into<T: DeserializeOwned + Partitioned>(
    states: &mut std::collections::HashMap<String, T>,
    partition: i32,
    key: &str,
    bytes: &[u8],
) -> Result<(), RestoreError> {
    let mut state: T = decode(bytes)?;
    state.set_partition(partition);
    states.insert(key.to_string(), state);
    Ok(())
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
