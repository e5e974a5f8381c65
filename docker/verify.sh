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
#      getUpdates long polls that time out empty) and no MCP servers. Then it
#      runs the image's HEALTHCHECK command in the same container, waits for
#      the bot to poll, reads its idle memory, sends SIGTERM to the
#      container's init (tini, as `docker stop` does) and expects exit 0
#      within 10 s;
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
# (default 5: how long the bot idles before its RSS is read).
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
    exec sudo --preserve-env=MCPGRAM_VERIFY_STORAGE_DRIVER,BUILDAH_ISOLATION,MCPGRAM_VERIFY_MIRROR,MCPGRAM_VERIFY_SECURITY_MIRROR,MCPGRAM_VERIFY_IDLE_SECS,RUST_LOG,TELEGRAM_BOT_TOKEN,MCPGRAM_VAULT_KEY \
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
stub_pid="" run_pid="" ctr="" base_ctr=""
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
# A stand-in for the Telegram Bot API: enough for the bot to start and
# poll. Unknown methods and wrong tokens are refused as Telegram does.
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port_file, log_file, token = sys.argv[1:4]
log = open(log_file, "a", buffering=1)
stop = threading.Event()
ME = {"id": 123456, "is_bot": True, "first_name": "Verify", "username": "verify_bot",
      "can_join_groups": True, "can_read_all_group_messages": False,
      "supports_inline_queries": False, "can_connect_to_business": False,
      "has_main_web_app": False}
TRUE = {"setmycommands", "deletemycommands", "deletewebhook", "setmydescription",
        "setmyshortdescription", "setmyname", "setchatmenubutton", "close", "logout"}

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
        try:
            if kind.startswith("application/json"):
                return json.loads(body or b"{}")
            if kind.startswith("application/x-www-form-urlencoded"):
                return {k: v[0] for k, v in parse_qs(body.decode()).items()}
        except ValueError:
            pass
        query = parse_qs(urlparse(self.path).query)
        return {k: v[0] for k, v in query.items()}

    def do_POST(self):
        params = self.params()
        parts = urlparse(self.path).path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            return self.answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        method = parts[2].lower()
        log.write(parts[2] + "\n")
        if parts[1][3:] != token:
            return self.answer(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if method == "getme":
            return self.answer(200, {"ok": True, "result": ME})
        if method == "getmycommands":
            return self.answer(200, {"ok": True, "result": []})
        if method == "getwebhookinfo":
            return self.answer(200, {"ok": True, "result": {"url": "", "has_custom_certificate": False, "pending_update_count": 0}})
        if method in TRUE:
            return self.answer(200, {"ok": True, "result": True})
        if method == "getupdates":
            # A long poll: nothing happens, so it ends empty at its timeout.
            stop.wait(min(float(params.get("timeout") or 0), 50))
            return self.answer(200, {"ok": True, "result": []})
        return self.answer(404, {"ok": False, "error_code": 404, "description": "Not Found: method not found"})

    do_GET = do_POST

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
server.serve_forever()
PY
    : >"$tmp/stub.log"
    python3 "$tmp/stub.py" "$tmp/stub.port" "$tmp/stub.log" "$token" 2>"$tmp/stub.err" &
    stub_pid=$!
    for _ in $(seq 50); do [ -s "$tmp/stub.port" ] && break; sleep 0.1; done
    [ -s "$tmp/stub.port" ] || { cat "$tmp/stub.err"; die "the Telegram stand-in did not start"; }
    stub_port=$(cat "$tmp/stub.port")
    bot_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    config_file="$tmp/mcpgram.toml"
    cat >"$config_file" <<EOF
# Made by docker/verify.sh: a stand-in Telegram on loopback, no MCP servers.
[telegram]
token = "\${TELEGRAM_BOT_TOKEN}"
api_url = "http://127.0.0.1:$stub_port"

[http]
listen = "127.0.0.1:$bot_port"

[vault]
dir = "/data/vault"
EOF
    say "config: stand-in Telegram on 127.0.0.1:$stub_port, bot's HTTP on 127.0.0.1:$bot_port"
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
if grep -qiE '(^|[^a-z])(ERROR|panicked)' "$tmp/bot.log"; then
    fail "the bot logged errors:"; grep -iE '(^|[^a-z])(ERROR|panicked)' "$tmp/bot.log" | head -n 20
else
    pass "no errors in the bot's log ($(wc -l <"$tmp/bot.log") lines)"
fi

# --- 5. report ---------------------------------------------------------------
echo
echo "image $image: $(human "$image_size") uncompressed, $(human "$compressed_size") gzip-compressed (base $base_image: $(human "$base_size"); the runtime stage adds $(human $((image_size - base_size))))"
echo "binary: $(human "$binary_size")"
echo "idle RSS of the bot after ${idle_secs} s: $((rss_kb / 1024)).$(( (rss_kb % 1024) * 10 / 1024 )) MiB ($rss_kb kB; peak $hwm_kb kB; $threads threads; tini $tini_rss_kb kB)"
echo "times: tools ${time_tools} s, base ${time_base} s$([ "$base_made" = 1 ] && echo " (debootstrap)" || echo " (kept)"), binary ${time_binary}$([ "$time_binary" = given ] || echo " s"), image ${time_image} s, healthy ${time_healthy} s, stop ${time_stop} s; total $(since "$start_all") s"
if [ "$failures" = 0 ]; then
    echo "verify.sh: PASS"
else
    echo "--- bot log"; cat "$tmp/bot.log"
    echo "verify.sh: FAIL ($failures check(s))"
    exit 1
fi
