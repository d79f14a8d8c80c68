//! `docs/protocol.md` is the contract: every example frame in it must decode with the
//! real types and encode back to exactly the same JSON.

use tidings::protocol::{Codec, JsonCodec};

#[test]
fn every_documented_example_frame_round_trips() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .expect("docs/protocol.md exists");
    let mut checked = 0;
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        let side = match line.trim() {
            "<!-- example: client -->" => "client",
            "<!-- example: server -->" => "server",
            _ => continue,
        };
        assert_eq!(
            lines.next().map(str::trim),
            Some("```json"),
            "example marker must precede a json block"
        );
        let mut text = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            text.push_str(line);
            text.push('\n');
        }
        let original: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("invalid JSON example ({e}):\n{text}"));
        let reencoded = if side == "client" {
            let frame = JsonCodec
                .decode_client(&text)
                .unwrap_or_else(|e| panic!("{e}:\n{text}"));
            JsonCodec.encode_client(&frame).expect("encode")
        } else {
            let frame = JsonCodec
                .decode_server(&text)
                .unwrap_or_else(|e| panic!("{e}:\n{text}"));
            assert_ne!(
                frame,
                tidings::ServerFrame::Unknown,
                "example decodes as an unknown frame:\n{text}"
            );
            JsonCodec.encode_server(&frame).expect("encode")
        };
        let reencoded: serde_json::Value = serde_json::from_str(&reencoded).expect("json");
        assert_eq!(reencoded, original, "example does not match the wire shape");
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} examples found");
}
