// Envoy's foreign functions (`proxy_call_foreign_function`, `source/extensions/common/wasm/foreign.cc`):
// zlib compress/uncompress, filter state, declared properties and the route cache; NOT_FOUND for the rest.

use std::io::Write;

use flate2::{Compression, Decompress, FlushDecompress};

use super::abi::status;
use super::logs::LogLevel;
use super::state::HostState;
use super::stream::{StreamData, Tcp};
use super::worker::Vm;

/// cpp-host's `WasmResult::SerializationFailure`, Envoy's answer when zlib fails.
const SERIALIZATION_FAILURE: i32 = 3;

/// The filter state key Envoy's TCP proxy reads for the cluster of a connection
/// (`TcpProxy::PerConnectionCluster`, its object factory registered under the same name).
pub const TCP_PROXY_CLUSTER: &str = "envoy.tcp_proxy.cluster";

/// How an object factory of Envoy's registry (`StreamInfo::FilterState::ObjectFactory`) reads
/// the bytes `set_envoy_filter_state` gives it; `createFromBytes` failing is BAD_ARGUMENT.
#[derive(Clone, Copy)]
enum Factory {
    /// A string accessor: any bytes.
    Text,
    /// An `ip:port` address (`Network::Utility::parseInternetAddressAndPortNoThrow`).
    Address,
    /// A decimal integer.
    Integer,
}

/// The object factories a host can play: the names Envoy registers for them.
const FACTORIES: [(&str, Factory); 6] = [
    (TCP_PROXY_CLUSTER, Factory::Text),
    ("envoy.network.upstream_server_name", Factory::Text),
    ("envoy.network.application_protocols", Factory::Text),
    ("envoy.string", Factory::Text),
    ("envoy.network.transport_socket.original_dst_address", Factory::Address),
    ("envoy.tcp_proxy.per_connection_idle_timeout_ms", Factory::Integer),
];

/// Objects set with `set_envoy_filter_state` on one stream, by key, in the order first set.
#[derive(Clone, Debug, Default)]
pub(crate) struct FilterState {
    entries: Vec<(String, Vec<u8>)>,
}

impl FilterState {
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_vec(),
            None => self.entries.push((key.to_owned(), value.to_vec())),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.entries.clone()
    }
}

/// A property declared with `declare_property` from the root context (Envoy's
/// `CelStatePrototype`, kept in the root context's `state_prototypes_`).
#[derive(Clone, Debug)]
pub(crate) struct Declared {
    pub path: Vec<u8>,
    /// Set once per stream; a second `proxy_set_property` is BAD_ARGUMENT (`CelState::setValue`).
    pub readonly: bool,
}

/// Runs foreign function `name` as Envoy's registry does: the result bytes, or the status.
/// `uncompress` output is capped at the VM's memory limit (the result must fit in the guest).
pub(crate) fn call(st: &mut HostState, name: &[u8], args: &[u8]) -> Result<Vec<u8>, i32> {
    match name {
        b"compress" => compress(args),
        b"uncompress" => uncompress(args, st.limits.max_bytes),
        b"set_envoy_filter_state" => set_envoy_filter_state(st, args).map(|()| Vec::new()),
        b"declare_property" => declare_property(st, args).map(|()| Vec::new()),
        b"clear_route_cache" => {
            // Envoy clears the stream's cached route so that the next filter re-picks it; the host
            // has one route, so the pick is the same (an OK, as Envoy answers, even from a root).
            st.log(LogLevel::Debug, "clear_route_cache: the host's single route stays chosen".into());
            Ok(Vec::new())
        }
        _ => {
            let name = String::from_utf8_lossy(name);
            // Envoy answers NOT_FOUND for a function it has not registered (the CEL ones exist
            // only in builds with WASM_USE_CEL_PARSER; `sign`/`verify_signature` need its crypto).
            st.log(LogLevel::Debug, format!("proxy_call_foreign_function {name:?}: no such function in this host"));
            Err(status::NOT_FOUND)
        }
    }
}

/// zlib's `compress` at its default level, as Envoy calls it.
fn compress(args: &[u8]) -> Result<Vec<u8>, i32> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(args).map_err(|_| SERIALIZATION_FAILURE)?;
    encoder.finish().map_err(|_| SERIALIZATION_FAILURE)
}

/// zlib's `uncompress`, growing the output as Envoy does until the stream ends; anything else
/// (a corrupt or truncated stream) is SerializationFailure.
fn uncompress(args: &[u8], limit: usize) -> Result<Vec<u8>, i32> {
    let mut d = Decompress::new(true);
    let mut out = Vec::with_capacity(args.len().saturating_mul(2).saturating_add(2).min(limit));
    loop {
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let consumed = usize::try_from(before_in).unwrap_or(usize::MAX).min(args.len());
        let state =
            d.decompress_vec(&args[consumed..], &mut out, FlushDecompress::None).map_err(|_| SERIALIZATION_FAILURE)?;
        if state == flate2::Status::StreamEnd {
            return Ok(out);
        }
        let progress = d.total_in() != before_in || d.total_out() != before_out;
        if out.len() == out.capacity() {
            // Out of room: grow (Envoy doubles its estimate), up to what the guest could hold.
            if out.capacity() >= limit {
                return Err(SERIALIZATION_FAILURE);
            }
            out.reserve_exact(out.capacity().max(64).min(limit - out.capacity()));
        } else if !progress {
            // Room to spare and nothing moved: the input ended before the stream did.
            return Err(SERIALIZATION_FAILURE);
        }
    }
}

/// `SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }`
/// (`source/extensions/common/wasm/ext/set_envoy_filter_state.proto`), then
/// `Context::setEnvoyFilterState`: NOT_FOUND for a key no factory is registered under,
/// BAD_ARGUMENT when the factory refuses the value, NOT_FOUND outside a stream.
fn set_envoy_filter_state(st: &mut HostState, args: &[u8]) -> Result<(), i32> {
    let fields = proto::parse(args).ok_or(status::BAD_ARGUMENT)?;
    let path = proto::string(&fields, 1).ok_or(status::BAD_ARGUMENT)?;
    let value = proto::string(&fields, 2).ok_or(status::BAD_ARGUMENT)?;
    let Some(&(key, factory)) = FACTORIES.iter().find(|(name, _)| *name == path) else {
        st.log(LogLevel::Debug, format!("set_envoy_filter_state: no object factory for {path:?}"));
        return Err(status::NOT_FOUND);
    };
    let valid = match factory {
        Factory::Text => true,
        Factory::Address => value.parse::<std::net::SocketAddr>().is_ok(),
        Factory::Integer => value.parse::<u64>().is_ok(),
    };
    if !valid {
        return Err(status::BAD_ARGUMENT);
    }
    let ctx = st.effective_context;
    let state = match st.streams.get_mut(&ctx) {
        Some(StreamData::Http(h)) => &mut h.filter_state,
        Some(StreamData::Tcp(t)) => &mut t.filter_state,
        // The root context has no stream info (`getRequestStreamInfo` is null).
        None => return Err(status::NOT_FOUND),
    };
    state.set(key, value.as_bytes());
    Ok(())
}

/// `DeclarePropertyArguments { string name = 1; bool readonly = 2; WasmType type = 3;
/// bytes schema = 4; LifeSpan span = 5; }` (`ext/declare_property.proto`), then
/// `Context::declareProperty`: a name already declared is BAD_ARGUMENT. Envoy keeps the
/// declaration on the context that is running and `setProperty` consults the root context's, so a
/// declaration from a stream callback is OK and has no effect; so it is here.
fn declare_property(st: &mut HostState, args: &[u8]) -> Result<(), i32> {
    let fields = proto::parse(args).ok_or(status::BAD_ARGUMENT)?;
    let name = proto::string(&fields, 1).ok_or(status::BAD_ARGUMENT)?;
    let readonly = proto::varint(&fields, 2) != 0;
    if st.active_context != st.root_context {
        st.log(LogLevel::Debug, format!("declare_property {name:?} from a stream context: no effect (as in Envoy)"));
        return Ok(());
    }
    let path = super::properties::path_key(&name);
    if st.declared.iter().any(|d| d.path == path) {
        return Err(status::BAD_ARGUMENT);
    }
    st.declared.push(Declared { path, readonly });
    Ok(())
}

/// Whether `proxy_set_property(path)` on `stream` must be refused: a read-only declared property
/// that was set already on that stream (`CelState::setValue`: `!mutable_ && initialized_`).
pub(crate) fn refuses_set(declared: &[Declared], stream: &StreamData, path: &[u8]) -> bool {
    declared.iter().any(|d| d.readonly && d.path == path) && stream.filter_property(path).is_some()
}

impl Vm {
    /// Envoy's TCP proxy picks the connection's cluster when the network filters let the
    /// connection through (its `onNewConnection`): the filter state's `envoy.tcp_proxy.cluster`
    /// if a filter set one by then, else the configured cluster (property `cluster_name`).
    pub(crate) fn choose_tcp_cluster(&mut self, ctx: u32) {
        let st = self.store.data_mut();
        let default = st.shared.properties.get(b"cluster_name").unwrap_or_default().to_vec();
        if let Some(StreamData::Tcp(t)) = st.streams.get_mut(&ctx) {
            if t.upstream_cluster.is_none() && !t.downstream.paused && t.closed.is_none() {
                let chosen = t.filter_state.get(TCP_PROXY_CLUSTER).map_or(default, <[u8]>::to_vec);
                t.upstream_cluster = Some(String::from_utf8_lossy(&chosen).into_owned());
            }
        }
    }
}

impl Tcp<'_> {
    /// The cluster Envoy's TCP proxy sends this connection to (see `Vm::choose_tcp_cluster`):
    /// None until the filter let the connection through.
    pub fn upstream_cluster(&mut self) -> Option<String> {
        let ctx = self.id.context;
        match self.proxy.vm_mut(self.id.thread.index()).store.data().streams.get(&ctx) {
            Some(StreamData::Tcp(t)) => t.upstream_cluster.clone(),
            _ => None,
        }
    }

    /// What the filter set with `set_envoy_filter_state` on this connection, by key.
    pub fn filter_state(&mut self) -> Vec<(String, Vec<u8>)> {
        let ctx = self.id.context;
        match self.proxy.vm_mut(self.id.thread.index()).store.data().streams.get(&ctx) {
            Some(StreamData::Tcp(t)) => t.filter_state.entries(),
            _ => Vec::new(),
        }
    }
}

impl super::stream::Http<'_> {
    /// What the filter set with `set_envoy_filter_state` on this stream, by key.
    pub fn filter_state(&mut self) -> Vec<(String, Vec<u8>)> {
        let ctx = self.id.context;
        match self.proxy.vm_mut(self.id.thread.index()).store.data().streams.get(&ctx) {
            Some(StreamData::Http(h)) => h.filter_state.entries(),
            _ => Vec::new(),
        }
    }
}

/// Just enough of protobuf's wire format to read the two argument messages.
mod proto {
    /// A field's value: a varint, or the bytes of a length-delimited field.
    pub(super) enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    fn varint_at(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// (field number, value) in order, or None when the message does not parse.
    pub(super) fn parse(b: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
        let mut at = 0;
        let mut fields = Vec::new();
        while at < b.len() {
            let key = varint_at(b, &mut at)?;
            let (number, wire) = (key >> 3, key & 7);
            if number == 0 {
                return None;
            }
            let value = match wire {
                0 => Value::Varint(varint_at(b, &mut at)?),
                1 | 5 => {
                    at = at.checked_add(if wire == 1 { 8 } else { 4 })?;
                    if at > b.len() {
                        return None;
                    }
                    Value::Fixed
                }
                2 => {
                    let len = usize::try_from(varint_at(b, &mut at)?).ok()?;
                    let end = at.checked_add(len)?;
                    let bytes = b.get(at..end)?;
                    at = end;
                    Value::Bytes(bytes)
                }
                _ => return None,
            };
            fields.push((number, value));
        }
        Some(fields)
    }

    /// A proto3 `string` field (the last occurrence wins; absent is empty). Invalid UTF-8 fails
    /// the parse, as protobuf's proto3 parser does.
    pub(super) fn string(fields: &[(u64, Value<'_>)], number: u64) -> Option<String> {
        match fields.iter().rev().find(|(n, _)| *n == number) {
            None => Some(String::new()),
            Some((_, Value::Bytes(b))) => String::from_utf8(b.to_vec()).ok(),
            Some(_) => None,
        }
    }

    /// A varint field (bool, enum), 0 when absent.
    pub(super) fn varint(fields: &[(u64, Value<'_>)], number: u64) -> u64 {
        match fields.iter().rev().find(|(n, _)| *n == number) {
            Some((_, Value::Varint(v))) => *v,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compress_and_uncompress_round_trip_and_refuse_garbage() {
        // Compressible enough that the output outgrows the first estimate (twice the input).
        let text = b"hello hello hello hello".repeat(100);
        let z = compress(&text).expect("compress");
        assert_eq!(z[0], 0x78, "a zlib header");
        assert!(z.len() < text.len());
        assert_eq!(uncompress(&z, 1 << 20).expect("uncompress"), text);
        assert_eq!(uncompress(b"not zlib", 1 << 20), Err(SERIALIZATION_FAILURE));
        assert_eq!(uncompress(&z[..z.len() - 3], 1 << 20), Err(SERIALIZATION_FAILURE), "truncated");
        assert_eq!(uncompress(&z, 16), Err(SERIALIZATION_FAILURE), "over the limit");
        assert_eq!(uncompress(&compress(b"").expect("empty"), 16).expect("empty back"), b"");
    }

    #[test]
    fn the_argument_messages_parse_by_hand() {
        // path = "k", value = "v", span = 1
        let msg = [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 1];
        let fields = proto::parse(&msg).expect("parses");
        assert_eq!(proto::string(&fields, 1).as_deref(), Some("k"));
        assert_eq!(proto::string(&fields, 2).as_deref(), Some("v"));
        assert_eq!(proto::varint(&fields, 3), 1);
        assert!(proto::parse(&[0x0a, 5, b'k']).is_none(), "truncated");
        assert!(proto::string(&proto::parse(&[0x0a, 1, 0xff]).expect("bytes"), 1).is_none(), "not UTF-8");
    }
}
