//! A throwaway PostgreSQL cluster from Debian's `postgresql` package, for
//! the tests of the shared store.
//!
//! One cluster per test binary, started on first use: `initdb` into a
//! temporary directory, the server listening on a Unix socket in that
//! directory only (no TCP port to collide with anything), trust
//! authentication for the one superuser. Each test takes a database of its
//! own ([`Cluster::database`]), so tests run in parallel without seeing
//! each other's rows, and drops it when done.
//!
//! Statics are never dropped, so the cluster is not stopped by a `Drop`:
//! a small shell supervises it and stops it (and deletes its directory)
//! when its standard input reaches end of file, which happens when the
//! test process exits however it exits (passing, panicking, killed). No
//! server outlives the tests.
//!
//! PostgreSQL refuses to run as root. Run as root (containers, CI
//! images), the supervisor and the server run as the `postgres` user the
//! package creates, through `setpriv`; the tests themselves connect over
//! the socket as the cluster's superuser either way.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The cluster's superuser.
const SUPERUSER: &str = "mcpgram";

/// Who runs the server when the tests run as root.
const SERVER_USER: &str = "postgres";

/// The cluster of this test binary, started on first call.
///
/// # Panics
/// If PostgreSQL is not installed (`tests/setup.sh` installs Debian's
/// `postgresql`) or the cluster does not start; the panic carries its log.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// A running cluster; see the module documentation for how it stops.
pub struct Cluster {
    bin: PathBuf,
    socket_dir: PathBuf,
    /// The supervisor, and the write end of its standard input: closing it
    /// (the process exiting) stops the server.
    _supervisor: Mutex<(Child, ChildStdin)>,
}

impl Cluster {
    fn start() -> Self {
        let bin = server_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run tests/setup.sh (it installs Debian's postgresql)"
            )
        });
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("mcpgram-pg.")
            .tempdir()
            .expect("a directory for the cluster")
            // The supervisor deletes it once the server is down.
            .keep();
        if as_root {
            let owned = Command::new("chown")
                .arg(format!("{SERVER_USER}:"))
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(
                owned.success(),
                "cannot give {} to the {SERVER_USER} user (run as root, PostgreSQL needs a user of its own; the postgresql package creates it)",
                dir.display()
            );
        }
        let script = r#"
set -e
"$PG_BIN/initdb" -D "$PG_DIR/data" -U "$PG_SUPERUSER" --auth=trust -E UTF8 --locale=C.UTF-8 -N >"$PG_DIR/initdb.log" 2>&1
"$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -s \
    -o "-k $PG_DIR -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start
echo ready
# The test process reads no more of this: once it is gone, a line written
# to its pipes would kill the shell (SIGPIPE) before the server is
# stopped, leaving a server behind with its directory deleted.
exec >/dev/null 2>&1
# Until the test process is gone: its end of this pipe closes with it.
cat >/dev/null || true
"$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -s stop || true
rm -rf "$PG_DIR"
"#;
        let mut command = if as_root {
            let mut command = Command::new("setpriv");
            command.args([
                &format!("--reuid={SERVER_USER}"),
                &format!("--regid={SERVER_USER}"),
                "--init-groups",
                "sh",
                "-c",
                script,
            ]);
            command
        } else {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            command
        };
        let mut child = command
            .env("PG_BIN", &bin)
            .env("PG_DIR", &dir)
            .env("PG_SUPERUSER", SUPERUSER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the PostgreSQL supervisor");
        let stdin = child.stdin.take().expect("the supervisor's stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        if line.trim() != "ready" {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            panic!(
                "the PostgreSQL cluster did not start:\n{stderr}\n{}\n{}",
                log("initdb.log"),
                log("server.log")
            );
        }
        Self {
            bin,
            socket_dir: dir,
            _supervisor: Mutex::new((child, stdin)),
        }
    }

    /// A new, empty database for one test, dropped with the value.
    pub fn database(&'static self) -> Database {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.run("createdb", &[&name]);
        Database {
            url: self.url(&name),
            name,
            cluster: self,
        }
    }

    /// The URL of database `name`, over the cluster's socket.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@localhost/{name}?host={}",
            self.socket_dir.display()
        )
    }

    /// Runs one of the client programs (`createdb`, `psql`, …) against the
    /// cluster; panics with its output when it fails.
    pub fn run(&self, program: &str, args: &[&str]) {
        let output = Command::new(self.bin.join(program))
            .arg("-h")
            .arg(&self.socket_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// One test's database.
pub struct Database {
    pub name: String,
    /// `postgres://…?host=<socket dir>`, as a config's `[store] url`.
    pub url: String,
    cluster: &'static Cluster,
}

impl Drop for Database {
    fn drop(&mut self) {
        // --force: a pool the test did not close still holds connections.
        let _ = Command::new(self.cluster.bin.join("dropdb"))
            .arg("-h")
            .arg(&self.cluster.socket_dir)
            .arg("-U")
            .arg(SUPERUSER)
            .args(["--if-exists", "--force", &self.name])
            .output();
    }
}

/// The newest installed server's programs: Debian keeps each major
/// version in `/usr/lib/postgresql/<major>/bin`.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}
