//! A plain shared library that is not a gateway plugin: it exports an ordinary C function and no
//! `gateway_plugin_v1`. Compiled by the loader tests with `rustc --crate-type cdylib`.

/// Adds two numbers; exists only so the library exports something.
#[no_mangle]
pub extern "C" fn add_numbers(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}
