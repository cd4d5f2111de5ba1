#!/usr/bin/env bash
# Install the Debian packages kbgit's tests and demo need: nginx (failover tests, demo,
# smart-HTTP hub), chromium (the console's browser tests), openssh-server (ssh hub) and
# fcgiwrap (git http-backend behind nginx), iproute2 (the network-namespace partition test). Needs root (or sudo) the first time; a no-op
# once they are installed.
# Usage: bash scripts/system-deps.sh [nginx] [chromium] [sshd] [fcgiwrap] [ip] (no argument: all).
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(nginx chromium sshd fcgiwrap ip)
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
for name in "${wanted[@]}"; do
  case "$name" in
    nginx) have nginx || missing+=(nginx) ;;
    # headless chromium renders text with whatever fonts exist: DejaVu keeps screenshots legible
    chromium) command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core) ;;
    sshd) have sshd || missing+=(openssh-server) ;;
    fcgiwrap) have fcgiwrap || missing+=(fcgiwrap) ;;
    ip) have ip || missing+=(iproute2) ;;
    *) echo "system-deps.sh: unknown package '$name' (nginx, chromium, sshd, fcgiwrap, ip)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -gt 0 ] || exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
# the packages may start system services (nginx on :80, sshd on :22); the tests run their
# own instances on 127.0.0.1 with their own configs and keys
stop() { ($SUDO service "$1" stop) >/dev/null 2>&1 || true; }
case " ${missing[*]} " in
  *" nginx "*) stop nginx; $SUDO pkill -x nginx >/dev/null 2>&1 || true ;;
esac
case " ${missing[*]} " in *" openssh-server "*) stop ssh ;; esac
case " ${missing[*]} " in *" fcgiwrap "*) stop fcgiwrap ;; esac
