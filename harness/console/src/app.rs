// The page's wiring: the EventSource on /events, a clock that redraws the header and SLO clocks four
// times a second, and the Halt button (POST /halt with the page's token in a header; the server signs).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{spawn_local, JsFuture};
use web_sys::{Document, EventSource, HtmlButtonElement, MessageEvent, Request, RequestInit, Response};

use ebb_chart::live::LiveEvent;

use crate::state::State;
use crate::{parse_event, view};

/// Milliseconds between clock redraws; charts are redrawn every `CHART_EVERY` of them.
const TICK_MS: i32 = 250;
const CHART_EVERY: u32 = 4;

/// The page's state and what the page needs to act.
pub struct Page {
    pub state: State,
    pub connected: bool,
    /// Events applied since the page loaded (on the root element as `data-events`, for tests).
    pub events: u64,
    pub error: Option<String>,
    ticks: u32,
}

impl Page {
    pub fn new() -> Page {
        Page { state: State::default(), connected: false, events: 0, error: None, ticks: 0 }
    }

    /// Applies one event's data (as sent by the server) and reports whether it was the last.
    pub fn receive(&mut self, data: &str, now_ms: f64) -> bool {
        match parse_event(data) {
            Ok(event) => {
                self.state.apply(&event, now_ms);
                self.events = self.events.saturating_add(1);
                matches!(event, LiveEvent::End { .. })
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

fn set_html(document: &Document, id: &str, html: &str) {
    if let Some(element) = document.get_element_by_id(id) {
        element.set_inner_html(html);
    }
}

/// Draws every section into the elements of index.html (`header`, `slos`, ...); `charts` also
/// redraws the pools.
pub fn render(document: &Document, page: &Page, now_ms: f64, charts: bool) {
    let now_s = page.state.elapsed_s(now_ms, page.connected);
    set_html(document, "header", &view::header(&page.state, now_s, page.connected));
    set_html(document, "slos", &view::slos(&page.state, now_s));
    if charts {
        set_html(document, "alerts", &view::alerts(&page.state));
        set_html(document, "pools", &view::charts(&page.state, now_s));
        set_html(document, "commands", &view::commands(&page.state));
        set_html(document, "notes", &view::notes(&page.state));
    }
    if let Some(root) = document.get_element_by_id("console") {
        let _ = root.set_attribute("data-events", &page.events.to_string());
        let _ = root.set_attribute("data-connected", if page.connected { "true" } else { "false" });
    }
    if let Some(error) = &page.error {
        set_html(document, "problem", &ebb_chart::markup::text(error));
    }
    if page.state.end.is_some() {
        if let Some(button) = document.get_element_by_id("halt").and_then(|e| e.dyn_into::<HtmlButtonElement>().ok()) {
            button.set_disabled(true);
        }
    }
}

/// The page's entry point, called by boot.js with the token of the page's URL.
#[wasm_bindgen]
pub fn start(token: String) -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let document = window.document().ok_or("no document")?;
    let page = Rc::new(RefCell::new(Page::new()));
    render(&document, &page.borrow(), js_sys::Date::now(), true);

    let query = format!("?token={}", String::from(js_sys::encode_uri_component(&token)));
    let source = EventSource::new(&format!("events{query}"))?;
    {
        let (page, document, source2) = (page.clone(), document.clone(), source.clone());
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(data) = event.data().as_string() else { return };
            let mut page = page.borrow_mut();
            page.connected = true;
            let last = page.receive(&data, js_sys::Date::now());
            render(&document, &page, js_sys::Date::now(), true);
            if last {
                // The game day is over: no reconnecting to a server that is about to stop.
                source2.close();
            }
        });
        source.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
    }
    {
        let (page, document) = (page.clone(), document.clone());
        let on_open = Closure::<dyn FnMut()>::new(move || {
            let mut page = page.borrow_mut();
            page.connected = true;
            render(&document, &page, js_sys::Date::now(), false);
        });
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        on_open.forget();
    }
    {
        let (page, document) = (page.clone(), document.clone());
        let on_error = Closure::<dyn FnMut()>::new(move || {
            let mut page = page.borrow_mut();
            page.connected = false;
            render(&document, &page, js_sys::Date::now(), false);
        });
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
    }
    {
        let (page, document) = (page.clone(), document.clone());
        let tick = Closure::<dyn FnMut()>::new(move || {
            let mut page = page.borrow_mut();
            page.ticks = page.ticks.wrapping_add(1);
            let charts = page.ticks % CHART_EVERY == 0;
            render(&document, &page, js_sys::Date::now(), charts);
        });
        window.set_interval_with_callback_and_timeout_and_arguments_0(tick.as_ref().unchecked_ref(), TICK_MS)?;
        tick.forget();
    }
    if let Some(button) = document.get_element_by_id("halt").and_then(|e| e.dyn_into::<HtmlButtonElement>().ok()) {
        let document = document.clone();
        let button2 = button.clone();
        let on_click = Closure::<dyn FnMut()>::new(move || {
            button2.set_disabled(true);
            set_html(&document, "halt-result", "asking ebb gameday to halt…");
            let (token, document, button) = (token.clone(), document.clone(), button2.clone());
            spawn_local(async move {
                let (text, ok) = match halt(&token).await {
                    Ok(text) => (text, true),
                    Err(e) => (e.as_string().unwrap_or_else(|| "the halt request failed".into()), false),
                };
                set_html(&document, "halt-result", &ebb_chart::markup::text(&text));
                if !ok {
                    button.set_disabled(false);
                }
            });
        });
        button.set_onclick(Some(on_click.as_ref().unchecked_ref()));
        on_click.forget();
    }
    Ok(())
}

/// POST /halt with the token in a header (a cookie would not do: another tab could send it).
async fn halt(token: &str) -> Result<String, JsValue> {
    let window = web_sys::window().ok_or("no window")?;
    let init = RequestInit::new();
    init.set_method("POST");
    let headers = web_sys::Headers::new()?;
    headers.set("X-Ebb-Token", token)?;
    init.set_headers(&headers);
    let request = Request::new_with_str_and_init("halt", &init)?;
    let response: Response = JsFuture::from(window.fetch_with_request(&request)).await?.dyn_into()?;
    let body = JsFuture::from(response.text()?).await?.as_string().unwrap_or_default();
    if response.ok() {
        Ok("halt requested: ebb gameday sends the kill switch to every target".into())
    } else {
        Err(JsValue::from_str(&format!("halt refused ({}): {body}", response.status())))
    }
}
