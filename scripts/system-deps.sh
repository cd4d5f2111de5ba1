#!/usr/bin/env bash
# Install the Debian packages the test suite needs (nginx for the failover tests).
# Needs root (or sudo) the first time; a no-op once nginx is installed.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
# the package may start a system nginx on :80; the tests run their own on 127.0.0.1
($SUDO service nginx stop) >/dev/null 2>&1 || true
$SUDO pkill -x nginx >/dev/null 2>&1 || true
