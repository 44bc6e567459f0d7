// Control key hygiene: keys published in ebb's own README, docs and examples are refused (the
// control API stays off), and short keys are accepted with a warning.

/// Keys printed in ebb's README, docs/staging.md, deploy/ and examples/: anyone can read them,
/// so a proxy configured with one must not obey signed calls.
pub const KNOWN_EXAMPLE_KEYS: &[&str] = &[
    // README.md, "Configure the filter"
    "a-secret-of-16-bytes-or-more",
    // deploy/envoy/envoy.yaml, deploy/istio/wasmplugin.yaml, docs/staging.md's render step
    "CHANGE-ME-ebb-staging-placeholder-key",
    // examples/bitbucket-pools.json
    "demo-key-change-me-0123456789",
];

/// Shortest key taken without a warning: 32 bytes, the size of `openssl rand -hex 16` and of
/// an HMAC-SHA256 output.
pub const STRONG_KEY_BYTES: usize = 32;

/// What the filter makes of `control.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Long enough and not published.
    Fine,
    /// Accepted, with this warning for the log.
    Weak(String),
    /// Not accepted: the control API stays off (answers 503), for this reason.
    Refused(String),
}

/// Judges a control key. The comparison ignores surrounding whitespace and ASCII case, so a
/// published key does not pass by a trailing newline or a capital letter.
pub fn judge(key: &str) -> KeyVerdict {
    let trimmed = key.trim();
    if KNOWN_EXAMPLE_KEYS.iter().any(|known| trimmed.eq_ignore_ascii_case(known)) || trimmed.contains("CHANGE-ME") {
        return KeyVerdict::Refused(
            "control.key is an example key published in ebb's docs: render a key of your own \
             (openssl rand -hex 32) into the configuration, see docs/staging.md"
                .to_string(),
        );
    }
    if key.len() < STRONG_KEY_BYTES {
        return KeyVerdict::Weak(format!(
            "control.key has {} bytes; use at least {STRONG_KEY_BYTES} (openssl rand -hex 32)",
            key.len()
        ));
    }
    KeyVerdict::Fine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_keys_are_refused_whatever_their_case_or_padding() {
        for key in KNOWN_EXAMPLE_KEYS {
            assert!(matches!(judge(key), KeyVerdict::Refused(_)), "{key}");
            assert!(matches!(judge(&format!(" {}\n", key.to_uppercase())), KeyVerdict::Refused(_)), "{key}");
        }
        assert!(matches!(judge("CHANGE-ME-to-something-of-my-own-please"), KeyVerdict::Refused(_)));
    }

    #[test]
    fn short_keys_warn_and_long_ones_pass() {
        let KeyVerdict::Weak(why) = judge("staging-key-0123456789") else { panic!("22 bytes should warn") };
        assert!(why.contains("22 bytes") && why.contains("32"), "{why}");
        assert_eq!(judge(&"k".repeat(32)), KeyVerdict::Fine);
    }
}
