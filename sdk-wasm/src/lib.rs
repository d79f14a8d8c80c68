//! # Tidings for the browser
//!
//! The wasm-bindgen driver of the Tidings core: the browser twin of the native tokio
//! driver (`tidings::native`). It runs the sans-IO [`tidings::Client`] on a
//! `web_sys::WebSocket`, `setTimeout` timers, `performance.now()` / `Date.now()` clocks,
//! `crypto.getRandomValues` seeds and an IndexedDB store, and hands event batches to
//! JavaScript once per animation frame. The `tidings` npm package (`js/`) wraps it with
//! the public TypeScript API and the one-socket-for-all-tabs protocol.
//!
//! On other targets than `wasm32` this crate is empty.
#![cfg(target_arch = "wasm32")]

mod driver;
pub mod js;
pub mod store;

pub use driver::WasmClient;

use wasm_bindgen::prelude::*;

/// The storage namespace of a set of options (`tidings|<url>|<user>`), the key the
/// IndexedDB store and the tab protocol file everything under.
#[wasm_bindgen(js_name = storageNamespace)]
pub fn storage_namespace(options: &str) -> Result<String, JsValue> {
    let options =
        tidings::Options::from_json(options).map_err(|e| js::bad_request(&e.to_string()))?;
    Ok(options.storage_namespace())
}
