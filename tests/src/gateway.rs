//! The payment gateway the payment service calls: a `gateway-simulator` running inside the
//! test process on its own port, and the helpers that set its faults and read what it did.

use anyhow::{Context, Result};
use gateway_simulator::{Config, Faults, Simulator, Stats};

use crate::system::System;

/// A simulator serving on a free port for as long as the test's runtime lives.
#[derive(Debug)]
pub struct GatewaySimulator {
    url: String,
}

impl GatewaySimulator {
    pub async fn start() -> Result<GatewaySimulator> {
        let simulator = Simulator::bind(Config {
            http_addr: "127.0.0.1:0".parse()?,
            latency: std::time::Duration::ZERO,
            error_rate: 0.0,
            log_format: runtime::settings::LogFormat::Pretty,
        })
        .await
        .context("failed to start the gateway simulator")?;
        let url = format!("http://{}", simulator.local_addr()?);
        tokio::spawn(simulator.run_until_stopped(std::future::pending()));
        Ok(GatewaySimulator { url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl System {
    /// Sets the gateway's faults (latency, error rate, down) from now on.
    pub async fn set_gateway_faults(&self, faults: Faults) -> Result<()> {
        self.http_client()
            .put(format!("{}/control", self.gateway_url()))
            .json(&faults)
            .send()
            .await?
            .error_for_status()
            .context("PUT /control on the gateway simulator")?;
        Ok(())
    }

    /// What the gateway has done so far.
    pub async fn gateway_stats(&self) -> Result<Stats> {
        Ok(self
            .http_client()
            .get(format!("{}/stats", self.gateway_url()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}
