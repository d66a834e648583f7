//! `bridgectl demo`: the whole system at work on a temporary database, told
//! as it happens.
//!
//! It starts the real binaries found beside `bridgectl`: one `bridge-mcp`
//! for an orchestrator and one for each of three workers, spoken to over MCP
//! as an agent's client would; each worker's `keepalive-daemon` and
//! `fs-watcher`; the orchestrator's `watchdog-monitor`. The orchestrator
//! forms a team and hands out tasks, the workers read them and answer. Then
//! one worker goes silent (its processes stop, as when its machine goes
//! away): the watchdog flags it and moves its tasks to the other two, whose
//! `fs-watcher`s print them as they land. Last, every process is stopped and
//! the audit chain verified. Each line of the transcript carries the time
//! since the start; `--json` prints them as JSON objects.
//!
//! `--dashboard` also starts a hub, `bridge-mcp --http` on a free loopback
//! port of the same database, prints its dashboard's URL, gives the reader
//! a few seconds to open it, and keeps it up after the scenario until
//! Ctrl-C: the page follows the team forming, the tasks landing, the
//! silence and the moves as they happen. (The agents keep their own
//! `bridge-mcp` over stdio, as in the plain demo; the hub reads the same
//! store.)

mod agent;
mod process;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bridge_core::{Store, StoreOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::show;
use agent::{Agent, caller};
use process::{Binaries, Daemon, Line};

/// The team the workers form.
const TEAM: &str = "demo";

/// The tasks, two per worker.
const TASKS: [(&str, &str); 6] = [
    (
        "Parse the config file",
        "Read bridge.toml into the Config struct; reject unknown keys.",
    ),
    (
        "Test the parser",
        "Cover every key, a missing file, and a malformed line.",
    ),
    (
        "Add a --json flag",
        "Print the report as one JSON object when --json is given.",
    ),
    (
        "Document the flags",
        "One line per flag in the README, with its default.",
    ),
    (
        "Fix the flaky upload test",
        "It fails one run in twenty; find the race.",
    ),
    (
        "Profile the hot path",
        "Find where the request handler spends its time under load.",
    ),
];

/// How often the keepalive daemons beat and the watchdog scans.
const BEAT: &str = "500ms";

/// How long a worker may be unheard before the watchdog flags it.
const THRESHOLD: &str = "3s";

/// The longest wait for any one thing to happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// With `--dashboard`: the time to open the page before the scenario starts.
const TIME_TO_OPEN: Duration = Duration::from_secs(5);

/// Runs the demo (with the dashboard's hub if `dashboard`); every process
/// it started is stopped, whatever happens.
pub async fn run(json: bool, dashboard: bool) -> anyhow::Result<()> {
    let binaries = Binaries::beside_me()?;
    let dir = tempfile::Builder::new()
        .prefix("mcp-bridge-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let (sender, lines) = mpsc::unbounded_channel();
    let mut demo = Demo {
        binaries,
        database: dir.path().join("bridge.db"),
        transcript: Transcript {
            started: Instant::now(),
            json,
        },
        sender,
        lines,
        backlog: VecDeque::new(),
        orchestrator: None,
        workers: Vec::new(),
        watchdog: None,
        hub: None,
    };
    let signal = bridge_cli::shutdown_signal();
    tokio::pin!(signal);
    let played = tokio::select! {
        played = demo.play(dashboard) => played,
        signal = &mut signal => Err(anyhow!("interrupted by {signal}")),
    };
    let stopped = demo.stop().await;
    let checked = match &played {
        Ok(()) => demo.check().await,
        Err(_) => Ok(()),
    };
    if let Some(hub) = demo.hub.take() {
        if played.is_ok() {
            demo.transcript
                .say("demo", "the dashboard stays up; press Ctrl-C to end");
            signal.await;
        }
        hub.stop().await?;
    }
    demo.transcript.say(
        "demo",
        format!(
            "done in {:.1} s; removing {}",
            demo.transcript.started.elapsed().as_secs_f64(),
            dir.path().display()
        ),
    );
    dir.close()
        .context("cannot remove the temporary directory")?;
    played.and(stopped).and(checked)
}

/// One worker: its conversation with the orchestrator and its processes.
struct Worker {
    name: String,
    conversation_id: String,
    token_a: String,
    token_b: String,
    agent: Option<Agent>,
    keepalive: Option<Daemon>,
    watcher: Option<Daemon>,
}

impl Worker {
    /// The orchestrator's credentials in this conversation, with `more`.
    fn a(&self, more: Value) -> Value {
        caller(&self.conversation_id, "a", &self.token_a, more)
    }

    /// The worker's credentials, with `more`.
    fn b(&self, more: Value) -> Value {
        caller(&self.conversation_id, "b", &self.token_b, more)
    }

    /// The worker's MCP session.
    fn agent(&self) -> anyhow::Result<&Agent> {
        self.agent
            .as_ref()
            .with_context(|| format!("{} has stopped", self.name))
    }
}

/// The demo's state: its processes, and the lines they printed.
struct Demo {
    binaries: Binaries,
    database: PathBuf,
    transcript: Transcript,
    sender: mpsc::UnboundedSender<Line>,
    lines: mpsc::UnboundedReceiver<Line>,
    /// Lines received while waiting for another.
    backlog: VecDeque<Line>,
    orchestrator: Option<Agent>,
    workers: Vec<Worker>,
    watchdog: Option<Daemon>,
    /// With `--dashboard`: the hub serving it.
    hub: Option<Daemon>,
}

impl Demo {
    fn orchestrator(&self) -> anyhow::Result<&Agent> {
        self.orchestrator
            .as_ref()
            .context("the orchestrator has stopped")
    }

    /// The scenario, after the dashboard's hub if `dashboard`.
    async fn play(&mut self, dashboard: bool) -> anyhow::Result<()> {
        self.transcript.say(
            "demo",
            format!(
                "an orchestrator and three workers on a temporary database, {}",
                self.database.display()
            ),
        );
        if dashboard {
            self.start_hub().await?;
        }
        self.form_team().await?;
        self.hand_out_tasks().await?;
        self.start_daemons().await?;
        let silent = self.workers.len() - 1;
        self.silence(silent).await?;
        self.watch_tasks_move(silent).await
    }

    /// The hub on a free loopback port, its dashboard's URL told, and time
    /// to open it.
    async fn start_hub(&mut self) -> anyhow::Result<()> {
        let mut command = self.binaries.command("bridge-mcp", &self.database);
        command.args(["--http", "127.0.0.1:0", "--log-format", "json"]);
        self.hub = Some(Daemon::spawn("bridge-mcp", command, "hub", &self.sender)?);
        let line = self
            .expect("the hub to listen", |line| {
                line.who == "hub"
                    && log_fields(&line.text).is_some_and(|fields| {
                        fields["message"]
                            .as_str()
                            .is_some_and(|message| message.starts_with("listening on "))
                    })
            })
            .await?;
        let fields = log_fields(&line.text).unwrap_or_default();
        let url = fields["message"]
            .as_str()
            .and_then(|message| message.strip_prefix("listening on "))
            .and_then(|url| url.strip_suffix("/mcp"))
            .context("the hub's address in its log")?
            .to_owned();
        self.transcript.say(
            "demo",
            format!(
                "the dashboard: {url}/ (open it now; the scenario starts in {} s)",
                TIME_TO_OPEN.as_secs()
            ),
        );
        tokio::time::sleep(TIME_TO_OPEN).await;
        Ok(())
    }

    /// The orchestrator's `bridge-mcp`; a conversation per worker, in one
    /// team; each worker's `bridge-mcp`.
    async fn form_team(&mut self) -> anyhow::Result<()> {
        let orchestrator = Agent::start(&self.binaries, &self.database).await?;
        let tools = orchestrator.tool_count().await?;
        self.transcript.say(
            "orchestrator",
            format!(
                "bridge-mcp started (pid {}); MCP session open, {tools} tools",
                orchestrator.pid()
            ),
        );
        self.orchestrator = Some(orchestrator);
        for n in 1..=3 {
            let name = format!("worker {n}");
            let created = self
                .orchestrator()?
                .call(
                    "create_conversation",
                    json!({"my_role": "orchestrator", "partner_role": name, "team": TEAM}),
                )
                .await?;
            let field = |key: &str| {
                created[key]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("create_conversation answered without {key}"))
            };
            let conversation_id = field("conversation_id")?;
            self.transcript.say(
                "orchestrator",
                format!("created conversation {conversation_id} with {name}, team {TEAM}"),
            );
            let agent = Agent::start(&self.binaries, &self.database).await?;
            let worker = Worker {
                name: name.clone(),
                conversation_id,
                token_a: field("session_a_token")?,
                token_b: field("session_b_token")?,
                agent: None,
                keepalive: None,
                watcher: None,
            };
            agent
                .call("update_my_status", worker.b(json!({"status": "waiting"})))
                .await?;
            self.transcript.say(
                &name,
                format!(
                    "bridge-mcp started (pid {}); joined as session b, status waiting",
                    agent.pid()
                ),
            );
            self.workers.push(Worker {
                agent: Some(agent),
                ..worker
            });
        }
        Ok(())
    }

    /// Two tasks for each worker; each reads them, starts the first and
    /// says so; the orchestrator reads the answers.
    async fn hand_out_tasks(&mut self) -> anyhow::Result<()> {
        for (n, (title, body)) in TASKS.iter().enumerate() {
            let worker = &self.workers[n % self.workers.len()];
            let task = self
                .orchestrator()?
                .call(
                    "assign_task",
                    worker.a(json!({"title": title, "body": body})),
                )
                .await?;
            let line = format!(
                "assigned task #{} \"{title}\" to {}",
                task["id"], worker.name
            );
            self.transcript.say("orchestrator", line);
        }
        for worker in &self.workers {
            let agent = worker.agent()?;
            let read = agent.call("check_messages", worker.b(json!({}))).await?;
            let tasks: Vec<i64> = messages(&read)
                .iter()
                .filter_map(|message| message["metadata"]["task_id"].as_i64())
                .collect();
            let first = *tasks
                .first()
                .with_context(|| format!("{} was told of no task", worker.name))?;
            agent
                .call(
                    "update_task",
                    worker.b(json!({"task_id": first, "state": "in_progress"})),
                )
                .await?;
            agent
                .call(
                    "send_to_partner",
                    worker.b(json!({"message": format!("Starting on task #{first}.")})),
                )
                .await?;
            self.transcript.say(
                &worker.name,
                format!(
                    "read {} new messages (tasks {}); task #{first} in progress; told the orchestrator",
                    messages(&read).len(),
                    list(&tasks)
                ),
            );
        }
        for worker in &self.workers {
            let read = self
                .orchestrator()?
                .call("check_messages", worker.a(json!({})))
                .await?;
            for message in messages(&read) {
                let text = format!(
                    "from {} ({}): {}",
                    if message["from"] == "system" {
                        "system"
                    } else {
                        &worker.name
                    },
                    message["action_type"].as_str().unwrap_or("info"),
                    first_line(message["message"].as_str().unwrap_or_default())
                );
                self.transcript.say("orchestrator", text);
            }
        }
        Ok(())
    }

    /// Each worker's `keepalive-daemon` and `fs-watcher`, then the
    /// orchestrator's `watchdog-monitor`; each waited for until it says it
    /// has started.
    async fn start_daemons(&mut self) -> anyhow::Result<()> {
        for n in 0..self.workers.len() {
            let worker = &self.workers[n];
            let name = worker.name.clone();
            let mut command = self.binaries.command("keepalive-daemon", &self.database);
            command
                .args([&worker.conversation_id, "--interval", BEAT])
                .args(["--log-format", "json"])
                .env("BRIDGE_TOKEN", &worker.token_b);
            let keepalive = Daemon::spawn("keepalive-daemon", command, &name, &self.sender)?;
            let pid = keepalive.pid();
            self.workers[n].keepalive = Some(keepalive);
            self.log_line(&name, "beating").await?;
            self.transcript.say(
                &name,
                format!("keepalive-daemon started (pid {pid}): a heartbeat every {BEAT}"),
            );

            let worker = &self.workers[n];
            let mut command = self.binaries.command("fs-watcher", &self.database);
            command
                .args([&worker.conversation_id, "--from-now"])
                .args(["--log-format", "json"])
                .env("BRIDGE_TOKEN", &worker.token_b);
            let watcher = Daemon::spawn("fs-watcher", command, &name, &self.sender)?;
            let pid = watcher.pid();
            self.workers[n].watcher = Some(watcher);
            self.log_line(&name, "watching").await?;
            self.transcript.say(
                &name,
                format!("fs-watcher started (pid {pid}): prints each new message as it lands"),
            );
        }
        let mut command = self.binaries.command("watchdog-monitor", &self.database);
        command
            .args(["--interval", BEAT, "--threshold", THRESHOLD, "--team", TEAM])
            .args(["--log-format", "json"]);
        let watchdog = Daemon::spawn("watchdog-monitor", command, "watchdog", &self.sender)?;
        let pid = watchdog.pid();
        self.watchdog = Some(watchdog);
        self.log_line("watchdog", "watching").await?;
        self.transcript.say(
            "watchdog",
            format!(
                "watchdog-monitor started (pid {pid}): scans team {TEAM} every {BEAT}, \
                 flags a worker unheard for {THRESHOLD}, moves its tasks"
            ),
        );
        Ok(())
    }

    /// Stops every process of worker `n`, as if its machine went away.
    async fn silence(&mut self, n: usize) -> anyhow::Result<()> {
        let worker = &mut self.workers[n];
        let name = worker.name.clone();
        let mut stopped = Vec::new();
        for daemon in [worker.keepalive.take(), worker.watcher.take()]
            .into_iter()
            .flatten()
        {
            stopped.push(format!("{} (pid {})", daemon.name, daemon.pid()));
            daemon.stop().await?;
        }
        if let Some(agent) = worker.agent.take() {
            stopped.push(format!("bridge-mcp (pid {})", agent.pid()));
            agent.stop().await?;
        }
        self.transcript.say(
            &name,
            format!(
                "goes silent: stopped {}; nothing is heard from it any more",
                stopped.join(", ")
            ),
        );
        Ok(())
    }

    /// Waits for the watchdog to flag worker `silent` and move its tasks;
    /// shows them landing with the others, and the orchestrator told.
    async fn watch_tasks_move(&mut self, silent: usize) -> anyhow::Result<()> {
        let from = self.workers[silent].conversation_id.clone();
        let flagged = self
            .expect("the watchdog to flag the silent worker", |line| {
                log_message(line, "watchdog", "worker silent")
                    .is_some_and(|fields| fields["conversation_id"] == from.as_str())
            })
            .await?;
        let fields = log_fields(&flagged.text).unwrap_or_default();
        self.transcript.say(
            "watchdog",
            format!(
                "flagged {} silent: not heard from for {} s (a warning, logged once per silence)",
                self.workers[silent].name, fields["silent_seconds"]
            ),
        );
        let held = TASKS.len() / self.workers.len();
        let mut moves = Vec::new();
        for _ in 0..held {
            let line = self
                .expect("the watchdog to move a task", |line| {
                    log_message(line, "watchdog", "task reassigned")
                        .is_some_and(|fields| fields["from"] == from.as_str())
                })
                .await?;
            let fields = log_fields(&line.text).unwrap_or_default();
            let task = fields["task_id"].as_i64().unwrap_or_default();
            let to = fields["to"].as_str().unwrap_or_default().to_owned();
            let receiver = self.worker_named_by(&to)?;
            self.transcript.say(
                "watchdog",
                format!("moved task #{task} to {receiver}, the least busy healthy worker"),
            );
            moves.push((task, receiver));
        }
        for (task, receiver) in &moves {
            let prefix = format!("Task #{task} reassigned to you");
            let line = self
                .expect("a worker's fs-watcher to print a moved task", |line| {
                    line.who == *receiver
                        && line.stdout
                        && serde_json::from_str::<Value>(&line.text).is_ok_and(|message| {
                            message["message"]
                                .as_str()
                                .is_some_and(|text| text.starts_with(&prefix))
                        })
                })
                .await?;
            let message: Value = serde_json::from_str(&line.text)?;
            self.transcript.say(
                receiver,
                format!(
                    "fs-watcher printed message #{} from system: {}",
                    message["id"],
                    first_line(message["message"].as_str().unwrap_or_default())
                ),
            );
        }
        let read = self
            .orchestrator()?
            .call("check_messages", self.workers[silent].a(json!({})))
            .await?;
        for message in messages(&read) {
            let text = first_line(message["message"].as_str().unwrap_or_default());
            self.transcript.say("orchestrator", format!("told: {text}"));
        }
        for worker in &self.workers[..silent] {
            let listed = self
                .orchestrator()?
                .call("list_tasks", worker.a(json!({})))
                .await?;
            let ids: Vec<i64> = listed["tasks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|task| task["id"].as_i64())
                .collect();
            self.transcript.say(
                "orchestrator",
                format!("{} now holds tasks {}", worker.name, list(&ids)),
            );
        }
        Ok(())
    }

    /// The name of the worker of conversation `id`.
    fn worker_named_by(&self, id: &str) -> anyhow::Result<String> {
        self.workers
            .iter()
            .find(|worker| worker.conversation_id == id)
            .map(|worker| worker.name.clone())
            .with_context(|| format!("the watchdog moved a task to an unknown conversation {id}"))
    }

    /// Waits for the log line `message` from `who`.
    async fn log_line(&mut self, who: &str, message: &str) -> anyhow::Result<Line> {
        let what = format!("{who} to log \"{message}\"");
        self.expect(&what, |line| log_message(line, who, message).is_some())
            .await
    }

    /// The first line (earlier ones kept for later) that `wanted` accepts,
    /// within [`PATIENCE`]; else an error with the last lines seen.
    async fn expect(
        &mut self,
        what: &str,
        mut wanted: impl FnMut(&Line) -> bool,
    ) -> anyhow::Result<Line> {
        if let Some(at) = self.backlog.iter().position(&mut wanted)
            && let Some(line) = self.backlog.remove(at)
        {
            return Ok(line);
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if wanted(&line) => return Ok(line),
                Ok(Some(line)) => self.backlog.push_back(line),
                Ok(None) | Err(_) => break,
            }
        }
        let seen: Vec<String> = self
            .backlog
            .iter()
            .rev()
            .take(10)
            .rev()
            .map(|line| format!("  {}: {}", line.who, line.text))
            .collect();
        bail!(
            "waited {PATIENCE:?} for {what}, in vain; the last lines were:\n{}",
            seen.join("\n")
        )
    }

    /// Stops every process still running: the daemons with SIGTERM, the
    /// agents by closing their sessions. Reports the first failure after
    /// trying them all.
    async fn stop(&mut self) -> anyhow::Result<()> {
        let mut daemons: Vec<Daemon> = self.watchdog.take().into_iter().collect();
        let mut agents: Vec<Agent> = self.orchestrator.take().into_iter().collect();
        for worker in &mut self.workers {
            daemons.extend(worker.keepalive.take());
            daemons.extend(worker.watcher.take());
            agents.extend(worker.agent.take());
        }
        let count = daemons.len() + agents.len();
        let mut first_error = None;
        for daemon in daemons {
            let name = daemon.name;
            match daemon.stop().await {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    first_error.get_or_insert(anyhow!("{name} exited with {status}"));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        for agent in agents {
            if let Err(error) = agent.stop().await {
                first_error.get_or_insert(error);
            }
        }
        self.transcript.say(
            "demo",
            format!("stopped the {count} processes still running"),
        );
        first_error.map_or(Ok(()), Err)
    }

    /// With every process stopped: the workers' health and the tasks as
    /// `bridgectl status` and `bridgectl tasks` show them, and the audit
    /// chain verified.
    async fn check(&mut self) -> anyhow::Result<()> {
        let store = Store::open(StoreOptions::new(&self.database)).await?;
        let workers = show::workers(store.conversations().await?, Some(TEAM));
        let tasks = store.all_tasks(Some(TEAM)).await?;
        let report = store.verify_audit().await?;
        store.close().await;
        self.transcript
            .block("bridgectl status", &show::status(&workers));
        self.transcript
            .block("bridgectl tasks", &show::tasks(&tasks));
        match &report.first_bad {
            None => {
                self.transcript.say(
                    "audit",
                    format!("the hash chain of {} audit rows verifies", report.rows),
                );
                Ok(())
            }
            Some(bad) => bail!(
                "the audit trail is broken at row {}: {}",
                bad.id,
                bad.problem
            ),
        }
    }
}

/// The transcript: each line with the time since the start.
struct Transcript {
    started: Instant,
    json: bool,
}

impl Transcript {
    /// One event, by `who`.
    fn say(&self, who: &str, text: impl AsRef<str>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let text = text.as_ref();
        let line = if self.json {
            json!({"seconds": (seconds * 1000.0).round() / 1000.0, "who": who, "text": text})
                .to_string()
        } else {
            format!("[{seconds:>6.2} s] {who:<12} {text}")
        };
        // A reader that went away (`| head`) must not stop the demo before
        // it has stopped its processes.
        let _ = writeln!(std::io::stdout(), "{line}");
    }

    /// A command's output, indented under a heading.
    fn block(&self, command: &str, output: &str) {
        if self.json {
            self.say(command, output);
            return;
        }
        self.say("demo", format!("$ {command}"));
        let mut out = std::io::stdout().lock();
        for line in output.lines() {
            let _ = writeln!(out, "{:>12}{line}", "");
        }
    }
}

/// The messages of a `check_messages` result.
fn messages(read: &Value) -> &[Value] {
    read["messages"].as_array().map_or(&[], Vec::as_slice)
}

/// The first line of `text`, at most 100 characters.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// `#1, #4`.
fn list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    ids.join(", ")
}

/// The fields of a JSON log line.
fn log_fields(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// The fields of `line` if it is the log line `message` of `who`.
fn log_message(line: &Line, who: &str, message: &str) -> Option<Value> {
    if line.stdout || line.who != who {
        return None;
    }
    log_fields(&line.text).filter(|fields| fields["message"] == message)
}
