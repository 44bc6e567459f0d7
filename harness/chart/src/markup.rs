// Escaping of text put into XML and HTML (the SVG chart, the HTML report, JUnit XML, the console):
// one function, so that no report text and no live event can break out of the markup it lands in.

use std::fmt::Write as _;

/// Escapes an attribute value (XML or HTML): markup, both quotes, and whitespace that a parser
/// would otherwise fold into spaces.
pub fn attr(value: &str) -> String {
    escape(value, true)
}

/// Escapes element content (XML or HTML); newlines stay as they are.
pub fn text(value: &str) -> String {
    escape(value, false)
}

/// Characters XML 1.0 cannot carry at all (controls other than tab, newline and carriage return)
/// become U+FFFD, so that no report text can make the document ill-formed.
fn escape(value: &str, in_attribute: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' if in_attribute => {
                let _ = write!(out, "&#{};", c as u32);
            }
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{attr, text};

    #[test]
    fn escapes_markup_quotes_and_controls() {
        assert_eq!(attr(r#"<a b="c" d='e'>&"#), "&lt;a b=&quot;c&quot; d=&apos;e&apos;&gt;&amp;");
        assert_eq!(attr("x\ny\u{1b}[31m"), "x&#10;y\u{fffd}[31m");
        assert_eq!(text("x\ny < z"), "x\ny &lt; z");
    }
}
