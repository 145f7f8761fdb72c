//! A tiny HTTP/1.1 client over `TcpStream` (`Connection: close`, timeouts,
//! `Content-Length` and chunked bodies, the first byte's and the whole
//! response's time): the one of the tests, the demo and the benches.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, recv};
use std::time::{Duration, Instant};

use crate::Error;

/// Default read/write timeout of [`get`] / [`post`].
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Read/write timeout of [`get_host`]: longer than nginx's 60 s read
/// timeout, so that a 504 is seen as one.
pub const SLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP response.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    pub status: u16,
    /// Headers (name, value) in order.
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked transfer decoded).
    pub body: Vec<u8>,
    /// From connecting to the first byte of the response (zero when parsed
    /// from bytes).
    pub first_byte: Duration,
    /// From connecting to the end of the response.
    pub total: Duration,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first of `headers` named `name` (case-insensitive); HTTP's and
/// CGI's header names compare the same way.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `GET http://127.0.0.1:<port><path>`.
pub fn get(port: u16, path: &str) -> io::Result<HttpResponse> {
    request(port, "GET", path, None, TIMEOUT)
}

/// `POST http://127.0.0.1:<port><path>` with `body`.
pub fn post(port: u16, path: &str, body: &[u8]) -> io::Result<HttpResponse> {
    request(port, "POST", path, Some(body), TIMEOUT)
}

/// `GET http://127.0.0.1:<port><path>` with a `Host` header of `host` (for
/// name-based servers), waiting up to [`SLOW_TIMEOUT`].
pub fn get_host(port: u16, host: &str, path: &str) -> io::Result<HttpResponse> {
    request_host(port, host, "GET", path, None, SLOW_TIMEOUT)
}

/// [`get_host`] of `path` on `localhost`: the response when it is a 200
/// whose body starts with `prefix`, else an error saying what came instead.
pub fn get_page(port: u16, path: &str, prefix: &str) -> Result<HttpResponse, Error> {
    let what = format!("GET {path}");
    let r = get_host(port, "localhost", path).map_err(|e| Error::failed(&what, e))?;
    let text = r.text();
    if r.status != 200 || !text.starts_with(prefix) {
        let got = format!("{} {text:?} (expected 200 and {prefix:?}…)", r.status);
        return Err(Error::failed(what, got));
    }
    Ok(r)
}

/// Any method, optional body, explicit timeout.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    request_host(port, "localhost", method, path, body, timeout)
}

/// [`request`] with a `Host` header of `host`. An error names the request.
fn request_host(
    port: u16,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<HttpResponse> {
    let sized = body.map_or_else(String::new, |body| {
        let length = body.len();
        format!("Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n")
    });
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{sized}\r\n");
    let req = [head.as_bytes(), body.unwrap_or_default()].concat();
    let what = format!("{method} http://127.0.0.1:{port}{path} (Host: {host})");
    exchange(port, &req, timeout).map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Send `request` to 127.0.0.1:`port`, read the response to EOF and parse
/// it, timing the first byte and the whole exchange.
fn exchange(port: u16, request: &[u8], timeout: Duration) -> io::Result<HttpResponse> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let first_byte = first_byte_since(start, &stream)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let mut resp = parse_response(&raw)?;
    resp.first_byte = first_byte;
    resp.total = start.elapsed();
    Ok(resp)
}

/// Blocks until `socket` has a byte to read (or is closed, or its read
/// timeout passes), leaving the byte there, and returns the time since
/// `start`: how the HTTP and the FastCGI client time an answer's first byte.
pub(crate) fn first_byte_since(start: Instant, socket: &impl AsRawFd) -> io::Result<Duration> {
    let mut byte = [0u8; 1];
    loop {
        // A signal (the demo has handlers) interrupts the wait, not the read.
        match recv(socket.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(|_| start.elapsed()).map_err(io::Error::from),
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parse a complete HTTP/1.1 response (read to EOF).
pub fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let encoding = header(&headers, "Transfer-Encoding");
    let body = if encoding.is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header(&headers, "Content-Length") {
        let len: usize = len.parse().map_err(|_| invalid("bad Content-Length"))?;
        let truncated = || invalid(format!("body truncated: {} of {len} bytes", rest.len()));
        rest.get(..len).ok_or_else(truncated)?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
        ..HttpResponse::default()
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_str = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_str.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_hex:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_sized_bodies_are_decoded() {
        // A 200 with a chunked body of `chunks`.
        let chunked = |chunks: &[u8]| {
            let head: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            parse_response(&[head, chunks].concat())
        };
        let r = chunked(b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n").expect("chunked");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello!"[..]));
        let r = parse_response(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nabcdef")
            .expect("sized");
        assert_eq!((r.status, r.body.as_slice()), (502, &b"abc"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        assert!(chunked(b"5\r\nhe").is_err());
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn request_sends_host_and_times_the_response() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read request");
                assert!(n > 0, "request cut short");
                req.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("write head");
            std::thread::sleep(Duration::from_millis(50));
            conn.write_all(b"2\r\nok\r\n0\r\n\r\n").expect("write body");
            String::from_utf8_lossy(&req).into_owned()
        });
        let r = get_host(port, "a.test", "/x").expect("GET");
        let req = server.join().expect("server thread");
        assert!(
            req.starts_with("GET /x HTTP/1.1\r\nHost: a.test\r\n"),
            "{req}"
        );
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert!(r.first_byte <= r.total, "{r:?}");
        assert!(r.total >= Duration::from_millis(50), "{r:?}");
        let err = get(port, "/gone").expect_err("nobody listens any more");
        assert!(err.to_string().contains("GET http://127.0.0.1:"), "{err}");
    }
}
