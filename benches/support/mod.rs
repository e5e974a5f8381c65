//! What the benches share: the real bot binary on the fake Telegram, its
//! CPU and memory read from /proc, and quantiles.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fake_telegram::FakeTelegram;
use tokio::process::{Child, Command};

/// How long the bot may take to start polling.
const WAIT: Duration = Duration::from_secs(60);

pub struct Bot {
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Bot {
    /// Starts the bot with the config `config` writes for its directory,
    /// and waits until it polls.
    pub async fn start(telegram: &FakeTelegram, config: impl FnOnce(&Path) -> String) -> Self {
        Self::start_with_env(telegram, &[], config).await
    }

    /// Like [`Bot::start`], with extra environment variables.
    pub async fn start_with_env(
        telegram: &FakeTelegram,
        env: &[(&str, &str)],
        config: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path());
        // Ready once it polls, or in webhook mode once it set its webhook.
        let ready_on = if text.contains("mode = \"webhook\"") {
            "setwebhook"
        } else {
            "getupdates"
        };
        let before = telegram
            .calls()
            .iter()
            .filter(|c| c.method == ready_on)
            .count();
        let config = dir.path().join("mcpgram.toml");
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("bot.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mcpgram"))
            .arg("--config")
            .arg(&config)
            // The bot's own default level (info), as deployed.
            .env_remove("RUST_LOG")
            .env_remove("MCPGRAM_VAULT_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start mcpgram");
        let bot = Self {
            child,
            _dir: dir,
            log,
        };
        let polled = tokio::time::timeout(
            WAIT,
            telegram.wait_for_call_count(ready_on, before + 1, WAIT + Duration::from_secs(5)),
        )
        .await;
        if polled.is_err() {
            panic!("the bot did not start polling; its log:\n{}", bot.log());
        }
        bot
    }

    /// The end of the bot's log.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let cut = log.len().saturating_sub(8000);
        let cut = (cut..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[cut..].to_owned()
    }

    /// User plus system CPU time the bot process used so far.
    pub fn cpu(&self, ticks_per_sec: f64) -> Duration {
        let pid = self.child.id().expect("the bot runs");
        cpu_of(&pid.to_string(), ticks_per_sec)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the bot runs")
    }

    /// Log lines at WARN or ERROR, counted.
    pub fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .count()
    }

    /// The bot's peak resident memory so far (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.id().expect("the bot runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub fn at(sorted: &[Duration], quantile: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub struct Row {
    pub name: &'static str,
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

pub fn row(name: &'static str, mut took: Vec<Duration>) -> Row {
    assert!(!took.is_empty(), "no samples for {name}");
    took.sort();
    let row = Row {
        name,
        p50: at(&took, 0.5),
        p99: at(&took, 0.99),
        n: took.len(),
    };
    assert!(row.p50 > Duration::ZERO && row.p99 >= row.p50);
    row
}

pub fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU time process `pid` ("self" for this one) used so
/// far.
pub fn cpu_of(pid: &str, ticks_per_sec: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec)
}

/// As `base_config` in tests/it/support/bot.rs: the bot on `telegram`
/// with one trusted server `server_id` at `mcp_url`; `telegram_extra`
/// adds lines to `[telegram]`.
pub fn config(
    telegram: &FakeTelegram,
    dir: &Path,
    server_id: &str,
    mcp_url: &str,
    telegram_extra: &str,
) -> String {
    format!(
        r#"[telegram]
token = "{token}"
api_url = "{api}"
{telegram_extra}

[http]
listen = "127.0.0.1:0"

[vault]
dir = "{vault}"

[mcp]
shutdown_grace = "3s"

[[mcp.servers]]
id = "{server_id}"
url = "{mcp_url}"
trusted = true
"#,
        token = telegram.token(),
        api = telegram.api_url(),
        vault = dir.join("vault").display(),
    )
}

/// A `kB` line of /proc/<pid>/status (`VmHWM`, the peak resident set;
/// `VmRSS`, the current one), in MiB.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb / 1024.0
}

pub fn kernel() -> String {
    std::process::Command::new("uname")
        .arg("-r")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
