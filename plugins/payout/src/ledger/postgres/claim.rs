//! Claims on deliveries across processes: a session-level advisory lock per delivery, held while
//! one attempt runs. A courtesy that spares a second withdraw call while another replica is
//! mid-attempt; never what prevents paying twice (the `external_order_id` does), since a claim
//! lapses with its connection.

use super::connection::is_dead;
use super::PgLedger;
use crate::ledger::LedgerError;

/// The first key of the two-key advisory locks that claim deliveries ("pay1"); the two-key
/// space never overlaps the one-key space the migration lock uses.
const CLAIM_SPACE: i32 = 0x7061_7931;

impl PgLedger {
    /// Tries to claim `delivery_id` for this process (a session-level advisory lock): `None`
    /// when another process holds it. Released by [`PgLedger::release`], or by the database
    /// when the connection ends (a crashed process never keeps a claim).
    pub(in crate::ledger) fn claim(
        &self,
        delivery_id: &str,
    ) -> Result<Option<ClaimKey>, LedgerError> {
        let key = claim_key(delivery_id);
        self.call("claiming a delivery", |c, generation| {
            let taken: bool = c
                .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&CLAIM_SPACE, &key])?
                .try_get(0)?;
            Ok(taken.then_some(ClaimKey { key, generation }))
        })
    }

    /// Releases a claim if its connection still lives (else the database already did).
    pub(in crate::ledger) fn release(&self, claim: &ClaimKey) {
        let mut slot = self.lock();
        let Some(session) = slot.as_mut() else {
            return;
        };
        if session.generation != claim.generation || session.client.is_closed() {
            return;
        }
        let done = session.client.execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&CLAIM_SPACE, &claim.key],
        );
        if let Err(e) = done {
            if is_dead(&session.client, &e) {
                *slot = None;
            }
        }
    }
}

/// A claim taken by [`PgLedger::claim`]: the lock's key and the connection that holds it.
#[derive(Debug, Clone, Copy)]
pub(in crate::ledger) struct ClaimKey {
    key: i32,
    generation: u64,
}

/// The second advisory-lock key of a delivery: 32 bits of SHA-256 of its id. Two deliveries
/// sharing one only wait for each other (a `Retry`), they are never mixed up.
fn claim_key(delivery_id: &str) -> i32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(delivery_id.as_bytes());
    i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}
