//! Browser tests (`wasm-pack test --headless --chrome sdk-wasm`): the IndexedDB store and
//! the driver, without a server (an unreachable URL keeps the client offline).
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use tidings::{OutboxEntry, Payload, PersistKind, StreamPosition};
use tidings_wasm::store::Store;
use tidings_wasm::WasmClient;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        let set_timeout: Function = Reflect::get(&global, &"setTimeout".into()).unwrap().into();
        set_timeout
            .call2(&global, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", js_sys::Math::random().to_bits())
}

fn entry(msg_id: &str, text: &str) -> OutboxEntry {
    OutboxEntry {
        msg_id: msg_id.into(),
        channel: "news".into(),
        event: "post.created".into(),
        data: Payload::from_json(&format!(r#"{{"text":"{text}","n":1}}"#)).unwrap(),
        created_at_ms: 1_700_000_000_000,
        user: Some("alice".into()),
    }
}

#[wasm_bindgen_test]
async fn store_keeps_outbox_order_positions_and_patterns_across_reopen() {
    let ns = unique("tidings|ws://test|alice");
    let other = unique("tidings|ws://test|bob");
    let (mut store, warning) = Store::open(&ns).await;
    assert!(warning.is_none(), "{warning:?}");
    assert!(store.load().await.unwrap().outbox.is_empty());
    for kind in [
        PersistKind::PutMessage {
            entry: entry("m1", "one"),
        },
        PersistKind::PutMessage {
            entry: entry("m2", "two"),
        },
        PersistKind::PutMessage {
            entry: entry("m3", "three"),
        },
        PersistKind::RemoveMessage {
            msg_id: "m2".into(),
        },
        // Replacing keeps the queue position.
        PersistKind::PutMessage {
            entry: entry("m1", "one again"),
        },
        PersistKind::PutPosition {
            channel: "news".into(),
            position: StreamPosition {
                epoch: "e1".into(),
                offset: 41,
            },
        },
        PersistKind::PutPosition {
            channel: "news".into(),
            position: StreamPosition {
                epoch: "e1".into(),
                offset: 42,
            },
        },
        PersistKind::PutPatternSince {
            pattern: "specs:*".into(),
            since: 1_732_252_800_000,
        },
    ] {
        store.apply(&kind).await.unwrap();
    }
    let (mut bob, _) = Store::open(&other).await;
    bob.apply(&PersistKind::PutMessage {
        entry: entry("b1", "bob's"),
    })
    .await
    .unwrap();

    let (mut reopened, _) = Store::open(&ns).await;
    let snapshot = reopened.load().await.unwrap();
    let ids: Vec<_> = snapshot.outbox.iter().map(|e| e.msg_id.as_str()).collect();
    assert_eq!(ids, ["m1", "m3"]);
    assert_eq!(snapshot.outbox[0].data.value()["text"], "one again");
    assert_eq!(snapshot.positions.get("news").map(|p| p.offset), Some(42));
    assert_eq!(
        snapshot.pattern_since.get("specs:*"),
        Some(&1_732_252_800_000)
    );

    // A message put after reopening goes after the restored ones.
    reopened
        .apply(&PersistKind::PutMessage {
            entry: entry("m4", "four"),
        })
        .await
        .unwrap();
    let (mut again, _) = Store::open(&ns).await;
    let ids: Vec<_> = again
        .load()
        .await
        .unwrap()
        .outbox
        .into_iter()
        .map(|e| e.msg_id)
        .collect();
    assert_eq!(ids, ["m1", "m3", "m4"]);

    // Clear wipes this namespace only.
    again.apply(&PersistKind::Clear).await.unwrap();
    let (mut cleared, _) = Store::open(&ns).await;
    let snapshot = cleared.load().await.unwrap();
    assert!(snapshot.outbox.is_empty() && snapshot.positions.is_empty());
    let (mut bob_again, _) = Store::open(&other).await;
    assert_eq!(bob_again.load().await.unwrap().outbox.len(), 1);
}

#[wasm_bindgen_test]
async fn memory_store_keeps_nothing() {
    let mut store = Store::memory("tidings|ws://test|nobody");
    store
        .apply(&PersistKind::PutMessage {
            entry: entry("m1", "x"),
        })
        .await
        .unwrap();
    assert!(!store.is_durable());
    assert!(store.load().await.unwrap().outbox.is_empty());
}

/// Collects event batches (JSON text) handed to JavaScript.
#[derive(Clone, Default)]
struct Batches(Rc<RefCell<Vec<serde_json::Value>>>);

impl Batches {
    fn callback(&self, also: impl Fn() + 'static) -> (Function, Closure<dyn FnMut(String)>) {
        let batches = self.0.clone();
        let closure = Closure::<dyn FnMut(String)>::new(move |json: String| {
            batches
                .borrow_mut()
                .push(serde_json::from_str(&json).unwrap());
            also();
        });
        (
            closure.as_ref().unchecked_ref::<Function>().clone(),
            closure,
        )
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.0
            .borrow()
            .iter()
            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn options(user: &str) -> String {
    // Nothing listens on port 9: the client stays offline and retries.
    serde_json::json!({
        "url": "ws://127.0.0.1:9/ws",
        "token": "not.a.jwt",
        "user": user,
        "reconnect": { "base_delay_ms": 60000 }
    })
    .to_string()
}

fn config(storage: &str) -> JsValue {
    let config = js_sys::Object::new();
    Reflect::set(&config, &"storage".into(), &storage.into()).unwrap();
    config.into()
}

#[wasm_bindgen_test]
async fn offline_publish_is_durable_and_restored_by_the_next_client() {
    let user = unique("dora");
    let batches = Batches::default();
    let (on_events, _keep) = batches.callback(|| {});
    let client = WasmClient::create(options(&user), on_events, config("indexeddb"))
        .await
        .unwrap();
    assert!(client.durable());
    let _ = client.connect();
    let result = client
        .publish("news", "post.created", r#"{"text":"offline"}"#)
        .unwrap();
    let msg_id = Reflect::get(&result, &"msgId".into())
        .unwrap()
        .as_string()
        .unwrap();
    let queued = Reflect::get(&result, &"queued".into()).unwrap();
    let queued_id = JsFuture::from(Promise::from(queued)).await.unwrap();
    assert_eq!(queued_id.as_string().unwrap(), msg_id);
    JsFuture::from(client.when_stored()).await.unwrap();
    sleep(50).await;
    let events = batches.events();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "state" && e["new"]["state"] == "reconnecting"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["type"] == "message"
        && e["msg_id"] == msg_id.as_str()
        && e["status"]["status"] == "queued"));
    client.close();

    // A new client (a page reload) restores the message from IndexedDB.
    let restored = Batches::default();
    let (on_events, _keep2) = restored.callback(|| {});
    let again = WasmClient::create(options(&user), on_events, config("indexeddb"))
        .await
        .unwrap();
    let outbox: serde_json::Value = serde_json::from_str(&again.outbox()).unwrap();
    assert_eq!(outbox[0]["msg_id"], msg_id.as_str());
    assert_eq!(outbox[0]["data"]["text"], "offline");
    assert_eq!(outbox[0]["status"]["status"], "queued");
    // Cancelling removes it from the store too.
    again.cancel(&msg_id).unwrap();
    JsFuture::from(again.when_stored()).await.unwrap();
    again.close();
    let third = WasmClient::create(
        options(&user),
        Function::new_no_args(""),
        config("indexeddb"),
    )
    .await
    .unwrap();
    assert_eq!(third.outbox(), "[]");
    third.close();
}

#[wasm_bindgen_test]
async fn events_arrive_in_one_batch_after_the_call_and_listeners_may_call_back() {
    let batches = Batches::default();
    let slot: Rc<RefCell<Option<Rc<WasmClient>>>> = Rc::default();
    let reentered = Rc::new(RefCell::new(Vec::new()));
    let (slot2, reentered2) = (slot.clone(), reentered.clone());
    let (on_events, _keep) = batches.callback(move || {
        // Calling back into the client from a listener must work (no borrow is held).
        if let Some(client) = slot2.borrow().as_ref() {
            reentered2.borrow_mut().push(client.outbox());
            let _ = client.stats();
        }
    });
    let client = Rc::new(
        WasmClient::create(options(&unique("eve")), on_events, config("memory"))
            .await
            .unwrap(),
    );
    *slot.borrow_mut() = Some(client.clone());
    let _ = client.subscribe("news");
    let _ = client.subscribe("sports");
    client.publish("news", "a", "1").unwrap();
    // Nothing is delivered synchronously, inside the calls.
    assert!(batches.0.borrow().is_empty());
    sleep(150).await;
    let count = batches.0.borrow().len();
    assert_eq!(count, 1, "one batch for one task's worth of events");
    let events = batches.events();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["subscription", "subscription", "message", "message"],
        "{events:?}"
    );
    assert_eq!(reentered.borrow().len(), 1);
    // Invalid input throws a TidingsError with a stable code.
    let error = client.publish("pattern*", "a", "1").unwrap_err();
    assert_eq!(
        Reflect::get(&error, &"code".into()).unwrap(),
        "publish_to_pattern"
    );
    assert_eq!(
        Reflect::get(&error, &"name".into()).unwrap(),
        "TidingsError"
    );
    let error = client.publish("news", "a", "{not json").unwrap_err();
    assert_eq!(Reflect::get(&error, &"code".into()).unwrap(), "bad_request");
    client.close();
}

/// A store that fails (here: its database closed under it, as when the browser closes it
/// or the quota is exhausted) warns the app and the client carries on in memory.
#[wasm_bindgen_test]
async fn failing_store_warns_and_falls_back_to_memory() {
    let batches = Batches::default();
    let (on_events, _keep) = batches.callback(|| {});
    let client = WasmClient::create(options(&unique("fay")), on_events, config("indexeddb"))
        .await
        .unwrap();
    assert!(client.durable());
    client.close_store_for_tests();
    let result = client.publish("news", "a", r#"{"n":1}"#).unwrap();
    let queued = Reflect::get(&result, &"queued".into()).unwrap();
    JsFuture::from(Promise::from(queued)).await.unwrap();
    sleep(50).await;
    assert!(!client.durable());
    let events = batches.events();
    let warning = events
        .iter()
        .find(|e| e["type"] == "store_warning")
        .unwrap_or_else(|| panic!("no store_warning in {events:?}"));
    assert!(warning["message"]
        .as_str()
        .unwrap()
        .contains("continuing in memory"));
    let outbox: serde_json::Value = serde_json::from_str(&client.outbox()).unwrap();
    assert_eq!(outbox[0]["status"]["status"], "queued");
    // Later writes no longer touch IndexedDB and do not warn again.
    client.publish("news", "b", "2").unwrap();
    sleep(50).await;
    let warnings = batches
        .events()
        .iter()
        .filter(|e| e["type"] == "store_warning")
        .count();
    assert_eq!(warnings, 1);
    client.close();
}

/// A tab taking over the shared socket resumes from the older of the stored position and
/// the last one it received (the old holder may have stored positions it never broadcast).
#[wasm_bindgen_test]
async fn takeover_positions_floor_lowers_stored_positions() {
    let user = unique("gus");
    let ns = format!("tidings|ws://127.0.0.1:9/ws|{user}");
    let (mut store, _) = Store::open(&ns).await;
    for (channel, offset) in [("news", 9), ("sports", 2)] {
        store
            .apply(&PersistKind::PutPosition {
                channel: channel.into(),
                position: StreamPosition {
                    epoch: "e1".into(),
                    offset,
                },
            })
            .await
            .unwrap();
    }
    drop(store);
    let config = config("indexeddb");
    let floor = r#"{"news":{"epoch":"e1","offset":7},"sports":{"epoch":"e1","offset":5},"weather":{"epoch":"e2","offset":3}}"#;
    Reflect::set(&config, &"positions".into(), &floor.into()).unwrap();
    let client = WasmClient::create(options(&user), Function::new_no_args(""), config)
        .await
        .unwrap();
    let positions: serde_json::Value = serde_json::from_str(&client.positions()).unwrap();
    assert_eq!(
        positions["news"]["offset"], 7,
        "lowered to what the tab received"
    );
    assert_eq!(positions["sports"]["offset"], 2, "never raised");
    assert_eq!(positions["weather"]["offset"], 3, "filled in");
    client.close();
}
