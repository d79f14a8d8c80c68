// The Tidings demo: a live discussion on the `tidings` package (built into ./pkg).
// Open it in several tabs and browsers: ?user=NAME picks who you are.
import { createClient } from "./pkg/index.js";

const CHANNEL = "discussion:general";
const params = new URLSearchParams(location.search);
const user = params.get("user") || "guest-" + Math.random().toString(36).slice(2, 6);
const tokenUrl = "/api/dev/token?user=" + encodeURIComponent(user);

const $ = (id) => document.getElementById(id);
$("me").textContent = user;

async function fetchToken() {
  const response = await fetch(tokenUrl);
  if (!response.ok) throw new Error("token endpoint answered " + response.status);
  return response.json();
}

let token, url;
try {
  ({ token, url } = await fetchToken());
} catch (error) {
  // E.g. a user name the dev token endpoint refuses, or a server without --dev-tokens.
  const status = $("status");
  status.dataset.state = "failed";
  status.textContent = "Cannot sign in: " + error.message;
  throw error;
}
const client = createClient({
  url,
  token,
  user,
  getToken: async () => (await fetchToken()).token,
  clientName: "tidings-demo",
});
globalThis.tidings = client; // for the end-to-end tests and curious developers

// ------------------------------------------------------------------ connection indicator
const status = $("status");
let countdown;
function showState(s) {
  clearInterval(countdown);
  // The state is announced once; the countdown ticking after it is not (aria-hidden).
  const set = (state, text, detail = "") => {
    status.dataset.state = state;
    if (status.firstChild?.textContent !== text) {
      status.replaceChildren(document.createElement("span"), document.createElement("span"));
      status.firstChild.textContent = text;
      status.lastChild.setAttribute("aria-hidden", "true");
    }
    status.lastChild.textContent = detail;
  };
  switch (s.state) {
    case "connected":
      return set("connected", "Live");
    case "connecting":
      return set("connecting", "Connecting…");
    case "reconnecting": {
      if (s.retryInMs == null) return set("offline", "Offline");
      const until = Date.now() + s.retryInMs;
      const tick = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        set("reconnecting", "Reconnecting", left > 0 ? ` in ${left}s` : "…");
      };
      tick();
      countdown = setInterval(tick, 500);
      return;
    }
    case "failed":
      return set("failed", "Disconnected: " + (s.message || s.code));
    default:
      return set("disconnected", "Offline");
  }
}
showState(client.connection);
client.on("state", showState);
addEventListener("offline", () => showState({ state: "reconnecting", retryInMs: null }));

// ------------------------------------------------------------------ posts
// Each post carries a key made here, so a post shows at once as "Sending…" and the
// published copy (or the one restored from the offline queue after a reload) replaces it.
const posts = $("posts");
const byKey = new Map(); // post key -> <li>
const keyOfMsg = new Map(); // outbox message id -> post key

function render(key, { author, text, ts }, delivery) {
  let li = byKey.get(key);
  if (!li) {
    li = document.createElement("li");
    li.dataset.key = key;
    li.innerHTML = '<div class="meta"><span class="author"></span><time></time><span class="delivery"></span></div><p class="text"></p>';
    posts.append(li);
    byKey.set(key, li);
    $("empty").hidden = true;
  }
  li.querySelector(".author").textContent = author;
  const time = li.querySelector("time");
  time.dateTime = new Date(ts).toISOString();
  time.textContent = new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.querySelector(".text").textContent = text;
  if (delivery !== undefined) setDelivery(key, delivery);
}

function setDelivery(key, delivery) {
  const li = byKey.get(key);
  if (!li || li.dataset.delivery === "sent") return;
  li.classList.toggle("pending", delivery === "sending");
  li.classList.toggle("failed", delivery === "failed");
  li.dataset.delivery = delivery;
  li.querySelector(".delivery").textContent =
    delivery === "sending" ? "Sending…" : delivery === "failed" ? "Not sent" : delivery === "sent" ? "Sent" : "";
}

const general = client.channel(CHANNEL);
general.on("publication", (p) => {
  if (p.event !== "post.created") return;
  const key = p.data?.key ?? p.id;
  const mine = p.publisher.user === user;
  render(key, { author: p.data?.author ?? p.publisher.user, text: p.data?.text ?? "", ts: p.ts }, mine ? "sent" : "");
});
general.subscribe().catch((e) => console.warn("subscribe failed", e));

// Posts still in the offline queue (restored from IndexedDB after a reload).
for (const m of await client.outbox()) {
  if (m.channel === CHANNEL && m.event === "post.created" && m.data?.key) {
    keyOfMsg.set(m.msgId, m.data.key);
    render(m.data.key, { ...m.data, ts: m.createdAtMs }, "sending");
  }
}
client.on("message", (m) => {
  const key = keyOfMsg.get(m.msgId);
  if (!key) return;
  if (m.status.status === "acked") setDelivery(key, "sent");
  else if (m.status.status === "failed") setDelivery(key, "failed");
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  // randomUUID needs a secure context (https or localhost); a LAN address is not one.
  const key = crypto.randomUUID?.() ?? Date.now().toString(36) + Math.random().toString(36).slice(2);
  const post = { key, author: user, text };
  render(post.key, { ...post, ts: Date.now() }, "sending");
  client.publish(CHANNEL, "post.created", post).then(
    () => setDelivery(post.key, "sent"),
    (error) => {
      console.warn("post failed", error);
      setDelivery(post.key, "failed");
    },
  );
});
