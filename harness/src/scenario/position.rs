// Line and column of a JSON path (`alerts[2].for`) in the scenario's text, so that errors of
// meaning point into the file as parse errors do. One forward scan per lookup; no tree is built.

/// 1-based line and column (in bytes, as serde_json counts them) of the value at `path` in
/// `text`, a valid JSON document. A path that goes where the document does not (a field left to
/// its default) gives the position of the deepest value that exists on the way.
pub fn locate(text: &[u8], path: &str) -> (usize, usize) {
    let mut scan = Scanner { text, pos: 0 };
    scan.ws();
    for segment in segments(path) {
        let here = scan.pos;
        let found = match segment {
            Segment::Key(key) => scan.member(key),
            Segment::Index(i) => scan.element(i),
        };
        if found.is_none() {
            scan.pos = here;
            break;
        }
    }
    line_column(text, scan.pos)
}

/// 1-based line and byte column of byte `offset`.
pub fn line_column(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, before.len() - line_start + 1)
}

#[derive(Debug, PartialEq)]
enum Segment<'p> {
    Key(&'p str),
    Index(usize),
}

/// `a.b[3].c` → a, b, 3, c. Parsing stops at anything else (serde_path_to_error's `?`).
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some((digits, tail)) = after.split_once(']') else { break };
            let Ok(i) = digits.parse() else { break };
            out.push(Segment::Index(i));
            rest = tail;
        } else {
            let rest_key = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_key.find(['.', '[']).unwrap_or(rest_key.len());
            let key = &rest_key[..end];
            if key.is_empty() || key == "?" {
                break;
            }
            out.push(Segment::Key(key));
            rest = &rest_key[end..];
        }
    }
    out
}

struct Scanner<'t> {
    text: &'t [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// From an object's `{` to the value of member `key`.
    fn member(&mut self, key: &str) -> Option<()> {
        if self.peek()? != b'{' {
            return None;
        }
        self.pos += 1;
        loop {
            self.ws();
            match self.peek()? {
                b'}' => return None,
                b',' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let name = self.string()?;
            self.ws();
            if self.peek()? != b':' {
                return None;
            }
            self.pos += 1;
            self.ws();
            if name == key {
                return Some(());
            }
            self.skip_value()?;
        }
    }

    /// From an array's `[` to its element `index`.
    fn element(&mut self, index: usize) -> Option<()> {
        if self.peek()? != b'[' {
            return None;
        }
        self.pos += 1;
        let mut i = 0;
        loop {
            self.ws();
            match self.peek()? {
                b']' => return None,
                b',' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            if i == index {
                return Some(());
            }
            self.skip_value()?;
            i += 1;
        }
    }

    /// A string, decoded (`"n\u0061me"` is the key `name`, as serde reads it).
    fn string(&mut self) -> Option<String> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.pos + 1;
        self.skip_string()?;
        let raw = self.text.get(start..self.pos - 1)?;
        if !raw.contains(&b'\\') {
            return Some(String::from_utf8_lossy(raw).into_owned());
        }
        // The document is valid JSON: a JSON string is a JSON value serde can decode.
        serde_json::from_slice(self.text.get(start - 1..self.pos)?).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.pos += 1;
        loop {
            match self.peek()? {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Past one value, however deeply nested (without recursion: depth costs no stack).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => {
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.pos += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "{\n  \"name\": \"x\",\n  \"alerts\": [\n    {\"name\": \"a\", \"for\": \"1m\"},\n    {\"n\\u0061me\": \"b\", \"nested\": [[1, {\"]\": \"}\"}], 2], \"for\": \"2m\"}\n  ]\n}\n";

    #[test]
    fn paths_resolve_to_the_value_they_name() {
        let at = |path: &str| locate(DOC.as_bytes(), path);
        assert_eq!(at(""), (1, 1));
        assert_eq!(at("name"), (2, 11));
        assert_eq!(at("alerts"), (3, 13));
        assert_eq!(at("alerts[0]"), (4, 5));
        assert_eq!(at("alerts[0].for"), (4, 26));
        assert_eq!(at("alerts[1].name"), (5, 19), "escaped keys are decoded");
        assert_eq!(at("alerts[1].for"), (5, 63), "nested brackets inside strings are skipped");
    }

    #[test]
    fn a_path_that_leaves_the_document_stops_at_the_deepest_value_found() {
        let at = |path: &str| locate(DOC.as_bytes(), path);
        assert_eq!(at("alerts[0].window"), at("alerts[0]"));
        assert_eq!(at("alerts[7].for"), at("alerts"));
        assert_eq!(at("topology.proxies"), at(""));
        assert_eq!(at("alerts[?].for"), at("alerts"), "serde_path_to_error's unknown segment");
        assert_eq!(at("name.x"), at("name"), "a key into a string");
    }

    #[test]
    fn segments_of_a_path() {
        assert_eq!(
            segments("traffic[0].points[12]"),
            vec![Segment::Key("traffic"), Segment::Index(0), Segment::Key("points"), Segment::Index(12)]
        );
        assert_eq!(segments("$schema"), vec![Segment::Key("$schema")]);
        assert!(segments("").is_empty());
    }
}
