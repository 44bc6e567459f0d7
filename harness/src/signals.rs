// Ctrl-C and SIGTERM as a stop request for ebb's long runs (a game day, a replay with a Prometheus
// of its own): the handler only records the signal, and the run, which polls it between steps,
// cleans up before it exits (a game day's kill switch, the replay's Prometheus). A second signal
// during that cleanup changes nothing (the cleanup is bounded by its own timeouts).

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn record(signal: libc::c_int) {
    // An atomic store is async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`received`] instead of ending the process; forgets any signal
/// recorded before.
pub fn install() {
    RECEIVED.store(0, Ordering::SeqCst);
    #[cfg(unix)]
    // SAFETY: `record` only stores to an atomic, which is async-signal-safe; signal(2) takes no
    // pointer other than the handler's address.
    unsafe {
        libc::signal(libc::SIGINT, record as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, record as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// Gives SIGINT and SIGTERM their default dispositions back (they end the process again).
pub fn restore() {
    #[cfg(unix)]
    // SAFETY: restores the default dispositions; no handler, no pointers.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}

/// The signal received since [`install`], in words.
pub fn received() -> Option<&'static str> {
    #[cfg(unix)]
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("interrupted (SIGINT, Ctrl-C)"),
        libc::SIGTERM => Some("terminated (SIGTERM)"),
        _ => Some("stopped by a signal"),
    }
    #[cfg(not(unix))]
    {
        let _ = RECEIVED.load(Ordering::SeqCst);
        None
    }
}
