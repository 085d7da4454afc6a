//! One listener per simulated host on `127.0.0.1:<port>`, with HTTP/1.1 keep-alive, a per-host
//! switch between reachable and unreachable, and a bound on open file descriptors.
//!
//! - **Unreachable** closes the host's listener and drops its open connections, so clients get
//!   `connection refused` (like a host that is down); **reachable** binds the same address again.
//! - **Keep-alive**: connections stay open between requests; one idle for `idle_timeout` is closed
//!   (what nginx's `keepalive_timeout` does).
//! - **Descriptor budget**: when a new connection arrives while the budget is spent, an idle
//!   connection picked at random (of any host) is closed to make room — random eviction, because a
//!   health worker sweeps hosts in a cycle and closing the longest-idle one (LRU) would close exactly
//!   the next connection it needs, every time. Only when no connection is idle is the new one
//!   dropped at accept. So the process never runs out of descriptors (which would leave clients
//!   hanging in the accept backlog).
//! - **Descriptors**: [`raise_nofile`] lifts the soft `RLIMIT_NOFILE` to the hard limit; the budget
//!   is what is left after the listeners and a reserve.

use super::host::SimHostState;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tracing::debug;

/// Descriptors kept free for everything else in the process.
pub const FD_RESERVE: u64 = 256;
/// Random picks tried to find an idle connection to evict.
const EVICT_TRIES: usize = 8;

pub use gpufleet_runtime::limits::raise_nofile;

/// Counters shared by every host of a fleet.
#[derive(Debug)]
pub struct FleetStats {
    /// Requests answered (all hosts).
    pub requests: AtomicU64,
    /// Connections open now.
    pub open_conns: AtomicUsize,
    /// Connections accepted and dropped at once because the descriptor budget was spent and none
    /// was idle.
    pub shed_conns: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted_conns: AtomicU64,
    /// Connections the fleet may hold open.
    pub conn_budget: usize,
    /// Idle time before a keep-alive connection is closed.
    pub idle_timeout: Duration,
    pub(crate) epoch: Instant,
    conns: parking_lot::Mutex<HashMap<u64, Arc<ConnCtl>>>,
    next_conn: AtomicU64,
}

impl FleetStats {
    pub(crate) fn new(conn_budget: usize, idle_timeout: Duration) -> Self {
        Self {
            requests: AtomicU64::new(0),
            open_conns: AtomicUsize::new(0),
            shed_conns: AtomicU64::new(0),
            evicted_conns: AtomicU64::new(0),
            conn_budget,
            idle_timeout,
            epoch: Instant::now(),
            conns: parking_lot::Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Makes room for one connection: true when one is free or an idle one was told to close.
    fn make_room(&self) -> bool {
        if self.open_conns.load(Ordering::Relaxed) < self.conn_budget {
            return true;
        }
        let conns = self.conns.lock();
        if conns.is_empty() {
            return false;
        }
        let mut rng = rand::thread_rng();
        for _ in 0..EVICT_TRIES {
            let pick = rand::Rng::gen_range(&mut rng, 0..conns.len());
            if let Some(c) = conns.values().nth(pick) {
                if c.in_flight.load(Ordering::Relaxed) == 0 && !c.evicted.swap(true, Ordering::Relaxed) {
                    c.evict.notify_one();
                    self.evicted_conns.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }
}

/// One open connection as the fleet sees it.
#[derive(Debug)]
struct ConnCtl {
    last_ms: AtomicU64,
    in_flight: AtomicU32,
    evicted: std::sync::atomic::AtomicBool,
    evict: tokio::sync::Notify,
}

/// A command to a host's listener task.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Open (true) or close (false) the listener; the answer says when it is done.
    Reachable(bool, oneshot::Sender<std::io::Result<()>>),
}

/// Runs one host's listener until the control channel closes or `stop` fires.
pub(crate) async fn host_loop(
    host: Arc<SimHostState>,
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    mut ctl: mpsc::Receiver<Ctl>,
    stop: gpufleet_runtime::Shutdown,
    stats: Arc<FleetStats>,
) {
    let router = crate::server::router_for(host.clone());
    let mut conns = JoinSet::new();
    loop {
        let accepted = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.wait() => break,
            cmd = ctl.recv() => match cmd {
                None => break,
                Some(Ctl::Reachable(false, ack)) => {
                    listener = None;
                    conns.abort_all();
                    while conns.join_next().await.is_some() {}
                    let _ = ack.send(Ok(()));
                }
                Some(Ctl::Reachable(true, ack)) => {
                    if listener.is_none() {
                        match bind_again(addr).await {
                            Ok(l) => {
                                listener = Some(l);
                                let _ = ack.send(Ok(()));
                            }
                            Err(e) => {
                                let _ = ack.send(Err(e));
                            }
                        }
                    } else {
                        let _ = ack.send(Ok(()));
                    }
                }
            },
            acc = accepted => match acc {
                Ok((stream, _)) => {
                    if !stats.make_room() {
                        stats.shed_conns.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_conn(stream, router.clone(), stats.clone()));
                }
                Err(error) => {
                    // EMFILE or a reset before accept: back off briefly instead of spinning.
                    debug!(%error, host = host.name(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Binds `addr` again after an unreachable period; retries briefly (the old socket may linger).
async fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

struct OpenConn(Arc<FleetStats>, u64);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.open_conns.fetch_sub(1, Ordering::Relaxed);
        self.0.conns.lock().remove(&self.1);
    }
}

async fn serve_conn(stream: TcpStream, router: axum::Router, stats: Arc<FleetStats>) {
    let id = stats.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctl = Arc::new(ConnCtl {
        last_ms: AtomicU64::new(stats.now_ms()),
        in_flight: AtomicU32::new(0),
        evicted: std::sync::atomic::AtomicBool::new(false),
        evict: tokio::sync::Notify::new(),
    });
    stats.open_conns.fetch_add(1, Ordering::Relaxed);
    stats.conns.lock().insert(id, ctl.clone());
    let _open = OpenConn(stats.clone(), id);
    let svc = {
        let (ctl, stats) = (ctl.clone(), stats.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (ctl, stats, router) = (ctl.clone(), stats.clone(), router.clone());
            async move {
                ctl.in_flight.fetch_add(1, Ordering::Relaxed);
                let resp = router.oneshot(req).await;
                ctl.in_flight.fetch_sub(1, Ordering::Relaxed);
                ctl.last_ms.store(stats.now_ms(), Ordering::Relaxed);
                stats.requests.fetch_add(1, Ordering::Relaxed);
                resp
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_for = Duration::from_millis(stats.now_ms().saturating_sub(ctl.last_ms.load(Ordering::Relaxed)));
        let wait = if closing { Duration::from_secs(3600) } else { stats.idle_timeout.saturating_sub(idle_for).max(Duration::from_millis(50)) };
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = ctl.evict.notified(), if !closing => {
                // Closes at once when idle; otherwise after the response in progress.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(wait), if !closing => {
                let idle_for = Duration::from_millis(stats.now_ms().saturating_sub(ctl.last_ms.load(Ordering::Relaxed)));
                if ctl.in_flight.load(Ordering::Relaxed) == 0 && idle_for >= stats.idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
