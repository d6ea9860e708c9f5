//! Stable hashing for reproducible ids: the same input always yields the same id, on
//! every machine and build (unlike `std`'s randomly seeded hasher).

/// 64-bit FNV-1a over a sequence of byte strings, with a separator between parts.
/// Used for stable, reproducible ids (the same input always yields the same id).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0x1f)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}
