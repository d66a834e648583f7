//! An agent of the demo: its own `bridge-mcp` over stdio, spoken to through
//! the `rmcp` client the way Claude Code or any MCP client would.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use super::process::{Binaries, running, terminate};

/// How long a `bridge-mcp` may take to exit once its client has gone.
const GRACE: Duration = Duration::from_secs(5);

/// One agent's MCP session with its own server process.
pub struct Agent {
    client: RunningService<RoleClient, ClientConfig>,
    pid: u32,
}

/// The arguments every authenticated tool takes, merged with `more`.
pub fn caller(conversation_id: &str, session: &str, token: &str, more: Value) -> Value {
    let mut arguments = serde_json::json!({
        "conversation_id": conversation_id,
        "session_id": session,
        "token": token,
    });
    if let (Value::Object(arguments), Value::Object(more)) = (&mut arguments, more) {
        arguments.extend(more);
    }
    arguments
}

impl Agent {
    /// Starts `bridge-mcp` on `database` and completes the MCP handshake.
    pub async fn start(binaries: &Binaries, database: &Path) -> anyhow::Result<Agent> {
        let command = binaries.command("bridge-mcp", database);
        let (transport, _) = TokioChildProcess::builder(command)
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start bridge-mcp")?;
        let pid = transport.id().unwrap_or(0);
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("bridgectl-demo", env!("CARGO_PKG_VERSION")),
        );
        let client = config
            .serve(transport)
            .await
            .context("the MCP handshake with bridge-mcp failed")?;
        Ok(Agent { client, pid })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How many tools the server lists.
    pub async fn tool_count(&self) -> anyhow::Result<usize> {
        Ok(self.client.list_all_tools().await?.len())
    }

    /// Calls `tool` with `arguments` (a JSON object); its structured result,
    /// or the tool's error as an error.
    pub async fn call(&self, tool: &str, arguments: Value) -> anyhow::Result<Value> {
        let Value::Object(arguments) = arguments else {
            bail!("the arguments of {tool} must be an object");
        };
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = self
            .client
            .call_tool(request)
            .await
            .with_context(|| format!("calling {tool}"))?;
        if result.is_error == Some(true) {
            let text: Vec<_> = result
                .content
                .iter()
                .filter_map(|content| content.as_text().map(|text| text.text.as_str()))
                .collect();
            bail!("{tool} failed: {}", text.join(" "));
        }
        result
            .structured_content
            .with_context(|| format!("{tool} answered without structured content"))
    }

    /// Ends the session: the server sees its input close and exits; it is
    /// sent SIGTERM if it has not after [`GRACE`].
    pub async fn stop(self) -> anyhow::Result<()> {
        let pid = self.pid;
        // Cancelling closes the server's stdin and waits for it to exit.
        let _ = tokio::time::timeout(GRACE, self.client.cancel()).await;
        if running(pid) {
            terminate(pid);
            bail!("bridge-mcp (pid {pid}) did not exit when its client went away");
        }
        Ok(())
    }
}
