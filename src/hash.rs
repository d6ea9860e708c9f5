//! Stable hashing for reproducible ids: the same input always yields the same id, on
//! every machine and build (unlike `std`'s randomly seeded hasher).

/// 64-bit FNV-1a over a sequence of byte strings, with a separator between parts.
/// Used for stable, reproducible ids (the same input always yields the same id).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = OFFSET;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0x1f)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// 64-bit FNV-1a of one byte string, with no separator: the `original_hash` a cut dead
/// letter carries, which anyone can recompute from the original bytes.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn parts_are_separated() {
        assert_ne!(stable_hash(&[b"ab", b"c"]), stable_hash(&[b"a", b"bc"]));
    }
}
