//! Connections: HTTP/1.1 with time limits on every phase, and one shutdown path.
//!
//! - headers must arrive within `header` (hyper closes the connection otherwise);
//! - a connection with no request in progress is closed after `idle` (keep-alive, or a client
//!   that connects and sends nothing);
//! - request bodies have their own limit, where the API reads them (`api.rs`);
//! - SIGINT and SIGTERM both stop accepting, let requests in flight finish for at most
//!   `grace`, then cut what is left and return.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

/// Time limits of connections.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    pub grace: Duration,
}

/// Serve `app` on `listener` until SIGINT or SIGTERM, then drain within `t.grace`.
pub async fn serve(listener: TcpListener, app: Router, t: Timeouts) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            name = &mut signal => {
                eprintln!("serve: {name}: shutting down; requests in flight have {} s to finish", t.grace.as_secs_f64());
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, app.clone(), t, stop_rx.clone()));
                }
                // Out of file descriptors and the like: wait a moment instead of spinning.
                Err(e) => {
                    eprintln!("serve: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(t.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("serve: {} connection(s) still busy after {} s: closed", connections.len(), t.grace.as_secs_f64());
        connections.shutdown().await;
    }
    eprintln!("serve: stopped");
    Ok(())
}

/// The first of SIGINT (Ctrl+C) and SIGTERM (systemd, Docker, Kubernetes).
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl+C"
    }
}

/// When a connection last finished a request, and how many it is serving now.
#[derive(Debug)]
struct Activity {
    busy: usize,
    since: Instant,
}

/// One connection: serve it until the client closes it, it idles out or the server stops.
async fn connection(stream: TcpStream, app: Router, t: Timeouts, mut stop: watch::Receiver<bool>) {
    let activity = Arc::new(Mutex::new(Activity { busy: 0, since: Instant::now() }));
    let service = TowerToHyperService::new(Tracked { inner: app, activity: activity.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(t.header).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(JsonErrorIo::new(stream)), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = {
            let a = activity.lock().unwrap();
            (a.busy == 0).then_some(a.since + t.idle)
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // Re-checked now and then while requests are in progress.
            _ = tokio::time::sleep_until(idle_at.unwrap_or_else(|| Instant::now() + t.idle)), if !closing => {
                let a = activity.lock().unwrap();
                if a.busy == 0 && a.since.elapsed() >= t.idle {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The app, noting when each request of its connection starts and ends.
#[derive(Clone)]
struct Tracked {
    inner: Router,
    activity: Arc<Mutex<Activity>>,
}

/// Marks a request finished, also when its future is dropped.
struct Busy(Arc<Mutex<Activity>>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut a = self.0.lock().unwrap();
        a.busy -= 1;
        a.since = Instant::now();
    }
}

impl Service<Request<Incoming>> for Tracked {
    type Response = <Router as Service<Request<Incoming>>>::Response;
    type Error = <Router as Service<Request<Incoming>>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Incoming>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.activity.lock().unwrap().busy += 1;
        let busy = Busy(self.activity.clone());
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await;
            drop(busy);
            response
        })
    }
}

/// The connection's socket, giving hyper's own error answers a JSON body.
///
/// hyper answers requests it cannot parse (a request line over 64 KiB: 414, a header section
/// over its buffer: 431, garbage: 400) itself, with an empty body, before the app sees them.
/// Those answers are recognised on their way out — a 4xx head with no Content-Type, which
/// the app never sends (`policy::json_errors` gives every error of its own a JSON body) — and
/// replaced by the same status with the API's JSON error. hyper closes the connection after
/// them, so nothing follows on the wire.
struct JsonErrorIo<T> {
    inner: T,
    /// Replacement bytes still to be written.
    pending: Vec<u8>,
}

impl<T> JsonErrorIo<T> {
    fn new(inner: T) -> Self {
        Self { inner, pending: Vec::new() }
    }
}

/// The JSON replacement of an automatic error head, if `buf` is one.
fn replace_automatic_error(buf: &[u8]) -> Option<Vec<u8>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    let status: u16 = head.strip_prefix("http/1.1 4")?.get(..2).and_then(|d| format!("4{d}").parse().ok())?;
    if head.contains("content-type:") || end + 4 != buf.len() {
        return None;
    }
    let code = axum::http::StatusCode::from_u16(status).ok()?;
    let message = match status {
        414 => "the request target is too long".to_string(),
        431 => "the request headers are too large".to_string(),
        400 => "malformed HTTP request".to_string(),
        _ => code.canonical_reason().unwrap_or("error").to_string(),
    };
    let body = serde_json::to_string(&sonosam_model::wire::ErrorAnswer { error: message, status }).ok()?;
    Some(
        format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            code.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: tokio::io::AsyncWrite + Unpin> JsonErrorIo<T> {
    /// Write what is pending; Ready(Ok) once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonErrorIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for JsonErrorIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        match replace_automatic_error(buf) {
            Some(replacement) => {
                self.pending = replacement;
                // Accepted in full; the replacement goes out now or on the next flush.
                let _ = self.poll_pending(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_errors_get_json_bodies() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Sun, 29 Nov 2026 23:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replace_automatic_error(hyper_414).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json"));
        assert!(out.ends_with(r#"{"error":"the request target is too long","status":414}"#));
        // The app's own answers pass untouched.
        assert!(replace_automatic_error(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n").is_none());
        assert!(replace_automatic_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replace_automatic_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\n\r\nabc").is_none());
    }
}
