//! The ledger's sessions ask the server for TCP keepalives: a claim (a session advisory lock)
//! lapses only when its session ends, and a session whose client vanished without a word (a
//! cut network) ends only when the server notices. With the operating system's defaults that is
//! after about two hours, every replica finding the delivery busy meanwhile. Checked on the
//! server's side of the ledger's connection in Linux's `/proc/net/tcp`: its keepalive timer is
//! due within the ledger's 60 s, not the default 7,200 s.

use gateway_e2e::pgkit::PgCluster;

use super::connect;

/// `/proc/net/tcp` and `/proc/net/tcp6` counts time in `USER_HZ` ticks, 100 per second on
/// Linux.
const TICKS_PER_SECOND: u64 = 100;

/// The timer (kind, ticks until due) of every established socket listening side up on `port`:
/// the server's ends of its connections.
fn server_side_timers(port: u16) -> Vec<(u32, u64)> {
    let mut timers = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when ...
            let (Some(local), Some(state), Some(timer)) =
                (fields.get(1), fields.get(3), fields.get(5))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) || *state != "01" {
                continue;
            }
            let (kind, when) = timer.split_once(':').expect("tr:when");
            timers.push((
                u32::from_str_radix(kind, 16).expect("timer kind"),
                u64::from_str_radix(when, 16).expect("timer due"),
            ));
        }
    }
    timers
}

#[test]
fn the_server_notices_a_vanished_ledger_client_within_minutes() {
    let pg = PgCluster::start();
    let url = pg.create_database("keepalive");
    let before = server_side_timers(pg.port()).len();
    let ledger = connect(&url);
    // Kind 2: the keepalive timer (kind 1, a retransmission, while the server's last segment
    // waits for its acknowledgement: looked at again).
    let due = |timers: &[(u32, u64)]| {
        timers.len() == before + 1
            && timers
                .iter()
                .all(|&(kind, when)| kind == 2 && when <= 60 * TICKS_PER_SECOND)
    };
    assert!(
        gateway_e2e::harness::wait_until(std::time::Duration::from_secs(5), || due(
            &server_side_timers(pg.port())
        )),
        "the server's keepalive on the ledger's one connection is not due within 60 s: {:?}",
        server_side_timers(pg.port())
    );
    drop(ledger);
}
