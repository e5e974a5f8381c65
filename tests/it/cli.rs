//! The `mcpgram` command line as an admin meets it.

use std::process::Command;

use mcpgram::secret::Secret;
use mcpgram::vault::{KeySource, Namespace, Vault};

fn mcpgram() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcpgram"));
    command
        .env_remove("MCPGRAM_CONFIG")
        .env_remove("MCPGRAM_VAULT_KEY");
    command
}

const VALID: &str = r#"
[telegram]
token = "${TEST_BOT_TOKEN}"
api_url = "http://127.0.0.1:9/"
[http]
listen = "127.0.0.1:0"
[[mcp.servers]]
id = "demo"
url = "http://localhost:3000/mcp"
[mcp.servers.oauth]
enabled = true
"#;

/// `mcpgram check-config --config <file holding text>`, with the bot
/// token variable set to `token` or unset.
fn check_config(text: &str, token: Option<&str>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = mcpgram();
    command.args(["check-config", "--config"]).arg(&path);
    match token {
        Some(token) => command.env("TEST_BOT_TOKEN", token),
        None => command.env_remove("TEST_BOT_TOKEN"),
    };
    command.output().unwrap()
}

#[test]
fn check_config_exits_zero_for_a_valid_file() {
    let out = check_config(VALID, Some("1:x"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 server(s))"));
}

#[test]
fn check_config_exits_one_naming_each_bad_key() {
    let bad =
        VALID.replace("id = \"demo\"", "id = \"Demo!\"") + "[mcp.servers.headers]\nX = \"y\"\n";
    let out = check_config(&bad, None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "telegram.token: environment variable TEST_BOT_TOKEN is not set",
        "mcp.servers[0].id: \"Demo!\" is not a valid id",
        "mcp.servers[0].headers: cannot be combined",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn config_path_comes_from_the_environment_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    std::fs::write(&path, VALID).unwrap();
    let out = mcpgram()
        .arg("check-config")
        .env("MCPGRAM_CONFIG", &path)
        .env("TEST_BOT_TOKEN", "1:x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_vault_the_key_cannot_decrypt_stops_the_bot_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    {
        let vault =
            Vault::open(&vault_dir, &KeySource::File(dir.path().join("old-key.txt"))).unwrap();
        vault
            .put(Namespace::System, "x", Secret::new("y"))
            .await
            .unwrap();
    }
    // [vault] goes before the [[mcp.servers]] array of tables.
    let config = VALID.replace(
        "[[mcp.servers]]",
        &format!(
            "[vault]\ndir = \"{}\"\nkey_file = \"{}\"\n\n[[mcp.servers]]",
            vault_dir.display(),
            dir.path().join("new-key.txt").display()
        ),
    );
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .arg("--config")
        .arg(&path)
        .env("TEST_BOT_TOKEN", "1:x")
        .env_remove("MCPGRAM_VAULT_KEY")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot decrypt"), "{stderr}");
    assert!(stderr.contains("system.age"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A config with one server `[[mcp.servers]]` body, its vault in `dir`.
fn config_with_server(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("mcpgram.toml");
    std::fs::write(
        &path,
        format!(
            "[telegram]\ntoken = \"1:x\"\n[vault]\ndir = \"{}\"\n[[mcp.servers]]\n{server}\n",
            dir.join("vault").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn tools_lists_an_open_servers_tools_from_the_terminal() {
    let demo = test_peers::TsDemoServer::start_open().await;
    let dir = tempfile::tempdir().unwrap();
    let path = config_with_server(
        dir.path(),
        &format!(
            "id = \"demo\"\nname = \"Demo\"\nurl = \"{}\"\ntrusted = true\n",
            demo.mcp_url()
        ),
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .args(["tools", "demo", "--config"])
        .arg(&path)
        .env_remove("MCPGRAM_VAULT_KEY")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Demo (demo): "), "{stdout}");
    assert!(
        stdout.contains("  greet  A simple greeting tool"),
        "{stdout}"
    );
}

#[tokio::test]
async fn tools_says_plainly_what_failed_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let closed = crate::support::closed_port();
    let port = closed.port;
    let path = config_with_server(
        dir.path(),
        &format!(
            "id = \"down\"\nurl = \"http://127.0.0.1:{port}/mcp?key=SECRET\"\ntrusted = true\n"
        ),
    );
    let run = |args: &'static [&'static str]| {
        let path = path.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
                .args(args)
                .arg("--config")
                .arg(&path)
                .env_remove("MCPGRAM_VAULT_KEY")
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["tools", "down"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mcpgram: down: the server refused the connection"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = run(&["tools", "nowhere"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no server \"nowhere\" in the config (servers: down)"),
        "{stderr}"
    );
}

/// `mcpgram healthcheck` (the image's health check: no shell, no curl)
/// answers 0 while the bot serves and 1 once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_the_running_bot() {
    let telegram = fake_telegram::FakeTelegram::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bot = crate::support::bot::BotProcess::start(&telegram, |dir| {
        crate::support::bot::base_config(&telegram, dir)
            .replace("127.0.0.1:0", &format!("0.0.0.0:{port}"))
    })
    .await;
    let check = |path: std::path::PathBuf| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
            .arg("healthcheck")
            .arg("--config")
            .arg(path)
            .output()
            .await
            .unwrap()
    };
    let path = bot.config_path();
    let up = check(path.clone()).await;
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&path, copy.path()).unwrap();
    bot.stop().await;
    let down = check(copy.path().to_owned()).await;
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains("/healthz"), "{stderr}");
}
