//! FNV-1a: a stable, dependency-free hash for cache keys and for the
//! identifiers a build derives from its inputs (reproducible builds).

pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"busybox-static"), fnv1a(b"busybox-static"));
        assert_ne!(fnv1a(b"a b"), fnv1a(b"a c"));
    }
}
