//! The embedded store's tables and indexes, and the layout version this code writes (older
//! stores are brought up to it at open: `migrate`).

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,
    app         TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    schema      TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    routed      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS event_ids (
    seq         INTEGER PRIMARY KEY,
    hash        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    key         INTEGER PRIMARY KEY,
    event_seq   INTEGER NOT NULL REFERENCES events(seq),
    plugin      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'pending' OR state = 'done' OR state = 'dead'),
    attempts    INTEGER NOT NULL,
    next_at     INTEGER NOT NULL,
    last_error  TEXT,
    updated_at  INTEGER NOT NULL,
    generation  INTEGER NOT NULL DEFAULT 0,
    started     INTEGER NOT NULL DEFAULT 0,
    crashes     INTEGER NOT NULL DEFAULT 0,
    done_outcome     TEXT,
    done_started_at  INTEGER,
    done_duration_ms INTEGER,
    UNIQUE (event_seq, plugin)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(updated_at) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS attempts (
    delivery_key INTEGER NOT NULL REFERENCES deliveries(key) ON DELETE CASCADE,
    generation   INTEGER NOT NULL,
    attempt      INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    reason       TEXT,
    started_at   INTEGER,
    duration_ms  INTEGER,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(delivery_key);
CREATE TABLE IF NOT EXISTS id_runs (
    file        TEXT PRIMARY KEY,
    lo          INTEGER NOT NULL,
    hi          INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    digest      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS floors (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
) WITHOUT ROWID;
";

/// The schema version this code writes; older stores are migrated at open.
pub(super) const SCHEMA_VERSION: i64 = 9;
