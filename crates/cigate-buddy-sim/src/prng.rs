//! Tiny deterministic hashing used to derive seeded data on demand.

/// SplitMix64 finaliser: a good 64-bit mix for small keys.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a key path, e.g. `h(&[seed, ws, project, pipeline, index])`.
pub fn h(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x1234_5678_9ABC_DEF0, |acc, p| mix(acc ^ mix(*p)))
}

/// Hash of a string, for mixing names into keys.
pub fn hs(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |acc, b| {
        (acc ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// `n` lowercase hex characters derived from a key.
pub fn hex_id(parts: &[u64], n: usize) -> String {
    let mut out = String::with_capacity(n + 16);
    let mut i = 0u64;
    while out.len() < n {
        let mut key = parts.to_vec();
        key.push(i);
        out.push_str(&format!("{:016x}", h(&key)));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Uniform-ish integer in `0..n` (n > 0).
pub fn below(x: u64, n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        x % n
    }
}

/// Picks an element of a non-empty slice.
pub fn pick<T>(x: u64, items: &[T]) -> &T {
    &items[below(x, items.len() as u64) as usize]
}
