//! The shutdown signal. Cloning shares it; `trigger` wakes every `wait`.

use tokio_util::sync::CancellationToken;

/// A cloneable shutdown signal.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }
    /// Fires the signal.
    pub fn trigger(&self) {
        self.token.cancel();
    }
    /// Whether it fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }
    /// Resolves when the signal fires.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }
    /// A child signal: fires with its parent, or alone.
    pub fn child(&self) -> Shutdown {
        Shutdown { token: self.token.child_token() }
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C only on non-Unix).
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_waiters_and_children() {
        let s = Shutdown::new();
        let c = s.child();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait().await }
        });
        assert!(!c.is_triggered());
        s.trigger();
        waiter.await.unwrap();
        assert!(c.is_triggered());
    }
}
