//! Reading a webhook request's body within `max_body_bytes`, into one buffer.
//!
//! A body in one frame (the usual `Content-Length` request) is kept as the frame itself, with
//! no copy. A body in several frames is copied into one growing buffer as they come: keeping
//! each frame (what collecting a body does) held a handle and its bookkeeping per frame, so a
//! client sending 1-byte chunks made the gateway hold about 40 MB per connection for a body
//! under 1 MiB, before any signature was checked.

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes};

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit.
    TooLarge,
    /// The connection failed or the framing was wrong.
    Read(String),
}

/// The most a body of several frames reserves ahead of the bytes received (from its declared
/// length): past it the buffer grows as bytes come, so a client that declares 1 MiB and sends
/// 2 bytes does not hold 1 MiB of the gateway's memory until its body timeout.
const RESERVE_AHEAD: usize = 64 * 1024;

/// The whole body, at most `limit` bytes. `declared` (the `Content-Length`, already checked
/// against the limit) sizes the buffer a body of several frames is copied into, up to
/// [`RESERVE_AHEAD`].
pub async fn read<B>(mut body: B, limit: usize, declared: Option<u64>) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        // Trailers carry no body bytes.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            held => {
                if let Some(held) = held {
                    let expected = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
                    let ahead = expected.min(limit).min(RESERVE_AHEAD);
                    joined.reserve(ahead.max(held.len() + data.len()));
                    joined.extend_from_slice(&held);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn frames(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = String> + Unpin {
        let items: Vec<Result<Frame<Bytes>, String>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn one_frame_is_kept_as_it_is_and_several_are_joined() {
        let one: &'static [u8] = b"{\"a\":1}";
        let read_one = read(frames(&[one]), 100, Some(7)).await.expect("one");
        assert_eq!(read_one.as_ptr(), one.as_ptr(), "no copy of a single frame");
        let many = read(frames(&[b"{", b"\"a\"", b":", b"1}"]), 100, None).await;
        assert_eq!(many.expect("joined"), Bytes::from_static(b"{\"a\":1}"));
        let empty = read(frames(&[]), 100, None).await.expect("empty");
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn the_limit_counts_every_frame() {
        let chunks = [b"x".as_slice(); 11];
        assert_eq!(
            read(frames(&chunks), 10, None).await,
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            read(frames(&chunks[..10]), 10, None).await.map(|b| b.len()),
            Ok(10)
        );
    }

    #[tokio::test]
    async fn a_read_error_is_reported() {
        let items: Vec<Result<Frame<Bytes>, String>> = vec![
            Ok(Frame::data(Bytes::from_static(b"{"))),
            Err("reset".into()),
        ];
        let body = StreamBody::new(futures_util::stream::iter(items));
        assert_eq!(
            read(body, 10, None).await,
            Err(BodyError::Read("reset".into()))
        );
    }
}
