//! Operating the server, wired together: the metrics listener
//! ([`crate::metrics`]), webhook delivery ([`crate::webhooks`]) and the
//! audit log's head signer ([`crate::audit`]). `start` in lib.rs calls
//! [`start`] once the shared state exists.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{ServerError, Shared};

/// How to run the operations side.
#[derive(Clone, Debug)]
pub struct OpsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not served).
    pub metrics: Option<SocketAddr>,
    /// Webhook delivery pacing.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// How often the audit log's head is signed (when it moved).
    pub audit_head_interval: Duration,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            metrics: None,
            webhooks: crate::webhooks::WebhookSettings::default(),
            audit_head_interval: Duration::from_secs(60),
        }
    }
}

/// Starts the metrics listener (returns its address), the webhook tasks
/// and the head signer.
pub(crate) async fn start(
    shared: &Arc<Shared>,
    config: &OpsConfig,
) -> Result<Option<SocketAddr>, ServerError> {
    let metrics = match config.metrics {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            let local = listener.local_addr()?;
            crate::metrics::serve(shared.clone(), listener);
            tracing::info!(addr = %local, "metrics and health endpoints");
            Some(local)
        }
        None => None,
    };
    crate::webhooks::Webhooks::start(shared);
    crate::audit::spawn_head_signer(shared.clone(), config.audit_head_interval);
    Ok(metrics)
}
