//! Network (TCP) filters: new connection, data both ways with buffering on Pause, rewrites,
//! close requests, close callbacks.

use ebb_harness::{CloseRequest, Peer, Step};

use crate::util::{self, messages};

#[test]
fn data_flows_both_ways_and_can_be_rewritten_or_held() {
    let mut proxy = util::probe("type=tcp", 1);
    let mut tcp = proxy.worker(0).expect("worker").tcp();
    assert!(matches!(tcp.new_connection(), Step::Continue));
    assert!(matches!(tcp.downstream_data(b"hold", false), Step::Pause));
    assert!(matches!(tcp.downstream_data(b" and upper", false), Step::Continue));
    assert_eq!(tcp.to_upstream(), b"HOLD AND UPPER", "held data came back with the next chunk");
    assert!(matches!(tcp.upstream_data(b"pong", false), Step::Continue));
    assert_eq!(tcp.to_downstream(), b"pong");
    tcp.downstream_close(Peer::Remote).expect("close");
    let ctx = tcp.id().context;
    tcp.finish().expect("finish");
    let logs = messages(&proxy);
    assert!(logs.contains(&format!("on_downstream_data id={ctx} size=14 eos=false data=hold and upper")), "{logs:#?}");
    assert!(logs.contains(&format!("on_downstream_close id={ctx} peer=2")), "{logs:#?}");
}

#[test]
fn close_downstream_is_observed() {
    let mut proxy = util::probe("type=tcp", 1);
    let mut tcp = proxy.worker(0).expect("worker").tcp();
    tcp.new_connection();
    let step = tcp.downstream_data(b"please close", false);
    assert!(matches!(&step, Step::Closed { details } if details == "wasm_downstream_close"), "{step:?}");
    assert_eq!(tcp.close_requests(), vec![CloseRequest::Downstream]);
    tcp.finish().expect("finish");
}
