//! One `[[plugins]]` entry per ledger. The ledger remembers, per account, the newest snapshot
//! taken and by which delivery; a second entry sharing the ledger (another name, so other
//! delivery ids) would find every snapshot already taken by the first and skip it as stale:
//! its withdrawals (its `withdraw` types, its `forward_url`) would silently never happen. So
//! an instance refuses to start on a ledger an instance of another name uses in this process
//! (`gateway check` creates every instance in one process, so it finds it too). Instances of
//! one name may share it: a reload's new instance starts beside the one it replaces.
//!
//! What this cannot see: entries in other processes (`isolation = "process"`, another gateway
//! on the same PostgreSQL ledger under another name) and another copy of this library (a new
//! version installed by reload, whose statics are its own). The README says so.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::ledger::LedgerLocation;

/// Ledger → (the instance name using it, how many instances of that name).
static OWNERS: Mutex<Option<HashMap<String, (String, usize)>>> = Mutex::new(None);

/// An instance's use of its ledger, counted while it lives.
#[derive(Debug)]
pub struct LedgerUse(String);

impl LedgerUse {
    /// Counts `instance` as a user of `location`, or says which other instance uses it.
    pub fn claim(location: &LedgerLocation, instance: &str) -> Result<LedgerUse, String> {
        let key = key(location);
        let mut owners = OWNERS.lock().unwrap_or_else(PoisonError::into_inner);
        let owners = owners.get_or_insert_with(HashMap::new);
        match owners.get_mut(&key) {
            Some((name, n)) if name == instance => *n += 1,
            Some((name, _)) => {
                return Err(format!(
                    "payout: the ledger is already used by the [[plugins]] entry `{name}`: give \
                     each payout entry its own `ledger` (sharing one, the second entry would \
                     skip every snapshot the first took as stale)"
                ))
            }
            None => {
                owners.insert(key.clone(), (instance.to_owned(), 1));
            }
        }
        Ok(LedgerUse(key))
    }
}

impl Drop for LedgerUse {
    fn drop(&mut self) {
        let mut owners = OWNERS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(owners) = owners.as_mut() {
            if let Some((_, n)) = owners.get_mut(&self.0) {
                *n -= 1;
                if *n == 0 {
                    owners.remove(&self.0);
                }
            }
        }
    }
}

/// The ledger as one key: a file by its folder's canonical path (the file itself may not exist
/// yet) and its name; a PostgreSQL URL as written.
fn key(location: &LedgerLocation) -> String {
    match location {
        LedgerLocation::File(path) => {
            let folder = path.parent().unwrap_or(Path::new("."));
            let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
            let name = path.file_name().unwrap_or_default();
            format!("file:{}", folder.join(name).display())
        }
        LedgerLocation::Postgres(url) => format!("postgres:{url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_serves_one_instance_name_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |p: &str| LedgerLocation::File(dir.path().join(p));
        let first = LedgerUse::claim(&at("l.db"), "points").expect("first");
        // The same name again (a reload's new instance beside the old one): shared.
        let again = LedgerUse::claim(&at("l.db"), "points").expect("same name");
        // Another name, the same file spelled another way: refused, naming the user.
        let other = LedgerUse::claim(&at("./l.db"), "cash").expect_err("another name");
        assert!(other.contains("`points`"), "{other}");
        // Another file: fine.
        let cash = LedgerUse::claim(&at("cash.db"), "cash").expect("own ledger");
        drop(first);
        assert!(LedgerUse::claim(&at("l.db"), "cash").is_err(), "still used");
        drop(again);
        let now = LedgerUse::claim(&at("l.db"), "cash").expect("free once both are gone");
        drop((now, cash));
    }
}
