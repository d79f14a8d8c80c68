#!/usr/bin/env bash
# Builds sdk-mobile/swift/TidingsFFI.xcframework (the Rust static library for iOS
# devices, the iOS simulator and macOS, with the C header and module map) and refreshes
# the generated Swift bindings, so that `swift build` / `swift test` / Xcode can use the
# package in sdk-mobile/swift.
#
# Runs on a Mac with Xcode and rustup. NOT RUN in this repository's CI (Linux, no Xcode).
#
#   sdk-mobile/scripts/build-xcframework.sh            # release build
#   PROFILE=debug sdk-mobile/scripts/build-xcframework.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=${PROFILE:-release}
cargo_profile_flag=()
[[ "$profile" == "release" ]] && cargo_profile_flag=(--release)
lib=libtidings_mobile.a
swift_pkg=sdk-mobile/swift
out="$swift_pkg/TidingsFFI.xcframework"
build=target/xcframework

ios=aarch64-apple-ios
sim_targets=(aarch64-apple-ios-sim x86_64-apple-ios)
mac_targets=(aarch64-apple-darwin x86_64-apple-darwin)

command -v xcodebuild >/dev/null || { echo "xcodebuild not found: run this on a Mac with Xcode" >&2; exit 1; }

for target in "$ios" "${sim_targets[@]}" "${mac_targets[@]}"; do
  rustup target list --installed | grep -q "^$target\$" || rustup target add "$target"
  cargo build -p sdk-mobile --lib "${cargo_profile_flag[@]}" --target "$target"
done

# Bindings and headers from the host build (the same API on every target).
cargo build -p sdk-mobile --features cli "${cargo_profile_flag[@]}"
host_dylib="target/$profile/libtidings_mobile.dylib"
gen="$build/generated"
rm -rf "$gen" && mkdir -p "$gen"
"target/$profile/uniffi-bindgen" generate --library "$host_dylib" --language swift --no-format --out-dir "$gen"
mkdir -p "$swift_pkg/Sources/Tidings" "$swift_pkg/FFI/include"
cp "$gen/Tidings.swift" "$swift_pkg/Sources/Tidings/Tidings.swift"
cp "$gen/TidingsFFI.h" "$swift_pkg/FFI/include/TidingsFFI.h"
cp "$gen/TidingsFFI.modulemap" "$swift_pkg/FFI/include/module.modulemap"

# One fat library per platform variant (simulator: arm64 + x86_64; macOS: arm64 + x86_64).
mkdir -p "$build/ios-sim" "$build/macos"
lipo -create $(for t in "${sim_targets[@]}"; do echo "target/$t/$profile/$lib"; done) \
  -output "$build/ios-sim/$lib"
lipo -create $(for t in "${mac_targets[@]}"; do echo "target/$t/$profile/$lib"; done) \
  -output "$build/macos/$lib"

rm -rf "$out"
xcodebuild -create-xcframework \
  -library "target/$ios/$profile/$lib" -headers "$swift_pkg/FFI/include" \
  -library "$build/ios-sim/$lib" -headers "$swift_pkg/FFI/include" \
  -library "$build/macos/$lib" -headers "$swift_pkg/FFI/include" \
  -output "$out"
echo "built $out"
