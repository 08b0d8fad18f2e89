#!/usr/bin/env bash
# Make sure the Debian packages the system needs are present: the Mosquitto broker and its
# CLI clients (tests and integrators use mosquitto_sub), libopus0 (opuslib loads it), and the
# two speech synthesisers the speech package runs as subprocesses: espeak-ng (the default voice,
# also the phonemiser for words the recogniser's dictionary lacks) and flite (a second voice),
# and chromium, the browser the dashboard's Playwright test drives (never a downloaded one).
# As root, install what is missing (apt-get update first: a fresh machine's lists may be
# empty). Otherwise print one line saying what to install, and fail.
set -euo pipefail

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
# (read the whole list: `grep -q` would close the pipe early and pipefail would call that a miss)
libs=$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)
grep 'libopus\.so\.0' <<<"$libs" >/dev/null || missing+=(libopus0)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v flite >/dev/null 2>&1 || missing+=(flite)
[ -x /usr/bin/chromium ] || missing+=(chromium)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: run 'sudo apt-get update && sudo apt-get install -y ${missing[*]}'" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged broker as a service where systemd runs; we manage our own.
