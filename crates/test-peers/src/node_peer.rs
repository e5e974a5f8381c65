//! Running a Node.js test peer from `tests/peers` on two loopback ports: starting it on free
//! ports (retrying if one is taken meanwhile), waiting for the lines that say it listens, keeping
//! its output for failure messages, and killing and reaping it when dropped.
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

/// (MCP port, authorization server port).
pub type Ports = (u16, u16);

/// Environment variables, as (name, value).
pub type Env = Vec<(String, String)>;

/// What to run: `node -r bind-loopback.cjs <script> <args>` in `tests/peers`, with the two ports
/// given to it through the environment.
#[derive(Clone)]
pub struct PeerSpec {
    /// Named in failure messages.
    pub name: &'static str,
    /// Relative to `tests/peers`.
    pub script: &'static str,
    pub args: Vec<String>,
    /// The environment for the (MCP, authorization) ports.
    pub env: fn(Ports) -> Env,
    /// Lines on stdout that together say the peer is ready.
    pub ready: fn(Ports) -> Vec<String>,
    /// Extra environment.
    pub extra_env: Env,
}

/// A running peer; dropping it kills the process and reaps it.
pub struct NodePeer {
    ports: (u16, u16),
    /// The node process's id, for benches reading its CPU time in /proc.
    pid: Option<u32>,
    /// The child's stdout and stderr lines (stderr ones prefixed), kept up to date in the background.
    output: Arc<Mutex<String>>,
    /// Asks the supervisor task to kill the child; taken by `Drop`.
    kill: Option<oneshot::Sender<()>>,
    /// Gets a message (or is disconnected) once the supervisor task has reaped the child.
    reaped: Mutex<std_mpsc::Receiver<()>>,
}

/// What the background tasks report to [`NodePeer::start`].
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

impl NodePeer {
    const PRELOAD: &'static str = "bind-loopback.cjs";
    /// For the whole of `start`, all attempts together.
    const START_TIMEOUT: Duration = Duration::from_secs(30);
    const MAX_ATTEMPTS: usize = 5;
    /// How long `Drop` waits for the killed child to be reaped.
    const REAP_TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts the peer on two free loopback ports, retrying with new ones if one was taken in
    /// the meantime.
    ///
    /// # Panics
    /// If the peers are not installed, node cannot be run, or the peer does not come up within
    /// 30 s; the message includes the child's output.
    pub async fn start(spec: &PeerSpec) -> NodePeer {
        let dir = Self::checked_dir(spec);
        let deadline = Instant::now() + Self::START_TIMEOUT;
        let mut earlier = String::new();
        for attempt in 1..=Self::MAX_ATTEMPTS {
            let ports = Self::free_loopback_ports();
            match Self::try_start(&dir, spec, ports, deadline).await {
                Ok(peer) => return peer,
                Err(StartFailure::PortTaken(output)) => {
                    earlier.push_str(&format!(
                        "--- attempt {attempt} (ports {ports:?}): a port was taken ---\n{output}\n"
                    ));
                }
                Err(StartFailure::Fatal(message)) if earlier.is_empty() => panic!("{message}"),
                Err(StartFailure::Fatal(message)) => panic!("{message}\n{earlier}"),
            }
        }
        panic!(
            "{} found no free ports in {} attempts:\n{earlier}",
            spec.name,
            Self::MAX_ATTEMPTS
        );
    }

    /// Starts the peer on these ports (those of one that was stopped, say).
    pub async fn start_on(spec: &PeerSpec, ports: (u16, u16)) -> NodePeer {
        let dir = Self::checked_dir(spec);
        let deadline = Instant::now() + Self::START_TIMEOUT;
        match Self::try_start(&dir, spec, ports, deadline).await {
            Ok(peer) => peer,
            Err(StartFailure::PortTaken(output) | StartFailure::Fatal(output)) => {
                panic!("{} did not start on ports {ports:?}: {output}", spec.name)
            }
        }
    }

    /// (MCP port, authorization server port).
    pub fn ports(&self) -> (u16, u16) {
        self.ports
    }

    /// The node process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn checked_dir(spec: &PeerSpec) -> PathBuf {
        let dir = Self::peers_dir();
        let script = dir.join(spec.script);
        if !script.is_file() {
            let install = if std::env::var_os("MCPGRAM_PEERS_DIR").is_some() {
                format!("npm ci --prefix {}", dir.display())
            } else {
                format!("cd {}/../.. && tests/setup.sh", env!("CARGO_MANIFEST_DIR"))
            };
            panic!(
                "{} is not installed ({} is missing): run `{install}`",
                spec.name,
                script.display()
            );
        }
        assert!(
            dir.join(Self::PRELOAD).is_file(),
            "{} is missing",
            Self::PRELOAD
        );
        dir
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
        spec: &PeerSpec,
        ports: (u16, u16),
        deadline: Instant,
    ) -> Result<NodePeer, StartFailure> {
        let mut command = Command::new("node");
        command
            .arg("-r")
            .arg(dir.join(Self::PRELOAD))
            .arg(dir.join(spec.script))
            .args(&spec.args)
            .current_dir(dir)
            .envs((spec.env)(ports))
            .envs(spec.extra_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);

        let output = Arc::new(Mutex::new(String::new()));
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        let (reaped_tx, reaped_rx) = std_mpsc::sync_channel(1);
        let pid;
        {
            let _runtime = Self::runtime().enter();
            let mut child = command.spawn().map_err(|e| {
                StartFailure::Fatal(format!(
                    "cannot run `node` for {} (is Node.js >= 20 on PATH?): {e}",
                    spec.name
                ))
            })?;
            pid = child.id();
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
        let server = NodePeer {
            ports,
            pid,
            output,
            kill: Some(kill_tx),
            reaped: Mutex::new(reaped_rx),
        };

        let mut waiting = (spec.ready)(ports);
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::StdoutLine(line))) => {
                    waiting.retain(|ready| *ready != line);
                }
                Ok(Some(Event::Exited(status))) => {
                    let output = server.output();
                    return Err(if output.contains("EADDRINUSE") {
                        StartFailure::PortTaken(output)
                    } else {
                        StartFailure::Fatal(format!(
                            "{} exited ({status}) before it listened on ports {ports:?}; \
                             its output:\n{output}",
                            spec.name
                        ))
                    });
                }
                Ok(None) => {
                    return Err(StartFailure::Fatal(format!(
                        "the supervisor of {} went away; its output:\n{}",
                        spec.name,
                        server.output()
                    )));
                }
                Err(_elapsed) => {
                    return Err(StartFailure::Fatal(format!(
                        "{} did not listen on ports {ports:?} within {:?}; its output:\n{}",
                        spec.name,
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

impl Drop for NodePeer {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        // Event-driven: the supervisor sends once it has reaped the child (or has gone away).
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let _ = reaped.recv_timeout(Self::REAP_TIMEOUT);
    }
}
