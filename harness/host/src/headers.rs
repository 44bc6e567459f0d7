// Header maps as Envoy keeps them (lower-cased keys, pseudo-headers as ordinary entries,
// repeated keys allowed) and the ABI's serialized pair format.

/// An ordered multimap of header names to values, both raw bytes.
///
/// Keys are lower-cased (ASCII) on every write, as Envoy's `LowerCaseString` does; lookups are
/// case-insensitive. All bytes live in one buffer that is kept when the map is cleared, so a
/// reused map does not allocate on the hot path; replaced values are appended and the old
/// bytes left until the next `clear`.
///
/// Each key and value in the buffer is followed by a NUL, as in the ABI's serialized form: a
/// map only ever added to (nearly every request's) is then that form's data section as it
/// stands, and hands over with one copy instead of two per header.
#[derive(Default)]
pub struct HeaderMap {
    data: Vec<u8>,
    entries: Vec<Entry>,
    /// Bytes in `data` that no entry uses (a replaced value, a removed entry) or entries out of
    /// `data`'s order: `data` is then not the serialized data section.
    holes: bool,
}

impl Clone for HeaderMap {
    fn clone(&self) -> HeaderMap {
        HeaderMap { data: self.data.clone(), entries: self.entries.clone(), holes: self.holes }
    }

    /// Copies into this map's buffers: a proxy that takes a filter's headers back into a map
    /// it already holds copies bytes, with no allocation.
    fn clone_from(&mut self, source: &HeaderMap) {
        self.data.clone_from(&source.data);
        self.entries.clone_from(&source.entries);
        self.holes = source.holes;
    }
}

#[derive(Clone, Copy)]
struct Entry {
    key: u32,
    key_len: u32,
    value: u32,
    value_len: u32,
}

impl std::fmt::Debug for HeaderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.to_strings()).finish()
    }
}

impl PartialEq for HeaderMap {
    fn eq(&self, other: &HeaderMap) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> HeaderMap {
        HeaderMap::default()
    }

    /// An empty map with room for `entries` entries of `bytes` bytes in all: building a map of
    /// known size without regrowing its buffers.
    pub fn with_capacity(bytes: usize, entries: usize) -> HeaderMap {
        HeaderMap { data: Vec::with_capacity(bytes + 2 * entries), entries: Vec::with_capacity(entries), holes: false }
    }

    /// Room for `entries` more entries of `bytes` bytes in all (see `with_capacity`).
    pub fn reserve(&mut self, bytes: usize, entries: usize) {
        self.data.reserve(bytes + 2 * entries);
        self.entries.reserve(entries);
    }

    /// A map from pairs, keys lower-cased.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.extend(pairs);
        map
    }

    /// Number of entries (repeated keys count once each).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, keeping the buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
        self.holes = false;
    }

    fn key_of(&self, e: &Entry) -> &[u8] {
        &self.data[e.key as usize..(e.key + e.key_len) as usize]
    }

    fn value_of(&self, e: &Entry) -> &[u8] {
        &self.data[e.value as usize..(e.value + e.value_len) as usize]
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.entries.iter().map(|e| (self.key_of(e), self.value_of(e)))
    }

    /// The first value of `key` (case-insensitive), as Envoy's `get` returns it.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.position(key).map(|i| self.value_of(&self.entries[i]))
    }

    /// The first value of `key` as text (lossy), for reports.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn position(&self, key: &[u8]) -> Option<usize> {
        // The length first, from the entry: most keys differ in it, and then no slice is made.
        self.entries.iter().position(|e| e.key_len as usize == key.len() && self.key_of(e).eq_ignore_ascii_case(key))
    }

    /// Appends a value and its NUL.
    fn push_bytes(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.data.push(0);
        (start as u32, bytes.len() as u32)
    }

    /// Appends an entry (Envoy `addCopy`): repeated keys are kept.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let k = self.data.len() as u32;
        push_lower(&mut self.data, key);
        let key_len = key.len() as u32;
        let (v, value_len) = self.push_bytes(value);
        self.entries.push(Entry { key: k, key_len, value: v, value_len });
    }

    /// Appends every pair.
    pub fn extend<K: AsRef<[u8]>, V: AsRef<[u8]>>(&mut self, pairs: &[(K, V)]) {
        let bytes: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
        self.data.reserve(bytes);
        self.entries.reserve(pairs.len());
        for (k, v) in pairs {
            self.add(k.as_ref(), v.as_ref());
        }
    }

    /// Sets `key` to a single `value`: the first entry keeps its place, later repeats go;
    /// appended when absent (`proxy_replace_header_map_value`).
    pub fn replace(&mut self, key: &[u8], value: &[u8]) {
        match self.position(key) {
            Some(i) => {
                self.holes = true;
                let (v, value_len) = self.push_bytes(value);
                self.entries[i].value = v;
                self.entries[i].value_len = value_len;
                self.remove_from(key, i + 1);
            }
            None => self.add(key, value),
        }
    }

    /// Removes every entry of `key`; absent keys are fine.
    pub fn remove(&mut self, key: &[u8]) {
        self.remove_from(key, 0);
    }

    fn remove_from(&mut self, key: &[u8], start: usize) {
        let data = &self.data;
        let matches = |e: &Entry| {
            e.key_len as usize == key.len()
                && data[e.key as usize..(e.key + e.key_len) as usize].eq_ignore_ascii_case(key)
        };
        // Most removals find nothing (a filter stripping headers that requests rarely carry): a
        // read-only scan says so, cheaper than `retain`'s walk that moves every entry.
        if !self.entries.iter().skip(start).any(matches) {
            return;
        }
        self.holes = true;
        let mut index = 0;
        self.entries.retain(|e| {
            let keep = index < start || !matches(e);
            index += 1;
            keep
        });
    }

    /// Size of the serialized form (0 for an empty map: the ABI's null result).
    pub fn serialized_len(&self) -> usize {
        if self.entries.is_empty() {
            return 0;
        }
        if !self.holes {
            return 4 + 8 * self.entries.len() + self.data.len();
        }
        4 + self.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum::<usize>()
    }

    /// Writes the serialized form into `out`, which must be `serialized_len()` long:
    /// `u32 count`, `count × (u32 key_len, u32 value_len)`, then `key\0value\0` per entry.
    pub fn serialize_into(&self, out: &mut [u8]) {
        if self.entries.is_empty() {
            return;
        }
        out[..4].copy_from_slice(&(self.len() as u32).to_le_bytes());
        let mut sizes = 4;
        for e in &self.entries {
            out[sizes..sizes + 4].copy_from_slice(&e.key_len.to_le_bytes());
            out[sizes + 4..sizes + 8].copy_from_slice(&e.value_len.to_le_bytes());
            sizes += 8;
        }
        let mut data = sizes;
        if !self.holes {
            out[data..].copy_from_slice(&self.data);
            return;
        }
        for (k, v) in self.iter() {
            out[data..data + k.len()].copy_from_slice(k);
            data += k.len();
            out[data] = 0;
            data += 1;
            out[data..data + v.len()].copy_from_slice(v);
            data += v.len();
            out[data] = 0;
            data += 1;
        }
    }

    /// The serialized form as a new vector.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = vec![0; self.serialized_len()];
        self.serialize_into(&mut out);
        out
    }

    /// Replaces the content with the pairs of a serialized map.
    pub fn set_serialized(&mut self, bytes: &[u8]) -> Result<(), PairsError> {
        let pairs = parse_pairs(bytes)?;
        self.clear();
        for (k, v) in pairs {
            self.add(k, v);
        }
        Ok(())
    }

    /// Entries as lossy UTF-8 strings, for reports.
    pub fn to_strings(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }
}

/// Appends `key` lower-cased (ASCII), eight bytes at a time, and its NUL. Lower-casing while
/// copying matters: re-reading bytes just written by memcpy stalls on store-to-load forwarding,
/// and a byte loop costs about as much as the rest of a header's handling; this runs for every
/// header of every exchange. The tail (under eight bytes) is gathered into one word, lower-cased
/// and written whole, NUL included, then the vector cut back to the NUL: one store, no loop.
fn push_lower(out: &mut Vec<u8>, key: &[u8]) {
    out.reserve(key.len() + 8);
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        out.extend_from_slice(&lower8(u64::from_ne_bytes(word)).to_ne_bytes());
    }
    let rest = chunks.remainder();
    // Shifted in byte by byte (a copy into an array would be a call to memcpy), first byte lowest.
    let tail = rest.iter().rev().fold(0u64, |word, &b| (word << 8) | u64::from(b));
    let end = out.len() + rest.len() + 1;
    out.extend_from_slice(&lower8(tail).to_le_bytes());
    out.truncate(end);
}

/// ASCII lower-casing of eight bytes at once (SWAR): bit 7 of each byte of `upper` is set
/// exactly for bytes in `A..=Z`; shifted down to bit 5 it is the case bit.
fn lower8(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let seven = x & LOW7;
    let ge_a = seven + 0x3f3f_3f3f_3f3f_3f3f; // bit 7 set when byte >= 'A' (0x41)
    let gt_z = seven + 0x2525_2525_2525_2525; // bit 7 set when byte > 'Z' (0x5a)
    let upper = (ge_a ^ gt_z) & !x & HIGH;
    x | (upper >> 2)
}

/// A serialized map that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed serialized header map: {0}")]
pub struct PairsError(&'static str);

/// One (key, value) of a serialized map, borrowed from it.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Parses the ABI's serialized pair format. Empty input (and a lone NUL, which the spec
/// also allows) is an empty map.
pub fn parse_pairs(bytes: &[u8]) -> Result<Vec<Pair<'_>>, PairsError> {
    if bytes.len() <= 1 {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize, PairsError> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or(PairsError("truncated sizes"))
    };
    let count = u32_at(0)?;
    if count > bytes.len() / 8 {
        return Err(PairsError("count larger than the data"));
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = 4 + 8 * count;
    for i in 0..count {
        let klen = u32_at(4 + 8 * i)?;
        let vlen = u32_at(8 + 8 * i)?;
        let key = bytes.get(data..data + klen).ok_or(PairsError("truncated key"))?;
        data += klen + 1;
        let value = bytes.get(data..data + vlen).ok_or(PairsError("truncated value"))?;
        data += vlen + 1;
        if data > bytes.len() {
            return Err(PairsError("missing terminator"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_form_matches_the_spec_example() {
        let map = HeaderMap::from_pairs(&[("a", "1"), ("b", "22")]);
        let expected: Vec<u8> =
            vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0];
        assert_eq!(map.serialize(), expected);
        let back = parse_pairs(&expected).expect("parses");
        assert_eq!(back, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"22"[..])]);
    }

    #[test]
    fn keys_are_lower_cased_and_lookups_ignore_case() {
        let mut map = HeaderMap::new();
        map.add(b"X-Foo", b"A");
        map.add(b"x-foo", b"B");
        assert_eq!(map.get(b"X-FOO"), Some(&b"A"[..]), "first value wins");
        map.replace(b"X-Foo", b"C");
        assert_eq!(map.to_strings(), vec![("x-foo".into(), "C".into())]);
        map.remove(b"x-FOO");
        assert!(map.is_empty());
        assert_eq!(map.serialized_len(), 0, "empty map hands over nothing");
    }

    #[test]
    fn remove_takes_every_value_of_a_key_and_nothing_else() {
        let mut map = HeaderMap::new();
        for (k, v) in [("a", "1"), ("X-Ebb-Sig", "2"), ("b", "3"), ("x-ebb-sig", "4"), ("c", "5")] {
            map.add(k.as_bytes(), v.as_bytes());
        }
        let before = map.to_strings();
        map.remove(b"x-ebb-command");
        assert_eq!(map.to_strings(), before, "an absent key leaves the map as it was");
        map.remove(b"X-EBB-SIG");
        let left: Vec<(String, String)> =
            [("a", "1"), ("b", "3"), ("c", "5")].map(|(k, v)| (k.into(), v.into())).to_vec();
        assert_eq!(map.to_strings(), left);
        map.replace(b"a", b"9");
        assert_eq!(map.get(b"a"), Some(&b"9"[..]));
    }

    #[test]
    fn lower_casing_matches_the_standard_library_for_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        for window in [1, 7, 8, 9, 16, 255] {
            for chunk in all.chunks(window) {
                let mut ours = b"prefix".to_vec();
                push_lower(&mut ours, chunk);
                let mut expected = b"prefix".to_vec();
                expected.extend(chunk.to_ascii_lowercase());
                expected.push(0);
                assert_eq!(ours, expected, "lower-cased, then its NUL");
            }
        }
    }

    /// An edit of a map, for the property below.
    #[derive(Debug, Clone)]
    enum Edit {
        Add(String, String),
        Replace(String, String),
        Remove(String),
        Clear,
    }

    fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        // Few names, so that replaces and removes find what adds put there.
        let name = "(a|B|x-ebb-sig|Content-Length|:path)";
        let value = "[ -~]{0,12}";
        prop_oneof![
            4 => (name, value).prop_map(|(k, v)| Edit::Add(k, v)),
            2 => (name, value).prop_map(|(k, v)| Edit::Replace(k, v)),
            2 => name.prop_map(Edit::Remove),
            1 => Just(Edit::Clear),
        ]
    }

    proptest::proptest! {
        /// However a map was edited, it hands over exactly its entries in order (whether its
        /// buffer is still the serialized data section or has holes), and a copy does the same.
        #[test]
        fn a_map_serializes_its_entries_after_any_edits(edits in proptest::collection::vec(edit(), 0..24)) {
            let mut map = HeaderMap::new();
            for e in &edits {
                match e {
                    Edit::Add(k, v) => map.add(k.as_bytes(), v.as_bytes()),
                    Edit::Replace(k, v) => map.replace(k.as_bytes(), v.as_bytes()),
                    Edit::Remove(k) => map.remove(k.as_bytes()),
                    Edit::Clear => map.clear(),
                }
            }
            let entries: Vec<(Vec<u8>, Vec<u8>)> = map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            let bytes = map.serialize();
            proptest::prop_assert_eq!(bytes.len(), map.serialized_len());
            let back: Vec<(Vec<u8>, Vec<u8>)> =
                parse_pairs(&bytes).expect("parses").into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            proptest::prop_assert_eq!(&back, &entries);
            let mut copy = HeaderMap::from_pairs(&[("stale", "bytes")]);
            copy.clone_from(&map);
            proptest::prop_assert_eq!(copy.serialize(), bytes);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(parse_pairs(&[1, 0, 0, 0, 5, 0, 0, 0]).is_err());
        assert!(parse_pairs(&[0]).expect("lone NUL").is_empty());
    }
}
