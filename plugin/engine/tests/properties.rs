//! Property tests (proptest) of what the filter takes from outside: the plugin configuration
//! parser, the signatures of control calls, the control API's router and path recognition, and
//! the arithmetic of faults built from arbitrary numbers. What they found is in docs/fuzzing.md.

use ebb_engine::auth::{self, sign, Signed};
use ebb_engine::config::{bounds, ControlConfig, Limits, PoolConfig, PoolMatch, MAX_CONFIG_BYTES};
use ebb_engine::control::{self, Call, Mutation, View};
use ebb_engine::control_path::{classify, normalise, PathClass};
use ebb_engine::fault::{Deploy, DrainMode, OnAbort};
use ebb_engine::request::StaticRequest;
use ebb_engine::{Config, Duration, Engine, FaultRequest, FaultSet, Protocol};
use proptest::prelude::*;
use serde_json::Value;

const PREFIX: &str = "/.ebb/v1/";

fn duration(min_ms: u64, max_ms: u64) -> impl Strategy<Value = Duration> {
    (min_ms..=max_ms).prop_map(Duration::from_millis)
}

fn pool() -> impl Strategy<Value = PoolConfig> {
    (
        "[a-z0-9_-]{1,12}",
        prop_oneof![Just(Protocol::Http), Just(Protocol::Tcp)],
        proptest::option::of("[a-z.]{1,10}"),
        proptest::option::of(1u16..),
        1..=bounds::HOSTS,
        1..=bounds::CAPACITY_PER_HOST,
    )
        .prop_map(|(name, protocol, authority, port, hosts, capacity_per_host)| PoolConfig {
            name,
            protocol,
            matcher: PoolMatch {
                authority: authority.filter(|_| protocol == Protocol::Http),
                port,
                ..PoolMatch::default()
            },
            hosts,
            capacity_per_host,
        })
}

/// Valid configurations: every field within its documented range.
fn config() -> impl Strategy<Value = Config> {
    let limits = (
        duration(1, bounds::MAX_TTL.as_millis()),
        0u32..=1000,
        0u32..=1000,
        0u32..=100_000,
        duration(0, bounds::MAX_DELAY.as_millis()),
        0..=bounds::MAX_FAULTS,
    )
        .prop_flat_map(|(max_ttl, drain, abort, _, max_delay, max_faults)| {
            duration(1, max_ttl.as_millis()).prop_map(move |default_ttl| Limits {
                max_ttl,
                default_ttl,
                max_drain_fraction: f64::from(drain) / 1000.0,
                max_abort_percent: f64::from(abort) / 10.0,
                max_delay,
                max_faults,
            })
        });
    let control = proptest::option::of(
        ("[a-zA-Z0-9+/=]{16,48}", duration(1000, bounds::WINDOW.as_millis()), any::<bool>()).prop_map(
            |(key, window, accept_v1_signatures)| ControlConfig {
                path_prefix: PREFIX.to_string(),
                key,
                window,
                accept_v1_signatures,
            },
        ),
    );
    (proptest::collection::vec(pool(), 0..6), limits, control, any::<bool>(), duration(10, 60_000)).prop_map(
        |(mut pools, limits, control, header_faults, tick)| {
            let mut seen = std::collections::HashSet::new();
            pools.retain(|p| seen.insert(p.name.clone()));
            Config { pools, limits, control, header_faults, faults: Vec::new(), tick }
        },
    )
}

/// Any JSON value but an object.
fn non_object() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    let any_value = leaf.clone().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![leaf, proptest::collection::vec(any_value, 0..5).prop_map(Value::Array)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_configuration_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Config::parse(&bytes);
    }

    #[test]
    fn the_configuration_parser_never_panics_on_damaged_configurations(
        c in config(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = serde_json::to_vec(&c).unwrap();
        for (at, byte) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Err(e) = Config::parse(&bytes) {
            prop_assert!(e.to_string().len() < 2000);
        }
    }

    #[test]
    fn valid_configurations_round_trip(c in config()) {
        let json = serde_json::to_vec(&c).unwrap();
        let parsed = Config::parse(&json);
        prop_assert_eq!(parsed.as_ref(), Ok(&c), "{}", String::from_utf8_lossy(&json));
        // And once more through the parsed value: serialization is stable.
        prop_assert_eq!(serde_json::to_vec(&parsed.unwrap()).unwrap(), json);
    }

    #[test]
    fn anything_but_an_object_is_refused(value in non_object()) {
        let json = serde_json::to_vec(&value).unwrap();
        prop_assert!(Config::parse(&json).is_err(), "{} was accepted", value);
    }

    #[test]
    fn a_struct_field_given_an_array_is_refused(field in prop::sample::select(vec!["limits", "control", "pools", "faults"])) {
        let inner = if field == "pools" || field == "faults" { "[[]]" } else { "[]" };
        let json = format!(r#"{{"{field}":{inner}}}"#);
        prop_assert!(Config::parse(json.as_bytes()).is_err(), "{}", json);
    }

    #[test]
    fn a_signature_breaks_on_any_change(
        key in "[ -~]{16,40}",
        method in prop::sample::select(vec!["GET", "POST", "DELETE", "PUT"]),
        authority in "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        path in "/[ -~]{0,40}",
        timestamp in 1_600_000_000u64..1_900_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..64),
        which in 0usize..6,
        other in "[!-~][ -~]{0,11}",
    ) {
        let signature = sign(key.as_bytes(), method, &authority, &path, timestamp, &body);
        let ts = timestamp.to_string();
        let now = timestamp * 1000;
        let good = Signed { method, authority: &authority, path: &path, timestamp: Some(&ts), signature: Some(&signature), body: &body };
        prop_assert!(auth::verify(key.as_bytes(), 300_000, now, false, good).is_ok());
        let (mut m, mut a, mut p, mut t, mut b) = (method.to_string(), authority.clone(), path.clone(), ts.clone(), body.clone());
        match which {
            0 => m = if method == "GET" { "POST".into() } else { "GET".into() },
            1 => a = format!("{authority}{}", other.to_ascii_lowercase()),
            2 => p = format!("{path}{other}"),
            3 => t = (timestamp + 1 + u64::from(other.as_bytes()[0]) % 5).to_string(),
            4 => b.extend_from_slice(other.as_bytes()),
            _ => b = other.as_bytes().to_vec(),
        }
        prop_assume!(b != body || which < 4);
        let changed = Signed { method: &m, authority: &a, path: &p, timestamp: Some(&t), signature: Some(&signature), body: &b };
        let refused = auth::verify(key.as_bytes(), 300_000, now, false, changed);
        prop_assert!(refused.is_err(), "change {} verified", which);
        prop_assert_eq!(refused.unwrap_err().status(), 401);
    }

    #[test]
    fn the_router_never_panics(method in "[ -~]{0,10}", path in "[ -~]{0,60}", body in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = control::parse_call(PREFIX, &method, &path, &body);
        let _ = classify(PREFIX, &path);
        let _ = normalise(&path);
    }

    #[test]
    fn every_route_routes(id in "[a-z0-9_-]{1,63}", query in "(\\?[a-z0-9=&]{0,20})?") {
        let at = |rest: &str| format!("{PREFIX}{rest}{query}");
        let cases: Vec<(&str, String, Call)> = vec![
            ("GET", at("state"), Call::View(View::State)),
            ("GET", at("faults"), Call::View(View::Faults)),
            ("GET", at("pools"), Call::View(View::Pools)),
            ("DELETE", at("faults"), Call::Mutate(Mutation::ClearAll)),
            ("DELETE", at(&format!("faults/{id}")), Call::Mutate(Mutation::Clear(id.clone()))),
            ("POST", at(&format!("pools/{id}/restore")), Call::Mutate(Mutation::Restore(id.clone()))),
        ];
        for (method, path, want) in cases {
            prop_assert_eq!(classify(PREFIX, &path), PathClass::Control, "{}", path);
            prop_assert_eq!(control::parse_call(PREFIX, method, &path, b"").unwrap(), want);
        }
        let add = format!(r#"{{"id":"{id}","abort":{{"status":503}}}}"#);
        let routed = control::parse_call(PREFIX, "POST", &at("faults"), add.as_bytes()).unwrap();
        prop_assert!(matches!(routed, Call::Mutate(Mutation::Add(ref f)) if f.id.as_deref() == Some(id.as_str())));
    }

    #[test]
    fn look_alike_prefixes_never_route(
        rest in "(state|faults|pools|faults/[a-z]{1,5})",
        disguise in 0usize..7,
        at in any::<prop::sample::Index>(),
    ) {
        let path = format!("{PREFIX}{rest}");
        // A letter of the prefix itself (a different letter after it is a 404 under the prefix).
        let letters: Vec<usize> = PREFIX.char_indices().filter(|(_, c)| c.is_ascii_lowercase()).map(|(i, _)| i).collect();
        let disguised = match disguise {
            0 => {
                let i = letters[at.index(letters.len())];
                format!("{}{}{}", &path[..i], path[i..=i].to_ascii_uppercase(), &path[i + 1..])
            }
            1 => path.replacen('.', "%2e", 1),
            2 => path.replacen('.', "%2E", 1),
            3 => format!("/x{}", path.replacen('/', "/../", 1)),
            4 => path.replacen('/', "//", 1 + at.index(3)),
            5 => path.replacen("/v1/", "/./v1/", 1),
            _ => path.replace('/', "\\"),
        };
        prop_assert_ne!(&disguised, &path);
        prop_assert_eq!(classify(PREFIX, &disguised), PathClass::LookAlike, "{}", disguised);
        prop_assert!(control::parse_call(PREFIX, "GET", &disguised, b"").is_err());
    }

    #[test]
    fn whatever_a_server_reads_as_a_control_path_is_never_forwarded(path in "[/.%2eEbBv1\\\\;a-z]{0,30}") {
        if normalise(&path).starts_with(PREFIX) {
            prop_assert_ne!(classify(PREFIX, &path), PathClass::Outside, "{}", path);
        }
        if classify(PREFIX, &path) == PathClass::Control {
            prop_assert!(path.starts_with(PREFIX));
        }
    }

    #[test]
    fn rollouts_are_checked_not_wrapped(
        hosts in prop_oneof![1u32..=64, 1u32..=bounds::HOSTS],
        batches in prop_oneof![any::<u32>(), 1u32..=64],
        interval_ms in prop_oneof![any::<u64>(), 1u64..=86_400_000, (u64::MAX / 64)..],
        abort in proptest::option::of(prop_oneof![any::<u32>(), 1u32..=64]),
        max_ttl in duration(1, bounds::MAX_TTL.as_millis()),
        ttl in proptest::option::of(any::<u64>()),
        now in 0u64..=u64::MAX / 2,
    ) {
        let config = Config {
            pools: vec![PoolConfig { name: "web".into(), protocol: Protocol::Http, matcher: PoolMatch::default(), hosts, capacity_per_host: 7 }],
            limits: Limits { max_ttl, default_ttl: max_ttl, max_drain_fraction: 1.0, ..Limits::default() },
            ..Config::default()
        };
        let deploy = Deploy {
            pool: "web".into(),
            batches,
            batch_interval: Duration::from_millis(interval_ms),
            abort_at_batch: abort,
            on_abort: OnAbort::LeaveDrained,
            mode: DrainMode::Capacity,
        };
        let request = FaultRequest { ttl: ttl.map(Duration::from_millis), deploy: Some(deploy.clone()), ..FaultRequest::default() };
        let mut set = FaultSet::default();
        if let Ok(fault) = set.add(&config, &request, now).cloned() {
            // Admitted: the rollout fits within max_ttl and the fault's lifetime covers it.
            prop_assert!(deploy.rollout_ms() <= max_ttl.as_millis());
            prop_assert!(fault.expires_ms - fault.start_ms >= deploy.rollout_ms());
            let mut engine = Engine::new(config.clone(), 1);
            engine.set_faults(set.clone());
            for t in [now, now + 1, now + deploy.rollout_ms() / 2, now + deploy.rollout_ms(), fault.expires_ms] {
                let status = engine.pool_status(0, t).unwrap();
                prop_assert!(status.available_hosts <= hosts);
                prop_assert_eq!(status.capacity, u64::from(status.available_hosts) * 7);
                let _ = engine.decide_http(t, Some(0), &mut StaticRequest::http("/", "h"));
            }
        }
    }
}

#[test]
fn oversized_configurations_are_refused_whatever_they_hold() {
    for filler in [b' ', b'{', b'[', b'"', b'9'] {
        let mut bytes = br#"{"pools":[]}"#.to_vec();
        bytes.resize(MAX_CONFIG_BYTES + 1, filler);
        let err = Config::parse(&bytes).unwrap_err();
        assert!(err.message.contains("at most 1048576"), "{err}");
    }
}
