#!/usr/bin/env bash
# The whole topology on 127.0.0.1 from examples/docs, with the real model:
# hub, primary (kbgit serve), standby (kbgit standby, woken by the hub's hook) and nginx
# in front of them (the shipped deploy/nginx/kbgit.conf), installed by scripts/system-deps.sh
# (needs root or sudo the first time; without it the demo runs without nginx).
#
# Usage: bash scripts/demo.sh [start|query|status|stop]    (state and logs under ./demo-run)
#   start  (default) set up the venv, ingest, start everything, print a query through nginx
#   query  ask through nginx and say which node answered
#   status show what runs        stop   stop everything the demo started (pid files only)
# Ports (override by env): KBGIT_DEMO_NGINX_PORT=18400, KBGIT_DEMO_PRIMARY_PORT=18401,
# KBGIT_DEMO_STANDBY_PORT=18402; state dir: KBGIT_DEMO_DIR. Rerunning start reuses the state.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${KBGIT_DEMO_DIR:-$PWD/demo-run}"
NGINX_PORT="${KBGIT_DEMO_NGINX_PORT:-18400}"
PRIMARY_PORT="${KBGIT_DEMO_PRIMARY_PORT:-18401}"
STANDBY_PORT="${KBGIT_DEMO_STANDBY_PORT:-18402}"
QUESTION="${KBGIT_DEMO_QUESTION:-How often are API keys rotated?}"
find_nginx() { command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true; }
NGINX_BIN="$(find_nginx)"

alive() {  # alive PID: running and not a zombie waiting to be reaped
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null \
    && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null
}

# -- stop: only the processes whose pid files the demo wrote --------------------------
stop_one() {  # stop_one PIDFILE NAME
  local file="$1" name="$2" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if alive "$pid" && grep -qaE 'kbgit|nginx' "/proc/$pid/cmdline" 2>/dev/null; then
    kill -CONT "$pid" 2>/dev/null || true   # in case it was SIGSTOPped to try failover
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

stop_all() {
  stop_one "$RUN/nginx/nginx.pid" nginx
  stop_one "$RUN/standby.pid" standby
  stop_one "$RUN/primary.pid" primary
}

entry_url() {
  if [ -f "$RUN/nginx/nginx.pid" ]; then echo "http://127.0.0.1:$NGINX_PORT"
  else echo "http://127.0.0.1:$PRIMARY_PORT"; fi
}

ask() {  # ask URL: one GET /query; print which node answered and the top hit
  .venv/bin/python - "$1" "$QUESTION" "$PRIMARY_PORT" "$STANDBY_PORT" <<'PY'
import json, sys, urllib.parse, urllib.request
url, question, primary, standby = sys.argv[1:5]
full = f"{url}/query?" + urllib.parse.urlencode({"q": question, "k": 1})
try:
    with urllib.request.urlopen(full, timeout=15) as resp:
        body = json.load(resp)
        upstream = resp.headers.get("X-Kbgit-Upstream") or url.rsplit("/", 1)[-1]
except OSError as exc:
    sys.exit(f"no answer from {url}: {exc}")
node = upstream.split(",")[-1].strip()
role = {primary: "primary", standby: "standby"}.get(node.rsplit(":", 1)[-1], "?")
hit = body["hits"][0]
print(f"Q: {question}")
print(f"answered by {node} ({role}) at commit {body['commit'][:12]}")
print(f"  top hit: {hit['source']} (score {hit['score']:.3f}): {hit['text'][:160]!r}")
PY
}

wait_ready() {  # wait_ready PORT NAME PIDFILE: /ready answers 200 within 180 s
  local port="$1" name="$2" pidfile="$3"
  for _ in $(seq 1 360); do
    if ! alive "$(cat "$pidfile")"; then
      echo "$name exited; see $RUN/$name.log" >&2; tail -20 "$RUN/$name.log" >&2; return 1
    fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null; then
      echo "$name ready on 127.0.0.1:$port"; return 0
    fi
    sleep 0.5
  done
  echo "$name not ready after 180 s; see $RUN/$name.log" >&2; return 1
}

start() {
  # nginx is what makes failover visible: install it as the test command does (needs root
  # or sudo the first time; a no-op once installed)
  if ! bash scripts/system-deps.sh nginx; then
    echo "could not install nginx (no root or sudo?): the demo runs without failover" >&2
  fi
  NGINX_BIN="$(find_nginx)"
  bash scripts/setup.sh
  . .venv/bin/activate
  export OMP_WAIT_POLICY=PASSIVE
  stop_all
  mkdir -p "$RUN"
  [ -s "$RUN/token" ] || python -c 'import secrets; print(secrets.token_hex(16))' > "$RUN/token"
  KBGIT_TOKEN="$(cat "$RUN/token")"
  export KBGIT_TOKEN  # /admin/sync on the standby: the hub's post-receive hook wakes it
  [ -d "$RUN/hub.git" ] || kbgit hub create "$RUN/hub.git"
  [ -d "$RUN/primary/.git" ] || kbgit init "$RUN/primary" --hub "$RUN/hub.git"
  kbgit ingest "$RUN/primary" examples/docs   # idempotent: a rerun skips unchanged files
  kbgit hooks install "$RUN/hub.git" --notify "http://127.0.0.1:$STANDBY_PORT"
  # each node names the other as a peer: the console's status page shows both commits
  KBGIT_PEERS="http://127.0.0.1:$STANDBY_PORT" \
    nohup kbgit --log-level info serve "$RUN/primary" --bind "127.0.0.1:$PRIMARY_PORT" \
    > "$RUN/primary.log" 2>&1 &
  echo $! > "$RUN/primary.pid"
  KBGIT_PEERS="http://127.0.0.1:$PRIMARY_PORT" KBGIT_PRIMARY_URL="http://127.0.0.1:$PRIMARY_PORT" \
    nohup kbgit --log-level info standby "$RUN/hub.git" "$RUN/standby" \
    --bind "127.0.0.1:$STANDBY_PORT" > "$RUN/standby.log" 2>&1 &
  echo $! > "$RUN/standby.pid"
  wait_ready "$PRIMARY_PORT" primary "$RUN/primary.pid"
  wait_ready "$STANDBY_PORT" standby "$RUN/standby.pid"
  if [ -n "$NGINX_BIN" ]; then
    kbgit nginx-config --primary "127.0.0.1:$PRIMARY_PORT" --standby "127.0.0.1:$STANDBY_PORT" \
      --listen "127.0.0.1:$NGINX_PORT" --standalone "$RUN/nginx" > /dev/null
    "$NGINX_BIN" -p "$RUN/nginx" -e "$RUN/nginx/error.log" -c "$RUN/nginx/nginx.conf"
    for _ in $(seq 1 50); do [ -s "$RUN/nginx/nginx.pid" ] && break; sleep 0.1; done
    echo "nginx on 127.0.0.1:$NGINX_PORT (primary $PRIMARY_PORT, standby $STANDBY_PORT as backup)"
  else
    echo "nginx is not installed (sudo apt-get install nginx): queries go to the primary;"
    echo "failover needs nginx in front (rerun this script once it is installed)."
  fi
  echo
  ask "$(entry_url)"
  echo
  echo "See failover (three lines):"
  echo "  kill -9 \$(cat $RUN/primary.pid)      # the primary dies"
  echo "  bash scripts/demo.sh query            # still answered, now by the standby"
  echo "  bash scripts/demo.sh start            # everything back (reuses the state)"
  echo "Also: curl '$(entry_url)/query?q=rotate+keys&k=3'   logs: $RUN/*.log"
  echo "Web console: $(entry_url)/ui/  (log in with the token in $RUN/token to upload or roll back)"
  echo "Stop everything: bash scripts/demo.sh stop"
}

status() {
  for name in primary standby nginx/nginx; do
    file="$RUN/$name.pid"
    if [ -f "$file" ] && alive "$(cat "$file")"; then
      echo "${name%/nginx}: running (pid $(cat "$file"))"
    else
      echo "${name%/nginx}: stopped"
    fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop_all ;;
  query) ask "$(entry_url)" ;;
  status) status ;;
  *) echo "usage: bash scripts/demo.sh [start|query|status|stop]" >&2; exit 2 ;;
esac
