//! Self-test of the PostgreSQL test helper (`gateway_e2e::pgkit`): data survives a stop and a
//! restart on the same port, and clusters start side by side on their own ports.

use std::net::TcpStream;
use std::time::Instant;

use gateway_e2e::pgkit::PgCluster;

#[test]
fn pgkit_keeps_data_across_a_restart() {
    let started = Instant::now();
    let pg = PgCluster::start();
    eprintln!("PgCluster::start() took {:?}", started.elapsed());
    let url = pg.create_database("app");
    assert_eq!(
        url,
        format!("postgres://gateway@127.0.0.1:{}/app", pg.port())
    );
    pg.sql("app", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");

    pg.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", pg.port())).is_err(),
        "port {} still accepts connections after stop()",
        pg.port()
    );

    pg.start_again();
    assert_eq!(pg.sql("app", "SELECT x FROM t"), "1");
}

#[test]
fn pgkit_starts_clusters_concurrently() {
    let started = Instant::now();
    let clusters: Vec<PgCluster> = (0..2)
        .map(|_| std::thread::spawn(PgCluster::start))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a cluster thread panicked"))
        .collect();
    eprintln!(
        "two concurrent PgCluster::start() took {:?}",
        started.elapsed()
    );
    assert_ne!(clusters[0].port(), clusters[1].port());
    for pg in &clusters {
        assert_eq!(pg.sql("postgres", "SELECT 1"), "1");
    }
}
