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
fn check_config_says_several_replicas_need_the_webhook() {
    let shared = format!(
        "{VALID}\n[store]\nkind = \"postgres\"\nurl = \"postgres://bot@127.0.0.1:1/mcpgram\"\n"
    );
    let out = check_config(&shared, Some("1:x"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("run one replica only"), "{said}");
    assert!(said.contains("telegram.mode = \"webhook\""), "{said}");

    let files = check_config(VALID, Some("1:x"));
    assert!(!String::from_utf8_lossy(&files.stdout).contains("replica"));
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
            // Port 0: tests run side by side, and a terminal command binds
            // its login callback.
            "[telegram]\ntoken = \"1:x\"\n[http]\nlisten = \"127.0.0.1:0\"\n[vault]\ndir = \"{}\"\n[[mcp.servers]]\n{server}\n",
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
    let port = crate::support::free_port();
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

/// `mcpgram vault …`: admin secrets for `${NAME}` (the environment wins),
/// users listed without their secrets and forgotten, the key rotated, and
/// check-config saying whether the key decrypts the vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(
        &path,
        VALID.replace("TEST_BOT_TOKEN", "VAULTED_BOT_TOKEN")
            + &format!("[vault]\ndir = \"{}\"\n", vault_dir.display()),
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&str>, env_token: Option<&str>| {
        let mut command = mcpgram();
        command.args(args).arg("--config").arg(&path);
        match env_token {
            Some(token) => command.env("VAULTED_BOT_TOKEN", token),
            None => command.env_remove("VAULTED_BOT_TOKEN"),
        };
        command.stdin(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, _, stderr) = run(&["check-config"], None, None);
    assert_eq!(code, Some(1), "the token is nowhere yet: {stderr}");
    let (code, stdout, stderr) = run(
        &["vault", "set", "VAULTED_BOT_TOKEN"],
        Some("1:vaulted\n"),
        None,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("1:vaulted"), "{stdout}");
    let (code, stdout, stderr) = run(&["check-config"], None, None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("the key decrypts it"), "{stdout}");
    assert!(
        stdout.contains("${VAULTED_BOT_TOKEN}: the vault"),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["check-config"], None, Some("1:env"));
    assert!(stdout.contains("the environment wins"), "{stdout}");

    // A user's data, listed without secrets, then forgotten.
    {
        let vault =
            Vault::open(&vault_dir, &KeySource::File(vault_dir.join("identity.txt"))).unwrap();
        vault
            .put(
                Namespace::User(42),
                "mcp.token.demo",
                Secret::new("pat_secret"),
            )
            .await
            .unwrap();
    }
    let (code, stdout, _) = run(&["vault", "list"], None, None);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("user 42: demo (personal token)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Admin secrets for ${NAME}: VAULTED_BOT_TOKEN"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("pat_secret") && !stdout.contains("1:vaulted"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["vault", "forget", "42"], None, None);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("Deleted every stored item of user 42"),
        "{stdout}"
    );
    let (_, stdout, _) = run(&["vault", "list"], None, None);
    assert!(stdout.contains("No user has data"), "{stdout}");

    // A new identity; the old one kept; everything still reads.
    let (code, stdout, stderr) = run(&["vault", "rotate-key"], None, None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Re-encrypted"), "{stdout}");
    assert!(vault_dir.join("identity.txt.old").exists());
    let (code, stdout, stderr) = run(&["check-config"], None, None);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("${VAULTED_BOT_TOKEN}: the vault"),
        "{stdout}"
    );

    // The wrong key: said plainly.
    std::fs::copy(
        vault_dir.join("identity.txt.old"),
        vault_dir.join("identity.txt"),
    )
    .unwrap();
    let (code, _, stderr) = run(&["check-config"], None, Some("1:env"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot decrypt"), "{stderr}");
}

/// `mcpgram probe <url>` says how a server authorizes before anyone
/// connects, with a verdict; and an open server is said to be open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_describes_a_servers_authorization() {
    let oauth = test_peers::TsDemoServer::start().await;
    let open = test_peers::EverythingServer::start().await;
    let probe = |url: String| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
            .args(["probe", &url, "--config", "/nonexistent/mcpgram.toml"])
            .output()
            .await
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = probe(oauth.mcp_url()).await;
    for line in [
        "asks for authorization (HTTP 401)",
        "client: dynamic registration (RFC 7591)",
        "PKCE methods: S256",
        "verdict: it supports OAuth; add [mcp.servers.oauth]",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert_eq!(code, Some(0), "{stdout}");
    let (code, stdout) = probe(open.mcp_url()).await;
    assert!(stdout.contains("answers without authorization"), "{stdout}");
    assert!(stdout.contains("verdict: usable as configured"), "{stdout}");
    assert_eq!(code, Some(0));

    // check-config --probe: each configured server, with its verdict.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(
        &path,
        format!(
            "[telegram]\ntoken = \"1:x\"\n[vault]\ndir = \"{}\"\n[[mcp.servers]]\nid = \"demo\"\nurl = \"{}\"\ntrusted = true\n[mcp.servers.oauth]\nenabled = true\n",
            dir.path().join("vault").display(),
            oauth.mcp_url()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .args(["check-config", "--probe", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo ("), "{stdout}");
    assert!(
        stdout.contains("verdict: ready: users can /connect"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

/// `mcpgram call` shows the server's progress on stderr, the result alone
/// on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_shows_progress_on_stderr() {
    let server = test_peers::EverythingServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .args([
            "call",
            &server.mcp_url(),
            "trigger-long-running-operation",
            r#"{"duration": 1, "steps": 2}"#,
            "--config",
            "/nonexistent/mcpgram.toml",
            "--vault-dir",
        ])
        .arg(dir.path().join("vault"))
        .env_remove("MCPGRAM_VAULT_KEY")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The last notification may race the result; the first one comes
    // half a second before it.
    assert!(stderr.contains("progress 1 of 2"), "{stderr}");
    assert!(
        stdout.contains("Long running operation completed"),
        "{stdout}"
    );
    assert!(!stdout.contains("progress"), "{stdout}");
}
