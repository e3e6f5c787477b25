//! Outgoing webhook deliveries: a background task POSTs queued payloads and
//! records each response status in the webhook's `requests[]`.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::sim::Sim;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub delivery_id: u64,
    pub workspace: String,
    pub webhook_id: u64,
    pub target_url: String,
    pub secret: Option<String>,
    pub event: String,
    pub body: String,
}

pub(crate) async fn run_deliveries(sim: Sim, mut rx: mpsc::UnboundedReceiver<Delivery>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("Buddy-Webhooks")
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhook client: {e}");
            return;
        }
    };
    let header = sim.config().webhook_secret_header.clone();
    while let Some(d) = rx.recv().await {
        let client = client.clone();
        let sim = sim.clone();
        let header = header.clone();
        tokio::spawn(async move {
            let mut request = client
                .post(&d.target_url)
                .header("content-type", "application/json")
                .body(d.body.clone());
            if let Some(secret) = &d.secret {
                request = request.header(header.as_str(), secret.as_str());
            }
            let status = match request.send().await {
                Ok(resp) => Some(resp.status().as_u16()),
                Err(e) => {
                    tracing::debug!(event = %d.event, "webhook delivery failed: {e}");
                    None
                }
            };
            sim.record_delivery_status(&d.workspace, d.webhook_id, d.delivery_id, status);
        });
    }
}
