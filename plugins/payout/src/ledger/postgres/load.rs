//! Reading ledger rows back from PostgreSQL (unchecked [`StoredRow`]s; the caller checks them).

use postgres::GenericClient;

use super::Failure;
use crate::ledger::row::{StoredRow, COLUMNS};

/// Loads one row with its cash lines (unchecked).
pub(super) fn load(
    c: &mut impl GenericClient,
    delivery_id: &str,
) -> Result<Option<StoredRow>, Failure> {
    let Some(found) = c.query_opt(
        &format!("SELECT {COLUMNS} FROM payout_ledger WHERE delivery_id = $1"),
        &[&delivery_id],
    )?
    else {
        return Ok(None);
    };
    let mut row = stored(&found)?;
    row.cash = c
        .query(
            "SELECT currency, amount_minor FROM payout_cash WHERE delivery_id = $1 ORDER BY line",
            &[&delivery_id],
        )?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, postgres::Error>>()?;
    Ok(Some(row))
}

/// A row selected as [`COLUMNS`], without its cash lines.
pub(super) fn stored(r: &postgres::Row) -> Result<StoredRow, postgres::Error> {
    Ok(StoredRow {
        delivery_id: r.try_get(0)?,
        external_order_id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        modify_time: r.try_get(3)?,
        requested_types: r.try_get(4)?,
        status: r.try_get(5)?,
        skip_reason: r.try_get(6)?,
        created_at: r.try_get(7)?,
        completed_at: r.try_get(8)?,
        trans_time: r.try_get(9)?,
        trans_time_ms: r.try_get(10)?,
        points: r.try_get(11)?,
        log_id: r.try_get(12)?,
        last_error: r.try_get(13)?,
        withdraw_attempts: r.try_get(14)?,
        forward_status: r.try_get(15)?,
        forward_attempts: r.try_get(16)?,
        forward_error: r.try_get(17)?,
        cash: Vec::new(),
    })
}
