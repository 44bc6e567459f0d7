// Prometheus's remote-write protocol (1.0): a protobuf WriteRequest, snappy block-compressed. The
// messages are written by hand for prost (the fields of prompb/types.proto that ebb sends).

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A series' labels as the protocol wants them: sorted by name.
pub fn labels(pairs: &[(String, String)]) -> Vec<Label> {
    let mut labels: Vec<Label> = pairs.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// The body of a remote-write POST.
pub fn body(request: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_request_round_trips_through_snappy_and_protobuf() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels(&[("job".into(), "envoy".into()), ("__name__".into(), "up".into())]),
                samples: vec![Sample { value: 1.0, timestamp: 1_612_483_215_000 }],
            }],
        };
        assert_eq!(request.timeseries[0].labels[0].name, "__name__");
        let bytes = body(&request).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&bytes).unwrap();
        assert_eq!(WriteRequest::decode(raw.as_slice()).unwrap(), request);
    }
}
