//! The workspace's binaries, for tests that start them.
//!
//! `cargo test --workspace` builds every binary, but a test run of this crate
//! alone (or after editing a binary) might find one missing or stale; so the
//! first test that asks runs `cargo build --workspace --bins` once, with the
//! same profile and target directory as this test binary: a no-op when
//! everything is up to date.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>`, where this test binary (in `deps/`) and the built
/// binaries live.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("find the test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// The path of the workspace binary `name`, built if need be.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    BUILT.get_or_init(|| {
        let profile = match dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let target = dir.parent().expect("target/<profile>");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--workspace",
                "--bins",
                "--quiet",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(target)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
