#!/usr/bin/env bash
# Installs what the web build and its tests need, skipping whatever is present:
# the wasm32 target, wasm-pack, wasm-bindgen-cli at the exact version in Cargo.lock,
# Debian's chromium + chromedriver (no browser downloads), and js/ npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "rust target wasm32-unknown-unknown"
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown
fi

# Some crates.io mirrors lack a yanked dependency pinned by a tool's lock file: fall back
# to a fresh resolution when `--locked` cannot be satisfied.
cargo_install() {
  cargo install "$@" --locked || cargo install "$@"
}

step "wasm-pack"
command -v wasm-pack >/dev/null 2>&1 || cargo_install wasm-pack

step "wasm-bindgen-cli (same version as the wasm-bindgen crate in Cargo.lock)"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ -z "$want" ]; then
  echo "wasm-bindgen not found in Cargo.lock" >&2
  exit 1
fi
if [ "$have" != "$want" ]; then
  cargo_install wasm-bindgen-cli --version "$want"
fi

step "chromium + chromedriver (Debian packages; skipped with TIDINGS_SKIP_BROWSER=1)"
if [ "${TIDINGS_SKIP_BROWSER:-0}" != 1 ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver
fi

step "npm dependencies (js/)"
if [ ! -d js/node_modules ] || [ js/package-lock.json -nt js/node_modules/.package-lock.json ]; then
  (cd js && npm ci --no-audit --no-fund)
fi
