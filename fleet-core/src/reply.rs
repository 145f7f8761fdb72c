//! Answers the waker gives itself, instead of php-fpm's: "retry later".
//!
//! When a wake is not even tried (the host's wake queue is longer than a
//! request would wait, or the site's container keeps failing and the waker
//! backs off), a closed connection would make nginx answer 502 and a
//! crawler retry at once. A FastCGI `503` with `Retry-After` is what
//! crawlers and monitors understand. The client's request is read first (a
//! response before its end, then a close, would meet its late writes with a
//! reset), up to [`crate::proxy::LINGER`].

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fastcgi::{END_REQUEST, STDOUT, record};
use crate::proxy::{self, Opening};

/// The whole FastCGI response: a CGI `503` with `Retry-After`, then the
/// end of request `id`.
fn retry_later_response(id: u16, retry_after: u64, why: &str) -> Vec<u8> {
    let body = format!("{why}\n");
    let head = format!(
        "Status: 503 Service Unavailable\r\nRetry-After: {retry_after}\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut out = record(STDOUT, id, format!("{head}{body}").as_bytes());
    out.extend(record(STDOUT, id, &[]));
    // appStatus 0, protocolStatus FCGI_REQUEST_COMPLETE.
    out.extend(record(END_REQUEST, id, &[0, 0, 0, 0, 0, 0, 0, 0]));
    out
}

/// Answers the client on `stream` with "503, retry after `retry_after`
/// seconds" when it speaks FastCGI, then reads and drops what it still
/// sends until it closes or `linger` passes; a stream that is not FastCGI
/// is only closed.
pub async fn retry_later<S>(stream: &mut S, retry_after: u64, why: &str, linger: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let deadline = Instant::now() + linger;
    let mut first = Vec::with_capacity(16);
    let mut buf = [0u8; 4096];
    let id = loop {
        match proxy::opening(&first) {
            Opening::FastCgi { id, .. } => break Some(id),
            Opening::Plain => break None,
            Opening::More => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => first.extend_from_slice(&buf[..n.min(16 - first.len().min(16))]),
            _ => break None,
        }
    };
    let Some(id) = id else { return };
    if stream
        .write_all(&retry_later_response(id, retry_after, why))
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastcgi;

    #[test]
    fn the_response_ends_the_request() {
        let r = retry_later_response(7, 12, "waking later");
        let text = String::from_utf8_lossy(&r);
        assert!(text.contains("Status: 503 Service Unavailable\r\nRetry-After: 12\r\n"));
        // Ends with END_REQUEST of request 7.
        assert_eq!(&r[r.len() - 16..r.len() - 8], &[1, 3, 0, 7, 0, 8, 0, 0]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_fastcgi_and_closes_anything_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut a, mut b) = tokio::net::UnixStream::pair().expect("pair");
        let begin = record(fastcgi::BEGIN_REQUEST, 3, &fastcgi::begin_body(false));
        let server = tokio::spawn(async move {
            retry_later(&mut b, 5, "busy", Duration::from_secs(2)).await;
        });
        a.write_all(&begin).await.expect("write");
        a.write_all(&record(fastcgi::PARAMS, 3, &[]))
            .await
            .expect("params");
        a.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.expect("read");
        server.await.expect("join");
        assert!(String::from_utf8_lossy(&got).contains("Retry-After: 5"));
        assert_eq!(
            &got[got.len() - 16..got.len() - 8],
            &[1, 3, 0, 3, 0, 8, 0, 0]
        );

        let (mut a, mut b) = tokio::net::UnixStream::pair().expect("pair");
        let server = tokio::spawn(async move {
            retry_later(&mut b, 5, "busy", Duration::from_secs(2)).await;
        });
        a.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.expect("read");
        server.await.expect("join");
        assert!(got.is_empty());
    }
}
