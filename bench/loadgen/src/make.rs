//! `loadgen make`: writes a file of ready-to-send deliveries for replay with `wrk` and
//! `tests/load/lark.lua`. One line per request,
//! `timestamp \t nonce \t signature \t body`, each a distinct assets_update event, encrypted and
//! signed for the given key.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

use crate::delivery::{unix_secs, Generator};

/// Writes `count` deliveries to `out` (created or truncated).
pub fn make(out: &Path, count: u64, key: &str, token: &str) -> anyhow::Result<()> {
    let generator = Generator::for_files(key, token, unix_secs());
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut file = std::io::BufWriter::new(file);
    for i in 0..count {
        let d = generator.delivery(i);
        writeln!(file, "{}\t{}\t{}\t{}", d.ts, d.nonce, d.sig, d.body)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{tests::open, Delivery};

    #[test]
    fn lines_verify_and_decrypt_to_assets_updates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("load.tsv");
        make(&path, 50, "load-key", "load-token").expect("make");
        let text = std::fs::read_to_string(&path).expect("read back");
        let mut ids = std::collections::HashSet::new();
        let mut lines = 0;
        for line in text.lines() {
            lines += 1;
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            let [ts, nonce, sig, body] = fields.as_slice() else {
                panic!("line has {} fields", fields.len());
            };
            assert!(lark_core::crypto::verify_signature(
                ts,
                nonce,
                "load-key",
                body.as_bytes(),
                sig
            ));
            assert!(!lark_core::crypto::verify_signature(
                ts,
                nonce,
                "other-key",
                body.as_bytes(),
                sig
            ));
            let delivery = Delivery {
                ts: ts.to_string(),
                nonce: nonce.to_string(),
                sig: sig.to_string(),
                body: body.to_string(),
            };
            let event = open(&delivery, "load-key");
            assert_eq!(event.event_type, "hire.referral_account.assets_update_v1");
            assert_eq!(event.token.as_deref(), Some("load-token"));
            let assets = lark_core::AssetsUpdateV1::from_envelope(&event.raw).expect("typed");
            assert_eq!(assets.cash.len(), 1);
            assert!(ids.insert(event.id), "event ids are unique");
        }
        assert_eq!(lines, 50);
    }
}
