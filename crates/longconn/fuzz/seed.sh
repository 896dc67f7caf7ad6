#!/usr/bin/env bash
# Seeds corpus/<target>/ for the four fuzz targets: frames as Lark sends them, fragment
# sequences, endpoint answers and pong payloads, written by the `seed` example (seed.rs) with
# the crate's own types. The corpus is gitignored; run this once before the first `cargo fuzz run`.
set -euo pipefail
cd "$(dirname "$0")"
cargo run --quiet --release --example seed -- corpus
