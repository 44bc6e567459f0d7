//! A control call with arbitrary method, authority, path, timestamp, signature and command: the
//! path classification, the router and the signature check never panic, and no call signed for
//! another authority verifies.
#![no_main]

use arbitrary::Arbitrary;
use ebb_engine::auth::{self, Signed};
use ebb_engine::control;
use ebb_engine::control_path;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Call<'a> {
    method: &'a str,
    authority: &'a str,
    other_authority: &'a str,
    path: &'a str,
    timestamp: u32,
    signature: Option<&'a str>,
    command: &'a [u8],
}

const KEY: &[u8] = b"fuzz-key-0123456789abcdef0123456789abcdef";
const PREFIX: &str = "/.ebb/v1/";

fuzz_target!(|c: Call<'_>| {
    let _ = control_path::classify(PREFIX, c.path);
    let _ = control_path::normalise(c.path);
    let _ = control::parse_call(PREFIX, c.method, c.path, c.command);
    let now_ms = u64::from(c.timestamp) * 1000;
    let ts = c.timestamp.to_string();
    let call = |authority, signature| Signed {
        method: c.method,
        authority,
        path: c.path,
        timestamp: Some(ts.as_str()),
        signature,
        body: c.command,
    };
    let _ = auth::verify(KEY, 120_000, now_ms, false, call(c.authority, c.signature));
    // A genuine signature verifies at its own authority, never at another (authorities compare as
    // hosts do: case and surrounding blanks aside).
    let genuine = auth::sign(KEY, c.method, c.authority, c.path, u64::from(c.timestamp), c.command);
    if auth::verify(KEY, 120_000, now_ms, false, call(c.authority, Some(&genuine))).is_ok()
        && !c.other_authority.trim().eq_ignore_ascii_case(c.authority.trim())
    {
        assert!(auth::verify(KEY, 120_000, now_ms, false, call(c.other_authority, Some(&genuine))).is_err());
    }
});
