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

/// Snapshots of every key of `partition` in a stage's state map.
pub fn snapshot_partition<S: Serialize + Partitioned>(
    states: &std::collections::HashMap<String, S>,
    partition: i32,
) -> Vec<(String, Vec<u8>)> {
    states
        .iter()
        .filter(|(_, s)| s.partition() == partition)
        .filter_map(|(k, s)| encode(s).map(|b| (k.clone(), b)))
        .collect()
}

/// Restores one key of `partition` into a stage's state map.
pub fn restore_into<S: DeserializeOwned + Partitioned>(
    states: &mut std::collections::HashMap<String, S>,
    partition: i32,
    key: &str,
    bytes: &[u8],
) -> Result<(), RestoreError> {
    let mut state: S = decode(bytes)?;
    state.set_partition(partition);
    states.insert(key.to_string(), state);
    Ok(())
}

/// Drops the state of every key of the revoked partitions.
pub fn drop_partitions<S: Partitioned>(
    states: &mut std::collections::HashMap<String, S>,
    revoked: &[i32],
) {
    states.retain(|_, s| !revoked.contains(&s.partition()));
}
