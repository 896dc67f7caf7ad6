//! Which rows a listing reads ([`Pick`]): its condition on the ledger's row `p` and its order,
//! in SQL both backends run, and its parameters.

/// Which rows a listing reads (see `Ledger::withdrawals`, `Ledger::unfinished`,
/// `Ledger::withdrawals_after`).
pub(super) enum Pick {
    Withdrawn { from: i64, to: i64 },
    Unfinished { before: i64 },
    After { account: String, after: i64 },
}

/// One parameter of a [`Pick`]'s condition.
pub(super) enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

impl Pick {
    /// The condition on the ledger's row `p` (its parameters `$1`, `$2`: [`Pick::params`], in
    /// order of first use), and the order of the rows.
    pub(super) fn sql(&self) -> (&'static str, &'static str) {
        match self {
            Pick::Withdrawn { .. } => (
                "p.status = 'withdrawn'
                 AND COALESCE(p.trans_time_ms, p.completed_at) BETWEEN $1 AND $2",
                "COALESCE(p.trans_time_ms, p.completed_at), p.delivery_id",
            ),
            Pick::Unfinished { .. } => (
                "(p.status IN ('pending', 'rejected')
                  OR (p.status = 'withdrawn' AND p.forward_status = 'pending'))
                 AND p.created_at <= $1",
                "p.created_at, p.delivery_id",
            ),
            Pick::After { .. } => (
                "p.account_id = $1 AND p.status = 'withdrawn' AND p.trans_time_ms > $2",
                "p.trans_time_ms, p.delivery_id",
            ),
        }
    }

    pub(super) fn params(&self) -> Vec<Param<'_>> {
        match self {
            Pick::Withdrawn { from, to } => vec![Param::Int(*from), Param::Int(*to)],
            Pick::Unfinished { before } => vec![Param::Int(*before)],
            Pick::After { account, after } => vec![Param::Text(account), Param::Int(*after)],
        }
    }
}
