// The accept loop of ebb's own small HTTP/1.1 servers on loopback (the live console, the replay's
// control server for recovery programs, `ebb webhook`), and the thread each of them runs on.

use std::convert::Infallible;
use std::future::Future;
use std::thread::JoinHandle;

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

/// A server running `serve` on a thread of its own, with a current-thread runtime. Stopped (the
/// accept loop ended and the thread joined) by `stop` or when dropped; the runtime is dropped with
/// the thread, which closes the connections still open.
pub(crate) struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `listener` (already non-blocking) with `handle` on a thread named `thread`.
    pub(crate) fn spawn<H, Fut, B>(
        listener: std::net::TcpListener,
        name: &'static str,
        thread: &str,
        handle: H,
    ) -> std::io::Result<Server>
    where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || runtime.block_on(serve(listener, name, stopped, handle)))?;
        Ok(Server { stop: Some(stop), thread: Some(thread) })
    }

    /// Ends the accept loop and waits for the thread. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
