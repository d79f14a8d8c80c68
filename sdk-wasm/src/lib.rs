//! # Tidings for the browser
//!
//! The Tidings core compiled to WebAssembly: [`core::Core`] exposes the sans-IO
//! [`tidings::Client`] to JavaScript. Inputs are method calls (with the clocks passed in);
//! outputs come back as one JSON array per drain, so a batch of events crosses the
//! boundary once. The `tidings` npm package (`js/`) is the driver around it: its
//! `driver.ts` owns the WebSocket, the timers, the IndexedDB store and the promises, and
//! `tabs.ts` shares one socket between the tabs of an origin.
//!
//! Why the IO lives in TypeScript: the driver written with web-sys, js-sys futures and
//! closures cost more wasm than the whole core (see `docs/benchmarks.md`, bundle size).
//!
//! On other targets than `wasm32` this crate is empty.
#![cfg(target_arch = "wasm32")]

pub mod core;

pub use crate::core::Core;

/// Talc: smaller and faster than the default dlmalloc in WebAssembly.
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();
