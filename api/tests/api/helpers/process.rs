//! `ApiProcess`: the real `comet-api` binary over a test's environment, for what only separate
//! processes show (for example each with its own clock, shifted by libfaketime).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use shared::testing::TestEnv;

/// Where libfaketime lives on Debian (package `faketime`, installed by `./dev deps`).
fn libfaketime() -> String {
    let arch = std::env::consts::ARCH;
    let path = format!("/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's faketime package (./dev deps does)"
    );
    path
}

/// A running `comet-api serve`, killed on drop.
pub struct ApiProcess {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    child: Child,
}

impl ApiProcess {
    /// Starts the API on `env` with its wall clock shifted by `clock_offset` (libfaketime's
    /// syntax, e.g. `+90s`, `-90s`), and waits until it listens.
    pub async fn spawn_with_clock(env: &TestEnv, clock_offset: &str) -> Self {
        let faked = [
            ("LD_PRELOAD", libfaketime()),
            ("FAKETIME", clock_offset.to_owned()),
            // timers and timeouts keep the real monotonic clock
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
        ];
        Self::spawn_with_env(env, &faked.each_ref().map(|(k, v)| (*k, v.as_str()))).await
    }

    /// Starts the API on `env` with extra variables (e.g. `STREAM_BUFFER`), and waits until it
    /// listens.
    pub async fn spawn_with_env(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_comet-api"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env.process_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn comet-api");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // reads the log until the process ends, so its pipe never fills
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = listening_address(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .expect("join")
            .expect("comet-api logs `API listening` within 30 s");
        let port = addr.rsplit(':').next().expect("a port").to_owned();
        Self {
            address: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

/// The `addr` of the JSON log line saying the API listens.
fn listening_address(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields").unwrap_or(&v);
    if fields.get("message")?.as_str()? != "API listening" {
        return None;
    }
    Some(fields.get("addr")?.as_str()?.to_owned())
}

impl ApiProcess {
    /// The process id (to read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
