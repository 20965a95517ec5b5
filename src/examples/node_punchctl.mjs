/**
 * A Node.js program using punchd through `punchctl connect`/`listen` as a
 * child process. Node cannot receive a file descriptor over a unix socket,
 * so it cannot take the punched socket from punchd itself; punchctl takes
 * it and joins it to its stdin/stdout, which Node sees as one duplex
 * stream (like a `net.Socket`): writes go to the peer, reads come from it,
 * `end()` half-closes toward the peer, and the peer's end of stream ends
 * the readable side.
 *
 * ```
 * PUNCHCTL="punchctl" node src/examples/node_punchctl.mjs --message "hello from node" \
 *   connect --rendezvous 172.16.0.1:7000 --id alice bob
 * ```
 *
 * `PUNCHCTL` is the command that runs punchctl, split at spaces (default
 * `punchctl`; from a source tree: `deno run --allow-ffi --allow-read
 * src/ctl/main.ts`). The arguments after this program's own `--message
 * TEXT` go to punchctl. The program sends TEXT, half-closes, prints what the
 * peer sent on stdout, and exits with punchctl's exit code (punchctl's
 * diagnostics pass through on stderr).
 *
 * In an application, {@linkcode punched} gives the duplex stream:
 * ```js
 * const { stream, exited } = punched(["connect", "--rendezvous", "R:7000", "--id", "me", "bob"]);
 * stream.write("request\n");
 * stream.on("data", (chunk) => handle(chunk));
 * ```
 *
 * @module
 */

import { spawn } from "node:child_process";
import process from "node:process";
import { Duplex } from "node:stream";
import { pathToFileURL } from "node:url";

/**
 * Runs punchctl with `args` (e.g. `["connect", "--rendezvous", "R:7000", "--id", "me", "bob"]`)
 * and returns its stdin/stdout as one duplex stream, and its exit code once it exits.
 *
 * @param {string[]} args punchctl's arguments
 * @param {{ command?: string[] }} options the command that runs punchctl (default: from PUNCHCTL)
 * @returns {{ stream: Duplex, exited: Promise<number> }}
 */
// Plain JavaScript for Node: the JSDoc above carries the types.
// deno-lint-ignore explicit-module-boundary-types
export function punched(args, options = {}) {
  const command = options.command ?? (process.env.PUNCHCTL ?? "punchctl").split(" ").filter(
    (word) => word !== "",
  );
  const [program, ...prefix] = command;
  const child = spawn(program, [...prefix, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => resolve(code ?? (signal === null ? 1 : 128)));
  });
  // A peer that stops reading makes writes fail with EPIPE: the exit code tells the outcome.
  child.stdin.on("error", () => {});
  const stream = Duplex.from({ readable: child.stdout, writable: child.stdin });
  return { stream, exited };
}

/** Sends `message`, half-closes, collects what the peer sends until its end; returns the exit code. */
async function main(argv) {
  let message = "hello from node";
  const args = [...argv];
  if (args[0] === "--message") {
    message = args[1] ?? "";
    args.splice(0, 2);
  }
  if (args[0] !== "connect" && args[0] !== "listen") {
    process.stderr.write(
      "usage: node node_punchctl.mjs [--message TEXT] connect|listen PUNCHCTL_OPTIONS...\n",
    );
    return 2;
  }
  const { stream, exited } = punched(args);
  const chunks = [];
  stream.on("data", (chunk) => chunks.push(chunk));
  const ended = new Promise((resolve) => stream.on("end", resolve));
  stream.on("error", () => {});
  stream.end(message);
  let code;
  try {
    code = await exited;
  } catch (error) {
    process.stderr.write(`node_punchctl: cannot run punchctl: ${error.message}\n`);
    return 1;
  }
  await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 1000))]);
  const received = chunks.map((chunk) => chunk.toString("utf8")).join("");
  if (code === 0 || received !== "") process.stdout.write(`${received}\n`);
  process.stderr.write(
    `node_punchctl: punchctl exited with ${code}, received ${received.length} characters\n`,
  );
  return code;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  process.exitCode = await main(process.argv.slice(2));
}
