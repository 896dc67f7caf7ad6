//! What the `plugin_host` tests share: the raw-ABI fixtures, compiled once per process. Part of
//! `plugin_host.rs`.

use std::path::Path;

use gateway_e2e::{raw_fixtures, RawFixtures};

pub(crate) fn raw() -> RawFixtures {
    raw_fixtures(Path::new(env!("CARGO_TARGET_TMPDIR")))
}
