//! A real S3-API server for the conformance suite: moto in server mode, one process per test
//! on a free loopback port.
//!
//! Found at `$STRATA_MOTO_SERVER`, else `$STRATA_VENV/bin/moto_server`, else the repository's
//! `.venv/bin/moto_server`, else `moto_server` on PATH. Missing moto fails the test (with the
//! install command), it never skips it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "strata-test";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Moto {
    binary: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn find_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("STRATA_MOTO_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(venv) = std::env::var_os("STRATA_VENV") {
        candidates.push(PathBuf::from(venv).join("bin/moto_server"));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    candidates.push(repo.join(".venv/bin/moto_server"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("moto_server")));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "moto_server (an S3-API server) is needed by this test and was not found. \
                 Install it into the test virtualenv: \
                 `.venv/bin/pip install -r tiering/tests/requirements.txt` \
                 (or set STRATA_MOTO_SERVER to the moto_server binary)"
            )
        })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

impl Moto {
    /// Starts moto and creates [`BUCKET`].
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let mut moto = Moto {
            binary: find_binary(),
            port: free_port(),
            child: None,
            log: dir.path().join("moto.log"),
            _dir: dir,
        };
        moto.spawn();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // CreateBucket (an unsigned PUT /bucket, which moto accepts) doubles as the
            // readiness probe: it succeeds once the server is up.
            match self.request("PUT", &format!("/{BUCKET}")) {
                Ok(200) => return,
                Ok(status) => panic!(
                    "moto CreateBucket answered HTTP {status}; log: {}",
                    self.log_text()
                ),
                Err(_) if Instant::now() < deadline => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!("moto_server exited ({status}); log: {}", self.log_text());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "moto_server did not come up in {STARTUP_TIMEOUT:?}: {e}; log: {}",
                    self.log_text()
                ),
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One HTTP/1.1 request with an empty body; returns the status code.
    fn request(&self, method: &str, path: &str) -> std::io::Result<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
    }

    /// SIGKILL: the server vanishes mid-conversation, with everything it stored.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A fresh server on the same port, with the bucket created again (moto keeps no state).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}
