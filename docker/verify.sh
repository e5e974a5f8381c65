#!/usr/bin/env bash
# Build the image and check that it runs. You do not need a Docker engine or
# an image registry for this, only Debian's packages.
#
#   docker/verify.sh [--config FILE] [--binary FILE] [--rebuild-base] [--keep]
#
# Run it from anywhere in the repository, as root or with sudo:
#   1. installs buildah and debootstrap when they are missing (apt-get);
#   2. makes the runtime base image from Debian's packages (debootstrap
#      --variant=minbase of the suite that docker/Dockerfile's RUNTIME_IMAGE
#      names), tagged localhost/debian-minbase:<suite>. It is kept between
#      runs; --rebuild-base makes it again;
#   3. builds the release binary on the host (cargo build --release --locked
#      --bin mcpgram, or --binary FILE) and then the image from a copy of
#      docker/Dockerfile whose build stage is replaced by that binary. The
#      runtime stage is docker/Dockerfile's own, unchanged (checked);
#   4. runs the image's ENTRYPOINT + CMD in a buildah container on the host
#      network, as compose does: the config mounted read-only at
#      /etc/mcpgram/mcpgram.toml, TELEGRAM_BOT_TOKEN and RUST_LOG in the
#      environment, all capabilities dropped. By default the config is made
#      here: a stand-in Telegram Bot API on loopback (getMe, setMyCommands,
#      getUpdates long polls that deliver queued updates, the bot's messages
#      recorded) and one MCP server, "demo": the MCP TypeScript SDK's example
#      server with its demo OAuth provider (the one the tests use), run on
#      loopback with node from tests/peers. Then it runs the image's
#      HEALTHCHECK command in the same container, waits for the bot to poll,
#      reads its idle memory, plays one user (Ada, id 1001): "/connect demo",
#      opens the link's authorization server (it approves at once) and
#      follows its redirect to the bot's /oauth/callback, expects
#      "Connected to Demo", then `/call demo greet {"name": "Ada"}` and
#      expects "Hello, Ada!". Last it sends SIGTERM to the container's init
#      (tini, as `docker stop` does) and expects exit 0 within 10 s. Without
#      tests/peers/node_modules (tests/setup.sh installs it) or Node.js >= 20
#      the /connect and /call part is skipped, with a SKIP line;
#   5. prints the image size, binary size, idle RSS and PASS/FAIL lines;
#      exits non-zero on any failure.
#
# --config FILE runs with your config instead (no stand-in is started; keep
# vault.dir under /data and http.listen on loopback or 0.0.0.0).
# --keep leaves the container for a look (buildah containers; buildah rm).
# Environment: MCPGRAM_VERIFY_STORAGE_DRIVER (buildah's storage driver,
# default vfs, which works anywhere; overlay is faster where the kernel and
# filesystem allow it), BUILDAH_ISOLATION (default chroot),
# MCPGRAM_VERIFY_MIRROR / MCPGRAM_VERIFY_SECURITY_MIRROR (default:
# the host's apt sources, else deb.debian.org), MCPGRAM_VERIFY_IDLE_SECS
# (default 5: how long the bot idles before its RSS is read),
# MCPGRAM_VERIFY_NODE (the node to run the MCP server with; default the
# caller's node on PATH, else tests/conformance's Node.js 22).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

config_file="" binary="" rebuild_base=0 keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config_file="$(realpath "${2:?--config needs a file}")"; shift 2 ;;
        --binary) binary="$(realpath "${2:?--binary needs a file}")"; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "verify.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
repo="$(pwd)"
dockerfile="$repo/docker/Dockerfile"

start_all=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '== %s\n' "$*"; }
failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
die() { printf 'FAIL %s\n' "$*"; exit 1; }

# The binary is built as the calling user; the rest needs root.
build_binary() {
    say "binary: cargo build --release --locked --bin mcpgram"
    local t; t=$(date +%s.%N)
    # As the Dockerfile's build stage builds it: without CI's clippy wrapper
    # and -D warnings (.ci/run exports them before it calls this script).
    env -u RUSTFLAGS -u RUSTC_WORKSPACE_WRAPPER \
        cargo build --release --locked --bin mcpgram
    binary="$repo/target/release/mcpgram"
    time_binary=$(since "$t")
}
time_binary=given
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "run as root (buildah, debootstrap and apt-get need it); no sudo here"
    [ -n "$binary" ] || build_binary
    args=(--binary "$binary")
    [ -n "$config_file" ] && args+=(--config "$config_file")
    [ "$rebuild_base" = 1 ] && args+=(--rebuild-base)
    [ "$keep" = 1 ] && args+=(--keep)
    # The caller's node (sudo's PATH may not have it, nvm's for one).
    MCPGRAM_VERIFY_NODE="${MCPGRAM_VERIFY_NODE:-$(type -P node || true)}"
    export MCPGRAM_VERIFY_NODE
    exec sudo --preserve-env=MCPGRAM_VERIFY_STORAGE_DRIVER,BUILDAH_ISOLATION,MCPGRAM_VERIFY_MIRROR,MCPGRAM_VERIFY_SECURITY_MIRROR,MCPGRAM_VERIFY_IDLE_SECS,MCPGRAM_VERIFY_NODE,RUST_LOG,TELEGRAM_BOT_TOKEN,MCPGRAM_VAULT_KEY \
        "$repo/docker/verify.sh" "${args[@]}"
fi

storage_driver="${MCPGRAM_VERIFY_STORAGE_DRIVER:-vfs}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
# Every buildah command below on the same storage.
buildah() { command buildah --storage-driver "$storage_driver" "$@"; }
idle_secs="${MCPGRAM_VERIFY_IDLE_SECS:-5}"

# --- 1. tools ---------------------------------------------------------------
t=$(date +%s.%N)
missing=()
type -P buildah >/dev/null || missing+=(buildah)
type -P debootstrap >/dev/null || missing+=(debootstrap)
type -P python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi
time_tools=$(since "$t")

# --- temporary state, removed on exit ----------------------------------------
tmp="$(mktemp -d /tmp/mcpgram-verify.XXXXXX)"
chmod 0755 "$tmp"
stub_pid="" node_pid="" run_pid="" ctr="" base_ctr=""
cleanup() {
    local code=$?
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
        # The container's processes, deepest first, each reaped by its
        # parent before the next goes; buildah run then ends by itself.
        local -a procs; mapfile -t procs < <(descendants "$run_pid")
        local i
        for ((i = ${#procs[@]} - 1; i >= 0; i--)); do
            kill -0 "$run_pid" 2>/dev/null || break
            kill -KILL "${procs[i]}" 2>/dev/null || continue
            for _ in $(seq 20); do [ -e "/proc/${procs[i]}" ] || break; sleep 0.1; done
        done
        kill -KILL "$run_pid" 2>/dev/null || true
        wait "$run_pid" 2>/dev/null || true
    fi
    [ -n "$stub_pid" ] && { kill "$stub_pid" 2>/dev/null || true; wait "$stub_pid" 2>/dev/null || true; }
    [ -n "$node_pid" ] && { kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; }
    if [ -n "$base_ctr" ]; then buildah rm "$base_ctr" >/dev/null 2>&1 || true; fi
    if [ -n "$ctr" ]; then
        if [ "$keep" = 1 ]; then
            echo "kept container $ctr (buildah rm $ctr when done)"
        else
            buildah rm "$ctr" >/dev/null 2>&1 || true
        fi
    fi
    rm -rf "$tmp"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every process below $1, one pid a line (the container's processes run as
# host processes under chroot isolation).
descendants() {
    local want="$1" s pid ppid
    local -A parent=()
    for s in /proc/[0-9]*/status; do
        pid="${s#/proc/}"; pid="${pid%/status}"
        ppid=$(awk '/^PPid:/ { print $2; exit }' "$s" 2>/dev/null) || continue
        [ -n "$ppid" ] && parent[$pid]=$ppid
    done
    local -a queue=("$want") out=()
    while [ ${#queue[@]} -gt 0 ]; do
        local head="${queue[0]}"; queue=("${queue[@]:1}")
        for pid in "${!parent[@]}"; do
            if [ "${parent[$pid]}" = "$head" ]; then out+=("$pid"); queue+=("$pid"); fi
        done
    done
    printf '%s\n' "${out[@]}"
}
# The first process below $1 whose name is $2.
find_proc() {
    local p
    for p in $(descendants "$1"); do
        [ "$(awk '/^Name:/ { print $2; exit }' "/proc/$p/status" 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
    done
    return 1
}
status_field() { awk -v k="$2:" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "/proc/$1/status" 2>/dev/null; }
human() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# --- 2. the runtime base image -----------------------------------------------
runtime_default="$(sed -n 's/^ARG RUNTIME_IMAGE=//p' "$dockerfile" | head -n1)"
[ -n "$runtime_default" ] || die "docker/Dockerfile has no 'ARG RUNTIME_IMAGE=<image>'"
runtime_tag="${runtime_default##*:}"      # bookworm-slim
suite="${runtime_tag%%-*}"                # bookworm
base_image="localhost/debian-minbase:$suite"

# The host's Debian mirrors (deb822 .sources or one-line .list files).
host_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) print $i }
             /^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; break } }' "$f"
    done
}
mirror="${MCPGRAM_VERIFY_MIRROR:-$(host_uris | grep -E '/debian/?$' | head -n1 || true)}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${MCPGRAM_VERIFY_SECURITY_MIRROR:-$(host_uris | grep -E '/debian-security/?$' | head -n1 || true)}"
security="${security:-http://deb.debian.org/debian-security}"

t=$(date +%s.%N)
base_made=0
if [ "$rebuild_base" = 1 ] || ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
    say "base: debootstrap --variant=minbase $suite from $mirror (kept for the next runs)"
    buildah rmi "$base_image" >/dev/null 2>&1 || true
    base_ctr=$(buildah from --pull=never scratch)
    rootfs=$(buildah mount "$base_ctr")
    debootstrap --variant=minbase --components=main "$suite" "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
        || { tail -n 30 "$tmp/debootstrap.log"; die "debootstrap (log above)"; }
    # Debian's container images: sources in deb822 form, no docs, man pages
    # or translations installed, apt's caches emptied.
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/all_languages
path-include /usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,linda}/* \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/tmp/* "$rootfs"/root/.bash_history
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name all_languages ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    : >"$rootfs/etc/resolv.conf"; : >"$rootfs/etc/hostname"; : >"$rootfs/etc/machine-id"
    buildah umount "$base_ctr" >/dev/null
    buildah config --os linux --arch "$(dpkg --print-architecture)" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd '["bash"]' \
        --label "org.opencontainers.image.description=debootstrap --variant=minbase $suite ($mirror), stands in for $runtime_default" \
        --created-by "docker/verify.sh: debootstrap --variant=minbase $suite" \
        "$base_ctr"
    buildah commit --quiet --rm "$base_ctr" "$base_image" >/dev/null
    base_ctr=""
    base_made=1
else
    say "base: $base_image (kept from an earlier run; --rebuild-base to make it again)"
fi
time_base=$(since "$t")

# --- 3. the binary and the image ---------------------------------------------
[ -n "$binary" ] || build_binary
[ -x "$binary" ] || die "no binary at $binary"
# A copy, so a concurrent cargo build cannot swap it during the run.
mkdir -p "$tmp/bin"
cp "$binary" "$tmp/bin/mcpgram"
binary_size=$(stat -c %s "$tmp/bin/mcpgram")

# docker/Dockerfile with its build stage (from the FROM ... AS build line to
# the next FROM) replaced by the binary from the host.
awk '
    toupper($1) == "FROM" && tolower($NF) == "build" && toupper($(NF-1)) == "AS" {
        print "FROM scratch AS build"
        print "COPY --from=hostbin mcpgram /src/target/release/mcpgram"
        skipping = 1; replaced++; next
    }
    skipping && toupper($1) == "FROM" { skipping = 0 }
    !skipping { print }
    END { if (replaced != 1) exit 1 }
' "$dockerfile" >"$tmp/Dockerfile" || die "docker/Dockerfile: expected exactly one 'FROM ... AS build' stage"
runtime_stage() { awk 'toupper($1) == "FROM" { n++ } n >= 2' "$1"; }
if [ "$(runtime_stage "$dockerfile")" = "$(runtime_stage "$tmp/Dockerfile")" ] \
    && grep -q '^COPY --from=build ' "$tmp/Dockerfile"; then
    pass "runtime stage built as docker/Dockerfile has it ($(runtime_stage "$dockerfile" | wc -l) lines, unchanged)"
else
    die "the derived Dockerfile's runtime stage differs from docker/Dockerfile's"
fi

image="localhost/mcpgram:verify"
old_image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)
say "image: buildah bud (runtime stage on $base_image, binary from the host) -> $image"
t=$(date +%s.%N)
# Docker format keeps HEALTHCHECK (OCI images have no such field).
buildah bud --isolation "$BUILDAH_ISOLATION" --pull=never --format docker \
    --build-arg "RUNTIME_IMAGE=$base_image" \
    --build-context "hostbin=$tmp/bin" \
    -f "$tmp/Dockerfile" -t "$image" "$repo" >"$tmp/bud.log" 2>&1 \
    || { tail -n 40 "$tmp/bud.log"; die "buildah bud (log above)"; }
time_image=$(since "$t")
new_image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$image")
# The image this tag named before is of no use now (vfs keeps whole copies).
if [ -n "$old_image_id" ] && [ "$old_image_id" != "$new_image_id" ]; then
    buildah rmi "$old_image_id" >/dev/null 2>&1 || true
fi
pass "image built"

image_json() { buildah inspect --type image "$image"; }
# Sizes: the layers as stored (uncompressed, what `docker images` shows)
# and gzip-compressed, as a registry keeps them and a pull downloads them.
layers_size() {
    buildah inspect --type image "$1" | python3 -c '
import json, sys
print(sum(l["size"] for l in json.loads(json.load(sys.stdin)["Manifest"])["layers"]))'
}
image_size=$(layers_size "$image")
base_size=$(layers_size "$base_image")
buildah push --quiet --compression-format gzip "$image" "oci:$tmp/oci:verify" >/dev/null 2>"$tmp/push.log" \
    || { cat "$tmp/push.log"; die "buildah push to an OCI layout (for the compressed size)"; }
compressed_size=$(python3 -c '
import json, sys
root = sys.argv[1]
index = json.load(open(root + "/index.json"))
digest = index["manifests"][0]["digest"].split(":", 1)[1]
manifest = json.load(open(root + "/blobs/sha256/" + digest))
print(sum(l["size"] for l in manifest["layers"]))' "$tmp/oci")
rm -rf "$tmp/oci"
# ENTRYPOINT + CMD, the HEALTHCHECK command and the user, from the image.
image_json >"$tmp/image.json"
mapfile -d '' start_cmd < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
for a in (c.get("Entrypoint") or []) + (c.get("Cmd") or []): sys.stdout.write(a + "\0")' "$tmp/image.json")
mapfile -d '' health_cmd < <(python3 -c '
import json, sys
h = (json.load(open(sys.argv[1]))["Docker"]["config"].get("Healthcheck") or {}).get("Test") or []
if h[:1] == ["CMD"]: h = h[1:]
elif h[:1] == ["CMD-SHELL"]: h = ["/bin/sh", "-c"] + h[1:]
else: h = []
for a in h: sys.stdout.write(a + "\0")' "$tmp/image.json")
image_user=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Docker"]["config"].get("User") or "root")' "$tmp/image.json")
[ ${#start_cmd[@]} -gt 0 ] || die "the image has no ENTRYPOINT/CMD"
[ ${#health_cmd[@]} -gt 0 ] || die "the image has no HEALTHCHECK command"

# --- 4. run it ---------------------------------------------------------------
token="123456:verify-ABCdef"
run_env=(-e RUST_LOG="${RUST_LOG:-info}")
if [ -z "$config_file" ]; then
    run_env+=(-e "TELEGRAM_BOT_TOKEN=$token")
    cat >"$tmp/stub.py" <<'PY'
# A stand-in for the Telegram Bot API: enough for the bot to start, poll
# and talk to one user. Unknown methods and wrong tokens are refused as
# Telegram does. getUpdates delivers what was queued on /_verify/update
# and forgets what `offset` confirms; what the bot sends is recorded and
# listed on /_verify/calls (both for docker/verify.sh's round trip).
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port_file, log_file, token = sys.argv[1:4]
log = open(log_file, "a", buffering=1)
cond = threading.Condition()
updates = []            # delivered until an offset confirms them
calls = []              # what the bot sent, in order
ids = {"update": 0, "message": 0}
ME = {"id": 123456, "is_bot": True, "first_name": "Verify", "username": "verify_bot",
      "can_join_groups": True, "can_read_all_group_messages": False,
      "supports_inline_queries": False, "can_connect_to_business": False,
      "has_main_web_app": False}
BOT = {k: ME[k] for k in ("id", "is_bot", "first_name", "username")}
TRUE = {"setmycommands", "deletemycommands", "deletewebhook", "setmydescription",
        "setmyshortdescription", "setmyname", "setchatmenubutton", "close", "logout",
        "sendchataction", "answercallbackquery", "deletemessage", "deletemessages",
        "setmessagereaction"}
MESSAGE = {"sendmessage", "editmessagetext", "editmessagereplymarkup", "senddocument",
           "sendphoto", "sendaudio", "sendvoice"}
RECORD = MESSAGE | {"sendchataction", "answercallbackquery", "deletemessage", "deletemessages",
                    "setmessagereaction"}

def next_id(kind):
    ids[kind] += 1
    return ids[kind]

def chat_of(chat_id):
    if isinstance(chat_id, int) and chat_id > 0:
        return {"id": chat_id, "type": "private", "first_name": "Ada"}
    return {"id": chat_id, "type": "group", "title": "Verify"}

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def params(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        kind = self.headers.get("Content-Type") or ""
        params = {}
        try:
            if kind.startswith("application/json"):
                params = json.loads(body or b"{}")
            elif kind.startswith("application/x-www-form-urlencoded"):
                params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            else:
                params = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        except ValueError:
            pass
        # Form bodies carry objects as JSON strings, and numbers as text.
        for k, v in list(params.items()):
            if isinstance(v, str) and v[:1] in "{[":
                try:
                    params[k] = json.loads(v)
                except ValueError:
                    pass
            elif isinstance(v, str) and k in ("chat_id", "message_id", "offset", "limit") \
                    and v.lstrip("-").isdigit():
                params[k] = int(v)
        return params

    def control(self, what, params):
        if what == "update":
            with cond:
                update = dict(params, update_id=next_id("update"))
                if "message" in update:
                    update["message"] = dict(update["message"], message_id=next_id("message"))
                updates.append(update)
                cond.notify_all()
            return self.answer(200, {"ok": True, "result": update})
        if what == "calls":
            with cond:
                return self.answer(200, {"ok": True, "result": list(calls)})
        return self.answer(404, {"ok": False, "description": "Not Found"})

    def do_POST(self):
        params = self.params()
        parts = urlparse(self.path).path.split("/")
        if len(parts) == 3 and parts[1] == "_verify":
            return self.control(parts[2], params)
        if len(parts) != 3 or not parts[1].startswith("bot"):
            return self.answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        method = parts[2].lower()
        log.write(parts[2] + "\n")
        if parts[1][3:] != token:
            return self.answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        result = None
        if method == "getme":
            result = ME
        elif method == "getmycommands":
            result = []
        elif method == "getwebhookinfo":
            result = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        elif method in TRUE:
            result = True
        elif method in MESSAGE:
            with cond:
                edit = method.startswith("edit")
                message_id = params.get("message_id") if edit else next_id("message")
                result = {"message_id": message_id, "from": BOT,
                          "chat": chat_of(params.get("chat_id")), "date": int(time.time())}
                if edit:
                    result["edit_date"] = int(time.time())
                if isinstance(params.get("text"), str):
                    result["text"] = params["text"]
                if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in params["reply_markup"]:
                    result["reply_markup"] = params["reply_markup"]
        elif method == "getupdates":
            # A long poll: it ends at its timeout, or when updates come.
            offset = params.get("offset") or 0
            offset = int(offset) if str(offset).lstrip("-").isdigit() else 0
            limit = int(params.get("limit") or 100)
            deadline = time.monotonic() + min(float(params.get("timeout") or 0), 50)
            with cond:
                if offset > 0:
                    updates[:] = [u for u in updates if u["update_id"] >= offset]
                elif offset < 0:
                    updates[:] = updates[offset:]
                while not updates and time.monotonic() < deadline:
                    cond.wait(deadline - time.monotonic())
                result = updates[:limit]
        else:
            return self.answer(404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"})
        if method in RECORD:
            with cond:
                calls.append({"method": parts[2], "params": params,
                              "message_id": result.get("message_id") if isinstance(result, dict) else None})
        return self.answer(200, {"ok": True, "result": result})

    do_GET = do_POST

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
    : >"$tmp/stub.log"
    python3 "$tmp/stub.py" "$tmp/stub.port" "$tmp/stub.log" "$token" 2>"$tmp/stub.err" &
    stub_pid=$!
    for _ in $(seq 50); do [ -s "$tmp/stub.port" ] && break; sleep 0.1; done
    [ -s "$tmp/stub.port" ] || { cat "$tmp/stub.err"; die "the Telegram stand-in did not start"; }
    stub_port=$(cat "$tmp/stub.port")
    bot_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

    # The MCP server the tests use (crates/test-peers/src/ts_demo.rs): the
    # TypeScript SDK's example server with its demo OAuth provider, kept on
    # loopback by tests/peers/bind-loopback.cjs. Its authorization server
    # registers any client and approves at once (a 302 to the redirect URI
    # with a code); it runs as the caller when under sudo.
    peers="$repo/tests/peers"
    example="node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js"
    node_bin="" peer_skip=""
    if [ ! -f "$peers/$example" ]; then
        peer_skip="tests/peers/node_modules is not installed: run tests/setup.sh (or npm ci --prefix tests/peers) first"
    else
        # tests/peers/package.json's engines: node >= 20.
        for candidate in "${MCPGRAM_VERIFY_NODE:-}" "$(type -P node || true)" "$repo/tests/conformance/node_modules/.bin/node"; do
            [ -x "$candidate" ] || continue
            major=$("$candidate" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || continue
            if [ "$major" -ge 20 ] 2>/dev/null; then node_bin="$candidate"; break; fi
        done
        [ -n "$node_bin" ] || peer_skip="no Node.js >= 20 (not on PATH, nor tests/conformance's from tests/setup.sh)"
    fi
    as_caller=()
    if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ] && type -P setpriv >/dev/null; then
        as_caller=(setpriv --reuid="$SUDO_UID" --regid="${SUDO_GID:-$SUDO_UID}" --clear-groups)
    fi
    mcp_port="" auth_port=""
    if [ -z "$peer_skip" ]; then
        for _ in 1 2 3; do
            read -r mcp_port auth_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
            (cd "$peers" && exec env MCP_PORT="$mcp_port" MCP_AUTH_PORT="$auth_port" "${as_caller[@]}" \
                "$node_bin" -r ./bind-loopback.cjs "$example" --oauth) </dev/null >"$tmp/peer.log" 2>&1 &
            node_pid=$!
            ready=0
            for _ in $(seq 300); do
                if grep -qxF "MCP Streamable HTTP Server listening on port $mcp_port" "$tmp/peer.log" \
                    && grep -qxF "OAuth Authorization Server listening on port $auth_port" "$tmp/peer.log"; then
                    ready=1; break
                fi
                kill -0 "$node_pid" 2>/dev/null || break
                sleep 0.1
            done
            [ "$ready" = 1 ] && break
            kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true
            node_pid=""
            grep -q EADDRINUSE "$tmp/peer.log" || break    # else a port was taken meanwhile: again
        done
        if [ -n "$node_pid" ]; then
            say "MCP server: node $("$node_bin" --version) $example --oauth: MCP on 127.0.0.1:$mcp_port, its authorization server on 127.0.0.1:$auth_port"
        else
            cat "$tmp/peer.log"
            fail "the MCP test server (tests/peers, $node_bin) did not start (its output above)"
        fi
    fi
    config_file="$tmp/mcpgram.toml"
    {
        cat <<EOF
# Made by docker/verify.sh: a stand-in Telegram on loopback$([ -n "$node_pid" ] && echo " and the MCP test server" || echo ", no MCP servers").
[telegram]
token = "\${TELEGRAM_BOT_TOKEN}"
api_url = "http://127.0.0.1:$stub_port"
allowed_users = [1001]

[http]
listen = "127.0.0.1:$bot_port"

[vault]
dir = "/data/vault"
EOF
        # localhost, as the server names itself in its protected resource
        # metadata (the bot refuses metadata for another URL); trusted: the
        # server is on loopback, which is refused otherwise.
        [ -z "$node_pid" ] || cat <<EOF

[[mcp.servers]]
id = "demo"
name = "Demo"
url = "http://localhost:$mcp_port/mcp"
trusted = true
[mcp.servers.oauth]
enabled = true
EOF
    } >"$config_file"
    say "config: stand-in Telegram on 127.0.0.1:$stub_port, bot's HTTP on 127.0.0.1:$bot_port$([ -z "$node_pid" ] || echo ", MCP server demo")"
else
    say "config: $config_file"
    # What compose passes, when set here.
    [ -z "${TELEGRAM_BOT_TOKEN:-}" ] || run_env+=(-e "TELEGRAM_BOT_TOKEN=$TELEGRAM_BOT_TOKEN")
    [ -z "${MCPGRAM_VAULT_KEY:-}" ] || run_env+=(-e "MCPGRAM_VAULT_KEY=$MCPGRAM_VAULT_KEY")
fi
cp "$config_file" "$tmp/run.toml"
chmod 0644 "$tmp/run.toml"

ctr=$(buildah from --pull=never --name "mcpgram-verify-$$" "$image")
# chroot isolation has no PID namespace, so tini is not PID 1 here: as a
# subreaper it reaps as it would be as PID 1 (and does not warn).
run_opts=(--isolation "$BUILDAH_ISOLATION" --network host --cap-drop all
    -v "$tmp/run.toml:/etc/mcpgram/mcpgram.toml:ro"
    "${run_env[@]}" -e TINI_SUBREAPER=1)

say "check-config in the container"
if buildah run "${run_opts[@]}" "$ctr" -- /usr/local/bin/mcpgram check-config >"$tmp/check.log" 2>&1; then
    pass "check-config: $(tail -n1 "$tmp/check.log")"
else
    cat "$tmp/check.log"; die "check-config in the container"
fi

# compose runs the container read_only with /data a volume: whatever the
# bot writes elsewhere in the image would fail there.
rootfs=$(buildah mount "$ctr")
touch "$tmp/started"
say "start: ${start_cmd[*]}"
t=$(date +%s.%N)
buildah run "${run_opts[@]}" "$ctr" -- "${start_cmd[@]}" >"$tmp/bot.log" 2>&1 &
run_pid=$!

bot_pid="" tini_pid=""
healthy=0
deadline=$(( $(date +%s) + 30 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    kill -0 "$run_pid" 2>/dev/null || break
    [ -n "$bot_pid" ] || bot_pid=$(find_proc "$run_pid" mcpgram || true)
    if [ -n "$bot_pid" ] && buildah run "${run_opts[@]}" "$ctr" -- "${health_cmd[@]}" >"$tmp/health.log" 2>&1; then
        healthy=1; break
    fi
    sleep 0.5
done
time_healthy=$(since "$t")
if [ "$healthy" = 1 ]; then
    pass "healthcheck (${health_cmd[*]}) answered after ${time_healthy} s"
else
    echo "--- bot log"; cat "$tmp/bot.log"; echo "--- healthcheck"; cat "$tmp/health.log" 2>/dev/null || true
    die "the bot did not become healthy within 30 s"
fi
tini_pid=$(find_proc "$run_pid" tini || true)
[ -n "$tini_pid" ] || die "no tini process below buildah run (pid $run_pid)"

uid=$(status_field "$bot_pid" Uid | awk '{ print $2 }')
want_uid=$(awk -F: -v u="${image_user%%:*}" '$1 == u || $3 == u { print $3; exit }' "$rootfs/etc/passwd")
if [ "$uid" != 0 ] && [ "$uid" = "$want_uid" ]; then
    pass "the bot runs as uid $uid (the image's USER $image_user), not root"
else
    fail "the bot runs as uid $uid, the image's USER $image_user is uid ${want_uid:-?}"
fi

if [ -z "${stub_pid}" ]; then
    sleep "$idle_secs"
else
    # Idle = started, commands set, long-polling: wait for the first poll.
    for _ in $(seq 100); do grep -qix getUpdates "$tmp/stub.log" && break; sleep 0.1; done
    if grep -qix getUpdates "$tmp/stub.log"; then
        pass "the bot polls Telegram (calls: $(sort "$tmp/stub.log" | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " }'))"
    else
        fail "the bot never called getUpdates (calls: $(tr '\n' ' ' <"$tmp/stub.log"))"
    fi
    sleep "$idle_secs"
fi
rss_kb=$(status_field "$bot_pid" VmRSS | awk '{ print $1 }')
[ -n "$rss_kb" ] || { echo "--- bot log"; cat "$tmp/bot.log"; die "the bot exited while idle"; }
hwm_kb=$(status_field "$bot_pid" VmHWM | awk '{ print $1 }')
threads=$(status_field "$bot_pid" Threads)
tini_rss_kb=$(status_field "$tini_pid" VmRSS | awk '{ print $1 }')

# One user's /connect round trip and one /call, through the stand-in.
time_roundtrip="" rt_rss_kb=""
if [ -n "${peer_skip:-}" ]; then
    printf 'SKIP /connect and /call: %s\n' "$peer_skip"
elif [ -n "$node_pid" ]; then
    cat >"$tmp/roundtrip.py" <<'PY'
# Plays Telegram user Ada (id 1001) against the stand-in: /connect demo,
# the authorization link opened hop by hop up to the bot's callback, then
# /call demo greet. Prints PASS/FAIL lines (and details) for verify.sh.
import json, re, sys, time
import urllib.error, urllib.request
from urllib.parse import urljoin, urlsplit

stub_port, bot_port, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
control = f"http://127.0.0.1:{stub_port}/_verify"
callback = f"http://127.0.0.1:{bot_port}/oauth/callback"
USER = {"id": 1001, "is_bot": False, "first_name": "Ada"}
CHAT = {"id": 1001, "type": "private", "first_name": "Ada"}

class Stop(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None     # every redirect is looked at, not followed

browser = urllib.request.build_opener(urllib.request.ProxyHandler({}), Stop)

def get(url, body=None):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with browser.open(request, timeout=30) as r:
            return r.status, r.headers, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode(errors="replace")

def stub(what, payload=None):
    status, _, body = get(f"{control}/{what}", json.dumps(payload).encode() if payload is not None else None)
    assert status == 200, (what, status, body)
    return json.loads(body)["result"]

def say(*line):
    print(*line, flush=True)

def text_of(call):
    p = call["params"]
    return p.get("text") if isinstance(p.get("text"), str) else ""

def buttons(call):
    markup = call["params"].get("reply_markup")
    rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
    return [b for row in rows for b in row if isinstance(b, dict)]

def to_ada(call):
    return call["method"].lower() in ("sendmessage", "editmessagetext") \
        and str(call["params"].get("chat_id")) == "1001"

def recorded(since=0):
    say("  what the bot sent:")
    for c in stub("calls")[since:]:
        p = c["params"]
        shown = {k: p[k] for k in ("chat_id", "message_id", "text", "action", "callback_query_id") if k in p}
        marks = [(b.get("text"), b.get("url") or b.get("callback_data")) for b in buttons(c)]
        say("   ", c["method"], json.dumps(shown, ensure_ascii=False)[:400], *(["buttons", marks] if marks else []))

def wait_for(since, found, seconds=wait):
    """The first call after `since` for which found(call) is true."""
    deadline = time.monotonic() + seconds
    seen = since
    while time.monotonic() < deadline:
        calls = stub("calls")
        for call in calls[seen:]:
            if found(call):
                return call
        seen = len(calls)
        time.sleep(0.2)
    return None

def message(text):
    command = text.split()[0]
    stub("update", {"message": {"date": int(time.time()), "chat": CHAT, "from": USER, "text": text,
                                "entities": [{"type": "bot_command", "offset": 0, "length": len(command)}]}})

def path_of(url):
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}{u.path}"

failed = False
def fail(what, since=0):
    global failed
    failed = True
    say("FAIL", what)
    recorded(since)

def connect():
    start = time.monotonic()
    mark = len(stub("calls"))
    message("/connect demo")
    offer = wait_for(mark, to_ada)
    if offer is None or not any(b.get("url") for b in buttons(offer)):
        return fail(f"/connect demo: no answer with a URL button for user 1001 within {wait:.0f} s", mark)
    link = next(b["url"] for b in buttons(offer) if b.get("url"))
    hops, url = [], link
    for _ in range(6):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            return fail(f"/connect demo: the link led off loopback, to {path_of(url)} (after {' -> '.join(hops)})")
        if url.startswith(callback + "?"):
            break
        status, headers, body = get(url)
        hops.append(f"{path_of(url)} ({status})")
        location = headers.get("Location")
        if status not in (301, 302, 303, 307, 308) or not location:
            return fail(f"/connect demo: {path_of(url)} answered {status}, not a redirect: {body[:300]!r}")
        url = urljoin(url, location)
    else:
        return fail(f"/connect demo: no redirect to {callback} after {' -> '.join(hops)}")
    mark = len(stub("calls"))
    status, _, body = get(url)
    hops.append(f"{path_of(url)} ({status})")
    if status != 200:
        page = re.sub(r"<[^>]+>|\s+", " ", body)
        return fail(f"/connect demo: the bot's callback answered {status}: {page[:300]}")
    done = wait_for(mark, lambda c: to_ada(c) and ("Connected" in text_of(c) or "failed" in text_of(c)))
    if done is None or "Connected" not in text_of(done):
        return fail(f"/connect demo: no \"Connected\" message for user 1001 within {wait:.0f} s"
                    + (f" but {text_of(done)!r}" if done else ""), mark)
    say("PASS", f"/connect demo: offer with a URL button, {' -> '.join(hops)}, "
        f"then {done['method']} {text_of(done)!r} ({time.monotonic() - start:.1f} s)")

def call():
    start = time.monotonic()
    mark = len(stub("calls"))
    message('/call demo greet {"name": "Ada"}')
    confirmed = False
    def answered(c):
        nonlocal confirmed
        if not to_ada(c):
            return False
        if "Hello, Ada" in text_of(c):
            return True
        run = [b for b in buttons(c) if b.get("text") == "Run" and b.get("callback_data")]
        if run and not confirmed:
            # A confirmation: press its Run button.
            confirmed = True
            stub("update", {"callback_query": {
                "id": "verify-1", "from": USER, "chat_instance": "ci1001", "data": run[0]["callback_data"],
                "message": {"message_id": c["message_id"], "date": int(time.time()), "chat": CHAT,
                            "from": {"id": 123456, "is_bot": True, "first_name": "Verify", "username": "verify_bot"},
                            "text": text_of(c), "reply_markup": c["params"]["reply_markup"]}}})
        return False
    result = wait_for(mark, answered)
    if result is None:
        return fail(f"/call demo greet: no \"Hello, Ada\" for user 1001 within {wait:.0f} s", mark)
    say("PASS", f"/call demo greet {{\"name\": \"Ada\"}}: {result['method']} {text_of(result)!r}"
        f"{' after pressing Run' if confirmed else ''} ({time.monotonic() - start:.1f} s)")

try:
    connect()
    if not failed:
        call()
    else:
        say("FAIL /call demo greet: not tried, /connect failed")
except Exception as e:      # the stand-in or the network failed: say so
    say("FAIL", f"round trip: {type(e).__name__}: {e}")
sys.exit(1 if failed else 0)
PY
    say "round trip: /connect demo and /call demo greet as Telegram user 1001"
    t=$(date +%s.%N)
    python3 "$tmp/roundtrip.py" "$stub_port" "$bot_port" 60 >"$tmp/roundtrip.log" 2>&1 || true
    time_roundtrip=$(since "$t")
    verdicts=0
    while IFS= read -r line; do
        case "$line" in
            "PASS "*) pass "${line#PASS }"; verdicts=$((verdicts + 1)) ;;
            "FAIL "*) fail "${line#FAIL }"; verdicts=$((verdicts + 1)) ;;
            *) printf '%s\n' "$line" ;;
        esac
    done <"$tmp/roundtrip.log"
    [ "$verdicts" -ge 2 ] || fail "the round trip ended without a verdict for /connect and /call (output above)"
    rt_rss_kb=$(status_field "$bot_pid" VmRSS | awk '{ print $1 }')
    [ -n "$rt_rss_kb" ] || fail "the bot exited during the round trip"
fi

say "stop: SIGTERM to the container's init (tini, pid $tini_pid; the bot is pid $bot_pid)"
t=$(date +%s.%N)
kill -TERM "$tini_pid"
stopped=0
for _ in $(seq 100); do
    kill -0 "$run_pid" 2>/dev/null || { stopped=1; break; }
    sleep 0.1
done
time_stop=$(since "$t")
if [ "$stopped" = 1 ]; then
    rc=0; wait "$run_pid" || rc=$?
    run_pid=""
    if [ "$rc" = 0 ]; then
        pass "SIGTERM: exited 0 after ${time_stop} s"
    else
        fail "SIGTERM: exited $rc after ${time_stop} s"
    fi
else
    fail "SIGTERM: still running after 10 s"
fi
written=$(cd "$rootfs" && find . -xdev -newer "$tmp/started" ! -type d ! -path './data/*' | sed 's/^\.//' | head -n 20)
if [ -z "$written" ]; then
    pass "wrote nothing outside /data (compose's read_only: true holds)$( [ -z "$stub_pid" ] || echo "; /data now: $(cd "$rootfs/data" && find . -mindepth 1 | sed 's/^\.\///' | sort | tr '\n' ' ')")"
else
    fail "wrote outside /data, which compose mounts read-only: $(echo "$written" | tr '\n' ' ')"
fi
buildah umount "$ctr" >/dev/null || true
# ERROR lines (text or JSON logs) and panics; not WARN lines with an error field.
log_errors='^[^ ]+ +ERROR |"level": *"ERROR"|panicked'
if grep -qE "$log_errors" "$tmp/bot.log"; then
    fail "the bot logged errors:"; grep -E "$log_errors" "$tmp/bot.log" | head -n 20
else
    pass "no errors in the bot's log ($(wc -l <"$tmp/bot.log") lines)"
fi

# --- 5. report ---------------------------------------------------------------
echo
echo "image $image: $(human "$image_size") uncompressed, $(human "$compressed_size") gzip-compressed (base $base_image: $(human "$base_size"); the runtime stage adds $(human $((image_size - base_size))))"
echo "binary: $(human "$binary_size")"
echo "idle RSS of the bot after ${idle_secs} s: $((rss_kb / 1024)).$(( (rss_kb % 1024) * 10 / 1024 )) MiB ($rss_kb kB; peak $hwm_kb kB; $threads threads; tini $tini_rss_kb kB)"
[ -z "$rt_rss_kb" ] || echo "RSS of the bot after /connect and /call: $((rt_rss_kb / 1024)).$(( (rt_rss_kb % 1024) * 10 / 1024 )) MiB ($rt_rss_kb kB)"
echo "times: tools ${time_tools} s, base ${time_base} s$([ "$base_made" = 1 ] && echo " (debootstrap)" || echo " (kept)"), binary ${time_binary}$([ "$time_binary" = given ] || echo " s"), image ${time_image} s, healthy ${time_healthy} s,$([ -z "$time_roundtrip" ] || echo " /connect + /call ${time_roundtrip} s,") stop ${time_stop} s; total $(since "$start_all") s"
if [ "$failures" = 0 ]; then
    echo "verify.sh: PASS"
else
    echo "--- bot log"; cat "$tmp/bot.log"
    echo "verify.sh: FAIL ($failures check(s))"
    exit 1
fi
