#!/usr/bin/env bash
# The Debian packages the test suite needs beside the virtualenv, installed when missing: what `make test` and
# .ci/run both call, so the README's test command sets itself up on a fresh machine (no apt step by hand).
#   java 17 (Spark), chromium (the plan report and the Configuration Center in a real browser),
#   curl (the infra scripts wait on health endpoints), postgresql (the ledger's PostgreSQL tests).
set -euo pipefail
need=()
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages the tests need: ${need[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "cannot install ${need[*]}: not root and no password-less sudo; run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
"${apt[@]}" update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${need[@]}" >/dev/null
