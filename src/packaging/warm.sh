#!/bin/sh
# Transpiles punchd's modules into this tree's DENO_DIR ahead of time: run by root at install
# (the Debian package's postinst) or by the first run that unpacks a self-extracting executable,
# so that later runs, which may not write there, transpile nothing. `warm.sh --clean` removes
# what it (or any run) added: everything in DENO_DIR but the shipped npm packages (prerm).
# Nothing is fetched: every module is in the tree, and a proxy that refuses stands guard.
set -eu
tree=$(dirname -- "$0")
if [ "${1:-}" = --clean ]; then
  find "$tree/deno_dir" -mindepth 1 -maxdepth 1 ! -name npm -exec rm -rf -- {} +
  exit 0
fi
umask 022
set --
while IFS= read -r root; do
  set -- "$@" "$tree/$root"
done <"$tree/roots.txt"
DENO_DIR="$tree/deno_dir" DENO_NO_UPDATE_CHECK=1 DENO_NO_PACKAGE_JSON=1 \
  HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY= \
  exec "$tree/deno" cache --no-remote --config "$tree/deno.json" "$@"
