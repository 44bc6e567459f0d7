// Reading a header map in the Proxy-Wasm ABI's serialized form (what `proxy_get_header_map_pairs`
// hands over), so that the filter fetches a request's headers with one host call, not one per name.

/// What a serialized header map says about one header name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The first value under the name (names compared ignoring ASCII case).
    Found(&'a [u8]),
    /// The map holds no such header.
    Absent,
    /// The bytes are not a well-formed map: the map says nothing (ask the host header by header).
    Malformed,
}

/// Looks `name` up in `map`, serialized as the ABI has it: a little-endian u32 count, then a
/// (u32 key length, u32 value length) pair per entry, then each key and each value followed by a
/// NUL. An empty buffer is an empty map. Never panics, whatever the bytes.
///
/// Names are compared ignoring ASCII case: Envoy's keys are lower-case, but Kong's module hands
/// out request header names as the client wrote them.
pub fn lookup<'a>(map: &'a [u8], name: &str) -> Lookup<'a> {
    if map.is_empty() {
        return Lookup::Absent;
    }
    let word = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = map.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    };
    let Some(count) = word(0) else { return Lookup::Malformed };
    // Each entry takes 8 bytes of sizes and at least 2 NULs: a count larger than that is a lie.
    if count.checked_mul(10).and_then(|n| n.checked_add(4)).is_none_or(|n| n > map.len()) {
        return Lookup::Malformed;
    }
    let mut data = 4 + 8 * count;
    let mut found = None;
    for i in 0..count {
        let (Some(k), Some(v)) = (word(4 + 8 * i), word(8 + 8 * i)) else { return Lookup::Malformed };
        let key = data.checked_add(k).and_then(|end| map.get(data..end).map(|key| (key, end)));
        let Some((key, key_end)) = key else { return Lookup::Malformed };
        let value_start = key_end.saturating_add(1);
        let Some(value_end) = value_start.checked_add(v) else { return Lookup::Malformed };
        let (Some(&0), Some(value), Some(&0)) = (map.get(key_end), map.get(value_start..value_end), map.get(value_end))
        else {
            return Lookup::Malformed;
        };
        if found.is_none() && key.eq_ignore_ascii_case(name.as_bytes()) {
            found = Some(value);
        }
        data = value_end.saturating_add(1);
    }
    // The whole map was checked before any answer: a truncated map never yields a value.
    found.map_or(Lookup::Absent, Lookup::Found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ABI's serialization, as hosts write it.
    fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
        if pairs.is_empty() {
            return Vec::new();
        }
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(k.as_bytes());
            out.push(0);
            out.extend(v.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn finds_the_first_value_ignoring_case() {
        let map = serialize(&[
            (":path", "/x"),
            (":authority", "web.example"),
            ("X-Ebb-Signature", "s"),
            ("a", "1"),
            ("A", "2"),
        ]);
        assert_eq!(lookup(&map, ":authority"), Lookup::Found(b"web.example"));
        assert_eq!(lookup(&map, "x-ebb-signature"), Lookup::Found(b"s"), "Kong keeps the client's case");
        assert_eq!(lookup(&map, "a"), Lookup::Found(b"1"), "the first of repeated headers, as Envoy's lookup");
        assert_eq!(lookup(&map, "x-ebb-command"), Lookup::Absent);
        assert_eq!(lookup(&[], ":path"), Lookup::Absent, "an empty buffer is an empty map");
        let empty_value = serialize(&[("x-empty", "")]);
        assert_eq!(lookup(&empty_value, "x-empty"), Lookup::Found(b""));
    }

    #[test]
    fn malformed_maps_say_nothing() {
        let map = serialize(&[(":path", "/x"), (":authority", "web.example")]);
        for cut in 1..map.len() {
            assert_eq!(lookup(&map[..cut], ":path"), Lookup::Malformed, "truncated at {cut}");
        }
        let mut bad_nul = map.clone();
        let last = bad_nul.len() - 1;
        bad_nul[last] = b'!';
        assert_eq!(lookup(&bad_nul, ":path"), Lookup::Malformed);
        let mut huge = map.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(lookup(&huge, ":path"), Lookup::Malformed);
        let mut long_key = map;
        long_key[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(lookup(&long_key, ":path"), Lookup::Malformed);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = lookup(&bytes, ":path");
        }

        #[test]
        fn a_serialized_map_gives_back_its_values(
            pairs in proptest::collection::vec(("[a-z:-]{1,8}", "[ -~]{0,12}"), 0..8),
        ) {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let map = serialize(&refs);
            for (k, _) in &pairs {
                let first = pairs.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_bytes());
                proptest::prop_assert_eq!(lookup(&map, k), Lookup::Found(first.unwrap_or_default()));
            }
            proptest::prop_assert_eq!(lookup(&map, "absent-name-longer-than-eight"), Lookup::Absent);
        }
    }
}
