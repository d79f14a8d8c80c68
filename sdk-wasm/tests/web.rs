//! The wasm binding of the core in a real browser (`wasm-pack test --headless --chrome`):
//! outputs as one JSON array per drain, inputs with the clocks passed in, errors thrown as
//! `TidingsError`-shaped JSON. The JavaScript driver around it is tested by the node and
//! Playwright suites in `js/test`.
#![cfg(target_arch = "wasm32")]

use serde_json::{json, Value};
use tidings_wasm::Core;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const TOKEN: &str = "x.eyJzdWIiOiJhbmEifQ.sig"; // {"sub":"ana"}

fn core(extra: Value) -> Core {
    let mut options =
        json!({ "url": "ws://127.0.0.1:9/ws", "token": TOKEN, "liveness_timeout_ms": 1000 });
    if let (Some(o), Some(e)) = (options.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Core::new(&options.to_string(), 1, 2).expect("valid options")
}

fn poll(core: &mut Core) -> Vec<Value> {
    let outputs: Vec<Value> = serde_json::from_str(&core.poll()).expect("poll returns JSON");
    assert_eq!(outputs.last().map(|o| o["op"].clone()), Some(json!("wake")));
    outputs
}

fn ops(outputs: &[Value], op: &str) -> Vec<Value> {
    outputs.iter().filter(|o| o["op"] == op).cloned().collect()
}

fn events(outputs: &[Value]) -> Vec<Value> {
    ops(outputs, "events")
        .iter()
        .flat_map(|o| o["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Feeds one input (see `Core::call`).
fn call(core: &mut Core, t: f64, name: &str, id: f64, a: &str) -> Result<String, JsValue> {
    core.call(t, 1_000.0 + t, name, id, a.into(), "", "", "")
}

fn read(core: &Core, what: &str, arg: &str) -> Value {
    serde_json::from_str(&core.read(what, arg)).expect("read returns JSON")
}

fn thrown(error: JsValue) -> Value {
    serde_json::from_str(&error.as_string().expect("errors are JSON text")).expect("JSON")
}

/// Connects transport 1 and answers the handshake; returns the outputs of the reply.
fn connect(core: &mut Core) -> Vec<Value> {
    call(core, 0.0, "restore", 0.0, "{}").expect("empty snapshot");
    call(core, 0.0, "connect", 0.0, "").expect("connect");
    let open = ops(&poll(core), "open");
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["url"], "ws://127.0.0.1:9/ws");
    let transport = open[0]["transport"].as_f64().expect("id");
    call(core, 1.0, "opened", transport, "").expect("opened");
    let sent = ops(&poll(core), "send");
    let connect: Value =
        serde_json::from_str(sent[0]["text"].as_str().expect("text")).expect("frame");
    assert_eq!(connect["type"], "connect");
    assert_eq!(connect["token"], TOKEN);
    let connected = json!({
        "type": "connected", "id": connect["id"], "client_id": "c1", "session_id": "s1",
        "server_time": 1_001, "ping_interval_ms": 25_000,
        "limits": { "max_frame_bytes": 65_536, "max_channels": 256, "max_messages_per_second": 100 }
    });
    let reply = call(core, 2.0, "frame", transport, &connected.to_string());
    assert_eq!(reply.as_deref(), Ok(""));
    poll(core)
}

#[wasm_bindgen_test]
fn handshake_subscribe_and_deliver_with_exact_payloads() {
    let mut core = core(json!({}));
    assert_eq!(
        core.read("namespace", ""),
        "tidings|ws://127.0.0.1:9/ws|ana"
    );
    let out = connect(&mut core);
    let states: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["type"] == "state")
        .collect();
    assert_eq!(
        states.last().expect("a state event")["new"]["state"],
        "connected"
    );
    assert_eq!(read(&core, "state", "")["state"], "connected");

    call(&mut core, 3.0, "subscribe", 0.0, "news").expect("valid");
    let sent = ops(&poll(&mut core), "send");
    let subscribe: Value =
        serde_json::from_str(sent[0]["text"].as_str().expect("text")).expect("json");
    assert_eq!(subscribe["type"], "subscribe");
    assert_eq!(subscribe["channel"], "news");
    let subscribed = json!({ "type": "subscribed", "id": subscribe["id"], "channel": "news",
        "epoch": "e1", "offset": 0, "recovered": true, "server_time": 1_003 });
    call(&mut core, 4.0, "frame", 1.0, &subscribed.to_string()).expect("frame");
    poll(&mut core);
    // The payload keeps its exact text (big integer, member order) into the event JSON.
    let publication = r#"{"type":"publication","channel":"news","epoch":"e1","offset":1,"id":"m1","event":"post","data":{"z":1,"n":12345678901234567890},"ts":1005,"publisher":{"user":"bo"}}"#;
    call(&mut core, 5.0, "frame", 1.0, publication).expect("frame");
    let raw = core.poll();
    assert!(
        raw.contains(r#""data":{"z":1,"n":12345678901234567890}"#),
        "{raw}"
    );
    let delivered = events(&serde_json::from_str::<Vec<Value>>(&raw).expect("json"));
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["type"], "publication");
    assert_eq!(delivered[0]["publisher"]["user"], "bo");
    let positions: Value = read(&core, "positions", "");
    assert_eq!(positions["news"], json!({ "epoch": "e1", "offset": 1 }));
    // A frame that does not decode is reported back and changes nothing.
    let problem = call(&mut core, 6.0, "frame", 1.0, r#"{"type":"pong"}"#);
    assert_eq!(problem.as_deref(), Ok("missing field `id`"));
    assert_eq!(
        thrown(call(&mut core, 7.0, "teleport", 0.0, "").expect_err("unknown input"))["code"],
        "bad_request"
    );
    assert_eq!(core.read("subscription", "never"), "null");
}

#[wasm_bindgen_test]
fn offline_publish_is_persisted_and_restored() {
    let mut core = core(json!({}));
    call(&mut core, 0.0, "restore", 0.0, "{}").expect("empty snapshot");
    let msg_id = core
        .call(
            1.0,
            1_001.0,
            "publish",
            0.0,
            "news".into(),
            "post",
            r#"{"text":"héllo"}"#,
            "",
        )
        .expect("queued");
    let out = poll(&mut core);
    let persist = ops(&out, "persist");
    assert_eq!(persist[0]["kind"]["op"], "put_message");
    assert_eq!(persist[0]["kind"]["entry"]["msg_id"], msg_id.as_str());
    assert_eq!(
        persist[0]["kind"]["entry"]["data"],
        json!({ "text": "héllo" })
    );
    let id = persist[0]["id"].as_f64().expect("id");
    call(&mut core, 2.0, "persisted", id, "").expect("persisted");
    let statuses: Vec<Value> = events(&poll(&mut core))
        .into_iter()
        .filter(|e| e["type"] == "message")
        .map(|e| e["status"]["status"].clone())
        .collect();
    assert_eq!(statuses.last(), Some(&json!("queued")), "{statuses:?}");

    // The next page restores what the store kept and shows it pending.
    let snapshot = json!({ "outbox": [persist[0]["kind"]["entry"]], "positions": {
        "news": { "epoch": "e1", "offset": 7 } }, "pattern_since": {} });
    let mut next = core_with_seed(3);
    call(&mut next, 0.0, "restore", 0.0, &snapshot.to_string()).expect("snapshot");
    let outbox: Value = read(&next, "outbox", "");
    assert_eq!(outbox[0]["msg_id"], msg_id.as_str());
    assert_eq!(outbox[0]["status"]["status"], "queued");
    assert_eq!(read(&next, "positions", "")["news"]["offset"], 7);

    // Another tab hands the same message over (its id chosen by that tab): queued once.
    let again = next
        .call(
            3.0,
            1_003.0,
            "publish",
            0.0,
            "news".into(),
            "post",
            "{}",
            &msg_id,
        )
        .expect("same message");
    assert_eq!(again, msg_id);
    assert_eq!(read(&next, "outbox", "").as_array().map(Vec::len), Some(1));
    let chosen = next
        .call(
            4.0,
            1_004.0,
            "publish",
            0.0,
            "news".into(),
            "post",
            "{}",
            "tab-2:m9",
        )
        .expect("queued");
    assert_eq!(chosen, "tab-2:m9");
    assert_eq!(read(&next, "outbox", "")[1]["msg_id"], "tab-2:m9");
}

fn core_with_seed(seed: u32) -> Core {
    let options = json!({ "url": "ws://127.0.0.1:9/ws", "token": TOKEN }).to_string();
    Core::new(&options, 0, seed).expect("valid")
}

#[wasm_bindgen_test]
fn bad_input_throws_stable_codes() {
    let bad_options = Core::new("{", 0, 0).map(|_| ()).expect_err("invalid JSON");
    assert_eq!(thrown(bad_options)["code"], "bad_request");
    let bad_field = Core::new(r#"{"ping_interval_ms":"soon"}"#, 0, 0)
        .map(|_| ())
        .expect_err("bad field");
    assert_eq!(
        thrown(bad_field)["message"],
        "invalid options: `ping_interval_ms` must be a non-negative integer"
    );
    let mut core = core(json!({}));
    call(&mut core, 0.0, "restore", 0.0, "{}").expect("empty");
    assert_eq!(
        thrown(call(&mut core, 0.0, "subscribe", 0.0, "bad name").expect_err("invalid"))["code"],
        "invalid_channel"
    );
    assert_eq!(
        thrown(
            core.call(
                0.0,
                0.0,
                "publish",
                0.0,
                "news".into(),
                "post",
                "{not json",
                ""
            )
            .expect_err("invalid")
        )["code"],
        "bad_request"
    );
    assert_eq!(
        thrown(
            core.call(0.0, 0.0, "publish", 0.0, "news:*".into(), "post", "1", "")
                .expect_err("pattern")
        )["code"],
        "publish_to_pattern"
    );
    assert_eq!(
        thrown(call(&mut core, 0.0, "cancel", 0.0, "nope").expect_err("unknown"))["code"],
        "unknown_message"
    );
    assert_eq!(
        thrown(call(&mut core, 0.0, "lifecycle", 0.0, "asleep").expect_err("unknown"))["code"],
        "bad_request"
    );
    assert_eq!(
        thrown(call(&mut core, 0.0, "restore", 0.0, "[").expect_err("bad snapshot"))["code"],
        "bad_request"
    );
}

#[wasm_bindgen_test]
fn timers_and_lost_connections_drive_reconnects() {
    let mut core = core(json!({ "reconnect": { "base_delay_ms": 100, "max_delay_ms": 100 } }));
    connect(&mut core);
    call(&mut core, 10.0, "closed", 1.0, "closed (1006) ").expect("closed");
    let out = poll(&mut core);
    let states: Vec<Value> = events(&out)
        .into_iter()
        .filter(|e| e["type"] == "state")
        .collect();
    assert_eq!(
        states.last().expect("state")["new"]["state"],
        "reconnecting"
    );
    let at = out.last().expect("wake")["at"]
        .as_f64()
        .expect("a wake time");
    assert!((10.0..=110.0).contains(&at), "{at}");
    call(&mut core, at, "timeout", 0.0, "").expect("timeout");
    assert_eq!(
        ops(&poll(&mut core), "open").len(),
        1,
        "a new transport is opened"
    );
}
