//! ACME HTTP-01 answers on the plain listener (RFC 8555 §8.3).
//!
//! A CA validating a domain fetches `http://<domain>/.well-known/acme-challenge/<token>` and
//! expects the key authorization as the body. The edge answers it itself, for any host, from the
//! pending challenges in the catalog, held in memory and reloaded whenever the feed announces a
//! change to them: a request never waits on the catalog, and a flood of made-up tokens costs
//! one map lookup each. A token the edge does not hold is routed like any other request (a
//! tenant may answer its own challenges).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tenantgate_catalog::feed::ChangeSink;
use tenantgate_catalog::store::acme::CHANGE_KIND;
use tenantgate_catalog::{Catalog, Change};
use tokio::sync::mpsc;

pub use tenantgate_catalog::store::acme::CHALLENGE_PREFIX;

/// The pending challenges, token → key authorization.
pub struct Challenges {
    by_token: RwLock<HashMap<Box<str>, Arc<str>>>,
    catalog: Catalog,
    reload: mpsc::UnboundedSender<()>,
}

impl Challenges {
    /// Start the store and its reload task; must run on the control runtime. Challenges load
    /// at the feed's first resync.
    pub(crate) fn start(catalog: Catalog) -> Arc<Challenges> {
        let (reload, rx) = mpsc::unbounded_channel();
        let challenges = Arc::new(Challenges {
            by_token: RwLock::new(HashMap::new()),
            catalog,
            reload,
        });
        tokio::spawn(reload_worker(Arc::downgrade(&challenges), rx));
        challenges
    }

    /// The key authorization for the request path `path`, when it is a challenge the edge holds.
    pub fn answer(&self, path: &str) -> Option<Arc<str>> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        let map = self.by_token.read().unwrap_or_else(|e| e.into_inner());
        map.get(token).cloned()
    }

    async fn reload(&self) {
        match self.catalog.live_challenges().await {
            Ok(live) => {
                let map = live
                    .into_iter()
                    .map(|(token, auth)| (token.into_boxed_str(), Arc::from(auth)))
                    .collect();
                *self.by_token.write().unwrap_or_else(|e| e.into_inner()) = map;
            }
            Err(e) => {
                tracing::warn!(error = %e, "loading ACME challenges failed; keeping the loaded ones")
            }
        }
    }

    /// The feed sink that keeps the challenges current.
    pub(crate) fn sink(self: &Arc<Self>) -> Arc<dyn ChangeSink> {
        Arc::new(Sink(self.clone()))
    }
}

async fn reload_worker(
    challenges: std::sync::Weak<Challenges>,
    mut rx: mpsc::UnboundedReceiver<()>,
) {
    while rx.recv().await.is_some() {
        // Several announcements queued meanwhile need one reload.
        while rx.try_recv().is_ok() {}
        let Some(challenges) = challenges.upgrade() else {
            return;
        };
        challenges.reload().await;
    }
}

struct Sink(Arc<Challenges>);

impl ChangeSink for Sink {
    fn apply(&self, change: &Change) {
        if change.kind == CHANGE_KIND {
            let _ = self.0.reload.send(());
        }
    }

    fn resync(&self) {
        let _ = self.0.reload.send(());
    }
}
