//! Third-party MCP peers for integration tests.
//!
//! The peers are npm packages pinned in `tests/peers/package.json`; install them with
//! `npm ci --prefix tests/peers` (from the repository root) before running the tests.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The TypeScript SDK's example server with its demo OAuth provider, on loopback.
///
/// `node -r tests/peers/bind-loopback.cjs .../simpleStreamableHttp.js --oauth`: MCP (streamable HTTP)
/// at [`mcp_url`](Self::mcp_url), its demo authorization server at [`auth_url`](Self::auth_url)
/// (dynamic client registration, PKCE S256, an `/authorize` that approves at once with a 302 to the
/// redirect URI, no refresh tokens). Both listen on 127.0.0.1 only. Every value is kept in the
/// process's memory, so each test should start its own server (registration is also rate-limited
/// per client IP). Dropping the value kills the process and reaps it.
pub struct TsDemoServer {
    mcp_port: u16,
    auth_port: u16,
    /// The child's stdout and stderr lines (stderr ones prefixed), kept up to date in the background.
    output: Arc<Mutex<String>>,
    /// Asks the supervisor task to kill the child; taken by `Drop`.
    kill: Option<oneshot::Sender<()>>,
    /// Gets a message (or is disconnected) once the supervisor task has reaped the child.
    reaped: Mutex<std_mpsc::Receiver<()>>,
}

/// What the background tasks report to [`TsDemoServer::start`].
enum Event {
    StdoutLine(String),
    /// The child exited and both of its output pipes reached end of file.
    Exited(String),
}

/// Why one attempt to start the server failed.
enum StartFailure {
    /// Another process took one of the chosen ports before the server bound it: try other ports.
    PortTaken(String),
    Fatal(String),
}

impl TsDemoServer {
    const EXAMPLE: &'static str =
        "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js";
    const PRELOAD: &'static str = "bind-loopback.cjs";
    /// For the whole of `start`, all attempts together.
    const START_TIMEOUT: Duration = Duration::from_secs(30);
    const MAX_ATTEMPTS: usize = 5;
    /// How long `Drop` waits for the killed child to be reaped.
    const REAP_TIMEOUT: Duration = Duration::from_secs(10);

    /// Picks two free loopback ports, starts the example with `MCP_PORT` / `MCP_AUTH_PORT` set to
    /// them and returns once both of its servers have printed that they listen. Retries with new
    /// ports if one was taken in the meantime.
    ///
    /// # Panics
    /// If the peers are not installed, node cannot be run, or the server does not come up within
    /// 30 s; the message includes the child's output.
    pub async fn start() -> TsDemoServer {
        Self::start_with(true).await
    }

    /// The same example server without `--oauth`: open to anyone, no
    /// authorization server.
    pub async fn start_open() -> TsDemoServer {
        Self::start_with(false).await
    }

    /// Stops this server and starts a fresh one on the same ports: the
    /// same URLs, but every client registration and token forgotten, as a
    /// restart of this in-memory server does.
    pub async fn restart(self) -> TsDemoServer {
        let ports = (self.mcp_port, self.auth_port);
        drop(self);
        Self::start_on(ports).await
    }

    /// A server with OAuth on these (MCP, authorization) ports, e.g. those
    /// of one that was stopped.
    pub async fn start_on(ports: (u16, u16)) -> TsDemoServer {
        let dir = Self::peers_dir();
        let deadline = Instant::now() + Self::START_TIMEOUT;
        match Self::try_start(
            &dir,
            &dir.join(Self::EXAMPLE),
            &dir.join(Self::PRELOAD),
            true,
            ports,
            deadline,
        )
        .await
        {
            Ok(server) => server,
            Err(StartFailure::PortTaken(output) | StartFailure::Fatal(output)) => {
                panic!("the MCP TypeScript SDK example server did not restart: {output}")
            }
        }
    }

    async fn start_with(oauth: bool) -> TsDemoServer {
        let dir = Self::peers_dir();
        let example = dir.join(Self::EXAMPLE);
        let preload = dir.join(Self::PRELOAD);
        if !example.is_file() {
            let install = if std::env::var_os("MCPGRAM_PEERS_DIR").is_some() {
                format!("npm ci --prefix {}", dir.display())
            } else {
                format!(
                    "cd {}/../.. && npm ci --prefix tests/peers",
                    env!("CARGO_MANIFEST_DIR")
                )
            };
            panic!(
                "the MCP TypeScript SDK example server is not installed ({} is missing): \
                 run `{install}`",
                example.display()
            );
        }
        assert!(preload.is_file(), "{} is missing", preload.display());

        let deadline = Instant::now() + Self::START_TIMEOUT;
        let mut earlier = String::new();
        for attempt in 1..=Self::MAX_ATTEMPTS {
            let (mcp_port, auth_port) = Self::free_loopback_ports();
            match Self::try_start(
                &dir,
                &example,
                &preload,
                oauth,
                (mcp_port, auth_port),
                deadline,
            )
            .await
            {
                Ok(server) => return server,
                Err(StartFailure::PortTaken(output)) => {
                    earlier.push_str(&format!(
                        "--- attempt {attempt} (MCP port {mcp_port}, auth port {auth_port}): \
                         a port was taken ---\n{output}\n"
                    ));
                }
                Err(StartFailure::Fatal(message)) if earlier.is_empty() => panic!("{message}"),
                Err(StartFailure::Fatal(message)) => panic!("{message}\n{earlier}"),
            }
        }
        panic!(
            "the MCP TypeScript SDK example server found no free ports in {} attempts:\n{earlier}",
            Self::MAX_ATTEMPTS
        );
    }

    /// `http://localhost:PORT/mcp`, exactly as the server names itself as a protected resource.
    pub fn mcp_url(&self) -> String {
        format!("http://localhost:{}/mcp", self.mcp_port)
    }

    /// `http://localhost:AUTH_PORT` (the server's metadata spells its issuer with a trailing `/`).
    pub fn auth_url(&self) -> String {
        format!("http://localhost:{}", self.auth_port)
    }

    pub fn mcp_port(&self) -> u16 {
        self.mcp_port
    }

    pub fn auth_port(&self) -> u16 {
        self.auth_port
    }

    /// The child's combined stdout/stderr so far (for failure messages).
    pub fn output(&self) -> String {
        Self::lock(&self.output).clone()
    }

    /// The output buffer, even if a panicking thread poisoned its lock.
    fn lock(output: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
        output.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `$MCPGRAM_PEERS_DIR`, or `tests/peers` of this package.
    fn peers_dir() -> PathBuf {
        match std::env::var_os("MCPGRAM_PEERS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/peers")),
        }
    }

    /// Two distinct ports that were free on 127.0.0.1 a moment ago.
    fn free_loopback_ports() -> (u16, u16) {
        let bind = || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a port on 127.0.0.1")
        };
        // Both listeners are open at once, so the ports differ.
        let (a, b) = (bind(), bind());
        let port = |l: &TcpListener| l.local_addr().expect("local address").port();
        (port(&a), port(&b))
    }

    /// The child, its output readers and its supervisor run on this runtime rather than the
    /// test's, so the output is drained and `Drop` can wait for the reaping whatever the test's
    /// runtime is doing (a current-thread runtime that is blocked in `drop`, or shutting down).
    fn runtime() -> &'static Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("test-peers")
                .enable_all()
                .build()
                .expect("cannot build the test peers' runtime")
        })
    }

    async fn try_start(
        dir: &Path,
        example: &Path,
        preload: &Path,
        oauth: bool,
        (mcp_port, auth_port): (u16, u16),
        deadline: Instant,
    ) -> Result<TsDemoServer, StartFailure> {
        let mut command = Command::new("node");
        command
            .arg("-r")
            .arg(preload)
            .arg(example)
            .args(oauth.then_some("--oauth"))
            .current_dir(dir)
            .env("MCP_PORT", mcp_port.to_string())
            .env("MCP_AUTH_PORT", auth_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let output = Arc::new(Mutex::new(String::new()));
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (reaped_tx, reaped_rx) = std_mpsc::sync_channel(1);
        {
            let _runtime = Self::runtime().enter();
            let mut child = command.spawn().map_err(|e| {
                StartFailure::Fatal(format!(
                    "cannot run `node` for the MCP TypeScript SDK example server \
                     (is Node.js >= 20 on PATH?): {e}"
                ))
            })?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stderr = child.stderr.take().expect("piped stderr");
            let readers = [
                tokio::spawn(Self::drain(
                    stdout,
                    "",
                    output.clone(),
                    Some(events_tx.clone()),
                )),
                tokio::spawn(Self::drain(stderr, "[stderr] ", output.clone(), None)),
            ];
            let output_for_exit = output.clone();
            tokio::spawn(async move {
                let status = tokio::select! {
                    status = child.wait() => status,
                    // A send or a dropped sender: either way, stop the child.
                    _ = kill_rx => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                // The pipes close with the process; wait for the readers so that the output is
                // complete before reporting the exit.
                for reader in readers {
                    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
                }
                let status = Self::describe(status);
                Self::lock(&output_for_exit).push_str(&format!("[node exited: {status}]\n"));
                let _ = events_tx.send(Event::Exited(status));
                let _ = reaped_tx.send(());
            });
        }
        let server = TsDemoServer {
            mcp_port,
            auth_port,
            output,
            kill: Some(kill_tx),
            reaped: Mutex::new(reaped_rx),
        };

        let mcp_ready_line = format!("MCP Streamable HTTP Server listening on port {mcp_port}");
        let auth_ready_line = format!("OAuth Authorization Server listening on port {auth_port}");
        let (mut mcp_ready, mut auth_ready) = (false, !oauth);
        while !(mcp_ready && auth_ready) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::StdoutLine(line))) => {
                    mcp_ready |= line == mcp_ready_line;
                    auth_ready |= line == auth_ready_line;
                }
                Ok(Some(Event::Exited(status))) => {
                    let output = server.output();
                    return Err(if output.contains("EADDRINUSE") {
                        StartFailure::PortTaken(output)
                    } else {
                        StartFailure::Fatal(format!(
                            "the MCP TypeScript SDK example server exited ({status}) before it \
                             listened on ports {mcp_port} and {auth_port}; its output:\n{output}"
                        ))
                    });
                }
                Ok(None) => {
                    return Err(StartFailure::Fatal(format!(
                        "the supervisor of the MCP TypeScript SDK example server went away; \
                         its output:\n{}",
                        server.output()
                    )));
                }
                Err(_elapsed) => {
                    return Err(StartFailure::Fatal(format!(
                        "the MCP TypeScript SDK example server did not listen on ports {mcp_port} \
                         and {auth_port} within {:?}; its output:\n{}",
                        Self::START_TIMEOUT,
                        server.output()
                    )));
                }
            }
        }
        Ok(server)
    }

    /// Appends each line of `pipe` to `output` (after `prefix`) until end of file, and forwards it to
    /// `events` while someone listens there.
    async fn drain(
        pipe: impl AsyncRead + Unpin,
        prefix: &'static str,
        output: Arc<Mutex<String>>,
        mut events: Option<mpsc::UnboundedSender<Event>>,
    ) {
        let mut pipe = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match pipe.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            {
                let mut output = Self::lock(&output);
                output.push_str(prefix);
                output.push_str(line);
                output.push('\n');
            }
            if let Some(tx) = &events
                && tx.send(Event::StdoutLine(line.to_owned())).is_err()
            {
                // `start` has returned: keep draining, stop forwarding.
                events = None;
            }
        }
    }

    fn describe(status: std::io::Result<ExitStatus>) -> String {
        match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }
}

impl Drop for TsDemoServer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        // Event-driven: the supervisor sends once it has reaped the child (or has gone away).
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let _ = reaped.recv_timeout(Self::REAP_TIMEOUT);
    }
}
