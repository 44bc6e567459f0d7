// Properties (`proxy_get_property` / `proxy_set_property`): a settable attribute map per proxy,
// per VM root and per stream, plus the values Envoy derives from the stream itself.

use std::collections::HashMap;

/// Property paths as the ABI passes them: segments joined by NUL, no trailing NUL.
/// The caller writes them with dots (`source.address`); [`path_key`] converts.
#[derive(Clone, Default, Debug)]
pub(crate) struct PropertyMap {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

impl PropertyMap {
    pub(crate) fn get(&self, path: &[u8]) -> Option<&[u8]> {
        self.map.get(path).map(Vec::as_slice)
    }

    pub(crate) fn set(&mut self, path: &[u8], value: &[u8]) {
        self.map.insert(path.to_vec(), value.to_vec());
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
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

/// A property value for numbers, as Envoy serializes integers: 8 bytes little-endian.
pub fn int_value(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::path_key;

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
