#!/usr/bin/env bash
# The README's main command: builds the web package and its demo app (the first run
# installs the wasm toolchain and npm packages), then runs the reference server with the
# demo at http://127.0.0.1:8080/, the embedded in-memory engine with durable storage in
# ./data, and development tokens for the demo's users. Extra arguments go to the server
# (e.g. `--bind 0.0.0.0:8080`).
set -euo pipefail
cd "$(dirname "$0")/.."

TIDINGS_SKIP_BROWSER=1 ./scripts/setup-web.sh
(cd js && node scripts/build.mjs)
exec cargo run --release -p server-reference -- \
  --data-dir ./data --demo-dir js/demo --dev-tokens "$@"
