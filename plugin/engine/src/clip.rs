// Bounding text that comes from a configuration or a caller before it reaches a log line or a
// response: a 1 MB pool name or path is shown by its start and its size, never whole.

use std::borrow::Cow;

/// Longest echo of one caller-supplied value (a name, an id, a path) inside a message.
pub const VALUE: usize = 80;
/// Longest message or log line the filter writes about one event.
pub const LINE: usize = 512;

/// `text` unchanged when it has at most `max` bytes; otherwise its first bytes (cut on a
/// character boundary) followed by `… (N bytes)`, N being the whole length.
pub fn clip(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// [`clip`] for a `String` the caller owns (messages built with `format!`).
pub fn clip_owned(text: String, max: usize) -> String {
    match clip(&text, max) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// A value quoted as `{:?}` would, clipped to [`VALUE`] bytes first.
pub fn quoted(value: &str) -> String {
    format!("{:?}", clip(value, VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_untouched_and_long_text_says_its_size() {
        assert_eq!(clip("web", 10), "web");
        let long = "x".repeat(1 << 20);
        let cut = clip(&long, VALUE);
        assert!(cut.len() < 120, "{}", cut.len());
        assert!(cut.ends_with("… (1048576 bytes)"), "{cut}");
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        let text = "é".repeat(100); // two bytes each
        let cut = clip(&text, 5);
        assert!(cut.starts_with("éé…"), "{cut}");
        assert_eq!(quoted(&"a".repeat(3)), "\"aaa\"");
    }
}
