#!/usr/bin/env bash
# Install the Debian packages kbgit's tests and demo need: nginx (failover tests, demo)
# and chromium (the console's browser tests). Needs root (or sudo) the first time; a
# no-op once they are installed. Usage: bash scripts/system-deps.sh [nginx] [chromium]
# (no argument: both).
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(nginx chromium)
missing=()
for name in "${wanted[@]}"; do
  case "$name" in
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx) ;;
    # headless chromium renders text with whatever fonts exist: DejaVu keeps screenshots legible
    chromium) command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core) ;;
    *) echo "system-deps.sh: unknown package '$name' (nginx, chromium)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -gt 0 ] || exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
case " ${missing[*]} " in
  *" nginx "*)
    # the package may start a system nginx on :80; the tests run their own on 127.0.0.1
    ($SUDO service nginx stop) >/dev/null 2>&1 || true
    $SUDO pkill -x nginx >/dev/null 2>&1 || true ;;
esac
