//! Headless Chromium for the browser tests, driven over WebDriver: Debian's
//! `chromium` and `chromium-driver` (`chromedriver`), spoken to with
//! `fantoccini`.
//!
//! [`Browser::start`] returns `None` when either program is not installed,
//! and says once per test process that the browser tests did not run; with
//! `BRIDGE_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs both) their
//! absence fails the test instead. chromedriver and the browser it starts
//! run in a process group of their own, killed when the [`Browser`] is
//! dropped, so a failing test leaves no browser behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Once, mpsc};
use std::time::Duration;

use bridge_testkit::process;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long chromedriver may take to listen, and Chromium to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium, with a profile of its own.
pub struct Browser {
    client: Client,
    /// chromedriver, leader of the process group the browser runs in.
    driver: Group,
    /// The browser's profile directory, removed after it stopped.
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a new profile;
    /// `None` if they are not installed (and not required). Panics if they
    /// are installed but do not start.
    pub async fn start() -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
        else {
            static SAID: Once = Once::new();
            assert!(
                std::env::var_os("BRIDGE_REQUIRE_CHROMIUM").is_none_or(|value| value != "1"),
                "BRIDGE_REQUIRE_CHROMIUM=1 but chromium or chromedriver is not on the PATH; \
                 install Debian's chromium and chromium-driver"
            );
            SAID.call_once(|| {
                // Straight to stderr: the test harness hides what a passing
                // test prints with `eprintln!`.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: Chromium is not installed here, so the browser tests of the dashboard \
                     did not run (install Debian's chromium and chromium-driver to run them; \
                     .ci/run does)"
                );
            });
            return None;
        };
        let mut driver = Group(
            Command::new(&chromedriver)
                .args(["--port=0", "--log-level=SEVERE"])
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let port = driver_port(&mut driver.0);
        let profile = tempfile::Builder::new()
            .prefix("bridge-chromium-")
            .tempdir()
            .expect("temporary directory");
        let browser = Browser {
            client: connect(port, &chromium, profile.path()).await,
            driver,
            _profile: profile,
        };
        browser
            .client
            .set_window_size(1280, 900)
            .await
            .expect("size the window");
        Some(browser)
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Waits up to `timeout` for an element matching the CSS `selector`;
    /// panics naming `what` (and the page's `main`) if none appears.
    pub async fn wait_for(&self, selector: &str, timeout: Duration, what: &str) {
        let condition = format!("document.querySelector({}) !== null", json!(selector));
        self.wait_until(&condition, timeout, what).await;
    }

    /// Waits up to `timeout` for the JavaScript expression `condition` to
    /// be true in the page, checking every 100 ms (and across page loads);
    /// panics naming `what` (and the page's `main`) if it never is.
    pub async fn wait_until(&self, condition: &str, timeout: Duration, what: &str) {
        let script = format!("return Boolean({condition});");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A page being replaced may refuse the script: try again.
            if let Ok(Value::Bool(true)) = self.client.execute(&script, Vec::new()).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: `{condition}` not true within {timeout:?}; the page shows:\n{}",
                    self.main().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the page's `main` element (or of the body without one).
    pub async fn main(&self) -> String {
        self.run(
            "const main = document.querySelector('main') || document.body; return main.innerText;",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("run {script}: {error}"))
    }

    /// Marks the page as loaded once: the mark is lost if it is reloaded
    /// or left, which [`Browser::still_marked`] tells.
    pub async fn mark(&self) {
        self.run("window.bridgeTestMark = 'not reloaded'; return null;")
            .await;
    }

    /// Whether the mark of [`Browser::mark`] is still on the page.
    pub async fn still_marked(&self) -> bool {
        self.run("return window.bridgeTestMark === 'not reloaded';")
            .await
            == json!(true)
    }

    /// Saves a screenshot of the window as `dir/name.png`, prints its path
    /// (on stderr, past the test harness's capture) and returns it.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("take a screenshot");
        std::fs::create_dir_all(dir).expect("the screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("save the screenshot");
        let _ = writeln!(std::io::stderr(), "screenshot: {}", path.display());
        path
    }

    /// What the open page holds after a full garbage collection: its
    /// JavaScript heap in use, in bytes (Chromium's `performance.memory`,
    /// precise with `--enable-precise-memory-info`), and its number of
    /// DOM elements.
    pub async fn page_memory(&self) -> (u64, u64) {
        let value = self
            .run(
                "window.gc(); \
                 return [performance.memory.usedJSHeapSize, \
                         document.getElementsByTagName('*').length];",
            )
            .await;
        let number = |index: usize| value[index].as_u64().expect("a count");
        (number(0), number(1))
    }

    /// The resident memory of the browser's renderer processes (those that
    /// run the pages), in kB: the sum of `VmRSS` over the processes of
    /// chromedriver's group started with `--type=renderer`.
    pub fn renderer_memory(&self) -> u64 {
        process::group_members(self.driver.0.id())
            .into_iter()
            .filter(|pid| {
                // Chromium rewrites its command line as one string, so
                // arguments end at a space as well as at a NUL.
                let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                command
                    .split(|byte| *byte == 0 || *byte == b' ')
                    .any(|argument| argument == b"--type=renderer")
            })
            .filter_map(|pid| Some(process::memory(pid)?.rss))
            .sum()
    }

    /// Ends the browser session, then chromedriver (with what is left of
    /// its process group).
    pub async fn close(self) {
        self.client
            .clone()
            .close()
            .await
            .expect("end the browser session");
    }
}

/// chromedriver, leader of a process group of its own: the group is killed
/// when dropped.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        stop_group(&mut self.0);
    }
}

/// Kills the process group `leader` leads, and reaps the leader.
fn stop_group(leader: &mut Child) {
    if let Some(pid) = Pid::from_raw(leader.id() as i32) {
        let _ = kill_process_group(pid, Signal::KILL);
    }
    let _ = leader.wait();
}

/// The full path of `program` on the PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The port chromedriver says it listens on; its later output is read and
/// dropped so that it never blocks on a full pipe.
fn driver_port(driver: &mut Child) -> u16 {
    let stdout = driver.stdout.take().expect("chromedriver's stdout");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(START_TIMEOUT) {
        let port = line
            .split("started successfully on port ")
            .nth(1)
            .and_then(|rest| rest.trim_end_matches('.').parse().ok());
        if let Some(port) = port {
            return port;
        }
        seen.push(line);
    }
    stop_group(driver);
    panic!("chromedriver did not start: {seen:?}");
}

/// A WebDriver session on chromedriver at `port`: headless Chromium
/// (`binary`) with a new profile in `profile` and none of its calls home,
/// which this machine's closed network would refuse.
async fn connect(port: u16, binary: &Path, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": binary,
            "args": [
                "--headless=new",
                // The tests may run as root, where Chromium's sandbox does
                // not start; the pages are the test's own, on loopback.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-crash-reporter",
                // For `page_memory`: exact heap sizes, and `window.gc()`.
                "--enable-precise-memory-info",
                "--js-flags=--expose-gc",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("an object literal")
    };
    tokio::time::timeout(
        START_TIMEOUT,
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("Chromium started in time")
    .expect("a WebDriver session")
}
