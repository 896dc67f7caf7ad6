//! The plugin commands of the real binary, as an author or operator runs them. One submodule per
//! topic of this target: `call` (`plugins call`: init, one handle, shutdown; an exit code per
//! outcome; the delivery built as the engine builds it), `libraries` (`plugins list` over a
//! `[libraries] dir`, bare library names resolved there), `batch_call` (several `--event`s: one
//! batch through the batch entry) and `pins` (`sha256` pins refused at
//! `check`, at start, at reload and when an isolated plugin's process restarts); `helpers` holds
//! what they share.

#[path = "plugin_cli/helpers.rs"]
mod helpers;

#[path = "plugin_cli/call.rs"]
mod call;

#[path = "plugin_cli/libraries.rs"]
mod libraries;

#[path = "plugin_cli/pins.rs"]
mod pins;

#[path = "plugin_cli/batch_call.rs"]
mod batch_call;
