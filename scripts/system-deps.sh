#!/usr/bin/env bash
# Install the Debian packages the test suite needs: nginx (failover tests, smart-HTTP hub),
# openssh-server (ssh hub) and fcgiwrap (git http-backend behind nginx).
# Needs root (or sudo) the first time; a no-op once all are installed.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have nginx || missing+=(nginx)
have sshd || missing+=(openssh-server)
have fcgiwrap || missing+=(fcgiwrap)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
# the packages may start system services (nginx on :80, sshd on :22, fcgiwrap's socket);
# the tests run their own instances on 127.0.0.1 with their own configs
stop() { ($SUDO service "$1" stop) >/dev/null 2>&1 || true; }
case " ${missing[*]} " in *" nginx "*) stop nginx ;; esac
case " ${missing[*]} " in *" openssh-server "*) stop ssh ;; esac
case " ${missing[*]} " in *" fcgiwrap "*) stop fcgiwrap ;; esac
