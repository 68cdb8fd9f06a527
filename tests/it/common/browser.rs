//! A real browser for the console's tests: Debian's headless Chromium,
//! driven over WebDriver by its chromedriver (started on a free loopback
//! port, stopped when dropped). scripts/test.sh installs both.

use super::child::{ready, Guard};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: fantoccini::Client,
    _driver: Guard,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = super::free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut driver = Guard::spawn("chromedriver", &mut cmd);
        ready(
            Duration::from_secs(20),
            "chromedriver did not listen",
            || {
                assert!(
                    driver.running(),
                    "chromedriver exited (run scripts/test.sh, which installs chromium-driver)"
                );
                TcpStream::connect(("127.0.0.1", port))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                // As root, Chromium runs only without its sandbox; a test
                // container has a small /dev/shm.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }),
        );
        let client = fantoccini::ClientBuilder::rustls()
            .expect("a TLS configuration for the WebDriver client")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            _driver: driver,
        }
    }

    /// The text of the element, waited for (at most 15 s): after a click
    /// the page it leads to may still be loading.
    pub async fn text(&self, at: fantoccini::Locator<'_>) -> String {
        self.element(at)
            .await
            .text()
            .await
            .expect("the element's text")
    }

    /// Clicks the element, waited for.
    pub async fn click(&self, at: fantoccini::Locator<'_>) {
        self.element(at).await.click().await.expect("a click");
    }

    /// Types into the element, waited for.
    pub async fn type_in(&self, at: fantoccini::Locator<'_>, text: &str) {
        self.element(at)
            .await
            .send_keys(text)
            .await
            .expect("typing");
    }

    async fn element(&self, at: fantoccini::Locator<'_>) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(at)
            .await
            .unwrap_or_else(|e| panic!("no element {at:?}: {e}"))
    }

    /// Saves what the browser shows as `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot file");
    }
}
