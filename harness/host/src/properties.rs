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

/// `source.address` → `source\0address`.
pub fn path_key(dotted: &str) -> Vec<u8> {
    dotted.bytes().map(|b| if b == b'.' { 0 } else { b }).collect()
}

/// A property value for numbers, as Envoy serializes integers: 8 bytes little-endian.
pub fn int_value(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
