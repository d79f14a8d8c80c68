//! Small bridges to the JavaScript world: clocks, randomness, conversions, errors,
//! timers. Everything goes through `globalThis`, so it works in windows and workers and
//! nothing touches `window` before a client is created.

use js_sys::{Function, Reflect};
use tidings::json::ToJson;
use tidings::{ClientError, Now};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// `performance.now()` and `Date.now()`.
pub fn now() -> Now {
    let wall = js_sys::Date::now();
    let mono = Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or(wall);
    Now::new(mono.max(0.0) as u64, wall.max(0.0) as u64)
}

/// A random seed from `crypto.getRandomValues` (falls back to `Math.random`).
pub fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    let filled = Reflect::get(&js_sys::global(), &"crypto".into())
        .ok()
        .and_then(|c| c.dyn_into::<web_sys::Crypto>().ok())
        .is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if filled {
        u64::from_le_bytes(bytes)
    } else {
        (js_sys::Math::random() * u64::MAX as f64) as u64 ^ (js_sys::Date::now() as u64)
    }
}

/// Rust value → JSON text for JavaScript (`JSON.parse` on the other side): one string per
/// call, written by the core's small JSON writer.
pub fn to_json<T: ToJson + ?Sized>(value: &T) -> String {
    value.to_json()
}

/// A JS `Error` named `TidingsError` with the stable `code` (plus `temporary` and
/// `retryAfterMs`), the shape the TypeScript wrapper turns into its `TidingsError` class.
pub fn js_error(error: &ClientError) -> JsValue {
    let retry_after = match error {
        ClientError::Server { retry_after_ms, .. } => *retry_after_ms,
        _ => None,
    };
    make_error(
        error.code(),
        &error.to_string(),
        error.is_temporary(),
        retry_after,
    )
}

/// A `TidingsError`-shaped JS error from parts.
pub fn make_error(code: &str, message: &str, temporary: bool, retry_after: Option<u64>) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("TidingsError");
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    let _ = Reflect::set(&e, &"temporary".into(), &temporary.into());
    if let Some(ms) = retry_after {
        let _ = Reflect::set(&e, &"retryAfterMs".into(), &(ms as f64).into());
    }
    e.into()
}

/// A misuse error (`bad_request`) for values the SDK cannot take.
pub fn bad_request(message: &str) -> JsValue {
    make_error("bad_request", message, false, None)
}

/// A pending `setTimeout` (cleared on drop).
#[derive(Debug)]
pub struct TimeoutHandle(JsValue);

impl TimeoutHandle {
    /// Calls `handler` after `ms`.
    pub fn start(handler: &Function, ms: u64) -> Self {
        Self(set_timeout(handler, ms.min(i32::MAX as u64) as i32))
    }
}

impl Drop for TimeoutHandle {
    fn drop(&mut self) {
        clear_timeout(&self.0);
    }
}

/// True when the page can paint (a visible document); false in hidden tabs and workers,
/// where `requestAnimationFrame` does not run.
pub fn frames_available() -> bool {
    let global = js_sys::global();
    let has_raf =
        Reflect::get(&global, &"requestAnimationFrame".into()).is_ok_and(|f| f.is_function());
    if !has_raf {
        return false;
    }
    Reflect::get(&global, &"document".into())
        .ok()
        .filter(|d| d.is_object())
        .and_then(|d| Reflect::get(&d, &"visibilityState".into()).ok())
        .and_then(|v| v.as_string())
        .is_none_or(|v| v == "visible")
}

/// True in a page whose document is hidden (a background tab).
pub fn is_hidden_document() -> bool {
    Reflect::get(&js_sys::global(), &"document".into())
        .ok()
        .filter(|d| d.is_object())
        .and_then(|d| Reflect::get(&d, &"visibilityState".into()).ok())
        .and_then(|v| v.as_string())
        .is_some_and(|v| v == "hidden")
}

/// `requestAnimationFrame(handler)`; returns the request id to cancel it.
pub fn request_frame(handler: &Function) -> Option<JsValue> {
    let global = js_sys::global();
    let raf = Reflect::get(&global, &"requestAnimationFrame".into()).ok()?;
    let raf: Function = raf.dyn_into().ok()?;
    raf.call1(&global, handler).ok()
}

/// `cancelAnimationFrame(id)`.
pub fn cancel_frame(id: &JsValue) {
    let global = js_sys::global();
    if let Some(f) = Reflect::get(&global, &"cancelAnimationFrame".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
    {
        let _ = f.call1(&global, id);
    }
}

/// Logs an error to the console (listener exceptions must not stop the client).
pub fn console_error(message: &str, value: &JsValue) {
    web_sys::console::error_2(&message.into(), value);
}
