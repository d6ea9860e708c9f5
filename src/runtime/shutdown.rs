//! A shutdown signal shared by every task of a process: SIGINT/SIGTERM or a caller.

use tokio::sync::watch;

/// Cloneable handle: `trigger` once, and every `wait` returns.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A fresh, untriggered signal.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// Asks every holder to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when triggered (cancellation-safe).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Makes a stop certain: once triggered, a process still running after `grace` is
    /// ended with exit status 1 (as `kill -9` would end it: nothing committed is lost,
    /// what was not is re-read). A plain thread, not a task, so it fires even when every
    /// runtime worker is stuck in a blocking client call. Call once per process.
    pub fn exit_after(&self, grace: std::time::Duration) {
        let rx = self.rx.clone();
        tokio::spawn(async move {
            let mut rx = rx;
            let _ = rx.wait_for(|v| *v).await;
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
