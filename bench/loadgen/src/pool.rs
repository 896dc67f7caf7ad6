//! The requests of one run: the first `prebuild` deliveries are encrypted and signed before the
//! load starts (in parallel, so the generator's crypto does not compete with the receiver while
//! it is measured); any request beyond them is built on the fly by the connection that sends it.
//! Request `k` is always delivery `k` of the run's [`Generator`], so every request is unique.

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::Request;

use crate::client::{lark_post, Target};
use crate::delivery::{Delivery, Generator};

/// A delivery in the form the client sends (cheap to clone: shared bytes).
#[derive(Debug, Clone)]
struct Prepared {
    ts: HeaderValue,
    nonce: HeaderValue,
    sig: HeaderValue,
    body: Bytes,
}

fn prepare(d: Delivery) -> anyhow::Result<Prepared> {
    Ok(Prepared {
        ts: HeaderValue::from_str(&d.ts).context("timestamp header")?,
        nonce: HeaderValue::from_str(&d.nonce).context("nonce header")?,
        sig: HeaderValue::from_str(&d.sig).context("signature header")?,
        body: Bytes::from(d.body),
    })
}

/// Pre-built requests plus the generator for the rest.
#[derive(Debug)]
pub struct Pool {
    prebuilt: Vec<Prepared>,
    generator: Generator,
}

impl Pool {
    /// Builds deliveries `0..count` on `threads` OS threads.
    pub fn build(generator: Generator, count: u64, threads: usize) -> anyhow::Result<Self> {
        let threads = threads.max(1) as u64;
        let chunk = count.div_ceil(threads).max(1);
        let parts = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let generator = &generator;
                    scope.spawn(move || {
                        let from = (t * chunk).min(count);
                        let to = ((t + 1) * chunk).min(count);
                        (from..to)
                            .map(|i| prepare(generator.delivery(i)))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a pre-build thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok(Self {
            prebuilt: parts.into_iter().flatten().collect(),
            generator,
        })
    }

    /// How many requests were built ahead.
    pub fn prebuilt(&self) -> usize {
        self.prebuilt.len()
    }

    /// Request `k` for `target`.
    pub fn request(&self, k: u64, target: &Target) -> anyhow::Result<Request<Full<Bytes>>> {
        let p = match usize::try_from(k).ok().and_then(|i| self.prebuilt.get(i)) {
            Some(p) => p.clone(),
            None => prepare(self.generator.delivery(k))?,
        };
        Ok(lark_post(target, p.ts, p.nonce, p.sig, p.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(req: Request<Full<Bytes>>) -> Bytes {
        match req.into_body().collect().await {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn prebuilt_and_on_the_fly_requests_match_the_generator() {
        let generator = Generator::new("k", "t", 1_700_000_000, "p".into());
        let pool = Pool::build(generator.clone(), 10, 3).expect("pool");
        assert_eq!(pool.prebuilt(), 10);
        let target = Target::parse("http://127.0.0.1:1/webhook/event").expect("target");
        for k in [0u64, 4, 9, 10, 11] {
            let req = pool.request(k, &target).expect("request");
            let d = generator.delivery(k);
            assert_eq!(req.headers()["x-lark-request-nonce"], d.nonce.as_str());
            assert_eq!(req.headers()["x-lark-signature"], d.sig.as_str());
            assert_eq!(req.uri(), "/webhook/event");
            assert_eq!(body_of(req).await, d.body.as_bytes());
        }
    }
}
