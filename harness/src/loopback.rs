// The accept loop of ebb's own small HTTP/1.1 servers on loopback (the live console, the replay's
// control server for recovery programs): each connection served on its own task until `stopped`.

use std::convert::Infallible;
use std::future::Future;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// Serves `listener` with `handle` until `stopped` fires (or its sender is dropped). `name` goes
/// into the log lines of a listener or connection that fails.
pub(crate) async fn serve<H, Fut, B>(
    listener: std::net::TcpListener,
    name: &'static str,
    mut stopped: oneshot::Receiver<()>,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            log::error!("{name}: cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle)).await {
                            log::debug!("{name}: connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::warn!("{name}: accept: {e}");
                    tokio::task::yield_now().await;
                }
            },
        }
    }
}
