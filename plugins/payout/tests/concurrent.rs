//! One account's snapshots handled at once on several threads (as with `max_concurrency` > 1),
//! each delivery also repeated at once: whatever the interleaving, the money Lark moved is in
//! the ledger exactly once and forwarded under one key per withdrawal.

#[path = "../../../tests/standins/lark_api.rs"]
mod lark_api;

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{again, delivery, ledger, plugin};
use gateway_plugin::{Outcome, Plugin};
use lark_api::LarkApi;
use payout::ledger::{ForwardStatus, Status};
use serde_json::json;

#[test]
fn snapshots_of_one_account_at_once_withdraw_and_forward_each_amount_once() {
    let api = LarkApi::start();
    api.set_balance("acct", 100, &[("CNY", "10.05")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = Arc::new(plugin(
        &api,
        dir.path(),
        json!({"forward_url": api.payments_url()}),
    ));
    let ids: Vec<String> = (0..6).map(|i| format!("evt-c{i}:payout")).collect();
    let mut threads = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for _copy in 0..2 {
            let (p, id) = (p.clone(), id.clone());
            threads.push(std::thread::spawn(move || {
                let mut d = delivery(&id, 1, "acct", 100, &[("CNY", "10.05")], 10 + i as u64);
                for _ in 0..200 {
                    match p.handle(&d) {
                        Outcome::Ok => return Outcome::Ok,
                        Outcome::Retry { .. } => {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            d = again(&d);
                        }
                        other => return other,
                    }
                }
                Outcome::retry("still busy")
            }));
        }
    }
    for t in threads {
        assert_eq!(t.join().expect("thread"), Outcome::Ok);
    }
    let l = ledger(dir.path());
    let rows: Vec<_> = ids
        .iter()
        .map(|id| l.get(id).expect("ledger").expect("row"))
        .collect();
    let withdrawn: Vec<_> = rows
        .iter()
        .filter(|r| r.status == Status::Withdrawn)
        .collect();
    let points: u64 = withdrawn.iter().map(|r| r.points).sum();
    let cash: i64 = withdrawn
        .iter()
        .flat_map(|r| r.cash.iter())
        .map(|c| c.amount.minor())
        .sum();
    assert_eq!((points, cash), (100, 1_005), "{rows:#?}");
    assert_eq!(api.withdrawals().len(), withdrawn.len());
    let paid: Vec<_> = withdrawn
        .iter()
        .filter(|r| r.points > 0 || r.cash.iter().any(|c| !c.amount.is_zero()))
        .collect();
    assert!(paid.iter().all(|r| r.forward_status == ForwardStatus::Done));
    let keys: BTreeSet<String> = api
        .payments()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = paid.iter().map(|r| r.external_order_id.clone()).collect();
    assert_eq!(keys, expected);
}
