//! Who may call the server and how: the Host and Origin checks that keep other web pages
//! (and DNS-rebinding pages) from using a server on the user's machine, the content types the
//! API takes, limits on the request line and headers, and JSON bodies for every error.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sonosam_model::wire::ErrorAnswer;

/// Longest accepted request target (path + query), in bytes: longer is 414.
pub const MAX_URI: usize = 8 * 1024;
/// Most header bytes accepted: more is 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// A JSON error answer: `{"error": message, "status": code}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorAnswer { error: message.into(), status: status.as_u16() };
    (status, axum::Json(body)).into_response()
}

/// The request policy of one server.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Host names accepted besides IP literals and `localhost` (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    /// Origins of other pages allowed to call the API (`--cors-origin`).
    pub cors_origins: Vec<String>,
}

impl Policy {
    /// IP literals cannot be rebound, `localhost` resolves locally; other names only when
    /// allowed. `host` is the Host header (`name[:port]`).
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name.eq_ignore_ascii_case("localhost")
            || name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host) || h.eq_ignore_ascii_case(name))
    }

    /// The page's own origin (the app served by this server) or one given by `--cors-origin`.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let same = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")));
        same || self.cors_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// `name` of `name:port`, `[v6]` of `[v6]:port`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Middleware for every route: size limits of the request head and the Host check.
pub async fn check_request(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    if req.uri().to_string().len() > MAX_URI {
        return error(StatusCode::URI_TOO_LONG, format!("the request target is longer than {MAX_URI} bytes"));
    }
    let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        );
    }
    let host = header_str(req.headers(), header::HOST).or(req.uri().authority().map(|a| a.as_str()));
    match host {
        None => error(StatusCode::BAD_REQUEST, "the request has no Host header"),
        Some(host) if !policy.host_allowed(host) => error(
            StatusCode::FORBIDDEN,
            format!(
                "Host `{host}` is not served here (protection against DNS rebinding); \
                 start the server with --allowed-host {} to allow it",
                host_name(host)
            ),
        ),
        Some(_) => next.run(req).await,
    }
}

/// Middleware for the API: refuse calls from other web pages before their body is read
/// (browsers always send `Origin` on cross-origin requests), and bodies that are not images.
pub async fn check_api_call(State(policy): State<Arc<Policy>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = header_str(headers, header::HOST).unwrap_or_default();
    if let Some(origin) = header_str(headers, header::ORIGIN)
        && !policy.origin_allowed(origin, host)
    {
        return error(
            StatusCode::FORBIDDEN,
            format!("requests from pages at {origin} are not allowed (start the server with --cors-origin {origin} to allow them)"),
        );
    } else if headers.get(header::ORIGIN).is_some_and(|o| o.to_str().is_err()) {
        return error(StatusCode::FORBIDDEN, "unreadable Origin header");
    }
    // A POST without a body has no media type to judge (the handler says it is empty).
    let empty = header_str(headers, header::CONTENT_LENGTH) == Some("0");
    if req.method() == Method::POST && !empty {
        let kind = header_str(headers, header::CONTENT_TYPE).unwrap_or_default();
        if !image_content_type(kind) {
            let shown = if kind.is_empty() { "none".to_string() } else { format!("`{kind}`") };
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {shown}: send the image file's bytes as image/png, image/jpeg, \
                     image/bmp or application/octet-stream (curl: -H 'Content-Type: image/png')"
                ),
            );
        }
    }
    next.run(req).await
}

/// `image/*` and `application/octet-stream` (parameters ignored); never the form and text
/// types a page can send cross-site without asking.
fn image_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.starts_with("image/") || essence == "application/octet-stream"
}

/// Middleware: every answer makes the page cross-origin isolated (COOP `same-origin`, COEP
/// `require-corp`), so the app's model worker can use shared memory and run threaded.
pub async fn isolation_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-embedder-policy", HeaderValue::from_static("require-corp"));
    response
}

/// Middleware: error answers that carry no body (404 of a missing file, 405 of a wrong
/// method, …) get the API's JSON error body.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let has_body = response.headers().contains_key(header::CONTENT_TYPE);
    if !(status.is_client_error() || status.is_server_error()) || has_body {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such file or endpoint".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method".to_string(),
        other => other.canonical_reason().unwrap_or("error").to_string(),
    };
    let (mut parts, _) = response.into_parts();
    let json = error(status, message);
    parts.headers.extend(json.headers().clone());
    Response::from_parts(parts, json.into_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let p = Policy { allowed_hosts: vec!["scanner.local".into()], cors_origins: vec!["http://a.test".into()] };
        for ok in ["127.0.0.1:8080", "localhost:8080", "[::1]:80", "10.1.2.3", "scanner.local:8080", "LOCALHOST"] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.test", "evil.test:8080", "127.0.0.1.evil.test:8080", "localhost.evil.test"] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        assert!(p.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(p.origin_allowed("http://a.test", "127.0.0.1:8080"));
        assert!(!p.origin_allowed("http://evil.test", "127.0.0.1:8080"));
        assert!(!p.origin_allowed("null", "127.0.0.1:8080"));
        assert!(image_content_type("image/png"));
        assert!(image_content_type("Application/Octet-Stream; x=1"));
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""] {
            assert!(!image_content_type(bad), "{bad}");
        }
    }
}
