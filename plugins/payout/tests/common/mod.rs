//! Helpers shared by the payout integration tests: deliveries built from JSON text (amounts kept as
//! exact number literals), a plugin instance pointed at the Lark stand-in, the ledger on disk.
#![allow(dead_code)]

use std::path::Path;

use gateway_plugin::{Delivery, Host, Plugin};
use payout::ledger::{Ledger, PayoutRow};
use payout::Payout;
use serde_json::{json, Value};

use super::lark_api::LarkApi;

pub const EVENT_TYPE: &str = "hire.referral_account.assets_update_v1";

/// The snapshots' times: a `modify_time` of fewer than 13 digits (`1_000`) is that many
/// milliseconds after it (Lark's times are Unix milliseconds; the plugin refuses fewer digits).
pub const T0: u64 = 1_700_000_000_000;

/// An assets_update delivery; `cash` amounts are JSON number literals such as `"0.1"`;
/// a `modify_time` of fewer than 13 digits is counted from [`T0`].
pub fn delivery(
    id: &str,
    attempt: u32,
    account: &str,
    points: u64,
    cash: &[(&str, &str)],
    modify_time: u64,
) -> Delivery {
    let modify_time = if modify_time < 1_000_000_000_000 {
        T0 + modify_time
    } else {
        modify_time
    };
    let cash: Vec<String> = cash
        .iter()
        .map(|(c, a)| format!(r#"{{"currency_type":"{c}","amount":{a}}}"#))
        .collect();
    let event = format!(
        r#"{{"schema":"2.0","header":{{"event_id":"{id}","event_type":"{EVENT_TYPE}","create_time":"1","token":"v","app_id":"cli_test","tenant_key":"k"}},"event":{{"account_id":"{account}","assets":{{"confirmed_bonus":{{"point_bonus":{points},"cash_bonus":[{}]}}}},"modify_time":"{modify_time}"}}}}"#,
        cash.join(",")
    );
    raw_delivery(id, attempt, EVENT_TYPE, &event)
}

/// A delivery of any type with the given envelope text.
pub fn raw_delivery(id: &str, attempt: u32, event_type: &str, envelope: &str) -> Delivery {
    let text = format!(
        r#"{{"delivery_id":"{id}","attempt":{attempt},"plugin":"payout","app":"hire","event_id":"{id}","event_type":"{event_type}","received_at":1,"event":{envelope}}}"#
    );
    serde_json::from_str(&text).expect("delivery JSON")
}

/// The same delivery, one attempt later.
pub fn again(d: &Delivery) -> Delivery {
    let mut d = d.clone();
    d.attempt += 1;
    d
}

/// A config for the stand-in, with `extra` keys merged in.
pub fn config(api: &LarkApi, extra: Value) -> Value {
    let mut c = json!({
        "base_url": api.base_url(),
        "app_id": "cli_test",
        "app_secret": "secret_test",
        "ledger": "data/payout.db",
        "timeout": "2s",
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

pub fn plugin(api: &LarkApi, dir: &Path, extra: Value) -> Payout {
    Payout::new(config(api, extra), Host::for_tests(dir, "payout")).expect("config accepted")
}

pub fn ledger(dir: &Path) -> Ledger {
    Ledger::open_read_only(&dir.join("data/payout.db")).expect("ledger")
}

pub fn row(dir: &Path, delivery_id: &str) -> PayoutRow {
    ledger(dir)
        .get(delivery_id)
        .expect("ledger readable")
        .expect("row recorded")
}
