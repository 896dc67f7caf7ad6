//! The admin API and console on a PostgreSQL store: a NUL byte in an event id, a filter, a
//! cursor or a replay's names is a 4xx as on the embedded store (`api/hardening.rs`), never the
//! 503 of a query PostgreSQL refuses ("invalid byte sequence for encoding UTF8: 0x00").

use std::time::Duration;

use gateway_e2e::harness::wait_until;
use gateway_e2e::pgkit::PgCluster;

#[path = "admin_client.rs"]
mod admin_client;
use admin_client::{assert_nul_refused, get};

#[path = "replicas_kit.rs"]
#[allow(dead_code)] // `calls` and `spawn`: the other targets' part
mod kit;
use kit::{events, replica_config, replicas, send};

#[test]
fn a_nul_in_an_id_or_name_is_a_client_error_on_postgresql_too() {
    let pg = PgCluster::start();
    let url = pg.create_database("nul");
    let (_dirs, gws, urls) = replicas(1, &replica_config("30s", r#"mode = "ok""#), &url);
    let gw = &gws[0];
    assert_eq!(send(&events("nul", 1), urls, |_| vec![0]), 0);
    assert!(wait_until(Duration::from_secs(20), || {
        get(gw, "/api/v1/events/nul-00000").status == 200
    }));
    assert_nul_refused(gw, "hire", "audit");
    // The store is fine, and the same names without the NUL are served.
    assert_eq!(get(gw, "/api/v1/events?app=hire").status, 200);
    assert_eq!(get(gw, "/api/v1/deliveries?plugin=audit").status, 200);
    assert!(!gw.log().contains("0x00"), "no store error was logged");
}
