//! One `[[plugins]]` entry per ledger. The ledger remembers, per account, the newest snapshot
//! taken and by which delivery; a second entry sharing the ledger (another name, so other
//! delivery ids) would find every snapshot already taken by the first and skip it as stale:
//! its withdrawals (its `withdraw` types, its `forward_url`) would silently never happen. So
//! an instance refuses to start on a ledger an instance of another name uses in this process
//! (`gateway check` creates every instance in one process, so it finds it too). Instances of
//! one name may share it: a reload's new instance starts beside the one it replaces. A file is
//! known by its canonical path; a PostgreSQL ledger by its URL, then, once open, by what it is
//! (`Ledger::identity`), so two spellings of one database are one ledger.
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
        Self::claim_key(key(location), instance)
    }

    /// [`LedgerUse::claim`] of a PostgreSQL ledger by its identity (`Ledger::identity`), read
    /// once it is open: two URLs of one database (`localhost` and `127.0.0.1`) are one ledger.
    pub fn claim_identity(identity: &str, instance: &str) -> Result<LedgerUse, String> {
        Self::claim_key(format!("postgres-ledger:{identity}"), instance)
    }

    fn claim_key(key: String, instance: &str) -> Result<LedgerUse, String> {
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

/// The ledger as one key: a file by the canonical path of its deepest existing ancestor (the
/// file and its folders may not exist yet: the ledger creates them) and the rest of its path
/// tidied (`.` dropped, `..` taking a step back), so `./payout/l.db` and `payout/l.db` are one
/// key before the folder exists too; a PostgreSQL URL as written.
fn key(location: &LedgerLocation) -> String {
    match location {
        LedgerLocation::File(path) => format!("file:{}", file_key(path).display()),
        LedgerLocation::Postgres(url) => format!("postgres:{url}"),
    }
}

fn file_key(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut existing = path;
    let mut rest = Vec::new();
    let base = loop {
        if let Ok(found) = std::fs::canonicalize(existing) {
            break found;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            // Nothing of it exists (not even the current folder): the path as written.
            _ => return path.to_path_buf(),
        }
    };
    let mut key = base;
    for part in rest.iter().rev() {
        match Path::new(part).components().next() {
            Some(Component::ParentDir) => {
                key.pop();
            }
            Some(Component::CurDir) | None => {}
            Some(_) => key.push(part),
        }
    }
    key
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
        // The same file before its folder exists, spelled two ways: one ledger too.
        let a = LedgerUse::claim(&at("./new/l.db"), "points").expect("first");
        std::fs::create_dir(dir.path().join("new")).expect("mkdir");
        let b = LedgerUse::claim(&at("new/../new/l.db"), "cash").expect_err("same file");
        assert!(b.contains("`points`"), "{b}");
        drop(a);
        // Another file: fine.
        let cash = LedgerUse::claim(&at("cash.db"), "cash").expect("own ledger");
        drop(first);
        assert!(LedgerUse::claim(&at("l.db"), "cash").is_err(), "still used");
        drop(again);
        let now = LedgerUse::claim(&at("l.db"), "cash").expect("free once both are gone");
        drop((now, cash));
    }
}
