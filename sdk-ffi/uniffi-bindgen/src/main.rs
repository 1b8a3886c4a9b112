//! `uniffi-bindgen`, built from the same uniffi version as `missive-ffi`, so generated bindings
//! always match the library (run: `cargo run -p missive-uniffi-bindgen -- generate --library ...`).
fn main() {
    uniffi::uniffi_bindgen_main()
}
