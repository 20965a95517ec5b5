/**
 * Running clients as an unprivileged member of punchd's group: a daemon whose
 * socket group is `nogroup` (65534), and the Python fixture `member.py` run
 * under `setpriv` as a non-root uid in that group.
 *
 * @module
 */

import { type RunningDaemon, startDaemon } from "./daemon.ts";

/** The Python members run (Debian's; .ci/run installs it). */
export const PYTHON = "/usr/bin/python3";

/** The group members get (nogroup on Debian). */
export const MEMBER_GID = 65534;
/** The member's uid (nobody), and a second member's. */
export const MEMBER_UID = 65534;
export const OTHER_MEMBER_UID = 65533;

const FIXTURE = new URL("../fixtures/member.py", import.meta.url).pathname;

let copied: string | undefined;

/**
 * The fixture, copied where any uid can read it (the checkout may sit in a
 * directory only root can enter, such as one made by mktemp -d).
 */
function readableFixture(): string {
  if (copied !== undefined) return copied;
  const dir = Deno.makeTempDirSync({ prefix: "punchd-member-fixture-" });
  Deno.chmodSync(dir, 0o755);
  copied = `${dir}/member.py`;
  Deno.copyFileSync(FIXTURE, copied);
  Deno.chmodSync(copied, 0o644);
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return copied;
}

/** True when this machine can run a member: root, setpriv and python3. */
export function canRunMembers(): boolean {
  if (Deno.uid() !== 0) return false;
  // The system's python3: another one (pyenv, venv) may live where other uids cannot go.
  for (const tool of ["/usr/bin/setpriv", PYTHON]) {
    try {
      Deno.statSync(tool);
    } catch {
      return false;
    }
  }
  return true;
}

/**
 * Starts punchd with `--group 65534`, its socket in a directory the group
 * can reach (0750 root:65534), plus `args`.
 */
export async function startMemberDaemon(args: string[] = []): Promise<RunningDaemon> {
  const dir = await Deno.makeTempDir({ prefix: "punchd-member-" });
  await Deno.chown(dir, 0, MEMBER_GID);
  await Deno.chmod(dir, 0o750);
  const daemon = await startDaemon(
    ["--group", String(MEMBER_GID), ...args],
    `${dir}/punchd.socket`,
  );
  return {
    ...daemon,
    stop: async () => {
      const code = await daemon.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return code;
    },
    [Symbol.asyncDispose]: async () => {
      await daemon.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** The member fixture, spawned as `uid` in the group, with piped stdio. */
export function spawnMember(uid: number, args: string[]): Deno.ChildProcess {
  return new Deno.Command("setpriv", {
    args: [
      `--reuid=${uid}`,
      `--regid=${MEMBER_GID}`,
      "--clear-groups",
      PYTHON,
      readableFixture(),
      ...args,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Sends `lines` on one connection as member `uid`; returns one reply line each. */
export async function memberRequest(
  socketPath: string,
  lines: string[],
  uid = MEMBER_UID,
): Promise<string[]> {
  const child = spawnMember(uid, [socketPath, "request", ...lines]);
  await child.stdin.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(`member.py failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text === "" ? [] : text.split("\n");
}

/** Reads a spawned member's stdout line by line. */
export function lineReader(child: Deno.ChildProcess): () => Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  return async () => {
    for (;;) {
      const nl = pending.indexOf("\n");
      if (nl >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        return line;
      }
      const { value, done } = await reader.read();
      if (done) throw new Error(`member exited; output so far: ${pending}`);
      pending += value;
    }
  };
}

/**
 * An impostor: a user outside punchd's group (MEMBER_UID, no groups) listening at `path`, where
 * clients look for punchd. It prints `up` once listening, then the repr() of what its first
 * client sent (up to 100 bytes). `next` reads its lines; finishMember ends it.
 */
export function spawnImpostor(
  path: string,
): { child: Deno.ChildProcess; next: () => Promise<string> } {
  const child = new Deno.Command("setpriv", {
    args: [
      `--reuid=${MEMBER_UID}`,
      `--regid=${MEMBER_UID}`,
      "--clear-groups",
      PYTHON,
      "-c",
      "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(8)\n" +
      "print('up',flush=True)\nc,_=s.accept()\nprint(repr(c.recv(100)),flush=True)\nsys.stdin.read()",
      path,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  return { child, next: lineReader(child) };
}

/** Lets a spawned member go (closing its stdin ends it) and waits for it. */
export async function finishMember(child: Deno.ChildProcess): Promise<void> {
  await child.stdin.close().catch(() => {});
  await child.status;
  // A stream may be locked by a lineReader, or not piped at all (the getter throws then).
  for (const stream of ["stdout", "stderr"] as const) {
    try {
      await child[stream].cancel();
    } catch {
      // Locked or not piped: nothing of ours to release.
    }
  }
}
