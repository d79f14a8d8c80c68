//! Generates the Kotlin and Swift bindings from the built library (library mode):
//! `cargo run -p sdk-mobile --bin uniffi-bindgen -- generate --library
//! target/debug/libtidings_mobile.so --language kotlin --out-dir OUT`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
