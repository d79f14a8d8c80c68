#!/usr/bin/env bash
# The web SDK's build and tests: the npm package (sdk-wasm + js/), its wasm-pack browser
# tests, the bundler consumer check, the size report, and the Playwright end-to-end tests
# against real server processes in headless Chromium (Debian's, no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup (skips what is installed)"
./scripts/setup-web.sh

step "build the package (wasm-pack --profile wasm-release, wasm-opt -Oz, esbuild, tsc)"
(cd js && node scripts/build.mjs)

step "type-check the wrapper"
(cd js && npx tsc --noEmit -p tsconfig.json)

step "sdk-wasm: fmt and clippy (wasm32)"
cargo fmt -p sdk-wasm -- --check
cargo clippy -p sdk-wasm --target wasm32-unknown-unknown --all-targets -- -D warnings

step "wasm-pack tests in headless Chrome (the Core binding)"
CHROMEDRIVER=/usr/bin/chromedriver timeout 600 wasm-pack test --headless --chrome sdk-wasm

step "bundle size (fails over the 60 KiB gzip budget of the web issue)"
(cd js && node scripts/size.mjs --budget 60)

step "reference server for the end-to-end tests"
cargo build -p server-reference

step "browser tests in headless Chromium (driver + IndexedDB store, two users, tabs, offline, restart, consumer bundle)"
# The server binary lives in cargo's target directory, wherever CARGO_TARGET_DIR puts it.
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
export TIDINGS_SERVER="${target_dir:-$PWD/target}/debug/server-reference"
(cd js && timeout 600 node --test --test-concurrency=1 --test-timeout=180000 test/*.test.mjs)

echo
echo "web checks passed"
