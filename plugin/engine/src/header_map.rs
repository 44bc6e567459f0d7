// Reading a header map in the Proxy-Wasm ABI's serialized form (what `proxy_get_header_map_pairs`
// hands over), so that the filter fetches a request's headers with one host call, not one per name.

/// A header map handed over in the ABI's serialized form: a little-endian u32 count, then a
/// (u32 key length, u32 value length) pair per entry, then each key and each value followed by a
/// NUL; an empty buffer is an empty map. Checked once when parsed; a look-up then walks the
/// entries' sizes, slicing only a key of the length it looks for. No index is built: a request
/// asks for two or three names of a handful of headers, and an index was one allocation and one
/// free per request.
#[derive(Debug, Default)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    count: usize,
}

/// The little-endian u32 at `at`, as a size.
fn word(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

impl HeaderMap {
    /// Checks `bytes`; None if they are not a well-formed map (the map then says nothing: ask
    /// the host header by header). Never panics, whatever the bytes.
    pub fn parse(bytes: Vec<u8>) -> Option<HeaderMap> {
        if bytes.is_empty() {
            return Some(HeaderMap::default());
        }
        let count = word(&bytes, 0)?;
        // Each entry takes 8 bytes of sizes and at least 2 NULs: a larger count is a lie.
        if count.checked_mul(10)?.checked_add(4)? > bytes.len() {
            return None;
        }
        let map = HeaderMap { bytes, count };
        // The look-ups' own walk, checked once: every entry there, each key and value ending in
        // its NUL (an offset past the end, saturated or not, finds no NUL).
        let mut seen = 0;
        let nuls = map.entries().all(|(k, v, at)| {
            seen += 1;
            let key_end = at.saturating_add(k);
            let value_end = key_end.saturating_add(1).saturating_add(v);
            (map.bytes.get(key_end), map.bytes.get(value_end)) == (Some(&0), Some(&0))
        });
        (nuls && seen == count).then_some(map)
    }

    /// Each entry as (key length, value length, where its key starts), in the map's order; the
    /// value starts one past the key's end (its NUL). Offsets saturate rather than wrap, and
    /// look-ups slice with `get`, so even an unchecked map cannot make this panic.
    fn entries(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut data = 4 + 8 * self.count;
        (0..self.count).map_while(move |i| {
            let (k, v) = (word(&self.bytes, 4 + 8 * i)?, word(&self.bytes, 8 + 8 * i)?);
            let at = data;
            data = data.saturating_add(k).saturating_add(v).saturating_add(2);
            Some((k, v, at))
        })
    }

    /// True when some header's name starts with `prefix` (ignoring ASCII case): one scan that
    /// tells whether any of a family of headers (ebb's own, `x-ebb-`) needs looking at.
    pub fn any_with_prefix(&self, prefix: &str) -> bool {
        let prefix = prefix.as_bytes();
        self.entries().any(|(k, _, at)| {
            k >= prefix.len()
                && self.bytes.get(at..at.saturating_add(prefix.len())).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
    }

    /// The first value under `name`, names compared ignoring ASCII case: Envoy's keys are
    /// lower-case, but Kong's module hands out request header names as the client wrote them.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        // The length first, from the sizes: most names differ in it, and then nothing is sliced.
        self.entries().filter(|&(k, _, _)| k == name.len()).find_map(|(k, v, at)| {
            let key = self.bytes.get(at..at.saturating_add(k))?;
            let value = at.saturating_add(k).saturating_add(1);
            crate::ascii::eq_ignore_case(key, name).then(|| self.bytes.get(value..value.saturating_add(v))).flatten()
        })
    }
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
        let map = HeaderMap::parse(serialize(&[
            (":path", "/x"),
            (":authority", "web.example"),
            ("X-Ebb-Signature", "s"),
            ("a", "1"),
            ("A", "2"),
        ]))
        .expect("well formed");
        assert_eq!(map.get(":authority"), Some(&b"web.example"[..]));
        assert_eq!(map.get("x-ebb-signature"), Some(&b"s"[..]), "Kong keeps the client's case");
        assert_eq!(map.get("a"), Some(&b"1"[..]), "the first of repeated headers, as Envoy's lookup");
        assert_eq!(map.get("x-ebb-command"), None);
        assert!(map.any_with_prefix("x-ebb-"), "X-Ebb-Signature");
        assert!(!map.any_with_prefix("x-envoy-"));
        assert!(!map.any_with_prefix(":authority-and-more"), "longer than every name");
        assert_eq!(HeaderMap::parse(Vec::new()).expect("empty").get(":path"), None, "an empty buffer is an empty map");
        let empty_value = HeaderMap::parse(serialize(&[("x-empty", "")])).expect("well formed");
        assert_eq!(empty_value.get("x-empty"), Some(&b""[..]));
    }

    #[test]
    fn malformed_maps_are_refused() {
        let map = serialize(&[(":path", "/x"), (":authority", "web.example")]);
        for cut in 1..map.len() {
            assert!(HeaderMap::parse(map[..cut].to_vec()).is_none(), "truncated at {cut}");
        }
        let mut bad_nul = map.clone();
        let last = bad_nul.len() - 1;
        bad_nul[last] = b'!';
        assert!(HeaderMap::parse(bad_nul).is_none());
        let mut huge = map.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(huge).is_none());
        let mut long_key = map;
        long_key[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(long_key).is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Some(map) = HeaderMap::parse(bytes) {
                let _ = map.get(":path");
            }
        }

        #[test]
        fn a_serialized_map_gives_back_its_values(
            pairs in proptest::collection::vec(("[a-z:-]{1,8}", "[ -~]{0,12}"), 0..8),
        ) {
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let map = HeaderMap::parse(serialize(&refs)).expect("well formed");
            for (k, _) in &pairs {
                let first = pairs.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v.as_bytes());
                proptest::prop_assert_eq!(map.get(k), first);
            }
            proptest::prop_assert_eq!(map.get("absent-name-longer-than-eight"), None);
        }
    }
}
