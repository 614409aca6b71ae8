//! `nexusctl version`: the client's version and the daemon's.

use nexus_client::Client;
use serde::Serialize;

use crate::output::Output;

#[derive(Serialize)]
struct Versions {
    client: String,
    server: String,
}

/// Prints both versions; fails (after printing the client's) when the daemon is down.
pub async fn run(client: &Client, out: Output) -> anyhow::Result<()> {
    let mine = env!("CARGO_PKG_VERSION");
    let server = match client.health().await {
        Ok(health) => health.version,
        Err(err) => {
            if !out.json {
                out.text(&format!("nexusctl  {mine}\n"))?;
            }
            return Err(err.into());
        }
    };
    if out.json {
        return out.json(&Versions {
            client: mine.into(),
            server,
        });
    }
    out.text(&format!(
        "nexusctl  {mine}\nnexusd    {server} ({})\n",
        client.addr()
    ))
}
