// Properties (`proxy_get_property` / `proxy_set_property`): a settable attribute map per proxy,
// per VM root and per stream, plus the values Envoy derives from the stream itself.

/// Property paths as the ABI passes them: segments joined by NUL, no trailing NUL.
/// The caller writes them with dots (`source.address`); [`path_key`] converts.
///
/// A list scanned in order, not a hash map: a stream sets about five properties and a proxy a
/// few more, and a cleared map keeps its entries' buffers, so a worker's streams (their data is
/// reused from one request to the next) set their properties without allocating.
#[derive(Clone, Default, Debug)]
pub(crate) struct PropertyMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Entries in use; the ones after are cleared buffers kept for the next `set`.
    len: usize,
}

impl PropertyMap {
    pub(crate) fn get(&self, path: &[u8]) -> Option<&[u8]> {
        self.entries[..self.len].iter().find(|(k, _)| k == path).map(|(_, v)| v.as_slice())
    }

    pub(crate) fn set(&mut self, path: &[u8], value: &[u8]) {
        self.set_with(|key| key == path, |key| key.extend_from_slice(path), value);
    }

    /// `set(&path_key(path), value)` without building the key apart, for the plain dotted paths
    /// a proxy sets on every stream.
    pub(crate) fn set_dotted(&mut self, path: &str, value: &[u8]) {
        let b = path.as_bytes();
        if b.iter().any(|&c| c == b'[' || c == 0) {
            return self.set(&path_key(path), value);
        }
        let nul = |c: &u8| if *c == b'.' { 0 } else { *c };
        self.set_with(
            |key| key.len() == b.len() && key.iter().zip(b).all(|(k, c)| *k == nul(c)),
            |key| key.extend(b.iter().map(nul)),
            value,
        );
    }

    fn set_with(&mut self, is: impl Fn(&[u8]) -> bool, write_key: impl FnOnce(&mut Vec<u8>), value: &[u8]) {
        if let Some((_, v)) = self.entries[..self.len].iter_mut().find(|(k, _)| is(k)) {
            v.clear();
            v.extend_from_slice(value);
            return;
        }
        if self.len == self.entries.len() {
            self.entries.push((Vec::new(), Vec::new()));
        }
        let (k, v) = &mut self.entries[self.len];
        k.clear();
        write_key(k);
        v.clear();
        v.extend_from_slice(value);
        self.len += 1;
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

/// A property path as the ABI passes it (Envoy's segments joined by NUL): `source.address` →
/// `source\0address`. A segment that contains dots is written in brackets and quotes,
/// `metadata.filter_metadata["envoy.filters.http.lua"].key` (or `['...']`); a path that already
/// contains NUL is taken as is.
pub fn path_key(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    if b.contains(&0) {
        return b.to_vec();
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let quoted = match (b[i], b.get(i + 1)) {
            (b'[', Some(&q)) if q == b'"' || q == b'\'' => {
                let close = [q, b']'];
                b[i + 2..].windows(2).position(|w| w == close).map(|end| (i + 2, i + 2 + end))
            }
            _ => None,
        };
        match quoted {
            Some((start, end)) => {
                if !out.is_empty() && out.last() != Some(&0) {
                    out.push(0);
                }
                out.extend_from_slice(&b[start..end]);
                i = end + 2;
            }
            None => {
                out.push(if b[i] == b'.' { 0 } else { b[i] });
                i += 1;
            }
        }
    }
    out
}

/// A property path converted once to the ABI's form (`path_key`), for a proxy that sets the same
/// properties on every stream (`Http::set_properties`): no per-request conversion of its dots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyPath(Vec<u8>);

impl PropertyPath {
    /// The path `dotted` (`source.address`, `metadata["a.b"].c`) as the ABI passes it.
    pub fn new(dotted: &str) -> PropertyPath {
        PropertyPath(path_key(dotted))
    }

    /// The ABI's form: segments joined by NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A property value for numbers, as Envoy serializes integers: 8 bytes little-endian.
pub fn int_value(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::{path_key, PropertyMap, PropertyPath};

    #[test]
    fn a_cleared_map_forgets_its_properties_and_dotted_paths_are_keys() {
        let mut map = PropertyMap::default();
        map.set_dotted("source.address", b"10.0.0.1:5");
        map.set(b"destination\0port", b"80");
        map.set_dotted("source.address", b"10.0.0.2:6");
        assert_eq!(map.get(b"source\0address"), Some(&b"10.0.0.2:6"[..]), "replaced, not added");
        map.set_dotted(r#"metadata["a.b"].c"#, b"x");
        assert_eq!(map.get(b"metadata\0a.b\0c"), Some(&b"x"[..]));
        map.clear();
        assert_eq!(map.get(b"source\0address"), None);
        assert_eq!(map.get(b"destination\0port"), None);
        map.set_dotted("destination.port", b"81");
        assert_eq!(map.get(b"destination\0port"), Some(&b"81"[..]), "buffers reused after a clear");
        assert_eq!(map.get(b"source\0address"), None);
    }

    #[test]
    fn a_path_converted_once_sets_what_the_dotted_path_sets() {
        for dotted in ["source.address", "xds.cluster_name", r#"metadata["a.b"].c"#, "plain"] {
            let (mut by_path, mut by_dots) = (PropertyMap::default(), PropertyMap::default());
            by_path.set(PropertyPath::new(dotted).as_bytes(), b"v");
            by_dots.set_dotted(dotted, b"v");
            assert_eq!(by_path.get(&path_key(dotted)), Some(&b"v"[..]), "{dotted}");
            assert_eq!(by_path.get(&path_key(dotted)), by_dots.get(&path_key(dotted)), "{dotted}");
        }
    }

    #[test]
    fn bracketed_segments_keep_their_dots() {
        assert_eq!(path_key("source.address"), b"source\0address");
        let lua = b"metadata\0filter_metadata\0envoy.filters.http.lua\0key".to_vec();
        assert_eq!(path_key(r#"metadata.filter_metadata["envoy.filters.http.lua"].key"#), lua);
        assert_eq!(path_key("metadata.filter_metadata['envoy.filters.http.lua'].key"), lua);
        assert_eq!(path_key("metadata\0filter_metadata\0envoy.filters.http.lua\0key"), lua);
        assert_eq!(path_key(r#"a["b.c"]"#), b"a\0b.c");
        assert_eq!(path_key(r#"a["unclosed"#), b"a[\"unclosed");
    }
}
