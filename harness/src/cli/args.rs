// Argument value parsers shared by subcommands: `STRING|@FILE`, `name: value` headers,
// `KEY=VALUE` pairs and durations such as `1500ms`.

use std::time::Duration;

use anyhow::{bail, Context};

/// `--host-profile`: the proxy the host plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HostProfile {
    /// Envoy (proxy-wasm-cpp-host), the default.
    #[default]
    Envoy,
    /// Kong's ngx_wasm_module in nginx: counters-only increments, tick period from the root
    /// context only and once, end_of_stream 0 on headers, exact shared-data CAS, a line feed
    /// after local-reply bodies, replaced bodies cut to the old size, traps where it has no
    /// answer (docs/abi.md, "Host profiles").
    NgxWasm,
    /// Both at once: whatever Envoy or ngx_wasm_module refuses is refused, and where they report
    /// differently the filter gets the less convenient report. Passing here means running in both.
    Strict,
}

impl From<HostProfile> for ebb_harness::HostProfile {
    fn from(p: HostProfile) -> ebb_harness::HostProfile {
        match p {
            HostProfile::Envoy => ebb_harness::HostProfile::Envoy,
            HostProfile::NgxWasm => ebb_harness::HostProfile::NgxWasm,
            HostProfile::Strict => ebb_harness::HostProfile::Strict,
        }
    }
}

/// `STRING` or `@FILE` (the file's bytes).
pub fn string_or_file(value: &str) -> anyhow::Result<Vec<u8>> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read {path}")),
        None => Ok(value.as_bytes().to_vec()),
    }
}

/// `name: value` (the value may be empty; the name is lower-cased later by the host).
pub fn header(value: &str) -> Result<(String, String), String> {
    // Pseudo-headers start with ':' so split on the first ':' after the name.
    let start = usize::from(value.starts_with(':'));
    match value[start..].find(':') {
        Some(i) => {
            let (name, rest) = value.split_at(start + i);
            Ok((name.trim().to_owned(), rest[1..].trim().to_owned()))
        }
        None => Err(format!("expected 'name: value', got {value:?}")),
    }
}

/// `KEY=VALUE`.
pub fn key_value(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {value:?}"))
}

/// `CLUSTER=HOST:PORT` (`auth=127.0.0.1:9000`, `auth=localhost:9000`).
pub fn upstream(value: &str) -> Result<(String, std::net::SocketAddr), String> {
    use std::net::ToSocketAddrs;
    let (cluster, address) =
        value.split_once('=').ok_or_else(|| format!("expected CLUSTER=HOST:PORT, got {value:?}"))?;
    if cluster.is_empty() {
        return Err(format!("expected CLUSTER=HOST:PORT, got {value:?} (no cluster name)"));
    }
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address:?} is not a HOST:PORT that resolves: {e}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))?;
    Ok((cluster.to_owned(), addr))
}

/// `500ms`, `2s`, `1.5s`, `3m`, `1h`, `250us`, `10ns`.
pub fn duration(value: &str) -> anyhow::Result<Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: f64 = number.parse().with_context(|| format!("bad duration {value:?} (examples: 500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("bad duration unit in {value:?} (use ns, us, ms, s, m or h)"),
    };
    if !(0.0..=1e9).contains(&seconds) {
        bail!("duration {value:?} out of range");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_durations_and_pairs() {
        assert_eq!(header("X-A: 1").ok(), Some(("X-A".into(), "1".into())));
        assert_eq!(header(":path: /x").ok(), Some((":path".into(), "/x".into())));
        assert!(header("nocolon").is_err());
        assert_eq!(duration("1500ms").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(duration("2s").ok(), Some(Duration::from_secs(2)));
        assert!(duration("2 weeks").is_err());
        assert_eq!(key_value("a=b=c").ok(), Some(("a".into(), "b=c".into())));
    }

    #[test]
    fn host_profiles_map_one_to_one() {
        use clap::ValueEnum;
        for (arg, name) in
            [(HostProfile::Envoy, "envoy"), (HostProfile::NgxWasm, "ngx-wasm"), (HostProfile::Strict, "strict")]
        {
            assert_eq!(HostProfile::from_str(name, false).ok(), Some(arg));
            assert_eq!(ebb_harness::HostProfile::from(arg).name(), name);
        }
    }
}
