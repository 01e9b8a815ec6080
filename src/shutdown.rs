//! Shutdown signalling in the style of mini-redis: one `watch` channel tells every task to
//! stop; tasks hold a [`Shutdown`] and select on [`Shutdown::recv`].

use tokio::sync::watch;

/// Sends the stop signal.
#[derive(Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

/// Receives the stop signal.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (
        ShutdownTrigger {
            tx: std::sync::Arc::new(tx),
        },
        Shutdown { rx },
    )
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when shutdown was triggered (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means every trigger was dropped: treat as shutdown too.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}
