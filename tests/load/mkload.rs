//! `mkload`: writes a file of ready-to-send Lark deliveries for load runs with `wrk`
//! (`tests/load/lark.lua` replays it). Each line is `timestamp \t nonce \t signature \t body`:
//! a unique assets_update event, encrypted and signed for the given key, so the gateway does its
//! full work (signature, decryption, parsing, durable store, delivery) for every request.
//!
//! Usage: `mkload <out-file> <count> <encrypt_key> <verification_token>`

use std::io::Write;

use lark_core::{crypto, Cipher};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, count, key, token] = args.as_slice() else {
        return Err("usage: mkload <out-file> <count> <encrypt_key> <verification_token>".into());
    };
    let count: usize = count.parse()?;
    let cipher = Cipher::new(key);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for i in 0..count {
        let plaintext = serde_json::json!({
            "schema": "2.0",
            "header": {
                "event_id": format!("load-{ts}-{i:08}"),
                "event_type": "hire.referral_account.assets_update_v1",
                "create_time": format!("{ts}000"),
                "token": token,
                "app_id": "cli_9f5343c580712544",
                "tenant_key": "2ca1d211f64f6438",
            },
            "event": {
                "account_id": format!("{}", 7_147_998_241_542_539_527u64 + i as u64),
                "assets": {"confirmed_bonus": {"point_bonus": i % 1000,
                    "cash_bonus": [{"currency_type": "CNY", "amount": 100.25}]}},
                "modify_time": format!("{ts}000"),
            }
        })
        .to_string();
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let body =
            serde_json::json!({ "encrypt": cipher.encrypt(plaintext.as_bytes(), &iv) }).to_string();
        let nonce = format!("{}", 100_000_000 + i);
        let sig = crypto::sign(&ts, &nonce, key, body.as_bytes());
        writeln!(file, "{ts}\t{nonce}\t{sig}\t{body}")?;
    }
    file.flush()?;
    Ok(())
}
