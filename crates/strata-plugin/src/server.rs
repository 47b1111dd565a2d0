//! The HTTP/1.1 server: one tokio task per connection (dockerd opens one
//! per concurrent call), every driver call on a blocking thread, so a long
//! import never holds up a `Get` or `Put` on another connection.
//!
//! The two streamed calls bridge async bodies and the driver's blocking
//! `Read`/`Write` through bounded queues, so memory stays flat whatever
//! the layer's size:
//!
//! * `ApplyDiff`: body frames go into a queue that the driver's reader
//!   drains; a body that breaks off (or a queue closed without the end
//!   marker) is a read error, never an early end of file, so a cut-off tar
//!   cannot commit as a shorter layer.
//! * `Diff`: the driver writes into 256 KiB chunks sent to the reply body.
//!   The status line waits for the first chunk, so an error found before
//!   then gets a proper non-200 reply with `{"Err"}` (dockerd reads a 200
//!   body as the tar itself); a later error aborts the chunked body, which
//!   dockerd sees as a failed stream.
//!
//! Every call is logged once when it ends: endpoint, layer, status,
//! duration and bytes.

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use strata_driver::LayerId;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::PluginError;
use crate::plugin::{Active, Plugin, create_opts, ids};
use crate::protocol::{
    Endpoint, InitRequest, JSON_CONTENT_TYPE, LayerRequest, MAX_JSON_BODY, Reply, WireCapabilities,
    WireChange, parse_apply_query, parse_json,
};

/// `ApplyDiff` body frames queued for the driver's reader. hyper hands
/// out at most ~400 KiB per frame, so this bounds the bytes in flight to a
/// few MiB however large the layer is.
const BODY_QUEUE: usize = 8;

/// Size of the chunks a `Diff` is sent in; the reply's status waits for
/// the first one.
const DIFF_CHUNK: usize = 256 << 10;

/// `Diff` chunks queued for the connection.
const DIFF_QUEUE: usize = 4;

/// Serves the plugin protocol on `listener` until `shutdown` completes.
/// Then it stops accepting, lets calls in flight finish for up to `grace`
/// (idle connections are closed at once), and returns. Calls still
/// running after that are abandoned: an import's reader then fails, so it
/// leaves only a staging directory that the next start sweeps. Mounts are
/// never released on stop: running containers keep their root
/// filesystems, and the next process adopts them.
pub async fn serve(
    listener: UnixListener,
    plugin: Arc<Plugin>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), PluginError> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let plugin = plugin.clone();
                    let service = service_fn(move |req| handle(plugin.clone(), req));
                    let mut builder = http1::Builder::new();
                    // dockerd keeps connections open between calls and may
                    // not retry a POST on a connection the server closed,
                    // so idle connections are never timed out.
                    builder.timer(TokioTimer::new()).header_read_timeout(None);
                    let io = TokioIo::new(stream);
                    let conn = graceful.watch(builder.serve_connection(io, service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little
                    // instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("stopped: all calls finished"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "stopped: calls still running after the grace period were abandoned"
        ),
    }
    Ok(())
}

/// One call's log line, written when the call ends.
struct CallLog {
    /// The endpoint, or the path asked for when it names none.
    call: String,
    id: String,
    parent: String,
    start: Instant,
}

impl CallLog {
    fn new(endpoint: Option<Endpoint>, path: &str, start: Instant) -> CallLog {
        CallLog {
            call: endpoint.map_or_else(|| path.to_string(), |e| e.name().to_string()),
            id: String::new(),
            parent: String::new(),
            start,
        }
    }

    fn layer(&mut self, id: Option<&str>, parent: Option<&str>) {
        self.id = id.unwrap_or_default().to_string();
        self.parent = parent.unwrap_or_default().to_string();
    }

    fn done(&self, status: u16, bytes_in: u64, bytes_out: u64, err: Option<&PluginError>) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let ms = (ms * 1000.0).round() / 1000.0;
        match err {
            None => tracing::info!(
                call = %self.call,
                id = %self.id,
                parent = %self.parent,
                status,
                ms,
                bytes_in,
                bytes_out,
                "call"
            ),
            Some(e) => tracing::warn!(
                call = %self.call,
                id = %self.id,
                parent = %self.parent,
                status,
                ms,
                bytes_in,
                bytes_out,
                error = %e,
                "call failed"
            ),
        }
    }
}

async fn handle(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let start = Instant::now();
    let endpoint = Endpoint::from_path(req.uri().path());
    let mut log = CallLog::new(endpoint, req.uri().path(), start);
    let Some(endpoint) = endpoint else {
        let e = PluginError::UnknownEndpoint {
            path: req.uri().path().to_string(),
        };
        return Ok(fail(&log, 0, e));
    };
    if req.method() != Method::POST {
        let e = PluginError::MethodNotAllowed {
            method: req.method().to_string(),
        };
        return Ok(fail(&log, 0, e));
    }
    Ok(match endpoint {
        Endpoint::ApplyDiff => apply_diff(plugin, req, log).await,
        Endpoint::Diff => diff(plugin, req, log).await,
        _ => {
            let body = match read_json_body(req.into_body()).await {
                Ok(b) => b,
                Err(e) => return Ok(fail(&log, 0, e)),
            };
            let bytes_in = body.len() as u64;
            let args = match Args::parse(endpoint, &body) {
                Ok(a) => a,
                Err(e) => return Ok(fail(&log, bytes_in, e)),
            };
            if let Args::Layer(r) = &args {
                log.layer(r.id.as_deref(), r.parent.as_deref());
            }
            match blocking(move || dispatch(&plugin, endpoint, args)).await {
                Ok(reply) => {
                    let bytes = reply.to_bytes();
                    log.done(200, bytes_in, bytes.len() as u64, None);
                    json(StatusCode::OK, bytes)
                }
                Err(e) => fail(&log, bytes_in, e),
            }
        }
    })
}

/// A JSON call's parsed arguments.
enum Args {
    None,
    Init(InitRequest),
    Layer(LayerRequest),
}

impl Args {
    fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Args, PluginError> {
        Ok(match endpoint {
            Endpoint::Activate => Args::None,
            Endpoint::Init => Args::Init(parse_json(body)?),
            Endpoint::Capabilities | Endpoint::Status | Endpoint::Cleanup => {
                // Arguments are ignored, but must still be JSON.
                parse_json::<serde_json::Value>(body)?;
                Args::None
            }
            _ => Args::Layer(parse_json(body)?),
        })
    }

    fn layer(self) -> Result<LayerRequest, PluginError> {
        match self {
            Args::Layer(r) => Ok(r),
            _ => Err(PluginError::Internal("call without layer arguments".into())),
        }
    }
}

/// Runs one JSON call against the driver (on a blocking thread).
fn dispatch(plugin: &Plugin, endpoint: Endpoint, args: Args) -> Result<Reply, PluginError> {
    let ok = Reply::default();
    match endpoint {
        Endpoint::Activate => {
            return Ok(Reply {
                implements: Some(vec!["GraphDriver".into()]),
                ..ok
            });
        }
        Endpoint::Init => {
            let Args::Init(req) = args else {
                return Err(PluginError::Internal("Init without its arguments".into()));
            };
            plugin.init(req)?;
            return Ok(ok);
        }
        _ => {}
    }
    let a = plugin.active()?;
    let d = a.driver.as_ref();
    Ok(match endpoint {
        Endpoint::Capabilities => Reply {
            capabilities: Some(WireCapabilities {
                reproduces_exact_diffs: a.exact_diffs(),
            }),
            ..ok
        },
        Endpoint::Status => Reply {
            status: Some(d.status().into_iter().map(|(k, v)| [k, v]).collect()),
            ..ok
        },
        Endpoint::Cleanup => {
            let r = d.cleanup()?;
            for e in &r.errors {
                tracing::warn!(error = %e, "cleanup");
            }
            ok
        }
        Endpoint::Create | Endpoint::CreateReadWrite => {
            let req = args.layer()?;
            let (id, parent) = ids(&req)?;
            if endpoint == Endpoint::Create {
                d.create(&id, parent.as_ref(), &create_opts(&a, &req, false))?;
            } else {
                d.create_read_write(&id, parent.as_ref(), &create_opts(&a, &req, true))?;
            }
            ok
        }
        Endpoint::Remove => {
            d.remove(&args.layer()?.layer_id()?)?;
            ok
        }
        Endpoint::Get => {
            let req = args.layer()?;
            let dir = d.get(&req.layer_id()?, req.mount_label.as_deref().unwrap_or(""))?;
            Reply {
                dir: Some(dir.to_string_lossy().into_owned()),
                ..ok
            }
        }
        Endpoint::Put => {
            d.put(&args.layer()?.layer_id()?)?;
            ok
        }
        Endpoint::Exists => Reply {
            exists: Some(d.exists(&args.layer()?.layer_id()?)),
            ..ok
        },
        Endpoint::GetMetadata => Reply {
            metadata: Some(d.metadata(&args.layer()?.layer_id()?)?),
            ..ok
        },
        Endpoint::Changes => {
            let (id, parent) = ids(&args.layer()?)?;
            let changes = d.changes(&id, parent.as_ref())?;
            Reply {
                changes: Some(changes.iter().map(WireChange::from).collect()),
                ..ok
            }
        }
        Endpoint::DiffSize => {
            let (id, parent) = ids(&args.layer()?)?;
            Reply {
                size: Some(d.diff_size(&id, parent.as_ref())?),
                ..ok
            }
        }
        Endpoint::Activate | Endpoint::Init | Endpoint::Diff | Endpoint::ApplyDiff => {
            return Err(PluginError::Internal(format!(
                "{} is not a JSON call",
                endpoint.name()
            )));
        }
    })
}

/// Runs a driver call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, PluginError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(PluginError::Internal(format!("driver call failed: {e}"))))
}

async fn read_json_body(body: Incoming) -> Result<Bytes, PluginError> {
    match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(PluginError::BadRequest {
            reason: format!("body larger than {MAX_JSON_BODY} bytes"),
        }),
        Err(e) => Err(PluginError::BadRequest {
            reason: format!("reading the body: {e}"),
        }),
    }
}

/// What the connection hands the `ApplyDiff` reader.
enum Chunk {
    Data(Bytes),
    /// The body ended normally.
    End,
    /// The body broke off.
    Failed(String),
}

/// The driver's view of an `ApplyDiff` body.
struct BodyReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    ended: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = buf.len().min(self.cur.len());
                self.cur.copy_to_slice(&mut buf[..n]);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the request body broke off: {e}"),
                    ));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the request body ended early (connection closed or plugin stopping)",
                    ));
                }
            }
        }
    }
}

async fn apply_diff(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
    mut log: CallLog,
) -> Response<ReplyBody> {
    let parsed = parse_apply_query(req.uri().query());
    if let Ok((id, parent)) = &parsed {
        log.layer(Some(id.as_str()), parent.as_ref().map(LayerId::as_str));
    }
    let ready = parsed.and_then(|(id, parent)| Ok((id, parent, plugin.active()?)));
    let mut body = req.into_body();
    let (id, parent, active) = match ready {
        Ok(r) => r,
        Err(e) => {
            // Read the tar anyway, so that the client sees the reply
            // rather than a connection closed under its upload.
            let (n, _) = drain(&mut body, None).await;
            return fail(&log, n, e);
        }
    };
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    let shown = id.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut reader = BodyReader {
            rx,
            cur: Bytes::new(),
            ended: false,
        };
        let r = active.driver.apply_diff(&id, parent.as_ref(), &mut reader);
        (r, active.exact_diffs())
    });
    let (bytes_in, broke) = drain(&mut body, Some(tx)).await;
    let (result, exact) = match job.await {
        Ok(r) => r,
        Err(e) => {
            let e = PluginError::Internal(format!("import worker failed: {e}"));
            return fail(&log, bytes_in, e);
        }
    };
    match result {
        Ok(r) => {
            if let (true, Some(why)) = (exact, &r.export_fallback) {
                tracing::warn!(
                    id = %shown,
                    reason = %why,
                    "this layer cannot be exported byte for byte; docker save/push of it will \
                     fail dockerd's digest check (start the plugin with the Init option \
                     exact_diffs=false for such images)"
                );
            }
            let bytes = Reply {
                size: Some(r.size),
                ..Reply::default()
            }
            .to_bytes();
            log.done(200, bytes_in, bytes.len() as u64, None);
            json(StatusCode::OK, bytes)
        }
        Err(e) => {
            let e = match broke {
                // The driver's text already says the stream broke; name
                // the transport's cause too.
                Some(cause) => PluginError::Body {
                    id: shown.to_string(),
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, format!("{cause}; {e}")),
                },
                None => e.into(),
            };
            fail(&log, bytes_in, e)
        }
    }
}

/// Reads `body` to its end, passing the data to `tx` while its reader
/// wants it (and discarding the rest). Returns the bytes read and, if the
/// body broke off, why.
async fn drain(body: &mut Incoming, mut tx: Option<mpsc::Sender<Chunk>>) -> (u64, Option<String>) {
    let mut n = 0u64;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                n += data.len() as u64;
                if let Some(t) = &tx
                    && t.send(Chunk::Data(data)).await.is_err()
                {
                    // The driver stopped reading (done, or failed).
                    tx = None;
                }
            }
            Some(Err(e)) => {
                let cause = e.to_string();
                if let Some(t) = tx {
                    let _ = t.send(Chunk::Failed(cause.clone())).await;
                }
                return (n, Some(cause));
            }
            None => {
                if let Some(t) = tx {
                    let _ = t.send(Chunk::End).await;
                }
                return (n, None);
            }
        }
    }
}

/// The driver's sink for a `Diff`.
struct DiffWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    /// Told once the first chunk is ready (the reply's status is then 200).
    started: Option<oneshot::Sender<Result<(), PluginError>>>,
    sent: u64,
}

impl DiffWriter {
    fn send(&mut self) -> io::Result<()> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the client went away");
        if let Some(s) = self.started.take() {
            s.send(Ok(())).map_err(|_| gone())?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(DIFF_CHUNK);
        self.sent += chunk.len() as u64;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| gone())
    }
}

impl Write for DiffWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= DIFF_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks go out when full and at the end; a mid-stream flush
        // would only make them smaller.
        Ok(())
    }
}

async fn diff(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
    mut log: CallLog,
) -> Response<ReplyBody> {
    let body = match read_json_body(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return fail(&log, 0, e),
    };
    let bytes_in = body.len() as u64;
    let ready = parse_json::<LayerRequest>(&body).and_then(|r| {
        log.layer(r.id.as_deref(), r.parent.as_deref());
        let (id, parent) = ids(&r)?;
        Ok((id, parent, plugin.active()?))
    });
    let (id, parent, active): (LayerId, Option<LayerId>, Arc<Active>) = match ready {
        Ok(r) => r,
        Err(e) => return fail(&log, bytes_in, e),
    };
    let (tx, rx) = mpsc::channel(DIFF_QUEUE);
    let (started, start_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut w = DiffWriter {
            tx,
            buf: BytesMut::with_capacity(DIFF_CHUNK),
            started: Some(started),
            sent: 0,
        };
        let r = active
            .driver
            .diff(&id, parent.as_ref(), &mut w)
            .map_err(PluginError::from)
            .and_then(|_| {
                w.send().map_err(|source| PluginError::Body {
                    id: id.to_string(),
                    source,
                })
            });
        match r {
            Ok(()) => log.done(200, bytes_in, w.sent, None),
            Err(e) => match w.started.take() {
                // Nothing sent yet: the reply carries the error.
                Some(s) => {
                    log.done(e.status(), bytes_in, 0, Some(&e));
                    let _ = s.send(Err(e));
                }
                None => {
                    log.done(200, bytes_in, w.sent, Some(&e));
                    // Aborts the chunked body: the client sees a broken
                    // stream, never a short tar that looks complete.
                    let _ = w.tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
            },
        }
    });
    match start_rx.await {
        Ok(Ok(())) => {
            let mut r = Response::new(ReplyBody::Stream(rx));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
            r
        }
        // The worker has logged the call.
        Ok(Err(e)) => error_reply(&e),
        Err(_) => error_reply(&PluginError::Internal(
            "the diff worker ended without a result".into(),
        )),
    }
}

/// Logs a failed call and builds its `{"Err"}` reply.
fn fail(log: &CallLog, bytes_in: u64, e: PluginError) -> Response<ReplyBody> {
    log.done(e.status(), bytes_in, 0, Some(&e));
    error_reply(&e)
}

/// The `{"Err"}` reply to an error, with its status.
fn error_reply(e: &PluginError) -> Response<ReplyBody> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, Reply::error(e).to_bytes())
}

fn json(status: StatusCode, bytes: Vec<u8>) -> Response<ReplyBody> {
    let mut r = Response::new(ReplyBody::Full(Some(Bytes::from(bytes))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    r
}

/// A reply body: JSON in one piece, or a `Diff` tar as it is produced.
enum ReplyBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

impl Body for ReplyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ReplyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReplyBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReplyBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ReplyBody::Full(None) => SizeHint::with_exact(0),
            ReplyBody::Stream(_) => SizeHint::default(),
        }
    }
}
