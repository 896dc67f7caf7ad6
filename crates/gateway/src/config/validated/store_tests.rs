//! `[store]` as the rest of the gateway sees it: described and debugged without the database
//! password, the default lease, the CA file checked at load.

use super::tests::{load, problems, MINIMAL};
use super::*;

/// Where the store is, as `check` and the logs show it: the file, or the URL with its password
/// masked.
#[test]
fn the_store_is_described_without_its_password() {
    let c = load(
        &format!("{MINIMAL}[store]\npath = \"/var/lib/gw.db\"\n"),
        &[],
    )
    .expect("file");
    assert_eq!(c.store.describe(), "/var/lib/gw.db");
    let c = load(
        &format!("{MINIMAL}[store]\nurl = \"postgres://gw:hunter2@db:5432/gw\"\n"),
        &[],
    )
    .expect("postgres");
    let shown = c.store.describe();
    assert!(
        shown.starts_with("postgres://gw:") && shown.ends_with("@db:5432/gw"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    let StoreConfig::Postgres(pg) = &c.store else {
        panic!("a PostgreSQL store: {:?}", c.store);
    };
    for debug in [format!("{:?}", c.store), format!("{pg:?}")] {
        assert!(
            debug.contains("@db:5432/gw") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
    assert!(format!("{pg:?}").contains("lease: 60s"), "{pg:?}");
}

/// With no `lease`, a PostgreSQL store's lease is 60 s, or twice `[delivery] timeout` when
/// that is longer: a claim outlives the call it covers.
#[test]
fn the_default_lease_outlives_a_long_timeout() {
    let c = load(
        &format!(
            "{MINIMAL}[store]\nurl = \"postgres://gw@db/gw\"\n[delivery]\ntimeout = \"10m\"\n"
        ),
        &[],
    )
    .expect("valid");
    let StoreConfig::Postgres(pg) = &c.store else {
        panic!("a PostgreSQL store: {:?}", c.store);
    };
    assert_eq!(pg.lease, std::time::Duration::from_secs(1200));
}

/// `ca_file` must be a file there at `check` (a missing one would fail every connection later).
#[test]
fn a_ca_file_must_be_a_readable_file() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked here").expect("write");
    let store = |ca: &std::path::Path| {
        format!(
            "{MINIMAL}[store]\nurl = \"postgres://gw@db/gw\"\nca_file = \"{}\"\n",
            ca.display()
        )
    };
    load(&store(&ca), &[]).expect("a file");
    let missing = dir.path().join("missing.pem");
    let p = problems(&store(&missing));
    assert_eq!(
        p,
        [format!(
            "store.ca_file: {} is not a readable file",
            missing.display()
        )]
    );
    let p = problems(&store(dir.path()));
    assert_eq!(p.len(), 1, "a folder: {p:?}");
}
