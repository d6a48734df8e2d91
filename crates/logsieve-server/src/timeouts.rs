//! Connection limits: a cap on open connections, and the timeouts that stop
//! idle, slow or stalled clients from holding them.
//!
//! - **Connection cap.** [`GuardedListener`] holds a permit per open
//!   connection (`max_connections`). Past the cap a new connection gets a
//!   canned `503 too_many_connections` and is closed, so the descriptors in
//!   use stay bounded and `/health` keeps answering once slots free up.
//! - **Header and idle timeouts.** [`GuardedIo`] wraps each socket. While no
//!   request is being served on it, a connection that has sent part of a
//!   request must finish its headers within `header_timeout_ms` (counted
//!   from its first byte, or from the connection opening), and one that has
//!   sent nothing since its last answer is closed after `idle_timeout_ms`.
//!   The [`track_busy`] middleware tells the socket when a request starts
//!   and when its answer has been sent in full.
//! - **Body timeout.** [`body_timeout`] wraps request bodies: a body that
//!   sends nothing for `body_timeout_ms` fails (408 before the answer has
//!   started, an aborted answer after). The socket also gives up on a client
//!   that takes nothing of its answer for as long.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The connection limits, from the `[server]` table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header: Duration,
    pub idle: Duration,
    pub body: Duration,
}

impl Limits {
    pub fn from_config(c: &crate::ServerConfig) -> Self {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        Self {
            max_connections: c.max_connections.max(1),
            header: ms(c.header_timeout_ms),
            idle: ms(c.idle_timeout_ms),
            body: ms(c.body_timeout_ms),
        }
    }
}

/// What a connection's socket and the requests on it share.
#[derive(Default)]
pub struct ConnState {
    /// Requests on this connection not yet answered in full.
    busy: AtomicUsize,
    /// Answers completed so far (a change tells the socket it went idle).
    done: AtomicU64,
    /// The socket's reader, woken when the connection goes idle so that it
    /// starts the idle clock.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    fn start(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    fn finish(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        }
    }
}

/// The connect info handlers and middleware see: the peer and the connection's state.
#[derive(Clone)]
pub struct ConnMeta {
    pub peer: SocketAddr,
    pub state: Arc<ConnState>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GuardedListener>> for ConnMeta {
    fn connect_info(s: axum::serve::IncomingStream<'_, GuardedListener>) -> Self {
        ConnMeta {
            peer: *s.remote_addr(),
            state: s.io().state.clone(),
        }
    }
}

/// Refusals answered at once at most; past this an over-cap connection is
/// just closed (each refusal holds its descriptor for up to a second).
const MAX_REFUSING: usize = 64;

/// A TCP listener that caps open connections and wraps each in [`GuardedIo`].
pub struct GuardedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    limits: Limits,
    /// Connections refused at the cap so far.
    pub refused: Arc<AtomicU64>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, limits: Limits) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            limits,
            refused: Arc::default(),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }
}

/// The answer over the cap, in the one error shape.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 109\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server has too many open connections; retry later\"}}";

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        // Read what the client sent, so that closing does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        io::Result::Ok(())
    })
    .await;
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            };
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => return (GuardedIo::new(stream, permit, self.limits), addr),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    if let Ok(slot) = self.refusing.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(stream).await;
                            drop(slot);
                        });
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// As axum's own listener: per-connection errors are skipped; others (out
/// of descriptors) are logged and retried after a pause.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where a connection is, for its read deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request's headers, since `Instant`.
    Head(Instant),
    /// No request since the last answer, since `Instant`.
    Idle(Instant),
    /// A request is being served: its body has its own timeout.
    Busy,
}

/// A socket with the header, idle and send-stall timeouts, holding its
/// connection-cap permit until it is closed.
pub struct GuardedIo {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    state: Arc<ConnState>,
    phase: Phase,
    /// `done` as last seen, to notice answers completed meanwhile.
    seen_done: u64,
    read_timer: Pin<Box<Sleep>>,
    /// When writes started to make no progress.
    write_stalled: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
}

impl GuardedIo {
    fn new(inner: TcpStream, permit: OwnedSemaphorePermit, limits: Limits) -> Self {
        let now = Instant::now();
        let _ = inner.set_nodelay(true);
        Self {
            inner,
            _permit: permit,
            limits,
            state: Arc::default(),
            phase: Phase::Head(now),
            seen_done: 0,
            read_timer: Box::pin(tokio::time::sleep_until(now + limits.header)),
            write_stalled: None,
            write_timer: Box::pin(tokio::time::sleep_until(now + limits.body)),
        }
    }

    /// Bring the phase up to date with the requests on the connection.
    fn update_phase(&mut self) {
        let busy = self.state.busy.load(Ordering::Acquire) > 0;
        let done = self.state.done.load(Ordering::Acquire);
        if busy {
            self.phase = Phase::Busy;
        } else if done != self.seen_done || self.phase == Phase::Busy {
            self.phase = Phase::Idle(Instant::now());
        }
        self.seen_done = done;
    }

    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match self.phase {
            Phase::Head(t) => Some((t + self.limits.header, "request headers not received in time")),
            Phase::Idle(t) => Some((t + self.limits.idle, "idle keep-alive connection")),
            Phase::Busy => None,
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.update_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Phase::Idle(_) = this.phase {
                        // The first bytes of the next request: its headers' clock starts.
                        this.phase = Phase::Head(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Ok(mut w) = this.state.waker.lock() {
                    *w = Some(cx.waker().clone());
                }
                // An answer may have completed between the check and now.
                this.update_phase();
                let Some((deadline, why)) = this.deadline() else {
                    return Poll::Pending;
                };
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                match this.read_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl GuardedIo {
    /// Count a write's progress; a write that makes none for the body
    /// timeout fails (the client is not reading its answer).
    fn on_write<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                let deadline = since + self.limits.body;
                if self.write_timer.deadline() != deadline {
                    self.write_timer.as_mut().reset(deadline);
                }
                match self.write_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing of its answer in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.write_stalled = None;
                ready
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks the connection busy from a request's arrival until its answer has
/// been sent in full (or dropped). Without connect info (tests driving the
/// router directly) it does nothing.
pub async fn track_busy(req: Request, next: Next) -> Response {
    let Some(state) = req
        .extensions()
        .get::<ConnectInfo<ConnMeta>>()
        .map(|c| c.0.state.clone())
    else {
        return next.run(req).await;
    };
    state.start();
    let guard = BusyGuard(Some(state));
    let resp = next.run(req).await;
    resp.map(|body| Body::new(GuardedBody { body, _guard: guard }))
}

struct BusyGuard(Option<Arc<ConnState>>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            s.finish();
        }
    }
}

/// An answer's body that marks the connection idle once it is sent or dropped.
struct GuardedBody {
    body: Body,
    _guard: BusyGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = r {
            if let Some(s) = self._guard.0.take() {
                s.finish();
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Middleware: a request body that sends nothing for the limit fails.
pub async fn body_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let req = req.map(|b| Body::new(tower_http::timeout::TimeoutBody::new(limit, b)));
    next.run(req).await
}

/// Whether an error reading a body came from [`body_timeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        // axum::Error and io::Error wrap their cause without always exposing it as a source.
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|e| e.get_ref()) {
            if is_body_timeout(inner) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Raise the descriptor limit toward what `max_connections` needs, and
/// return the cap that fits under it (with room for model files, the LLM
/// client's sockets and refusals).
pub fn fit_descriptor_limit(max_connections: usize) -> usize {
    const RESERVE: u64 = 128;
    let want = max_connections as u64 + RESERVE;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return max_connections;
        }
        if lim.rlim_cur < want as libc::rlim_t && lim.rlim_max > lim.rlim_cur {
            let raised = libc::rlimit {
                rlim_cur: (want as libc::rlim_t).min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    // rlim_t is not u64 everywhere.
    #[allow(clippy::unnecessary_cast)]
    let cur = lim.rlim_cur as u64;
    let fits = cur.saturating_sub(RESERVE).max(1) as usize;
    if fits < max_connections {
        tracing::warn!(
            max_connections,
            descriptor_limit = cur,
            cap = fits,
            "max_connections does not fit the descriptor limit; lowered"
        );
        fits
    } else {
        max_connections
    }
}
