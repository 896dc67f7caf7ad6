//! The certificate pair's checks and the swap: certificates made here with rcgen.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair,
    SerialNumber,
};

use super::pair::{cert_info, serial_hex};
use super::*;

/// A certificate for `localhost` valid from `from` to `until` seconds relative to now.
fn leaf(serial: u64, from: i64, until: i64) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.serial_number = Some(SerialNumber::from(serial));
    let at =
        |offset: i64| date_time_ymd(1970, 1, 1) + Duration::from_secs((now_secs() + offset) as u64);
    p.not_before = at(from);
    p.not_after = at(until);
    (p.self_signed(&key).expect("sign"), key)
}

fn write(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, cert.pem()).expect("write cert");
    std::fs::write(&files.key, key.serialize_pem()).expect("write key");
    files
}

const DAY: i64 = 86_400;

#[test]
fn a_good_pair_loads_with_its_serial_and_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf(0x1234, -DAY, 90 * DAY);
    let files = write(dir.path(), "a", &cert, &key);
    let pair = load(&files).expect("loads");
    assert_eq!(pair.info.serial, "1234");
    assert_eq!(pair.info.subject, "CN=localhost");
    assert_eq!(pair.info.chain_len, 1);
    let left = pair.info.seconds_left(now_secs());
    assert!((89 * DAY..=90 * DAY).contains(&left), "{left}");
    assert!(pair.refuse_expired(&files, now_secs()).is_ok());
}

#[test]
fn a_chain_with_intermediates_loads_leaf_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    let ca = ca.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    p.serial_number = Some(SerialNumber::from(7u64));
    let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
    let files = TlsFiles {
        cert: dir.path().join("fullchain.pem"),
        key: dir.path().join("privkey.pem"),
    };
    std::fs::write(&files.cert, format!("{}{}", cert.pem(), ca.pem())).expect("write");
    std::fs::write(&files.key, key.serialize_pem()).expect("write");
    let pair = load(&files).expect("loads");
    assert_eq!((pair.info.serial.as_str(), pair.info.chain_len), ("07", 2));
}

/// Every refusal names the file and what is wrong with it.
#[test]
fn broken_pairs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf(1, -DAY, 90 * DAY);
    let (_, other_key) = leaf(2, -DAY, 90 * DAY);
    let good = write(dir.path(), "good", &cert, &key);
    let mismatched = write(dir.path(), "mismatched", &cert, &other_key);
    let err = load(&mismatched).expect_err("mismatch").to_string();
    assert!(err.contains("does not belong to the certificate"), "{err}");
    assert!(err.contains("mismatched.key"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let err = load(&TlsFiles {
        cert: garbage.clone(),
        key: good.key.clone(),
    })
    .expect_err("no cert")
    .to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let err = load(&TlsFiles {
        cert: good.cert.clone(),
        key: garbage,
    })
    .expect_err("no key")
    .to_string();
    assert!(err.contains("holds no PEM private key"), "{err}");

    let err = load(&TlsFiles {
        cert: dir.path().join("missing.pem"),
        key: good.key.clone(),
    })
    .expect_err("missing")
    .to_string();
    assert!(err.starts_with("cannot read certificate"), "{err}");

    let truncated = dir.path().join("truncated.pem");
    let pem = cert.pem();
    std::fs::write(&truncated, &pem[..pem.len() / 2]).expect("write");
    assert!(load(&TlsFiles {
        cert: truncated,
        key: good.key,
    })
    .is_err());
}

#[test]
fn serials_drop_the_sign_padding() {
    assert_eq!(serial_hex(&[0x00, 0xa1]), "a1");
    assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
    assert_eq!(serial_hex(&[0x00]), "00");
}

#[test]
fn an_expired_certificate_is_refused_for_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf(3, -30 * DAY, -DAY);
    let files = write(dir.path(), "old", &cert, &key);
    let pair = load(&files).expect("parses: check shows it");
    let err = pair
        .refuse_expired(&files, now_secs())
        .expect_err("expired")
        .to_string();
    assert!(err.contains("expired at"), "{err}");
    assert!(Tls::start(&files, "webhook").is_err());
}

fn served_serial(tls: &Tls) -> String {
    let key = tls.resolver.current.read().expect("lock").clone();
    cert_info(&key.cert[0], 1).expect("parse").serial
}

/// The swap: a new pair is served after a reload, a broken one leaves the old one in place,
/// and the same files are not retried until they change again.
#[test]
fn a_reload_swaps_a_good_pair_and_keeps_the_old_one_on_a_broken_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = leaf(0x10, -DAY, 90 * DAY);
    let files = write(dir.path(), "live", &cert, &key);
    let tls = Tls::start(&files, "webhook").expect("start");
    assert_eq!(served_serial(&tls), "10");

    let (cert2, key2) = leaf(0x20, -DAY, 90 * DAY);
    write(dir.path(), "live", &cert2, &key2);
    assert!(tls.reload("test", None));
    assert_eq!(served_serial(&tls), "20");
    assert_eq!(tls.info().map(|i| i.serial), Some("20".to_owned()));

    // A new certificate with the old key: refused, the previous pair stays.
    let (cert3, _) = leaf(0x30, -DAY, 90 * DAY);
    std::fs::write(&files.cert, cert3.pem()).expect("write");
    assert!(!tls.reload("test", None));
    assert_eq!(served_serial(&tls), "20");
    let refused_stamps = tls.state.lock().expect("lock").stamps;
    assert_eq!(
        refused_stamps,
        stamps(&files),
        "not retried until the files change"
    );

    // An expired pair: refused too.
    let (cert4, key4) = leaf(0x40, -30 * DAY, -DAY);
    write(dir.path(), "live", &cert4, &key4);
    assert!(!tls.reload("test", None));
    assert_eq!(served_serial(&tls), "20");

    // Other paths (a reloaded config): served from then on.
    let (cert5, key5) = leaf(0x50, -DAY, 90 * DAY);
    let other = write(dir.path(), "other", &cert5, &key5);
    assert!(tls.reload("test", Some(&other)));
    assert_eq!(served_serial(&tls), "50");
}
