/**
 * punchd as the systemd unit runs it: a non-root uid (nobody here) holding
 * only CAP_NET_ADMIN and CAP_NET_RAW (ambient, bounded to those two), set
 * with setpriv. The checkout may sit where only root can read (mktemp -d),
 * so the runtime goes into a world-readable copy: the deno binary, src/,
 * ffi/, deno.json and deno.lock, and a DENO_DIR owned by that uid holding
 * the npm packages root's cache already has (nothing is downloaded).
 *
 * @module
 */

import { DAEMON_PERMISSIONS, type RunningDaemon, startDaemon } from "./daemon.ts";

/** The uid and gid the daemon runs as (nobody, nogroup). */
export const SERVICE_UID = 65534;
export const SERVICE_GID = 65534;

const ROOT = new URL("../../", import.meta.url).pathname;

/** A prepared runtime; `start` runs a daemon in it, `dispose` removes it all. */
export interface ServiceRuntime {
  dir: string;
  /**
   * Starts punchd as the service user, behind `prefix` (e.g. `ip netns exec NS`), with the
   * capabilities `caps` (setpriv syntax; default `+net_admin,+net_raw`, "" for none).
   */
  start(name: string, args: string[], prefix?: string[], caps?: string): Promise<RunningDaemon>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function run(command: string[]): Promise<string> {
  const output = await new Deno.Command(command[0] ?? "", {
    args: command.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) {
    throw new Error(
      `${command.join(" ")} failed: ${new TextDecoder().decode(output.stderr).trim()}`,
    );
  }
  return text;
}

/** True when this machine can run it: root and setpriv. */
export function canRunServiceUser(): boolean {
  if (Deno.uid() !== 0) return false;
  try {
    Deno.statSync("/usr/bin/setpriv");
    return true;
  } catch {
    return false;
  }
}

/** Prepares the copy (a few hundred MB of deno binary copied: about a second). */
export async function prepareServiceRuntime(): Promise<ServiceRuntime> {
  const dir = await Deno.makeTempDir({ prefix: "punchd-service-user-" });
  const dispose = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    await Deno.chmod(dir, 0o755);
    await Deno.copyFile(Deno.execPath(), `${dir}/deno`);
    await Deno.chmod(`${dir}/deno`, 0o755);
    await Deno.mkdir(`${dir}/app`);
    await run([
      "cp",
      "-r",
      `${ROOT}src`,
      `${ROOT}ffi`,
      `${ROOT}deno.json`,
      `${ROOT}deno.lock`,
      `${dir}/app/`,
    ]);
    await run(["chmod", "-R", "a+rX", `${dir}/app`]);
    const info = JSON.parse(await run([Deno.execPath(), "info", "--json"])) as { npmCache: string };
    await Deno.mkdir(`${dir}/denodir/npm`, { recursive: true });
    await run(["cp", "-r", `${info.npmCache}/registry.npmjs.org`, `${dir}/denodir/npm/`]);
    await run(["chown", "-R", `${SERVICE_UID}:${SERVICE_GID}`, `${dir}/denodir`]);
  } catch (error) {
    await dispose();
    throw error;
  }
  return {
    dir,
    start: async (name, args, prefix = [], caps = "+net_admin,+net_raw") => {
      // The socket's directory, as systemd's RuntimeDirectory makes it: owned by the service
      // user, 0750.
      const runDir = `${dir}/run-${name}`;
      await Deno.mkdir(runDir, { mode: 0o750 });
      await Deno.chown(runDir, SERVICE_UID, SERVICE_GID);
      // startDaemon appends `deno run PERMISSIONS MAIN ARGS`: the script skips up to MAIN and
      // runs the copy instead, with the cache only.
      const script =
        'while [ $# -gt 0 ]; do a=$1; shift; case "$a" in */src/daemon/main.ts) break;; esac; done; ' +
        `exec "${dir}/deno" run --cached-only ${
          DAEMON_PERMISSIONS.join(" ")
        } "${dir}/app/src/daemon/main.ts" "$@"`;
      return await startDaemon(args, `${runDir}/punchd.socket`, [
        ...prefix,
        "env",
        `DENO_DIR=${dir}/denodir`,
        "HOME=/nonexistent",
        "/usr/bin/setpriv",
        `--reuid=${SERVICE_UID}`,
        `--regid=${SERVICE_GID}`,
        "--clear-groups",
        `--inh-caps=-all${caps === "" ? "" : `,${caps}`}`,
        `--ambient-caps=-all${caps === "" ? "" : `,${caps}`}`,
        `--bounding-set=-all${caps === "" ? "" : `,${caps}`}`,
        "--",
        "sh",
        "-c",
        script,
        "sh",
      ]);
    },
    [Symbol.asyncDispose]: dispose,
  };
}
