//! Process-wide runtime state that capabilities share without knowing each other: the shutdown
//! signal with readiness, and the component states `/health` reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

/// Health states set by long-lived components (KB loader, Neo4j mirror, licensing); `/health`
/// reads them.
#[derive(Debug)]
pub struct Components {
    pub ib: RwLock<String>,
    pub neo4j: RwLock<String>,
    pub marketplace: RwLock<String>,
    /// The notification bus of this replica: `ok`, `starting`, or `down: …` (clients get no
    /// live events until it is back, then everything they missed, by id).
    pub notifications: RwLock<String>,
}

impl Components {
    pub fn new(neo4j_configured: bool, marketplace_enabled: bool) -> Self {
        Self {
            ib: RwLock::new("not_loaded".into()),
            neo4j: RwLock::new(if neo4j_configured { "down" } else { "disabled" }.into()),
            marketplace: RwLock::new(
                if marketplace_enabled {
                    "pending"
                } else {
                    "disabled"
                }
                .into(),
            ),
            notifications: RwLock::new("starting".into()),
        }
    }
}

/// Start-up and shutdown state shared by the server, the health endpoints and background tasks.
#[derive(Clone, Default)]
pub struct Lifecycle {
    shutting_down: Arc<AtomicBool>,
    /// Cancelled when background tasks and streams must stop.
    pub stop: CancellationToken,
}

impl Lifecycle {
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}
