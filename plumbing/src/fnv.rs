//! FNV-1a, 64 bit: a hash that is the same in every process and version
//! (unlike `DefaultHasher`), for choices several processes must agree on
//! or keep across restarts: shard members in routers, container shards in
//! the collector.

/// The starting value.
pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues hash `h` over `bytes`; start from [`OFFSET`].
pub fn hash(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(hash(b"", OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a", OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar", OFFSET), 0x85944171f73967e8);
    }
}
