#!/usr/bin/env bash
# Runs every check and test of the workspace. Installs what it needs first, skipping
# whatever is already present. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Run the whole suite with its output copied to a log, then close with one line that
# counts every test of every runner (cargo/wasm-bindgen, Maven Surefire, node --test).
if [ -z "${TIDINGS_TEST_LOG:-}" ]; then
  export TIDINGS_TEST_LOG
  TIDINGS_TEST_LOG=$(mktemp)
  set +e
  "$0" "$@" 2>&1 | tee "$TIDINGS_TEST_LOG"
  status=${PIPESTATUS[0]}
  set -e
  python3 - "$TIDINGS_TEST_LOG" "$status" <<'PY'
import re, sys
text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for p, f in re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", text):
    passed += int(p); failed += int(f)
for p, f in re.findall(r"^kotlin: (\d+) passed, (\d+) failed", text, re.M):
    passed += int(p); failed += int(f)
for p in re.findall(r"^# pass (\d+)", text, re.M):
    passed += int(p)
for f in re.findall(r"^# fail (\d+)", text, re.M):
    failed += int(f)
if sys.argv[2] != "0" and failed == 0:
    failed = 1  # a step failed outside any test runner
print(f"\nall: {passed} passed, {failed} failed")
PY
  rm -f "$TIDINGS_TEST_LOG"
  exit "$status"
fi

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: rustfmt, clippy, wasm32 target"
if command -v rustup >/dev/null 2>&1; then
  installed_components=$(rustup component list --installed 2>/dev/null || true)
  for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed_components" || rustup component add "$component"
  done
  rustup target list --installed | grep -q '^wasm32-unknown-unknown$' || rustup target add wasm32-unknown-unknown
fi

step "format"
cargo fmt --all -- --check

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "sdk-core builds for wasm32 with no tokio / web-sys / wasm-bindgen in its default tree"
cargo build -p tidings-core --target wasm32-unknown-unknown
if cargo tree -p tidings-core -e normal --target wasm32-unknown-unknown --prefix none \
    | grep -E '^(tokio|web-sys|wasm-bindgen|mio|getrandom) '; then
  echo "sdk-core's default dependency tree must stay free of IO runtimes" >&2
  exit 1
fi

step "unit, simulation and end-to-end tests"
cargo test --workspace --all-features

step "mobile: Kotlin tests on the JVM against a real server, Swift package generation"
./scripts/test-mobile.sh

step "web: npm package build, wasm-pack browser tests, bundler check, size, Playwright e2e"
./scripts/test-web.sh

echo
echo "all checks passed"
