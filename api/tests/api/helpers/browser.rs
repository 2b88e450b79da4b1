//! A headless Chromium for tests, driven over WebDriver (fantoccini) through a `chromedriver`
//! this helper spawns on a free loopback port. Debian's `chromium` and `chromium-driver`
//! packages provide both (`./dev deps` installs them); when either is missing, [`Browser::start`]
//! fails the test with a message saying so (never a silent skip).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

/// A browser session and the driver process behind it (killed on drop).
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    _profile: tempfile_dir::Dir,
}

mod tempfile_dir {
    //! A throwaway directory (the browser profile), removed on drop.
    use std::path::{Path, PathBuf};

    /// The directory.
    pub struct Dir(PathBuf);

    impl Dir {
        /// A fresh directory under the system's temporary directory.
        pub fn new(prefix: &str) -> Self {
            let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).expect("create a browser profile directory");
            Self(path)
        }

        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The first of `names` found on `PATH` (or in /usr/bin, /usr/lib/chromium).
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain([
        PathBuf::from("/usr/bin"),
        PathBuf::from("/usr/lib/chromium"),
    ]);
    dirs.into_iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

const MISSING: &str = "headless Chromium is needed for this test and was not found: install \
     Debian's `chromium` and `chromium-driver` packages (`./dev deps` does; CI runs it)";

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn start() -> Self {
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"])
            .unwrap_or_else(|| panic!("{MISSING} (no chromium binary)"));
        let driver_bin =
            find(&["chromedriver"]).unwrap_or_else(|| panic!("{MISSING} (no chromedriver)"));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{MISSING}: could not run {}: {e}", driver_bin.display()));
        let url = format!("http://127.0.0.1:{port}");
        let profile = tempfile_dir::Dir::new("comet-chromium");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1024,900", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // the driver takes a moment to listen
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{MISSING}: no WebDriver session within 30 s: {e}"),
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Saves a screenshot of the page as `target/screenshots/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
