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
        outcome(&out)
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

/// `mcpgram <args>` with no config and a vault of its own: (exit code,
/// stdout, stderr).
async fn without_config(args: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .args(args)
        .args(["--config", "/nonexistent/mcpgram.toml", "--vault-dir"])
        .arg(dir.path().join("vault"))
        .env_remove("MCPGRAM_VAULT_KEY")
        .output()
        .await
        .unwrap();
    outcome(&out)
}

/// `mcpgram call` shows the server's progress on stderr, the result alone
/// on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_shows_progress_on_stderr() {
    let server = test_peers::EverythingServer::start().await;
    let (code, stdout, stderr) = without_config(&[
        "call",
        &server.mcp_url(),
        "trigger-long-running-operation",
        r#"{"duration": 1, "steps": 2}"#,
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    // The last notification may race the result; the first one comes
    // half a second before it.
    assert!(stderr.contains("progress 1 of 2"), "{stderr}");
    assert!(
        stdout.contains("Long running operation completed"),
        "{stdout}"
    );
    assert!(!stdout.contains("progress"), "{stdout}");
}

/// `mcpgram vault migrate` with `config`, `env` set; (exit code, stdout,
/// stderr).
fn migrate(
    config: &std::path::Path,
    to: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut command = mcpgram();
    command
        .args(["vault", "migrate", "--to", to])
        .args(extra)
        .arg("--config")
        .arg(config)
        .env_remove("DATABASE_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    outcome(&out)
}

/// VALID with `tables` (`[vault]`, `[store]`) before its server.
fn config_with(dir: &std::path::Path, name: &str, tables: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = VALID.replace("[[mcp.servers]]", &format!("{tables}\n[[mcp.servers]]"));
    std::fs::write(&path, text).unwrap();
    path
}

mod moved {
    //! What the migration test puts in one store and finds in the other.

    use mcpgram::secret::Secret;
    use mcpgram::store::{ClientRecord, Connection, Stores};
    use oauth2::basic::BasicTokenType;
    use oauth2::{AccessToken, RefreshToken};
    use rmcp::transport::auth::{OAuthTokenResponse, StoredCredentials};

    pub const SECRETS: [&str; 5] = [
        "access-ALICE-1",
        "refresh-ALICE-1",
        "access-BOB-2",
        "pat-BOB-3",
        "client-SECRET-4",
    ];

    fn client(id: &str) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            client_secret: Some(Secret::new("client-SECRET-4")),
            redirect_uri: "http://127.0.0.1:1/oauth/callback".into(),
            issuer: Some("http://as/".into()),
            scopes: vec!["read".into()],
            assumed_endpoints: false,
            challenge: None,
        }
    }

    fn connection(access: &str, refresh: Option<&str>) -> Connection {
        let mut response = OAuthTokenResponse::new(
            AccessToken::new(access.into()),
            BasicTokenType::Bearer,
            Default::default(),
        );
        response.set_refresh_token(refresh.map(|r| RefreshToken::new(r.into())));
        let mut credentials = StoredCredentials::new(
            "shared".into(),
            Some(response),
            vec!["read".into()],
            Some(60),
        );
        credentials.token_received_at = Some(1_700_000_000);
        Connection {
            credentials,
            client: client("shared"),
        }
    }

    /// Alice: signed in to demo and to a server the config no longer
    /// names, two tools allowed. Bob: signed in to demo, a personal token.
    /// One registered client.
    pub async fn fill(stores: &Stores) {
        let alice = connection("access-ALICE-1", Some("refresh-ALICE-1"));
        stores.credentials.save(1001, "demo", &alice).await.unwrap();
        stores
            .credentials
            .save(1001, "retired", &alice)
            .await
            .unwrap();
        stores.consents.allow(1001, "demo", "greet").await.unwrap();
        stores.consents.allow(1001, "demo", "delete").await.unwrap();
        let bob = connection("access-BOB-2", None);
        stores.credentials.save(2002, "demo", &bob).await.unwrap();
        stores
            .personal_tokens
            .save(2002, "pat", &Secret::new("pat-BOB-3"))
            .await
            .unwrap();
        stores
            .registrations
            .remember("demo", &client("shared"))
            .await
            .unwrap();
    }

    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    fn same(found: Option<Connection>, expected: &Connection) {
        let found = found.expect("the connection was moved");
        assert_eq!(json(&found.credentials), json(&expected.credentials));
        assert_eq!(json(&found.client), json(&expected.client));
    }

    /// Every item [`fill`] put, with the same values, and nothing else.
    pub async fn check(stores: &Stores) {
        let alice = connection("access-ALICE-1", Some("refresh-ALICE-1"));
        same(stores.credentials.load(1001, "demo").await.unwrap(), &alice);
        same(
            stores.credentials.load(1001, "retired").await.unwrap(),
            &alice,
        );
        let bob = connection("access-BOB-2", None);
        same(stores.credentials.load(2002, "demo").await.unwrap(), &bob);
        assert_eq!(
            stores.consents.allowed(1001).await.unwrap(),
            [
                ("demo".to_owned(), "delete".to_owned()),
                ("demo".to_owned(), "greet".to_owned())
            ]
        );
        assert!(stores.consents.allowed(2002).await.unwrap().is_empty());
        assert_eq!(
            stores.personal_tokens.load(2002, "pat").await.unwrap(),
            Some(Secret::new("pat-BOB-3"))
        );
        assert_eq!(
            stores.personal_tokens.load(1001, "pat").await.unwrap(),
            None
        );
        let registrations = stores.registrations.all().await.unwrap();
        assert_eq!(registrations.len(), 1);
        assert_eq!(registrations[0].0, "demo");
        assert_eq!(json(&registrations[0].1), json(&client("shared")));
        assert_eq!(stores.user_data.users().await.unwrap(), [1001, 2002]);
    }
}

/// `mcpgram vault migrate`: the file vault's users (connections with
/// their tokens, personal tokens, consents) and registered clients move
/// into PostgreSQL with the same values; a second run changes nothing;
/// and they move back into an empty vault. Nothing secret is printed,
/// the database's password included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_moves_to_postgres_and_back() {
    use mcpgram::store::Stores;
    use mcpgram::store::postgres::Database;
    use std::sync::Arc;

    let db = test_peers::postgres::cluster().database();
    // Trust authentication ignores the password; it is there to show it
    // is never printed.
    let url = db.url.replacen("mcpgram@", "mcpgram:pw-NEVER-SHOWN@", 1);
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let key_file = vault_dir.join("identity.txt");
    let vault = Arc::new(Vault::open(&vault_dir, &KeySource::File(key_file.clone())).unwrap());
    moved::fill(&Stores::with_flows_in_memory(vault.clone())).await;

    let shared = config_with(
        dir.path(),
        "shared.toml",
        &format!(
            "[vault]\ndir = \"{}\"\n[store]\nkind = \"postgres\"\nurl = \"${{MIGRATED_DATABASE_URL}}\"\n",
            vault_dir.display()
        ),
    );
    let summary = "Copied 2 user(s): 3 connection(s), 1 personal token(s), 2 consent(s); and 1 registered OAuth client(s).";
    let quiet = |stdout: &str, stderr: &str| {
        for secret in moved::SECRETS.iter().chain(&["pw-NEVER-SHOWN"]) {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "{secret} was printed:\n{stdout}\n{stderr}"
            );
        }
    };
    for run in ["first", "again"] {
        let (code, stdout, stderr) =
            migrate(&shared, "postgres", &[], &[("MIGRATED_DATABASE_URL", &url)]);
        assert_eq!(code, Some(0), "{run}: {stderr}");
        assert!(
            stdout.contains(&format!("database {}", db.name)),
            "{stdout}"
        );
        assert!(
            stdout.contains("user 1001: 2 connection(s), 0 personal token(s), 2 consent(s)"),
            "{stdout}"
        );
        assert!(
            stdout.contains("user 2002: 1 connection(s), 1 personal token(s), 0 consent(s)"),
            "{stdout}"
        );
        assert!(stdout.contains(summary), "{run}: {stdout}");
        assert!(stdout.contains("Pending sign-in links were not moved"));
        assert!(stdout.contains("left as they were"));
        quiet(&stdout, &stderr);
    }
    let database = Database::connect(&Secret::new(url.clone())).await.unwrap();
    moved::check(&Stores::postgres(database.clone(), vault.clone())).await;
    moved::check(&Stores::with_flows_in_memory(vault.clone())).await;
    database.close().await;

    // Back, into an empty vault of the same key; the database named by
    // DATABASE_URL, the config saying files.
    let back_dir = dir.path().join("back");
    let files = config_with(
        dir.path(),
        "files.toml",
        &format!(
            "[vault]\ndir = \"{}\"\nkey_file = \"{}\"\n",
            back_dir.display(),
            key_file.display()
        ),
    );
    let (code, stdout, stderr) = migrate(&files, "files", &[], &[("DATABASE_URL", &url)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(summary), "{stdout}");
    assert!(
        stdout.contains("The database was left as it was"),
        "{stdout}"
    );
    quiet(&stdout, &stderr);
    let back = Arc::new(Vault::open(&back_dir, &KeySource::File(key_file.clone())).unwrap());
    moved::check(&Stores::with_flows_in_memory(back)).await;

    // Without a database named anywhere, said so.
    let (code, _, stderr) = migrate(&files, "files", &[], &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

/// A database that cannot be reached, or a vault its key cannot open:
/// exit 1 and one line, which names the database but not its password.
#[tokio::test]
async fn a_migration_that_cannot_start_says_why_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let key_file = vault_dir.join("identity.txt");
    {
        let vault = Vault::open(&vault_dir, &KeySource::File(key_file.clone())).unwrap();
        vault
            .put(Namespace::System, "vault.format", Secret::new("1"))
            .await
            .unwrap();
    }
    let config = config_with(
        dir.path(),
        "mcpgram.toml",
        &format!("[vault]\ndir = \"{}\"\n", vault_dir.display()),
    );
    let one_line = |stderr: &str| {
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };

    let url = "postgres://bot:hunter2@127.0.0.1:1/mcpgram";
    let (code, stdout, stderr) = migrate(&config, "postgres", &["--url", url], &[]);
    assert_eq!(code, Some(1), "{stdout}");
    one_line(&stderr);
    assert!(
        stderr.contains("cannot use the PostgreSQL database, database mcpgram on 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));

    // Another key: the vault's files cannot be read.
    std::fs::remove_file(&key_file).unwrap();
    drop(Vault::open(&vault_dir, &KeySource::File(key_file.clone())).unwrap());
    let (code, _, stderr) = migrate(&config, "postgres", &[], &[("DATABASE_URL", url)]);
    assert_eq!(code, Some(1));
    one_line(&stderr);
    assert!(stderr.contains("cannot decrypt"), "{stderr}");
}

/// With `store.kind = "postgres"`, the terminal's `call` reads its
/// personal token from the database (sealed with the vault's key), as the
/// bot's replicas do; without one there, it says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_reads_its_tokens_where_the_config_keeps_them() {
    use mcpgram::store::Stores;
    use mcpgram::store::postgres::Database;
    use std::sync::Arc;

    let server = test_peers::OidcMcpServer::start().await;
    let db = test_peers::postgres::cluster().database();
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let path = dir.path().join("mcpgram.toml");
    std::fs::write(
        &path,
        format!(
            "[telegram]\ntoken = \"1:x\"\n[http]\nlisten = \"127.0.0.1:0\"\n[vault]\ndir = \"{}\"\n\
             [store]\nkind = \"postgres\"\nurl = \"${{TERMINAL_DATABASE_URL}}\"\n\
             [[mcp.servers]]\nid = \"pat\"\nurl = \"{}\"\ntrusted = true\n\
             [mcp.servers.user_token]\nheader = \"Authorization\"\nprefix = \"Bearer \"\n",
            vault_dir.display(),
            server.mcp_url()
        ),
    )
    .unwrap();
    let call = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
            .args(["call", "pat", "whoami", "--config"])
            .arg(&path)
            .env_remove("MCPGRAM_VAULT_KEY")
            .env("TERMINAL_DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap();
        outcome(&out)
    };

    let (code, _, stderr) = call().await;
    assert_eq!(code, Some(1), "no token yet: {stderr}");
    assert!(stderr.contains("token"), "{stderr}");

    // The terminal made the vault's key on its first run; the token goes
    // into the database sealed with it.
    let vault = Arc::new(
        Vault::open(&vault_dir, &KeySource::File(vault_dir.join("identity.txt"))).unwrap(),
    );
    let database = Database::connect(&Secret::new(db.url.clone()))
        .await
        .unwrap();
    let token = server.personal_token("terminal-user").await;
    Stores::postgres(database.clone(), vault)
        .personal_tokens
        .save(mcpgram::terminal::TERMINAL_USER, "pat", &Secret::new(token))
        .await
        .unwrap();
    database.close().await;

    let (code, stdout, stderr) = call().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("sub=terminal-user"), "{stdout}");
    assert!(
        std::fs::read_dir(&vault_dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("user-")),
        "nothing of the terminal user's in the vault's files"
    );
}

/// A server that resets the first connection (its accept queue full under
/// a burst): opening the session is tried once more on a new connection,
/// and the listing arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_while_opening_a_session_is_tried_once_more() {
    let server = test_peers::FastServer::start().await;
    let backend: url::Url = server.mcp_url().parse().unwrap();
    let backend_addr = backend.socket_addrs(|| None).unwrap()[0];
    let front = test_peers::reset_front::ResetFront::start(backend_addr, 1).await;
    let mut url = backend.clone();
    url.set_port(Some(front.addr().port())).unwrap();
    let (code, stdout, stderr) = without_config(&["tools", url.as_str()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("sum") && stdout.contains("echo"),
        "{stdout}"
    );
    assert!(front.accepted() >= 2, "the first connection was reset");
}

/// A finished command as the tests read it: exit code, stdout, stderr.
fn outcome(out: &std::process::Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
