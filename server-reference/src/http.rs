//! HTTP routes: the WebSocket endpoint, the publish API for app back ends, health,
//! metrics and a small index page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tidings::protocol::{is_pattern, validate_channel, ErrorCode, Payload, Publisher};

use crate::connection::{self, check_ids};
use crate::engine::PublishRequest;
use crate::util::random_id;
use crate::AppState;

/// Builds the router.
pub(crate) fn router(app: Arc<AppState>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast));
    if app.config.dev_tokens {
        router = router.route("/api/dev/token", get(dev_token));
    }
    router = match &app.config.demo_dir {
        Some(dir) => router.fallback_service(tower_http::services::ServeDir::new(dir)),
        None => router.route("/", get(index)),
    };
    router.with_state(app)
}

#[derive(Deserialize)]
struct DevTokenQuery {
    user: String,
}

/// `GET /api/dev/token?user=NAME` (only with `--dev-tokens`): a one-hour token with every
/// permission, and the WebSocket URL to use it on.
async fn dev_token(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<DevTokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(axum::extract::Query(DevTokenQuery { user })) = query else {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "query parameter `user` is required",
        );
    };
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !valid {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`user` must be 1..=64 characters of letters, digits, `-`, `_` or `.`",
        );
    }
    let claims = crate::Claims {
        sub: user.clone(),
        exp: Some(crate::util::now_secs() + 3_600),
        channels: vec!["*".into()],
        publish: vec!["*".into()],
        info: Some(json!({ "name": user })),
    };
    let token = crate::mint_token(&app.config.jwt_secret, &claims);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    Json(json!({ "token": token, "url": format!("ws://{host}/ws") })).into_response()
}

async fn ws(
    upgrade: WebSocketUpgrade,
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    // Frames up to 4× the limit are read so they can be answered with `frame_too_large`;
    // only larger ones break the connection.
    let cap = app.config.max_frame_bytes.saturating_mul(4).max(4096);
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20)
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| connection::serve(socket, app, peer.ip()))
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Tidings reference server</title></head>
<body>
<h1>Tidings reference server</h1>
<ul>
<li><code>GET /ws</code> &mdash; WebSocket endpoint (protocol v1, JSON frames)</li>
<li><code>POST /api/publish</code> &mdash; publish into a channel (<code>Authorization: Bearer &lt;api key&gt;</code>)</li>
<li><code>POST /api/broadcast</code> &mdash; publish into several channels</li>
<li><code>GET /healthz</code> &mdash; liveness</li>
<li><code>GET /metrics</code> &mdash; Prometheus metrics</li>
</ul>
</body>
</html>
"#;

fn api_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"code": code.as_str(), "message": message.into()})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    api_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

/// Compares without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Err` holds the 401 response.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(key) if same_secret(key.as_bytes(), app.config.api_key.as_bytes()) => Ok(()),
        _ => Err(Box::new(api_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong API key",
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct PublishBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BroadcastBody {
    channels: Vec<String>,
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<String>,
}

fn check_channel(channel: &str) -> Result<(), String> {
    validate_channel(channel)?;
    if is_pattern(channel) {
        return Err("cannot publish into a pattern".into());
    }
    Ok(())
}

fn server_publisher() -> Publisher {
    Publisher {
        user: "server".into(),
        client: None,
        info: None,
    }
}

async fn publish(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = authorize(&app, &headers) {
        return *resp;
    }
    let body: PublishBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return bad_request(format!("invalid body: {err}")),
    };
    if let Err(message) = check_channel(&body.channel) {
        return bad_request(message);
    }
    let msg_id = body.id.unwrap_or_else(random_id);
    if let Err(message) = check_ids(&msg_id, &body.event) {
        return bad_request(message);
    }
    let request = PublishRequest {
        channel: body.channel,
        msg_id,
        event: body.event,
        data: Payload::from(body.data),
        publisher: server_publisher(),
    };
    match app.publish(request).await {
        Ok(outcome) => Json(json!({
            "epoch": outcome.epoch,
            "offset": outcome.offset,
            "duplicate": outcome.duplicate,
        }))
        .into_response(),
        Err(err) => {
            tracing::error!(%err, "HTTP publish failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "publish failed",
            )
        }
    }
}

async fn broadcast(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = authorize(&app, &headers) {
        return *resp;
    }
    let body: BroadcastBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return bad_request(format!("invalid body: {err}")),
    };
    let msg_id = body.id.unwrap_or_else(random_id);
    if let Err(message) = check_ids(&msg_id, &body.event) {
        return bad_request(message);
    }
    let data = Payload::from(body.data);
    let mut results = Vec::with_capacity(body.channels.len());
    for channel in body.channels {
        if let Err(message) = check_channel(&channel) {
            results.push(json!({
                "channel": channel,
                "error": {"code": ErrorCode::BadRequest.as_str(), "message": message},
            }));
            continue;
        }
        let request = PublishRequest {
            channel: channel.clone(),
            msg_id: msg_id.clone(),
            event: body.event.clone(),
            data: data.clone(),
            publisher: server_publisher(),
        };
        results.push(match app.publish(request).await {
            Ok(outcome) => json!({
                "channel": channel,
                "epoch": outcome.epoch,
                "offset": outcome.offset,
                "duplicate": outcome.duplicate,
            }),
            Err(err) => {
                tracing::error!(%err, "HTTP broadcast publish failed");
                json!({
                    "channel": channel,
                    "error": {"code": ErrorCode::Internal.as_str(), "message": "publish failed"},
                })
            }
        });
    }
    Json(json!({ "results": results })).into_response()
}
