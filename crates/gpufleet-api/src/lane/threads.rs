//! [`LaneThreads`]: the threads the inference lane runs on — one single-threaded tokio runtime
//! each, as nginx runs one event loop per worker process. The listener accepts on the main
//! runtime and hands each plain-TCP connection to a lane thread in turn; a connection stays on
//! its thread, so its request, its upstream connection and their wake-ups never cross threads.
//! A connection the lane hands to hyper goes back to the main runtime (`on_handoff`), where the
//! router's handlers run as before.
//!
//! Why: on the benchmark (`docs/benchmarks.md`) the same lane on the multi-threaded runtime
//! spent ~30 % more CPU per request than on one thread (work stealing, cross-thread wake-ups,
//! futex calls) and added 2–3 ms to p99 at 16 connections; on its own thread it matched nginx's
//! tail latency.

use super::Handoff;
use crate::ApiService;
use gpufleet_runtime::Shutdown;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// What happens to a connection the lane hands over, with the guard it was submitted with
/// (called on the lane thread; it should move the connection to another runtime with
/// [`Handoff::into_std`]).
pub type OnHandoff<G> = Arc<dyn Fn(Handoff, SocketAddr, G) + Send + Sync>;

type Incoming<G> = (std::net::TcpStream, SocketAddr, G);

/// The lane's threads. Each connection comes with a guard `G` held until the connection ends on
/// the lane or is handed over with it (the listener's graceful-shutdown watcher). Dropping it
/// stops the threads taking connections; each then finishes its connections (they end at
/// `shutdown` or when their clients leave) and exits.
pub struct LaneThreads<G> {
    senders: Vec<mpsc::UnboundedSender<Incoming<G>>>,
    next: AtomicUsize,
}

impl<G> std::fmt::Debug for LaneThreads<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneThreads").field("threads", &self.senders.len()).finish()
    }
}

impl<G: Send + 'static> LaneThreads<G> {
    /// Starts `n` lane threads (`0`: [`default_threads`]) serving `app`.
    pub fn start(n: usize, app: ApiService, shutdown: Shutdown, on_handoff: OnHandoff<G>) -> io::Result<Self> {
        let n = if n == 0 { default_threads() } else { n };
        let mut senders = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (app, shutdown, on_handoff) = (app.clone(), shutdown.clone(), on_handoff.clone());
            std::thread::Builder::new()
                .name(format!("gpufleet-lane-{i}"))
                .spawn(move || rt.block_on(run(rx, app, shutdown, on_handoff)))?;
            senders.push(tx);
        }
        Ok(Self { senders, next: AtomicUsize::new(0) })
    }

    /// How many threads serve the lane.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Gives an accepted connection to the next lane thread. It is taken off the caller's
    /// runtime here; an error means it could not be (the connection is dropped).
    pub fn submit(&self, io: tokio::net::TcpStream, peer: SocketAddr, guard: G) -> io::Result<()> {
        let std = io.into_std()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        self.senders[i].send((std, peer, guard)).map_err(|_| io::Error::other("lane thread gone"))
    }
}

/// Half the cores, at least one. A proxy's CPU per request is mostly the kernel's socket work
/// and the clients and model servers it wakes need cores too: on the 2-core benchmark box one
/// lane thread took 12.8 µs per request against 14.0–16.3 µs for two (`docs/benchmarks.md`).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).div_ceil(2)
}

async fn run<G: Send + 'static>(mut rx: mpsc::UnboundedReceiver<Incoming<G>>, app: ApiService, shutdown: Shutdown, on_handoff: OnHandoff<G>) {
    let tracker = TaskTracker::new();
    while let Some((std, peer, guard)) = rx.recv().await {
        let io = match tokio::net::TcpStream::from_std(std) {
            Ok(io) => io,
            Err(error) => {
                tracing::debug!(%error, %peer, "connection not registered on the lane");
                continue;
            }
        };
        let (app, shutdown, on_handoff) = (app.clone(), shutdown.clone(), on_handoff.clone());
        tracker.spawn(async move {
            if let Some(handoff) = app.serve_lane(io, peer, &shutdown).await {
                on_handoff(handoff, peer, guard);
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
