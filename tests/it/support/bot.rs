//! The real `mcpgram` binary, run as a child process against test peers,
//! with its stderr (the logs) captured for assertions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use fake_telegram::FakeTelegram;

/// A running bot and the directory holding its config and vault.
pub struct BotProcess {
    child: Child,
    logs: Arc<Mutex<String>>,
    /// Wakes [`BotProcess::wait_for_log`] on every new line.
    logged: Arc<tokio::sync::Notify>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// The `[telegram]`, `[http]` and `[vault]` tables for a bot talking to
/// `telegram`, with its vault in `dir`; append `[[mcp.servers]]` to it.
pub fn base_config(telegram: &FakeTelegram, dir: &Path) -> String {
    format!(
        r#"[telegram]
token = "{token}"
api_url = "{api}"

[http]
listen = "127.0.0.1:0"

[vault]
dir = "{vault}"

[mcp]
# Tests stop bots whose servers hang on purpose: a short grace.
shutdown_grace = "3s"
"#,
        token = telegram.token(),
        api = telegram.api_url(),
        vault = dir.join("vault").display(),
    )
}

/// A `[store]` table keeping the bot's state in PostgreSQL, its URL read
/// from `${DATABASE_URL}` (start the bot with that variable set); append
/// it to [`base_config`]'s text.
/// The TypeScript SDK's OAuth demo server as server "demo" (OAuth on).
pub fn demo_server(url: &str) -> String {
    format!(
        "\n[[mcp.servers]]\nid = \"demo\"\nname = \"Demo\"\nurl = \"{url}\"\ntrusted = true\ntimeout_secs = 20\n[mcp.servers.oauth]\nenabled = true\n"
    )
}

pub fn postgres_store() -> String {
    "\n[store]\nkind = \"postgres\"\nurl = \"${DATABASE_URL}\"\n".to_owned()
}

/// A fresh directory with `config`'s text in its `mcpgram.toml`.
fn configured(config: impl FnOnce(&Path) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(&path, config(dir.path())).expect("write config");
    dir
}

impl BotProcess {
    /// Writes `config` into a fresh directory and starts the bot with
    /// debug logging; returns once it polls Telegram for updates.
    pub async fn start(telegram: &FakeTelegram, config: impl FnOnce(&Path) -> String) -> Self {
        Self::start_with_env(telegram, &[], config).await
    }

    /// Like [`BotProcess::start`], with extra environment variables.
    pub async fn start_with_env(
        telegram: &FakeTelegram,
        env: &[(&str, &str)],
        config: impl FnOnce(&Path) -> String,
    ) -> Self {
        Self::spawn(telegram, env, &[], configured(config)).await
    }

    /// Like [`BotProcess::start`], with the bot run by `wrapper` (a command
    /// that runs the one after it, as `prlimit` does).
    pub async fn start_under(
        telegram: &FakeTelegram,
        wrapper: &[&str],
        config: impl FnOnce(&Path) -> String,
    ) -> Self {
        Self::spawn(telegram, &[], wrapper, configured(config)).await
    }

    /// The bot's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the bot runs")
    }

    /// Stops the bot (SIGTERM) and starts it again on the same config and
    /// vault, as after a deploy; returns the first run's logs too.
    pub async fn restart(self, telegram: &FakeTelegram) -> (Self, String) {
        let (logs, dir) = self.stop_keeping_dir().await;
        (Self::spawn(telegram, &[], &[], dir).await, logs)
    }

    /// Like [`BotProcess::restart`], with the config edited in between.
    pub async fn restart_with(
        self,
        telegram: &FakeTelegram,
        edit: impl FnOnce(String) -> String,
    ) -> (Self, String) {
        let (logs, dir) = self.stop_keeping_dir().await;
        let path = dir.path().join("mcpgram.toml");
        let text = std::fs::read_to_string(&path).expect("read config");
        std::fs::write(&path, edit(text)).expect("write config");
        (Self::spawn(telegram, &[], &[], dir).await, logs)
    }

    async fn spawn(
        telegram: &FakeTelegram,
        env: &[(&str, &str)],
        wrapper: &[&str],
        dir: tempfile::TempDir,
    ) -> Self {
        let path = dir.path().join("mcpgram.toml");
        // Ready once it polls, or in webhook mode once it set its webhook.
        let webhook = std::fs::read_to_string(&path)
            .map(|text| text.contains("mode = \"webhook\""))
            .unwrap_or(false);
        let ready_on = if webhook { "setwebhook" } else { "getupdates" };
        let polls_before = telegram
            .calls()
            .iter()
            .filter(|c| c.method == ready_on)
            .count();
        let bin = env!("CARGO_BIN_EXE_mcpgram");
        let (program, before) = match wrapper.split_first() {
            Some((program, args)) => (*program, args),
            None => (bin, &[][..]),
        };
        let mut child = Command::new(program)
            .args(before)
            .args(if wrapper.is_empty() { None } else { Some(bin) })
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "debug")
            .env_remove("MCPGRAM_VAULT_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start mcpgram");
        let logs = Arc::new(Mutex::new(String::new()));
        let logged = Arc::new(tokio::sync::Notify::new());
        let mut readers = Vec::new();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (logs, logged) = (logs.clone(), logged.clone());
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    {
                        let mut logs = logs.lock().unwrap();
                        logs.push_str(&line);
                        logs.push('\n');
                    }
                    logged.notify_waiters();
                }
            }));
        }
        let bot = Self {
            child,
            logs,
            logged,
            readers,
            dir,
        };
        // This run's own first getUpdates: a restarted bot's earlier calls
        // do not count.
        let polled = tokio::time::timeout(
            Duration::from_secs(60),
            telegram.wait_for_call_count(ready_on, polls_before + 1, Duration::from_secs(70)),
        )
        .await;
        if polled.is_err() {
            panic!("the bot did not start polling; its logs:\n{}", bot.logs());
        }
        bot
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mcpgram.toml")
    }

    pub fn vault_dir(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    /// Everything the bot printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Stops the bot with SIGTERM, as an admin's service manager would,
    /// waits for it to exit, and returns its complete logs.
    pub async fn stop(self) -> String {
        self.stop_keeping_dir().await.0
    }

    /// Waits until the log holds `text`; panics with the log after `limit`.
    pub async fn wait_for_log(&self, text: &str, limit: Duration) {
        let waited = tokio::time::timeout(limit, async {
            loop {
                let notified = self.logged.notified();
                if self.logs().contains(text) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if waited.is_err() {
            panic!("no {text:?} in the log:\n{}", self.logs());
        }
    }

    /// Kills the bot with SIGKILL (no shutdown of any kind, as when its
    /// machine dies), waits for it to be gone, and returns its logs.
    pub async fn kill(mut self) -> String {
        let _ = self.child.kill().await;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        self.logs()
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits (up to `limit`) for the bot to exit; its exit code.
    pub async fn exit_code(mut self, limit: Duration) -> Option<i32> {
        let status = tokio::time::timeout(limit, self.child.wait()).await;
        match status {
            Ok(Ok(status)) => status.code(),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    async fn stop_keeping_dir(mut self) -> (String, tempfile::TempDir) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        if status.is_err() {
            let _ = self.child.kill().await;
        }
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let logs = self.logs();
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "the bot did not exit cleanly on SIGTERM ({status:?}); its logs:\n{logs}"
        );
        (logs, self.dir)
    }
}
