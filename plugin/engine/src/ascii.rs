// Case-insensitive ASCII comparison eight bytes at a time, for the authorities and header names
// every request is matched on (core's version folds one byte per step; wasm has no SIMD here).

/// The high bit of every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// `x` with the ASCII upper-case letters of its eight bytes in lower case; other bytes as they
/// are. Each byte's test is done in its own 8 bits: no carry crosses a byte, because the low
/// seven bits plus at most 0x3f stay under 0x100.
fn fold(x: u64) -> u64 {
    let low7 = x & !HIGH;
    let at_least_a = low7 + 0x3f3f_3f3f_3f3f_3f3f; // high bit set from b'A' (0x41) up
    let past_z = low7 + 0x2525_2525_2525_2525; // high bit set from b'Z' + 1 (0x5b) up
    let upper = at_least_a & !past_z & !x & HIGH; // `!x`: bytes with their own high bit are not ASCII
    x | (upper >> 2) // 0x80 >> 2 is the case bit, 0x20
}

/// `a.eq_ignore_ascii_case(b)`, a word at a time; a tail shorter than a word is compared as the
/// last eight bytes (overlapping the previous word), so only strings under eight bytes are
/// compared a byte at a time.
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| s.get(at..at + 8).and_then(|w| w.try_into().ok()).map(u64::from_le_bytes);
    let same = |at: usize| match (word(a, at), word(b, at)) {
        (Some(x), Some(y)) => x == y || fold(x) == fold(y),
        _ => false,
    };
    match a.len().checked_sub(8) {
        None => a.eq_ignore_ascii_case(b),
        Some(last) => (0..last).step_by(8).all(same) && same(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_letters_only() {
        assert!(eq_ignore_case(b"BitBucket.ORG:443", b"bitbucket.org:443"));
        assert!(!eq_ignore_case(b"bitbucket.org", b"bitbucket.orh"));
        assert!(!eq_ignore_case(b"bitbucket.org", b"bitbucket.or"));
        // '@' (0x40) and '[' (0x5b) sit just outside 'A'..='Z'; their case bit gives '`' and '{'.
        assert!(!eq_ignore_case(b"@@@@@@@@[", b"````````{"));
        assert!(!eq_ignore_case("ÀÀÀÀ".as_bytes(), "àààà".as_bytes()), "ASCII only, as std");
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_std(a in proptest::collection::vec(proptest::num::u8::ANY, 0..40), flips in proptest::collection::vec(proptest::bool::ANY, 40)) {
            // Pairs that often match: `b` is `a` with some letters' case changed.
            let b: Vec<u8> = a.iter().zip(&flips).map(|(c, f)| if *f { c.to_ascii_uppercase() } else { *c }).collect();
            proptest::prop_assert_eq!(eq_ignore_case(&a, &b), a.eq_ignore_ascii_case(&b));
            let mut c = b.clone();
            if let Some(last) = c.last_mut() { *last ^= 0x20; }
            proptest::prop_assert_eq!(eq_ignore_case(&a, &c), a.eq_ignore_ascii_case(&c));
            proptest::prop_assert_eq!(eq_ignore_case(&a, &a[..a.len() / 2]), a.is_empty());
        }
    }
}
