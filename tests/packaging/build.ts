/**
 * Builds punchd's packages for the tests, once per test process, into a
 * temporary directory removed when the process ends, and runs commands with
 * a chosen environment and user.
 *
 * @module
 */

import { buildDist, type Tree } from "../../src/packaging/dist.ts";
import { buildDeb } from "../../src/packaging/deb.ts";
import type { Payload } from "../../src/packaging/launcher.ts";
import { note } from "../helpers/skip.ts";

/** The uid and gid tests use for "another user" (nobody/nogroup). */
export const NOBODY = 65534;

let workDir: Promise<string> | null = null;

/** A temporary directory (mode 0755: other users run what is in it) removed at exit. */
function work(): Promise<string> {
  workDir ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "punchd-packaging-" });
    await Deno.chmod(dir, 0o755);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Already gone.
      }
    });
    return dir;
  })();
  return workDir;
}

/** What `make dist` built. */
export interface BuiltDist {
  /** Directory of the executables (punchd, punchd-rendezvous, punchctl when present). */
  out: string;
  tree: Tree;
  payload: Payload;
  /** A fresh directory in the work directory, for one test (mode 0755). */
  scratch(): Promise<string>;
}

let dist: Promise<BuiltDist> | null = null;

/** Builds dist with the running Deno (once per process). */
export function builtDist(): Promise<BuiltDist> {
  dist ??= (async () => {
    const dir = await work();
    const { tree, payload } = await buildDist({
      deno: Deno.execPath(),
      out: `${dir}/dist`,
      build: `${dir}/build-dist`,
      warn: (text) => note(`NOTE: make dist: ${text}`),
    });
    let counter = 0;
    const scratch = async () => {
      const path = `${dir}/scratch${counter++}`;
      await Deno.mkdir(path, { mode: 0o755 });
      await Deno.chmod(path, 0o755);
      return path;
    };
    return { out: `${dir}/dist`, tree, payload, scratch };
  })();
  return dist;
}

let deb: Promise<string> | null = null;

/** Builds the .deb with the running Deno (once per process); returns its path. */
export function builtDeb(): Promise<string> {
  deb ??= (async () => {
    const dir = await work();
    return await buildDeb({
      deno: Deno.execPath(),
      out: `${dir}/deb-out`,
      build: `${dir}/build-deb`,
      warn: (text) => note(`NOTE: make deb: ${text}`),
    });
  })();
  return deb;
}

/** What a finished command returned. */
export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` with exactly `env` (plus PATH), as `user` (a uid, with
 * the same gid and no supplementary groups) when given; 60 s at most.
 */
export async function run(
  command: string[],
  options: { env?: Record<string, string>; user?: number; cwd?: string } = {},
): Promise<Ran> {
  const asUser = options.user === undefined
    ? []
    : ["setpriv", `--reuid=${options.user}`, `--regid=${options.user}`, "--clear-groups"];
  const argv = [...asUser, ...command];
  const out = await new Deno.Command(argv[0] ?? "", {
    args: argv.slice(1),
    clearEnv: true,
    env: { PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", ...options.env },
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** True when `name` is a command on PATH. */
export function have(name: string): boolean {
  for (
    const dir of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
  ) {
    try {
      Deno.statSync(`${dir}/${name}`);
      return true;
    } catch {
      // Not here.
    }
  }
  return false;
}
