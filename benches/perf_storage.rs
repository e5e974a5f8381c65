//! Storage and start-up numbers (README), printed as a Markdown table:
//!
//! - the vault's per-operation time (save, load) with 1,000 and 100,000
//!   users, one age file each, against a baseline that keeps every user
//!   in one age-encrypted JSON map and rewrites it on each save;
//! - the memory one pending connect flow holds in the in-memory table;
//! - the memory one warm MCP session holds on the bot's side (against the
//!   official everything server, a separate node process whose memory is
//!   not counted), and what closing them gives back;
//! - the time from spawning the release binary to its first `getUpdates`
//!   (against the fake Telegram), and its resident set once idle.
//!
//! `cargo bench --bench perf_storage` measures; without `--bench` (as in
//! `cargo test --bench perf_storage`, which CI runs) it is a smoke run with
//! tiny counts that only checks every measurement produced numbers.
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_telegram::FakeTelegram;
use mcpgram::gateway::{Gateway, Silent};
use mcpgram::secret::Secret;
use mcpgram::store::flows::FlowTable;
use mcpgram::store::{
    ChatMessage, ClientRecord, FlowOwner, FlowState, FlowStore, PendingFlow, Stores,
};
use mcpgram::vault::{KeySource, Namespace, Vault};
use rand::Rng;
use rmcp::transport::auth::StoredAuthorizationState;
use test_peers::EverythingServer;

mod support;

use support::kernel;

const KEY: &str = "mcp.oauth.demo.credentials";

/// Counts for one run: full measurement or a smoke run.
struct Plan {
    full: bool,
    /// User counts for the vault: small, large.
    users: [usize; 2],
    /// Timed saves and loads per user count (distinct users each).
    vault_ops: usize,
    /// Timed saves and loads of the one-file baseline, per user count.
    baseline_ops: [usize; 2],
    flows: usize,
    /// Warm MCP sessions opened at once (distinct users, one server).
    sessions: usize,
    starts: usize,
    /// How long each start idles before its resident set is read.
    idle: Duration,
}

impl Plan {
    fn new(full: bool) -> Self {
        if full {
            Self {
                full,
                users: [1_000, 100_000],
                vault_ops: 250,
                baseline_ops: [200, 5],
                flows: 10_000,
                sessions: 500,
                starts: 10,
                idle: Duration::from_secs(3),
            }
        } else {
            Self {
                full,
                users: [10, 100],
                vault_ops: 4,
                baseline_ops: [3, 2],
                flows: 50,
                sessions: 5,
                starts: 1,
                idle: Duration::from_millis(100),
            }
        }
    }
}

/// A token record about the size of a real one (a JWT access token, a
/// refresh token, the client), different on every call.
fn token_record() -> String {
    let mut rng = rand::thread_rng();
    let mut random = |len: usize| -> String {
        (0..len)
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect()
    };
    format!(
        r#"{{"credentials":{{"client_id":"{}","token_response":{{"access_token":"{}","token_type":"Bearer","expires_in":3600,"refresh_token":"{}","scope":"read write"}},"granted_scopes":["read","write"],"token_received_at":1750000000}},"client":{{"client_id":"{}","client_secret":null,"redirect_uri":"https://bot.example.org/oauth/callback","issuer":"https://auth.example.com","scopes":["read","write"],"assumed_endpoints":false,"challenge":null}}}}"#,
        random(36),
        random(900),
        random(64),
        random(36),
    )
}

fn median(mut took: Vec<Duration>) -> Duration {
    assert!(!took.is_empty(), "a measurement produced no numbers");
    took.sort();
    took[took.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn user_file(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("user-{id}.age"))
}

/// Copies user 0's sealed file to users `from..to`: a namespace file does
/// not name its user, so the copies are valid namespaces.
fn copy_users(dir: &Path, from: usize, to: usize) {
    let template = user_file(dir, 0);
    let threads = 8;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let template = &template;
            scope.spawn(move || {
                for id in (from + t..to).step_by(threads) {
                    fs::copy(template, user_file(dir, id)).expect("copy a namespace file");
                }
            });
        }
    });
}

struct VaultRow {
    users: usize,
    open: Duration,
    save: Duration,
    load: Duration,
}

/// Saves into and loads from the namespaces of random users a freshly
/// opened vault has not cached: each operation reads and decrypts the
/// user's file, and a save re-encrypts and writes it (fsync included).
async fn measure_vault(dir: &Path, key: &KeySource, users: usize, ops: usize) -> VaultRow {
    let start = Instant::now();
    let vault = Vault::open(dir, key).expect("open the vault");
    let open = start.elapsed();
    let picked = rand::seq::index::sample(&mut rand::thread_rng(), users - 1, 2 * ops);
    let ids: Vec<u64> = picked.iter().map(|i| i as u64 + 1).collect();
    let (save_ids, load_ids) = ids.split_at(ops);
    let mut saves = Vec::new();
    for &id in save_ids {
        let record = Secret::new(token_record());
        let start = Instant::now();
        vault
            .put(Namespace::User(id), KEY, record)
            .await
            .expect("save");
        saves.push(start.elapsed());
    }
    let mut loads = Vec::new();
    for &id in load_ids {
        let start = Instant::now();
        let found = vault.get(Namespace::User(id), KEY).await.expect("load");
        loads.push(start.elapsed());
        assert!(found.is_some(), "user {id} has a record");
    }
    VaultRow {
        users,
        open,
        save: median(saves),
        load: median(loads),
    }
}

/// The design the vault replaced: every user's records in one
/// age-encrypted JSON map, read whole and rewritten whole.
struct OneFile {
    path: PathBuf,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

type AllUsers = HashMap<String, BTreeMap<String, String>>;

impl OneFile {
    fn new(dir: &Path) -> Self {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        Self {
            path: dir.join("all-users.age"),
            identity,
            recipient,
        }
    }

    fn read(&self) -> AllUsers {
        let bytes = fs::read(&self.path).expect("read the one file");
        let plaintext = age::decrypt(&self.identity, &bytes).expect("decrypt");
        serde_json::from_slice(&plaintext).expect("parse")
    }

    /// Written as the vault writes: temp file, fsync, rename, fsync of the
    /// directory.
    fn write(&self, all: &AllUsers) {
        let plaintext = serde_json::to_vec(all).expect("serialize");
        let ciphertext = age::encrypt(&self.recipient, &plaintext).expect("encrypt");
        let temp = self.path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .expect("create temp");
        file.write_all(&ciphertext).expect("write temp");
        file.sync_all().expect("sync temp");
        drop(file);
        fs::rename(&temp, &self.path).expect("replace");
        File::open(self.path.parent().unwrap())
            .and_then(|dir| dir.sync_all())
            .expect("sync directory");
    }

    fn populate(&self, users: usize) {
        let record = token_record();
        let all: AllUsers = (0..users)
            .map(|id| {
                (
                    id.to_string(),
                    BTreeMap::from([(KEY.to_owned(), record.clone())]),
                )
            })
            .collect();
        self.write(&all);
    }

    fn save(&self, user: usize) {
        let mut all = self.read();
        all.entry(user.to_string())
            .or_default()
            .insert(KEY.to_owned(), token_record());
        self.write(&all);
    }

    fn load(&self, user: usize) -> Option<String> {
        self.read()
            .remove(&user.to_string())
            .and_then(|mut entries| entries.remove(KEY))
    }
}

struct BaselineRow {
    users: usize,
    bytes: u64,
    save: Duration,
    load: Duration,
}

fn measure_baseline(dir: &Path, users: usize, ops: usize) -> BaselineRow {
    let one = OneFile::new(dir);
    one.populate(users);
    let bytes = fs::metadata(&one.path).expect("the one file").len();
    let mut rng = rand::thread_rng();
    let mut saves = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..ops {
        let user = rng.gen_range(0..users);
        let start = Instant::now();
        one.save(user);
        saves.push(start.elapsed());
        let user = rng.gen_range(0..users);
        let start = Instant::now();
        let found = one.load(user);
        loads.push(start.elapsed());
        assert!(found.is_some(), "user {user} has a record");
    }
    BaselineRow {
        users,
        bytes,
        save: median(saves),
        load: median(loads),
    }
}

fn rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS in /proc/self/status")
        * 1024
}

/// A pending flow as a real connect leaves it: random state and start id,
/// a PKCE verifier, a dynamically registered client, the authorization
/// URL with its query.
fn pending_flow(user_id: u64) -> PendingFlow {
    let state = FlowState::random();
    let verifier = oauth2::PkceCodeVerifier::new(FlowState::random().as_str().to_owned());
    let csrf = oauth2::CsrfToken::new(state.as_str().to_owned());
    let client_id = format!("{:032x}", rand::random::<u128>());
    let authorize_url = format!(
        "https://auth.example.com/oauth2/authorize?response_type=code&client_id={client_id}\
         &state={}&code_challenge={}&code_challenge_method=S256\
         &redirect_uri=https%3A%2F%2Fbot.example.org%2Foauth%2Fcallback\
         &scope=read+write&resource=https%3A%2F%2Fmcp.example.com%2Fmcp",
        state.as_str(),
        FlowState::random().as_str(),
    );
    PendingFlow {
        state,
        start_id: FlowState::random(),
        owner: FlowOwner {
            user_id,
            chat_id: user_id as i64,
        },
        requester: format!("@user_{user_id}"),
        server_id: "demo".into(),
        expires_at: PendingFlow::expires_after(Duration::from_secs(600)),
        authorization: StoredAuthorizationState::new_with_expected_issuer(
            &verifier,
            &csrf,
            Some("https://auth.example.com".into()),
            true,
        )
        .with_requested_scopes(vec!["read".into(), "write".into()]),
        client: ClientRecord {
            client_id,
            client_secret: None,
            redirect_uri: "https://bot.example.org/oauth/callback".into(),
            issuer: Some("https://auth.example.com".into()),
            scopes: vec!["read".into(), "write".into()],
            assumed_endpoints: false,
            challenge: None,
        },
        authorize_url: Secret::new(authorize_url),
        binding: None,
        message: Some(ChatMessage {
            chat_id: user_id as i64,
            message_id: 1,
        }),
        resume: None,
    }
}

/// The bytes a flow's strings hold on the heap (lengths, not capacities).
fn heap_strings(flow: &PendingFlow) -> usize {
    let a = &flow.authorization;
    let c = &flow.client;
    let option = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let list = |v: &[String]| v.iter().map(String::len).sum::<usize>();
    flow.state.as_str().len()
        + flow.start_id.as_str().len()
        + flow.requester.len()
        + flow.server_id.len()
        + a.pkce_verifier.len()
        + a.csrf_token.len()
        + option(&a.expected_issuer)
        + list(&a.requested_scopes)
        + c.client_id.len()
        + c.redirect_uri.len()
        + option(&c.issuer)
        + list(&c.scopes)
        + option(&c.challenge)
        + flow.authorize_url.expose().len()
        + option(&flow.binding)
}

struct FlowRow {
    n: usize,
    rss_per_flow: f64,
    size_of: usize,
    heap: usize,
    json: usize,
}

async fn measure_flows(n: usize) -> FlowRow {
    let sample = pending_flow(0);
    let heap = heap_strings(&sample);
    let json = serde_json::to_vec(&sample).expect("serialize a flow").len();
    drop(sample);
    let before = rss_bytes();
    let table = FlowTable::in_memory();
    for user in 1..=n as u64 {
        table
            .insert(pending_flow(user), 10)
            .await
            .expect("insert a flow");
    }
    let after = rss_bytes();
    assert!(
        table.by_start_id("not-a-start-id").await.is_err(),
        "the table answers"
    );
    drop(table);
    FlowRow {
        n,
        rss_per_flow: after.saturating_sub(before) as f64 / n as f64,
        size_of: std::mem::size_of::<PendingFlow>(),
        heap,
        json,
    }
}

struct SessionRow {
    n: usize,
    /// RSS before opening the sessions, with them open, after closing them.
    before: u64,
    open: u64,
    closed: u64,
}

impl SessionRow {
    fn per_session(&self, rss: u64) -> f64 {
        (rss as f64 - self.before as f64) / self.n as f64
    }
}

fn print_sessions(sessions: &SessionRow) {
    println!(
        "| Warm MCP session: RSS growth / session ({} open) | {:.1} KB | ≤ 64 KB |",
        sessions.n,
        sessions.per_session(sessions.open) / 1024.0
    );
    println!(
        "| Warm MCP sessions, all {} closed: RSS still above before opening | {:.1} KB / session ({:.0}% of the growth returned) | |",
        sessions.n,
        sessions.per_session(sessions.closed) / 1024.0,
        100.0 * sessions.open.saturating_sub(sessions.closed) as f64
            / sessions.open.saturating_sub(sessions.before).max(1) as f64
    );
}

/// Opens `n` warm sessions to the everything server, one per user (a
/// session is per user and server), each by a `get-sum` call through the
/// gateway, and reads the bot's RSS before, with them open, and after
/// closing them all as idle.
async fn measure_sessions(n: usize, settle: Duration) -> SessionRow {
    let server = EverythingServer::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[telegram]\ntoken = \"1:x\"\n[[mcp.servers]]\nid = \"every\"\nurl = \"{}\"\ntrusted = true\n",
        server.mcp_url()
    );
    let config = Arc::new(mcpgram::config::parse(&text, dir.path(), &|_| None).expect("config"));
    let vault = Vault::open(
        &dir.path().join("vault"),
        &KeySource::File(dir.path().join("identity.txt")),
    )
    .expect("open the vault");
    let gateway = Gateway::new(
        config,
        Stores::with_flows_in_memory(Arc::new(vault)),
        "http://127.0.0.1:1/oauth/callback".into(),
        Arc::new(Silent),
    );
    let every = gateway.find_server("every").expect("the server");
    let sum = |user: u64| {
        let arguments = serde_json::json!({"a": 1, "b": 2}).as_object().cloned();
        let (gateway, every) = (&gateway, every.clone());
        async move {
            tokio::time::timeout(
                Duration::from_secs(60),
                gateway.call_tool(user, &every, "get-sum", arguments, None),
            )
            .await
            .expect("get-sum in time")
            .expect("get-sum answers")
        }
    };
    let close_all = || {
        let later = Instant::now() + Duration::from_secs(3600);
        let closed = gateway.close_idle_sessions(later);
        assert_eq!(gateway.warm_sessions(), 0, "every session closed");
        closed
    };

    // A first session pays for what every later one shares (the HTTP
    // client, lazily built statics): opened and closed before measuring.
    sum(0).await;
    assert_eq!(close_all(), 1);
    tokio::time::sleep(settle).await;

    let before = rss_bytes();
    for user in 1..=n as u64 {
        sum(user).await;
    }
    let open = rss_bytes();
    assert_eq!(gateway.warm_sessions(), n, "one warm session per user");

    assert_eq!(close_all(), n);
    // Closing runs in spawned tasks.
    tokio::time::sleep(settle).await;
    let closed = rss_bytes();

    gateway.shutdown().await;
    drop(server);
    SessionRow {
        n,
        before,
        open,
        closed,
    }
}

fn bot_config(telegram: &FakeTelegram, dir: &Path) -> String {
    format!(
        r#"[telegram]
token = "{token}"
api_url = "{api}"

[http]
listen = "127.0.0.1:0"

[vault]
dir = "{vault}"
"#,
        token = telegram.token(),
        api = telegram.api_url(),
        vault = dir.join("vault").display(),
    )
}

/// The bot's resident set once idle, in MiB: all of it, and the part
/// that is its own memory rather than pages of the binary mapped in.
#[derive(Clone, Copy)]
struct IdleRss {
    total: f64,
    anon: f64,
}

/// Spawns the binary and times until the fake Telegram sees its first
/// `getUpdates`; then lets it idle for `idle` (long-polling, nothing to
/// do), reads its resident set, and stops it with SIGTERM.
async fn start_once(telegram: &FakeTelegram, config: &Path, idle: Duration) -> (Duration, IdleRss) {
    let polls = telegram
        .calls()
        .iter()
        .filter(|call| call.method == "getupdates")
        .count();
    let start = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mcpgram"))
        .arg("--config")
        .arg(config)
        .env_remove("MCPGRAM_VAULT_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mcpgram");
    telegram
        .wait_for_call_count("getupdates", polls + 1, Duration::from_secs(60))
        .await;
    let took = start.elapsed();
    // Not a wait for an event: the bot is meant to do nothing meanwhile.
    tokio::time::sleep(idle).await;
    let pid = child.id().expect("the bot runs");
    let rss = IdleRss {
        total: support::status_mib(pid, "VmRSS"),
        anon: support::status_mib(pid, "RssAnon"),
    };
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    (took, rss)
}

fn print_startup(starts: usize, startup: Duration, idle: Duration, idle_rss: IdleRss) {
    println!(
        "| Start-up to first `getUpdates` (median of {starts}) | {} | ≤ 50 ms |",
        ms(startup)
    );
    println!(
        "| Idle RSS, {:.1} s after the first `getUpdates` (median of {starts}) | {:.1} MiB ({:.1} MB): {:.1} MiB its own memory, the rest the binary's pages mapped in | ≤ 25 MB |",
        idle.as_secs_f64(),
        idle_rss.total,
        idle_rss.total * 1.048_576,
        idle_rss.anon
    );
}

/// Median start-up time, and the median idle resident set.
async fn measure_startup(runs: usize, warm_up: bool, idle: Duration) -> (Duration, IdleRss) {
    let telegram = FakeTelegram::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mcpgram.toml");
    fs::write(&config, bot_config(&telegram, dir.path())).expect("write config");
    if warm_up {
        // The first start creates the vault and its key, and reads the
        // binary from disk: a restart is what is measured.
        start_once(&telegram, &config, Duration::ZERO).await;
    }
    let mut took = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let (time, idle_rss) = start_once(&telegram, &config, idle).await;
        took.push(time);
        rss.push(idle_rss);
    }
    telegram.shutdown();
    rss.sort_by(|a, b| a.total.total_cmp(&b.total));
    (median(took), rss[rss.len() / 2])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let plan = Plan::new(std::env::args().any(|arg| arg == "--bench"));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "perf_storage: {} mode",
        if plan.full { "full" } else { "smoke" }
    );

    // `cargo bench --bench perf_storage -- startup`: start-up and idle
    // memory alone (they measure the release binary, not this process).
    if std::env::args().any(|arg| arg == "startup") {
        let (startup, idle_rss) = measure_startup(plan.starts, plan.full, plan.idle).await;
        print_startup(plan.starts, startup, plan.idle, idle_rss);
        return;
    }

    // First, while the heap holds nothing freed by the other measurements
    // for the sessions to reuse.
    eprintln!("warm MCP sessions: {}", plan.sessions);
    let settle = Duration::from_millis(if plan.full { 3000 } else { 500 });
    let sessions = measure_sessions(plan.sessions, settle).await;
    // `cargo bench --bench perf_storage -- sessions`: this measurement
    // alone, e.g. under a heap profiler.
    if std::env::args().any(|arg| arg == "sessions") {
        print_sessions(&sessions);
        return;
    }

    // The vault: one file per user.
    let vault_dir = tempfile::tempdir().expect("temp dir");
    let key = KeySource::File(vault_dir.path().join("identity.txt"));
    {
        let vault = Vault::open(vault_dir.path(), &key).expect("create the vault");
        vault
            .put(Namespace::User(0), KEY, Secret::new(token_record()))
            .await
            .expect("seal the template namespace");
    }
    let mut vault_rows = Vec::new();
    let mut have = 1;
    for users in plan.users {
        eprintln!("vault: populating {users} users");
        copy_users(vault_dir.path(), have, users);
        have = users;
        // Written back before timing, so saves' fsyncs do not pay for the
        // copies.
        let _ = std::process::Command::new("sync").status();
        vault_rows.push(measure_vault(vault_dir.path(), &key, users, plan.vault_ops).await);
    }
    drop(vault_dir);

    // The baseline: one file for everyone.
    let mut baseline_rows = Vec::new();
    for (users, ops) in plan.users.into_iter().zip(plan.baseline_ops) {
        eprintln!("baseline: {users} users in one file");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        baseline_rows.push(
            tokio::task::spawn_blocking(move || measure_baseline(&path, users, ops))
                .await
                .expect("baseline"),
        );
    }

    eprintln!("pending flows: {}", plan.flows);
    let flows = measure_flows(plan.flows).await;

    eprintln!("start-up: {} runs", plan.starts);
    let (startup, idle_rss) = measure_startup(plan.starts, plan.full, plan.idle).await;

    let [small, large] = [&vault_rows[0], &vault_rows[1]];
    let [base_small, base_large] = [&baseline_rows[0], &baseline_rows[1]];
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    let (s, l) = (small.users, large.users);
    let mode = if plan.full {
        "`cargo bench --bench perf_storage`"
    } else {
        "smoke run (tiny counts; not numbers to quote)"
    };
    println!();
    println!(
        "Machine: {cores} cores (available_parallelism), Linux {}; {mode}.",
        kernel()
    );
    println!();
    println!("| Measurement | Result | Goal |");
    println!("|---|---|---|");
    for row in &vault_rows {
        println!(
            "| Vault, {} users: save (median of {}) | {} | |",
            row.users,
            plan.vault_ops,
            ms(row.save)
        );
        println!(
            "| Vault, {} users: load (median of {}) | {} | |",
            row.users,
            plan.vault_ops,
            ms(row.load)
        );
        println!(
            "| Vault, {} users: `Vault::open` | {} | |",
            row.users,
            ms(row.open)
        );
    }
    let save_ratio = ratio(small.save, large.save);
    let load_ratio = ratio(small.load, large.load);
    println!("| Vault save, {l} / {s} users | {save_ratio:.2}× | ≤ 1.5× |");
    println!("| Vault load, {l} / {s} users | {load_ratio:.2}× | ≤ 1.5× |");
    for (row, ops) in baseline_rows.iter().zip(plan.baseline_ops) {
        println!(
            "| Baseline one file ({} KB), {} users: save (median of {ops}) | {} | |",
            row.bytes / 1000,
            row.users,
            ms(row.save)
        );
        println!(
            "| Baseline one file, {} users: load (median of {ops}) | {} | |",
            row.users,
            ms(row.load)
        );
    }
    println!(
        "| Baseline save, {l} / {s} users | {:.0}× | |",
        ratio(base_small.save, base_large.save)
    );
    println!(
        "| Baseline load, {l} / {s} users | {:.0}× | |",
        ratio(base_small.load, base_large.load)
    );
    println!(
        "| Pending flow: RSS growth / flow ({} in a `FlowTable`) | {:.0} B | ≤ 4 KB |",
        flows.n, flows.rss_per_flow
    );
    println!(
        "| Pending flow: `size_of` + heap strings (JSON on disk) | {} + {} = {} B ({} B) | |",
        flows.size_of,
        flows.heap,
        flows.size_of + flows.heap,
        flows.json
    );
    print_sessions(&sessions);
    print_startup(plan.starts, startup, plan.idle, idle_rss);

    // The smoke run's only claim: every measurement produced numbers.
    for d in [
        small.save,
        small.load,
        large.save,
        large.load,
        base_small.save,
        base_large.save,
        startup,
    ] {
        assert!(d > Duration::ZERO, "a measurement took no time");
    }
    assert!(save_ratio.is_finite() && load_ratio.is_finite());
    assert!(flows.rss_per_flow.is_finite() && flows.size_of > 0 && flows.heap > 0);
    assert!(sessions.before > 0 && sessions.open > 0 && sessions.closed > 0);
    assert!(idle_rss.total > idle_rss.anon && idle_rss.anon > 0.0);
}
