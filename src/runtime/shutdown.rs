//! A shutdown signal shared by every task of a process: SIGINT/SIGTERM or a caller.

use std::time::Instant;
use tokio::sync::watch;

/// Cloneable handle: `trigger` once, and every `wait` returns. It remembers when it was
/// first triggered, so blocking calls made while stopping can keep to what is left of
/// the shutdown deadline.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<Option<Instant>>>,
    rx: watch::Receiver<Option<Instant>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered signal.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(None);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// Asks every holder to stop. Triggering again keeps the first time.
    pub fn trigger(&self) {
        self.tx.send_if_modified(|at| {
            if at.is_some() {
                return false;
            }
            *at = Some(Instant::now());
            true
        });
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// When the stop was first asked for, if it was.
    pub fn triggered_at(&self) -> Option<Instant> {
        *self.rx.borrow()
    }

    /// Resolves when triggered (cancellation-safe).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Makes a stop certain: once triggered, a process still running after `grace` is
    /// ended with exit status 1 (as `kill -9` would end it: nothing committed is lost,
    /// what was not is re-read). A plain thread, not a task, so it fires even when every
    /// runtime worker is stuck in a blocking client call. Call once per process.
    pub fn exit_after(&self, grace: std::time::Duration) {
        let rx = self.rx.clone();
        tokio::spawn(async move {
            let mut rx = rx;
            let _ = rx.wait_for(Option::is_some).await;
            let spawned = std::thread::Builder::new()
                .name("shutdown-watchdog".into())
                .spawn(move || {
                    std::thread::sleep(grace);
                    tracing::error!(grace = ?grace, "still running this long after the stop was asked; exiting now (uncommitted records are re-read by the next owner)");
                    eprintln!("perfpilot: did not stop within {grace:?} of the signal; exiting");
                    std::process::exit(1);
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the shutdown watchdog");
            }
        });
    }

    /// Triggers on SIGINT (Ctrl-C) or SIGTERM. Spawn once per process.
    pub async fn on_signals(self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
                        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        self.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_trigger_is_remembered() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        assert_eq!(s.triggered_at(), None);
        let before = Instant::now();
        s.trigger();
        let first = s.triggered_at();
        assert!(first.is_some_and(|t| t >= before));
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.clone().trigger();
        assert_eq!(
            s.triggered_at(),
            first,
            "a second trigger keeps the first time"
        );
        assert!(s.clone().is_triggered());
    }
}
