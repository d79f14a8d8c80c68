#!/usr/bin/env bash
# Mobile SDK checks: builds the reference server and the sdk-mobile library, generates
# the Kotlin and Swift bindings with the crate's own uniffi-bindgen (library mode), runs
# the Kotlin tests on the JVM against a real server process, and checks that the Swift
# package's generated files are up to date. Needs java (17+) and mvn; Maven downloads
# its plugins and dependencies from Maven Central on first use. No Swift toolchain is
# needed (or used): the Swift package is generated here and built on a Mac.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

for tool in java mvn cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "test-mobile.sh needs '$tool' on PATH" >&2; exit 1; }
done

step "build server-reference and sdk-mobile (with the uniffi-bindgen binary)"
cargo build -p server-reference -p sdk-mobile --features sdk-mobile/cli
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-$root/target}
case "$(uname -s)" in
  Darwin) lib="$target_dir/debug/libtidings_mobile.dylib" ;;
  *) lib="$target_dir/debug/libtidings_mobile.so" ;;
esac
server="$target_dir/debug/server-reference"
bindgen="$target_dir/debug/uniffi-bindgen"
for f in "$lib" "$server" "$bindgen"; do
  [[ -f "$f" ]] || { echo "missing build output: $f" >&2; exit 1; }
done

step "generate Kotlin bindings into sdk-mobile/kotlin/target/generated-sources/uniffi"
kotlin_out=sdk-mobile/kotlin/target/generated-sources/uniffi
rm -rf "$kotlin_out"
"$bindgen" generate --library "$lib" --language kotlin --no-format --out-dir "$kotlin_out"
test -s "$kotlin_out/dev/tidings/tidings_mobile.kt"

step "generate Swift bindings into the Swift package (sdk-mobile/swift)"
swift_tmp=$(mktemp -d)
trap 'rm -rf "$swift_tmp"' EXIT
"$bindgen" generate --library "$lib" --language swift --no-format --out-dir "$swift_tmp"
swift_pkg=sdk-mobile/swift
mkdir -p "$swift_pkg/Sources/Tidings" "$swift_pkg/FFI/include"
cp "$swift_tmp/Tidings.swift" "$swift_pkg/Sources/Tidings/Tidings.swift"
# The C header and module map go into the XCFramework (scripts/build-xcframework.sh),
# which must name the module map `module.modulemap`.
cp "$swift_tmp/TidingsFFI.h" "$swift_pkg/FFI/include/TidingsFFI.h"
cp "$swift_tmp/TidingsFFI.modulemap" "$swift_pkg/FFI/include/module.modulemap"
for f in Sources/Tidings/Tidings.swift FFI/include/TidingsFFI.h FFI/include/module.modulemap \
         Sources/Tidings/Tidings+Async.swift Tests/TidingsTests/TidingsTests.swift Package.swift; do
  test -s "$swift_pkg/$f" || { echo "Swift package incomplete: $f" >&2; exit 1; }
done
if git rev-parse --git-dir >/dev/null 2>&1 \
   && ! git diff --quiet -- "$swift_pkg/Sources" "$swift_pkg/FFI"; then
  echo "note: the generated Swift bindings differ from the committed ones:" >&2
  git --no-pager diff --stat -- "$swift_pkg/Sources" "$swift_pkg/FFI" >&2
  if [[ "${CI:-}" == "true" ]]; then
    echo "commit the regenerated files (run scripts/test-mobile.sh)" >&2
    exit 1
  fi
fi

step "Kotlin tests on the JVM against server-reference"
mvn_args=(-B -q -Dstyle.color=never -f sdk-mobile/kotlin/pom.xml test
  "-Djna.library.path=$(dirname "$lib")"
  "-Dtidings.server=$server")
status=0
# (strip the colour codes Maven 3.8 prints even in batch mode)
mvn "${mvn_args[@]}" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' || status=$?

# Surefire's per-class summaries (mvn -q hides its console summary).
reports=sdk-mobile/kotlin/target/surefire-reports
total=0; failed=0; skipped=0
if compgen -G "$reports/TEST-*.xml" >/dev/null; then
  for xml in "$reports"/TEST-*.xml; do
    line=$(grep -m1 -o '<testsuite [^>]*>' "$xml")
    attr() { sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$line"; }
    t=$(attr tests); f=$(attr failures); e=$(attr errors); s=$(attr skipped)
    name=$(sed -n 's/.* name="\([^"]*\)".*/\1/p' <<<"$line")
    echo "Tests run: $t, Failures: $f, Errors: $e, Skipped: $s - in $name"
    total=$((total + t)); failed=$((failed + f + e)); skipped=$((skipped + s))
  done
fi
echo "kotlin: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
if [[ $status -ne 0 || $failed -ne 0 || $total -eq 0 ]]; then
  echo "Kotlin tests failed (reports and test output in $reports)" >&2
  exit 1
fi

echo
echo "mobile checks passed"
