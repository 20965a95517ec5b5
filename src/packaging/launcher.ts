/**
 * The commands punchd ships and the shell that starts them: each is `deno run`
 * of one entry module with fixed permissions, from a tree holding the Deno
 * runtime, punchd's modules and a DENO_DIR (see {@linkcode TREE}). The same
 * run line serves the self-extracting executables of `make dist`
 * ({@linkcode selfExtractingHeader}) and the wrappers in /usr/bin of the
 * Debian package ({@linkcode treeWrapper}).
 *
 * @module
 */

/** One command: its name, entry module (relative to the tree) and `deno run` permissions. */
export interface Command {
  name: string;
  entry: string;
  permissions: string[];
  /** Required: the build fails without it (otherwise it is skipped with a warning). */
  required: boolean;
}

/** Where things are inside a tree (relative paths). */
export const TREE = {
  deno: "deno",
  config: "deno.json",
  denoDir: "deno_dir",
  /** The modules to transpile ahead of time (entry points and workers), one a line. */
  roots: "roots.txt",
  /** Transpiles them into DENO_DIR (src/packaging/warm.sh); `--clean` removes that again. */
  warm: "warm.sh",
} as const;

/**
 * punchd's commands. The daemon's permissions are `daemonPermissions` (the
 * `daemon` task of deno.json, which the Makefile's daemon target uses too).
 */
export function commands(daemonPermissions: string[]): Command[] {
  return [
    {
      name: "punchd",
      entry: "src/daemon/main.ts",
      permissions: daemonPermissions,
      required: true,
    },
    {
      name: "punchd-rendezvous",
      entry: "src/rendezvous/main.ts",
      permissions: ["--allow-ffi", "--allow-read"],
      required: true,
    },
    {
      name: "punchctl",
      entry: "src/ctl/main.ts",
      permissions: ["--allow-ffi", "--allow-read", "--allow-env"],
      required: false,
    },
  ];
}

/** The permission flags of the `deno run ... src/daemon/main.ts` task named `task` in deno.json's text. */
export function taskPermissions(denoJson: string, task = "daemon"): string[] {
  const tasks = (JSON.parse(denoJson) as { tasks?: Record<string, string> }).tasks ?? {};
  const line = tasks[task];
  if (line === undefined) throw new TypeError(`Cannot read deno.json: no task "${task}"`);
  const flags = line.split(/\s+/).filter((word) => word.startsWith("--allow-"));
  if (flags.length === 0) {
    throw new TypeError(`Cannot read deno.json: task "${task}" grants no permission`);
  }
  return flags;
}

/** Quotes `text` for sh (single quotes). */
export function shQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * The shell lines that exec the command from the tree at `$tree` (a shell
 * variable the caller sets): no update check, the tree's DENO_DIR, no
 * package.json discovery above the tree, no prompt, only cached modules,
 * the tree's deno.json and lock, and exactly `command.permissions`.
 */
function execLines(command: Command): string {
  const flags = [
    "--no-prompt",
    "--cached-only",
    `--config "$tree/${TREE.config}"`,
    ...command.permissions.map(shQuote),
  ].join(" ");
  return [
    `DENO_DIR="$tree/${TREE.denoDir}" DENO_NO_UPDATE_CHECK=1 DENO_NO_PACKAGE_JSON=1`,
    "export DENO_DIR DENO_NO_UPDATE_CHECK DENO_NO_PACKAGE_JSON",
    `exec "$tree/${TREE.deno}" run ${flags} "$tree/${command.entry}" "$@"`,
  ].join("\n");
}

/** A wrapper for /usr/bin that runs `command` from the installed tree `treeDir`. */
export function treeWrapper(command: Command, treeDir: string, version: string): string {
  return `#!/bin/sh
# ${command.name} ${version}: runs ${command.entry} from ${treeDir} (punchd's Debian package)
# with Deno and fixed permissions.
tree=${shQuote(treeDir)}
${execLines(command)}
`;
}

/** What the self-extracting header needs to know about its payload. */
export interface Payload {
  /** sha256 of the payload (a gzip'd tar of the tree), hex. */
  sha256: string;
  /** Its length in bytes (checked before unpacking: a truncated file fails clearly). */
  size: number;
}

/**
 * The POSIX sh header of a self-extracting executable: the payload (a
 * gzip'd tar of the tree) follows it at byte `offset`. On first run it
 * unpacks the payload into `<cache>/<sha256>` (cache: $PUNCHD_CACHE, else
 * /var/cache/punchd for root, else ${XDG_CACHE_HOME:-$HOME/.cache}/punchd)
 * through a temporary directory beside it, renamed into place, and
 * transpiles the modules there ({@linkcode TREE}.warm); every run
 * refuses a cache directory or its parent that is not a directory, is owned
 * by neither the running user nor root, or is writable by group or others,
 * then execs the command from there.
 */
export function selfExtractingHeader(
  command: Command,
  version: string,
  payload: Payload,
  offset: number,
): string {
  return `#!/bin/sh
# ${command.name} ${version}: one self-contained executable, made by punchd's src/packaging/dist.ts.
# After this shell header comes a gzip'd tar of the Deno runtime and punchd's modules. The first
# run unpacks it into a cache directory named by its sha256; every run then execs
#   deno run ${command.permissions.join(" ")} ${command.entry} ARGS...
# from there. Cache: $PUNCHD_CACHE, else /var/cache/punchd (root), else ~/.cache/punchd.
set -eu
name=${shQuote(command.name)}
sha=${payload.sha256}
size=${payload.size}
offset=${offset}
fail() {
  echo "$name: $*" >&2
  exit 1
}
self=$0
case $self in
*/*) ;;
*) self=$(command -v -- "$self") || fail "cannot find my own file" ;;
esac
uid=$(id -u)
if [ -n "\${PUNCHD_CACHE:-}" ]; then
  base=$PUNCHD_CACHE
elif [ "$uid" = 0 ]; then
  base=/var/cache/punchd
else
  [ -n "\${XDG_CACHE_HOME:-}" ] || [ -n "\${HOME:-}" ] || fail "set HOME, XDG_CACHE_HOME or PUNCHD_CACHE"
  base=\${XDG_CACHE_HOME:-$HOME/.cache}/punchd
fi
case $base in
/*) ;;
*) base=$(pwd)/$base ;;
esac
# A directory owned by this user or root that nobody else can write to.
check() {
  [ -d "$1" ] && [ ! -L "$1" ] || fail "cannot use cache directory $1: not a directory"
  # find runs from /: from a working directory this user cannot enter it complains on stderr.
  [ -z "$(cd / && find "$1" -maxdepth 0 \\( -perm /022 -o \\( ! -uid "$uid" ! -uid 0 \\) \\) -print)" ] ||
    fail "cannot use cache directory $1: owned by someone else or writable by group or others"
}
payload() {
  tail -c "+$((offset + 1))" -- "$self"
}
tree=$base/$sha
if [ ! -e "$tree" ]; then
  (umask 022 && mkdir -p -- "$base") || fail "cannot create cache directory $base"
  check "$base"
  [ "$(payload | wc -c)" = "$size" ] || fail "$self is truncated or damaged (payload size)"
  [ "$(payload | sha256sum | cut -d ' ' -f 1)" = "$sha" ] ||
    fail "$self is damaged (payload sha256)"
  tmp=$(mktemp -d -- "$base/.$sha.XXXXXX") || fail "cannot create a directory in $base"
  trap 'rm -rf -- "$tmp"' EXIT
  payload | (umask 022 && gzip -dc | tar -x --no-same-owner --no-same-permissions -C "$tmp" -f -) ||
    fail "cannot unpack into $tmp"
  chmod 0755 -- "$tmp"
  # Atomic: another first run may have won the race (then its tree is used). The winner
  # transpiles the modules at their final paths, once.
  if mv -T -- "$tmp" "$tree" 2>/dev/null; then
    trap - EXIT
    "$tree/${TREE.warm}" >/dev/null 2>&1 || true
  else
    rm -rf -- "$tmp"
    trap - EXIT
  fi
fi
check "$base"
check "$tree"
[ -x "$tree/${TREE.deno}" ] || fail "cannot use $tree: no ${TREE.deno} in it"
${execLines(command)}
`;
}

/**
 * The header for a payload, with the offset where the payload starts (the
 * header's own length, which depends on the offset's digits: iterated until stable).
 */
export function headerFor(command: Command, version: string, payload: Payload): Uint8Array {
  const encoder = new TextEncoder();
  let offset = 0;
  for (let i = 0; i < 10; i++) {
    const header = encoder.encode(selfExtractingHeader(command, version, payload, offset));
    if (header.length === offset) return header;
    offset = header.length;
  }
  throw new RangeError("Cannot build the header: its length does not settle");
}
