//! The one FastCGI client of the tests, the benches and the soak (role
//! RESPONDER, one request per connection): the CGI params a request
//! carries, the answer split and timed; the records are
//! `fleet_core::fastcgi`'s.

use std::io::{self, Read, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fleet_core::fastcgi;

use crate::image::CONTAINER_DOCROOT;
use crate::kit::http::first_byte_since;

/// One FastCGI request. `script` is relative to `/srv/www` in the container.
#[derive(Debug, Clone)]
pub struct FcgiRequest {
    /// `REQUEST_METHOD` (`GET` from [`FcgiRequest::get`], `POST` from [`FcgiRequest::post`]).
    pub method: String,
    /// Script name, e.g. `hello.php`; `SCRIPT_FILENAME=/srv/www/<script>`.
    pub script: String,
    /// `QUERY_STRING` without `?`.
    pub query: String,
    /// Request body (sent as STDIN records, `CONTENT_LENGTH` set, and
    /// `CONTENT_TYPE` `application/octet-stream` when there is one).
    pub body: Vec<u8>,
    /// Additional params (e.g. `HTTP_HOST`).
    pub params: Vec<(String, String)>,
    /// Read/write timeout on the socket (30 s from `get` and `post`).
    pub timeout: Duration,
}

impl FcgiRequest {
    /// `GET /<script>?<query>`.
    pub fn get(script: &str, query: &str) -> Self {
        FcgiRequest {
            method: "GET".into(),
            script: script.into(),
            query: query.into(),
            body: Vec::new(),
            params: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    /// `POST /<script>` with `body`.
    pub fn post(script: &str, body: &[u8]) -> Self {
        FcgiRequest {
            method: "POST".into(),
            body: body.to_vec(),
            ..Self::get(script, "")
        }
    }
}

/// php-fpm's answer.
#[derive(Debug, Clone, Default)]
pub struct FcgiResponse {
    /// From the `Status:` header, 200 when absent.
    pub status: u16,
    /// CGI headers (name, value) in order.
    pub headers: Vec<(String, String)>,
    /// The body after the CGI headers.
    pub body: Vec<u8>,
    /// Everything php-fpm sent on FCGI_STDERR.
    pub stderr: Vec<u8>,
    /// protocolStatus of FCGI_END_REQUEST (0 = request complete).
    pub protocol_status: u8,
    /// From connecting to the first byte of the answer; zero when parsed
    /// from bytes.
    pub first_byte: Duration,
}

impl FcgiResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::kit::http::header(&self.headers, name)
    }
}

/// Connect to `socket` and send `req`; read until FCGI_END_REQUEST.
pub fn request(socket: &Path, req: &FcgiRequest) -> io::Result<FcgiResponse> {
    let start = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(req.timeout))?;
    stream.set_write_timeout(Some(req.timeout))?;
    stream.write_all(&try_encode_request(req)?)?;
    let first_byte = first_byte_since(start, &stream)?;
    let mut resp = read_response(&mut stream)?;
    resp.first_byte = first_byte;
    Ok(resp)
}

/// Reads one response (up to its FCGI_END_REQUEST) from `stream`.
pub fn read_response(stream: &mut impl Read) -> io::Result<FcgiResponse> {
    // Callers read what they asked for (100 MB echoes too): no limit here.
    let r = fastcgi::read_response(stream, usize::MAX)?;
    let mut resp = parse_cgi(&r.stdout)?;
    resp.stderr = r.stderr;
    resp.protocol_status = r.protocol_status;
    Ok(resp)
}

/// [`try_encode_request`] for tests: panics on a parameter longer than
/// FastCGI's 2^31 - 1 bytes.
pub fn encode_request(req: &FcgiRequest) -> Vec<u8> {
    try_encode_request(req).unwrap_or_else(|e| panic!("{e}"))
}

/// The whole request as bytes (BEGIN_REQUEST, PARAMS…, empty PARAMS, STDIN…, empty STDIN).
pub fn try_encode_request(req: &FcgiRequest) -> io::Result<Vec<u8>> {
    let name = format!("/{}", req.script);
    let uri = match req.query.as_str() {
        "" => name.clone(),
        query => format!("{name}?{query}"),
    };
    let filename = format!("{CONTAINER_DOCROOT}{name}");
    let length = req.body.len().to_string();
    let mut params: Vec<(&str, &str)> = vec![
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", &req.method),
        ("SCRIPT_FILENAME", &filename),
        ("SCRIPT_NAME", &name),
        ("REQUEST_URI", &uri),
        ("DOCUMENT_ROOT", CONTAINER_DOCROOT),
        ("QUERY_STRING", &req.query),
        ("CONTENT_LENGTH", &length),
        ("SERVER_NAME", "localhost"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ];
    if !req.body.is_empty() {
        params.push(("CONTENT_TYPE", "application/octet-stream"));
    }
    params.extend(req.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    fastcgi::encode_request(&params, &req.body, false)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Split CGI output into status, headers and body.
pub fn parse_cgi(raw: &[u8]) -> io::Result<FcgiResponse> {
    let cgi = fastcgi::split_cgi(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(FcgiResponse {
        status: cgi.status,
        headers: cgi.headers,
        body: cgi.body.to_vec(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::fastcgi::{BEGIN_REQUEST, Header, PARAMS, STDIN};

    /// Split an encoded stream into (type, content) records.
    fn records(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(h) = Header::parse(data) {
            let len = usize::from(h.content_len);
            out.push((h.kind, data[8..8 + len].to_vec()));
            data = &data[8 + h.body_len()..];
        }
        assert!(data.is_empty(), "truncated record");
        out
    }

    #[test]
    fn request_carries_the_cgi_params() {
        let body = vec![7u8; 70_000];
        let mut req = FcgiRequest::post("echo.php", &body);
        req.params.push(("HTTP_X_LONG".into(), "v".repeat(300)));
        let recs = records(&encode_request(&req));
        assert_eq!(recs[0], (BEGIN_REQUEST, vec![0, 1, 0, 0, 0, 0, 0, 0]));
        // The contents of the records of `kind`, joined.
        let content = |kind| -> Vec<u8> {
            let of_kind = recs.iter().filter(|r| r.0 == kind);
            of_kind.flat_map(|r| r.1.clone()).collect()
        };
        let text = String::from_utf8_lossy(&content(PARAMS)).into_owned();
        for want in [
            "SCRIPT_FILENAME/srv/www/echo.php",
            "REQUEST_METHODPOST",
            "CONTENT_LENGTH70000",
        ] {
            assert!(text.contains(want), "{want} in {text:?}");
        }
        assert!(text.contains(&format!("HTTP_X_LONG{}", "v".repeat(300))));
        assert_eq!(content(STDIN).len(), 70_000);
    }

    #[test]
    fn cgi_output_is_split() {
        let r = parse_cgi(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nnope")
            .expect("parse");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("content-type"), Some("text/html"));
        assert_eq!(r.body, b"nope");
        assert!(parse_cgi(b"Status: abc\r\n\r\n").is_err());
    }
}
