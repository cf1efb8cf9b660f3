//! A small, bounded HTTP/1.1 server for the broker's own endpoints: the metrics listener
//! (`crate::metrics::endpoint`) and the admin API (`crate::admin`).
//!
//! Both answer a few known clients (a Prometheus scraper, an operator, a browser), so
//! this is deliberately not a web stack: a request head bounded in size (431 past it),
//! a body only with `Content-Length` and bounded (413; no chunked bodies), optional
//! keep-alive with a bounded number of requests per connection, a deadline on every
//! request, and a semaphore on the connections served at once ([`server`]). Framing
//! errors are answered with the JSON error shape the admin API uses everywhere.
//!
//! This file holds the request and response types and their framing; `server` the
//! accept loop.

pub mod server;

use std::collections::HashMap;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a server accepts, per listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of request line plus headers.
    pub max_head: usize,
    /// Bytes of a request body.
    pub max_body: usize,
    /// Connections served at once.
    pub max_concurrent: usize,
    /// Time a client has to send one request (head and body) once it started, and to
    /// take the answer.
    pub request_timeout: std::time::Duration,
    /// Time an idle keep-alive connection is kept open waiting for the next request.
    pub idle_timeout: std::time::Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: usize,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The path as sent (still percent-encoded), to split it into segments before
    /// decoding (a topic may contain an encoded `/`).
    pub raw_path: String,
    query: Vec<(String, String)>,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// Whether the client asked to keep the connection open.
    pub keep_alive: bool,
}

impl Request {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every query parameter, in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// The path's segments after `prefix`, each percent-decoded; `None` if the path does
    /// not start with `prefix` or a segment is not UTF-8.
    pub fn segments_after(&self, prefix: &str) -> Option<Vec<String>> {
        let rest = self.raw_path.strip_prefix(prefix)?;
        if rest.is_empty() {
            return Some(Vec::new());
        }
        rest.split('/').map(percent_decode).collect()
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (`WWW-Authenticate`, `Allow`, `Cache-Control`...).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// `value` as JSON. A value that cannot be serialised (never for our types) becomes
    /// a 500 with the error shape.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status, "application/json", body),
            Err(error) => Response::error(500, "internal", &error.to_string()),
        }
    }

    /// The error shape of every endpoint: `{"error":{"code":..,"message":..}}`, `code`
    /// being a stable machine-readable word.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        Response::new(
            status,
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection (between requests, or mid-request).
    Closed,
    /// The request is not acceptable; answer this and close.
    Refused(Response),
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadError {
    fn from(error: std::io::Error) -> Self {
        ReadError::Io(error)
    }
}

fn refused(status: u16, code: &str, message: &str) -> ReadError {
    ReadError::Refused(Response::error(status, code, message))
}

/// Reads one request from `stream`. `buf` carries bytes read past the previous request
/// (pipelining) and keeps those past this one.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Request, ReadError> {
    let head_end = loop {
        if let Some(end) = find_head_end(buf) {
            break end;
        }
        if buf.len() >= limits.max_head {
            return Err(refused(
                431,
                "headers_too_large",
                &format!(
                    "the request line and headers exceed {} bytes",
                    limits.max_head
                ),
            ));
        }
        let mut chunk = [0u8; 4096];
        let want = chunk.len().min(limits.max_head - buf.len());
        let read = stream.read(&mut chunk[..want]).await?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..read]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| refused(400, "bad_request", "the request head is not UTF-8"))?;
    let mut request = parse_head(head)?;
    let body_start = head_end + 4;
    if request.header("transfer-encoding").is_some() {
        return Err(refused(
            411,
            "length_required",
            "chunked bodies are not accepted; send Content-Length",
        ));
    }
    let length = match request.header("content-length") {
        None => 0,
        Some(value) => value
            .trim()
            .parse::<usize>()
            .map_err(|_| refused(400, "bad_request", "Content-Length is not a number"))?,
    };
    if length > limits.max_body {
        return Err(refused(
            413,
            "body_too_large",
            &format!("the request body exceeds {} bytes", limits.max_body),
        ));
    }
    while buf.len() < body_start + length {
        let mut chunk = [0u8; 8192];
        let want = chunk.len().min(body_start + length - buf.len());
        let read = stream.read(&mut chunk[..want]).await?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    request.body = buf[body_start..body_start + length].to_vec();
    buf.drain(..body_start + length);
    Ok(request)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|window| window == b"\r\n\r\n")
}

fn parse_head(head: &str) -> Result<Request, ReadError> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused(400, "bad_request", "malformed request line"));
    };
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Err(refused(
                505,
                "http_version_not_supported",
                "only HTTP/1.0 and HTTP/1.1 are served",
            ))
        }
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(refused(400, "bad_request", "malformed method"));
    }
    let mut headers = HashMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(refused(400, "bad_request", "malformed header line"));
        };
        if name.is_empty() || name.contains(' ') {
            return Err(refused(400, "bad_request", "malformed header name"));
        }
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    if !raw_path.starts_with('/') {
        return Err(refused(400, "bad_request", "the target must be a path"));
    }
    let path = percent_decode(raw_path)
        .ok_or_else(|| refused(400, "bad_request", "the path is not valid UTF-8"))?;
    let query = parse_query(query)
        .ok_or_else(|| refused(400, "bad_request", "the query is not valid UTF-8"))?;
    let connection = headers
        .get("connection")
        .map(|value| value.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => !http_1_0,
    };
    Ok(Request {
        method: method.to_string(),
        path,
        raw_path: raw_path.to_string(),
        query,
        headers,
        body: Vec::new(),
        keep_alive,
    })
}

fn parse_query(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((
                percent_decode(&key.replace('+', " "))?,
                percent_decode(&value.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. A malformed escape is
/// kept as it is.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Encodes every byte but unreserved characters as `%XX` (for a path segment or a
/// query value).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Writes `response` (with `Connection: close` unless `keep_alive`) and flushes.
pub async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\nX-Content-Type-Options: nosniff\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_head: 256,
            max_body: 16,
            max_concurrent: 1,
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_requests_per_connection: 10,
        }
    }

    async fn read(bytes: &[u8]) -> Result<Request, ReadError> {
        let mut stream = bytes;
        let mut buf = Vec::new();
        read_request(&mut stream, &mut buf, &limits()).await
    }

    fn status(result: Result<Request, ReadError>) -> u16 {
        match result {
            Err(ReadError::Refused(response)) => response.status,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[tokio::test]
    async fn parses_path_query_headers_and_body() {
        let request = read(
            b"POST /api/v1/retained/a%2Fb?limit=5&q=x+y%21 HTTP/1.1\r\nContent-Length: 4\r\nX-A: b\r\n\r\nbody",
        )
        .await
        .unwrap();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/v1/retained/a/b");
        assert_eq!(
            request.segments_after("/api/v1/").unwrap(),
            ["retained", "a/b"]
        );
        assert_eq!(request.query("limit"), Some("5"));
        assert_eq!(request.query("q"), Some("x y!"));
        assert_eq!(request.header("x-a"), Some("b"));
        assert_eq!(request.body, b"body");
        assert!(request.keep_alive);
    }

    #[tokio::test]
    async fn pipelined_requests_are_read_one_by_one() {
        let mut stream: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
        let mut buf = Vec::new();
        let first = read_request(&mut stream, &mut buf, &limits())
            .await
            .unwrap();
        let second = read_request(&mut stream, &mut buf, &limits())
            .await
            .unwrap();
        assert_eq!((first.path.as_str(), second.path.as_str()), ("/a", "/b"));
        assert!(!second.keep_alive);
        assert!(matches!(
            read_request(&mut stream, &mut buf, &limits()).await,
            Err(ReadError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_and_malformed_requests_are_refused() {
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        assert_eq!(status(read(huge.as_bytes()).await), 431);
        assert_eq!(
            status(read(b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n").await),
            413
        );
        assert_eq!(
            status(read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").await),
            411
        );
        assert_eq!(status(read(b"GET /\r\n\r\n").await), 400);
        assert_eq!(status(read(b"GET / HTTP/2.0\r\n\r\n").await), 505);
        assert_eq!(status(read(b"GET / HTTP/1.1\r\nbad\r\n\r\n").await), 400);
        assert_eq!(
            status(read(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").await),
            400
        );
    }

    #[test]
    fn percent_coding_round_trips() {
        for text in ["a/b", "sensors/+/temp", "ä $#%"] {
            assert_eq!(percent_decode(&percent_encode(text)).unwrap(), text);
        }
        assert_eq!(percent_decode("%zz%4").unwrap(), "%zz%4");
        assert_eq!(percent_decode("%ff"), None);
    }
}
