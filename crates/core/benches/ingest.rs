//! Cost of the per-request core work for a ~1 KiB encrypted `assets_update_v1` delivery:
//! verify the signature, decrypt, classify the envelope, parse the typed event; each alone and all.
//!
//! Run: `cargo bench -p lark-core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use lark_core::{crypto, AssetsUpdateV1, Cipher, Envelope};

const KEY: &str = "bench-encrypt-key";

fn plaintext() -> String {
    // The seed sample padded with extra currencies to about 1 KiB, as a busy account would send.
    let cash: Vec<String> = [
        "CNY", "USD", "EUR", "JPY", "HKD", "SGD", "GBP", "AUD", "CAD", "CHF", "KRW", "TWD",
    ]
    .iter()
    .enumerate()
    .map(|(i, c)| {
        format!(
            r#"{{"currency_type":"{c}","amount":{}.{:02}}}"#,
            100 + i,
            i * 7 % 100
        )
    })
    .collect();
    format!(
        r#"{{"schema":"2.0","header":{{"event_id":"5e3702a84e847582be8db7fb73283c02","event_type":"hire.referral_account.assets_update_v1","create_time":"1608725989000","token":"demo-verification-token","app_id":"cli_9f5343c580712544","tenant_key":"2ca1d211f64f6438"}},"event":{{"account_id":"7147998241542539527","assets":{{"confirmed_bonus":{{"point_bonus":100,"cash_bonus":[{}]}}}},"modify_time":"1685431415036"}}}}"#,
        cash.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let plain = plaintext();
    let cipher = Cipher::new(KEY);
    let encrypt = cipher.encrypt(plain.as_bytes(), &[7; 16]);
    let body = format!(r#"{{"encrypt":"{encrypt}"}}"#);
    let (ts, nonce) = ("1685431415", "1234567890");
    let sig = crypto::sign(ts, nonce, KEY, body.as_bytes());

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("verify_signature", |b| {
        b.iter(|| crypto::verify_signature(ts, nonce, KEY, black_box(body.as_bytes()), &sig))
    });
    g.bench_function("parse_encrypted_envelope", |b| {
        b.iter(|| Envelope::parse(black_box(body.as_bytes())))
    });
    g.bench_function("decrypt", |b| {
        b.iter(|| cipher.decrypt(black_box(&encrypt)))
    });
    g.bench_function("parse_event_envelope", |b| {
        b.iter(|| Envelope::parse(black_box(plain.as_bytes())))
    });
    g.bench_function("parse_typed_assets_update", |b| {
        b.iter(|| AssetsUpdateV1::from_envelope(black_box(&plain)))
    });
    g.bench_function("full_pipeline", |b| {
        b.iter(|| {
            assert!(crypto::verify_signature(
                ts,
                nonce,
                KEY,
                black_box(body.as_bytes()),
                &sig
            ));
            let Ok(Envelope::Encrypted { encrypt }) = Envelope::parse(body.as_bytes()) else {
                unreachable!("bench body is encrypted")
            };
            let plain = cipher.decrypt(&encrypt).expect("decrypts");
            let Ok(Envelope::Event(event)) = Envelope::parse(&plain) else {
                unreachable!("bench plaintext is an event")
            };
            AssetsUpdateV1::from_envelope(&event.raw).expect("typed")
        })
    });
    g.finish();
    eprintln!("plaintext {} bytes, body {} bytes", plain.len(), body.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
