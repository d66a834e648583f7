//! Hosts made of Linux network namespaces, for the multi-host test: a hub
//! namespace with a bridge, and worker namespaces each joined to it by a
//! veth pair, on addresses the test assigns (`10.77.0.0/24`). Needs root.
//! Everything made is removed when the [`Network`] is dropped.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use serde_json::Value;

use crate::mcp::Agent;

/// The hub's address.
pub const HUB_ADDRESS: &str = "10.77.0.1";

/// Runs `ip ARGS`, panicking with its error output if it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A hub namespace and `workers` worker namespaces joined by a bridge.
pub struct Network {
    hub: String,
    workers: Vec<String>,
    /// The hub's end of each worker's veth pair.
    links: Vec<String>,
}

impl Network {
    /// Makes the namespaces and links: the hub at [`HUB_ADDRESS`], worker
    /// `n` (from 1) at `10.77.0.(10 + n)`.
    pub fn new(workers: usize) -> Network {
        let tag = std::process::id() % 100_000;
        let network = Network {
            hub: format!("mcpb-hub-{tag}"),
            workers: (1..=workers).map(|n| format!("mcpb-w{n}-{tag}")).collect(),
            links: (1..=workers).map(|n| format!("vh{n}-{tag}")).collect(),
        };
        ip(&["netns", "add", &network.hub]);
        network.in_hub(&["link", "set", "lo", "up"]);
        network.in_hub(&["link", "add", "br0", "type", "bridge"]);
        network.in_hub(&["addr", "add", &format!("{HUB_ADDRESS}/24"), "dev", "br0"]);
        network.in_hub(&["link", "set", "br0", "up"]);
        for (n, (worker, link)) in network.workers.iter().zip(&network.links).enumerate() {
            let peer = format!("vw{}-{tag}", n + 1);
            ip(&["netns", "add", worker]);
            ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", link, "netns", &network.hub]);
            ip(&["link", "set", &peer, "netns", worker]);
            network.in_hub(&["link", "set", link, "master", "br0", "up"]);
            let address = format!("10.77.0.{}/24", 11 + n);
            ip(&["-n", worker, "link", "set", "lo", "up"]);
            ip(&["-n", worker, "addr", "add", &address, "dev", &peer]);
            ip(&["-n", worker, "link", "set", &peer, "up"]);
        }
        network
    }

    fn in_hub(&self, args: &[&str]) {
        let mut all = vec!["-n", self.hub.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// The hub's namespace.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// Worker `n`'s namespace (from 1).
    pub fn worker(&self, n: usize) -> &str {
        &self.workers[n - 1]
    }

    /// `ip netns exec NAME`: a wrapper that runs a command in namespace
    /// `name`.
    pub fn exec(name: &str) -> [&str; 4] {
        ["ip", "netns", "exec", name]
    }

    /// Cuts worker `n`'s link (its veth end at the hub goes down), or
    /// restores it.
    pub fn set_link(&self, n: usize, up: bool) {
        self.in_hub(&[
            "link",
            "set",
            &self.links[n - 1],
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and so
        // the pair.
        for name in self.workers.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// One request to an agent's thread: a tool, its arguments, where to answer.
type Request = (String, Value, mpsc::Sender<Result<Value, String>>);

/// An agent in a namespace: the `rmcp` client over HTTPS with its key, on a
/// thread that entered the namespace (a socket belongs to the network
/// namespace of the thread that makes it).
pub struct NamespacedAgent {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl NamespacedAgent {
    /// Connects from namespace `name` to `url` with `key`, trusting what
    /// `tls` trusts.
    pub fn connect(
        name: &str,
        url: &str,
        key: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> NamespacedAgent {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, connected) = mpsc::channel();
        let (name, url, key) = (name.to_owned(), url.to_owned(), key.to_owned());
        let thread = std::thread::spawn(move || {
            let namespace =
                File::open(format!("/var/run/netns/{name}")).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                namespace.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("enter the namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let agent = match Agent::keyed(&url, &key, Some(&tls)).await {
                    Ok(agent) => agent,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                while let Ok((tool, arguments, answer)) = incoming.recv() {
                    let reply = agent.try_call(&tool, arguments).await.and_then(|reply| {
                        if reply.is_error() {
                            Err(reply.text())
                        } else {
                            Ok(reply.structured())
                        }
                    });
                    let _ = answer.send(reply);
                }
                agent.stop().await;
            });
        });
        connected
            .recv()
            .expect("the agent's thread answers")
            .expect("the agent connects");
        NamespacedAgent {
            requests: Some(requests),
            thread: Some(thread),
        }
    }

    /// Calls `tool`; its structured result, or the error's text.
    pub fn call(&self, tool: &str, arguments: Value) -> Result<Value, String> {
        let (answer, reply) = mpsc::channel();
        self.requests
            .as_ref()
            .expect("connected")
            .send((tool.to_owned(), arguments, answer))
            .expect("the agent's thread runs");
        reply.recv().expect("the agent answers")
    }
}

impl Drop for NamespacedAgent {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
