//! The plugin configuration parser on any bytes: never a panic (a panic in the filter is a trap in
//! the proxy), and whatever it accepts is valid and survives a round trip through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = ebb_engine::Config::parse(data) {
        config.validate().expect("an accepted configuration validates");
        let again = serde_json::to_vec(&config).expect("serialises");
        ebb_engine::Config::parse(&again).expect("its own JSON parses again");
    }
});
