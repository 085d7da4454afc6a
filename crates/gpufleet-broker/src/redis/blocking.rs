//! Dedicated connections for blocking reads. Redis answers one connection's commands in order, so
//! an `XREADGROUP … BLOCK` on the shared multiplexed connection would hold back every command
//! queued behind it for the whole wait. Each waiting fetch therefore borrows a connection of its
//! own from this pool (at most [`MAX_BLOCKING`] at a time) and returns it when the read answered.
//! A connection whose read failed or was abandoned (timeout, cancelled fetch) is dropped, so a
//! connection is never shared while a blocked command may still be outstanding on it.
//!
//! Redis ends a `BLOCK` up to 100 ms late (its timer runs at `hz` 10), and a nack should end a
//! wait at once. So a read also takes a *wake* future; when it completes first, the read is ended
//! with `CLIENT UNBLOCK <id>` sent on the shared connection, and the connection stays usable. If
//! the server refuses `CLIENT ID` or `CLIENT UNBLOCK` (an ACL without `@dangerous`), the read ends
//! at its own `BLOCK`.

use super::error::connection_lost;
use parking_lot::Mutex;
use redis::{
    aio::{ConnectionManager, MultiplexedConnection},
    AsyncConnectionConfig, Client, RedisError, Value,
};
use std::{future::Future, time::Duration};
use tokio::sync::Semaphore;
use tracing::debug;

/// Most blocking reads in flight (and connections kept) per broker; a fetch that finds none free
/// waits for one within its own wait.
pub(crate) const MAX_BLOCKING: usize = 64;

/// Extra time a blocking read gets beyond its `BLOCK` before the connection is given up.
const REPLY_MARGIN: Duration = Duration::from_secs(5);

/// A connection for blocking reads and its `CLIENT ID` (`None` when the ACL forbids asking).
struct Dedicated {
    conn: MultiplexedConnection,
    client_id: Option<i64>,
}

impl Dedicated {
    async fn new(mut conn: MultiplexedConnection) -> Result<Self, RedisError> {
        let id: Result<i64, RedisError> =
            redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await;
        let client_id = match id {
            Ok(id) => Some(id),
            Err(error) if error.code() == Some("NOPERM") => None,
            Err(error) => return Err(error),
        };
        Ok(Self { conn, client_id })
    }
}

/// A pool of connections used only for blocking reads.
pub(super) struct BlockingPool {
    client: Client,
    connect_timeout: Duration,
    idle: Mutex<Vec<Dedicated>>,
    permits: Semaphore,
}

/// One blocking `XREADGROUP`.
pub(super) struct BlockingRead<'a> {
    pub(super) key: &'a str,
    pub(super) group: &'a str,
    pub(super) consumer: &'a str,
    pub(super) count: usize,
    pub(super) block: Duration,
}

impl BlockingPool {
    /// A pool that opens connections with `client`.
    pub(super) fn new(client: Client, connect_timeout: Duration) -> Self {
        Self {
            client,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_BLOCKING),
        }
    }

    /// Opens a new connection.
    pub(super) async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new().set_connection_timeout(self.connect_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Adds an open connection to the idle ones.
    pub(super) async fn seed(&self, conn: MultiplexedConnection) -> Result<(), RedisError> {
        let dedicated = Dedicated::new(conn).await?;
        self.give_back(dedicated);
        Ok(())
    }

    async fn take(&self) -> Result<(Dedicated, bool), RedisError> {
        let pooled = self.idle.lock().pop();
        match pooled {
            Some(dedicated) => Ok((dedicated, true)),
            None => Ok((Dedicated::new(self.connect().await?).await?, false)),
        }
    }

    /// Runs `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS key >` on a connection of its own,
    /// ended early (through `shared`) when `wake` completes. Returns `Nil` when nothing arrived
    /// (or no connection was free within `block`). When a pooled connection is found dead, the
    /// idle ones are dropped and the read is retried once on a new connection.
    pub(super) async fn read(
        &self,
        read: BlockingRead<'_>,
        shared: &ConnectionManager,
        wake: impl Future<Output = ()>,
    ) -> Result<Value, RedisError> {
        let Ok(Ok(_permit)) = tokio::time::timeout(read.block, self.permits.acquire()).await else {
            return Ok(Value::Nil);
        };
        let block_ms = u64::try_from(read.block.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(read.group)
            .arg(read.consumer)
            .arg("COUNT")
            .arg(read.count)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(read.key)
            .arg(">");
        let limit = read.block + REPLY_MARGIN;
        tokio::pin!(wake);
        let mut woke = false;
        for _ in 0..2 {
            if woke {
                return Ok(Value::Nil);
            }
            let (mut dedicated, reused) = self.take().await?;
            let client_id = dedicated.client_id;
            let reply = tokio::time::timeout(limit, async {
                let query = cmd.query_async::<Value>(&mut dedicated.conn);
                tokio::pin!(query);
                tokio::select! {
                    reply = &mut query => reply,
                    () = &mut wake, if client_id.is_some() => {
                        woke = true;
                        if let Some(id) = client_id {
                            unblock(shared, id).await;
                        }
                        query.await
                    }
                }
            })
            .await;
            match reply {
                Ok(Ok(value)) => {
                    self.give_back(dedicated);
                    return Ok(value);
                }
                Ok(Err(error)) if reused && connection_lost(&error) => {
                    // Redis restarted or dropped us: the other idle connections are stale too.
                    self.clear();
                    continue;
                }
                Ok(Err(error)) => {
                    if !error.is_io_error() {
                        // An answer from the server (e.g. NOGROUP): the connection is fine.
                        self.give_back(dedicated);
                    }
                    return Err(error);
                }
                Err(_elapsed) => {
                    return Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no reply to a blocking read within {limit:?}"),
                    )))
                }
            }
        }
        Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "blocking-read connections keep failing",
        )))
    }

    fn give_back(&self, dedicated: Dedicated) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_BLOCKING {
            idle.push(dedicated);
        }
    }

    /// Drops every idle connection.
    pub(super) fn clear(&self) {
        self.idle.lock().clear();
    }
}

/// Ends the blocking command of client `id` as if it timed out. Best effort: when it fails the
/// read ends at its own `BLOCK`.
async fn unblock(shared: &ConnectionManager, id: i64) {
    let mut conn = shared.clone();
    let result: Result<i64, RedisError> = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .arg("TIMEOUT")
        .query_async(&mut conn)
        .await;
    if let Err(error) = result {
        debug!(%error, "CLIENT UNBLOCK failed; the read ends at its BLOCK timeout");
    }
}
