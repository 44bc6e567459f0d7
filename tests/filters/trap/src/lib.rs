//! A Rust SDK HTTP filter that traps (panics) where the request's `:authority` says: one
//! starting with `request-trap` in `on_http_request_headers`, one starting with `response-trap`
//! in `on_http_response_headers`; any other passes. The replay names a pool's authority after the
//! pool (`<pool>.ebb.test`) and hands the filter ebb's configuration, so the pool's name is
//! the only knob a replay test has.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Trap))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Trap;

impl Context for Trap {}

impl Trap {
    fn trap_if(&self, prefix: &str) {
        let authority = self.get_http_request_header(":authority").unwrap_or_default();
        if authority.starts_with(prefix) {
            panic!("trap filter: {prefix} for {authority}");
        }
    }
}

impl HttpContext for Trap {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.trap_if("request-trap");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.trap_if("response-trap");
        Action::Continue
    }
}
