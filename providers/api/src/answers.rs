//! How much of an HTTP answer anycloud reads into memory. Every answer a client of ours
//! reads whole goes through [`read`] with a limit: a service (or whatever answers at a
//! configured endpoint) that sends without end gets an error, not this machine's memory.
//! Downloads to files stream and are not bounded here.

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::ErrorCode;

/// An API's answer (JSON, an XML listing, a token): the largest real ones are a page of a
/// listing, well under a MiB.
pub const API_LIMIT: usize = 16 << 20;

/// A state or a journal batch read from an object store: the state of 10,000 deployments
/// with 120 variables each is 112 MB (BENCHMARKS.md), and it is read whole anyway.
pub const STATE_LIMIT: usize = 1 << 30;

/// `body` whole, unless it is longer than `limit` bytes: then a permanent error saying so
/// (asking again would bring the same). A failure to read is `Unavailable`, as a dropped
/// connection is. The message is for the caller to put after what it asked.
pub async fn read<B>(body: B, limit: usize) -> Result<Bytes, (ErrorCode, String)>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err((
            ErrorCode::Failed,
            format!("answer larger than {limit} bytes: not read further"),
        )),
        Err(e) => Err((ErrorCode::Unavailable, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::Full;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// An answer that never ends, as a broken or hostile endpoint may send.
    struct Endless;

    impl Body for Endless {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024])))))
        }
    }

    #[tokio::test]
    async fn an_answer_within_the_limit_is_read_whole() {
        let got = read(Full::new(Bytes::from_static(b"{\"ok\":true}")), 11).await;
        assert_eq!(got.unwrap(), Bytes::from_static(b"{\"ok\":true}"));
    }

    #[tokio::test]
    async fn an_endless_answer_is_refused_past_the_limit() {
        let (code, message) = read(Endless, API_LIMIT).await.unwrap_err();
        assert_eq!(code, ErrorCode::Failed);
        assert_eq!(
            message,
            format!("answer larger than {API_LIMIT} bytes: not read further")
        );
    }
}
