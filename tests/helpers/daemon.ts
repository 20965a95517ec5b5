/**
 * Runs a real punchd process for end-to-end tests: a temporary socket path,
 * stderr collected for failure messages, and a stop that always reaps it.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { openFds } from "../../ffi/syscalls.ts";
import type { PunchdClient } from "../../src/client/client.ts";
import { assert } from "../assert.ts";

const MAIN = new URL("../../src/daemon/main.ts", import.meta.url).pathname;

/** Permissions the daemon runs with in tests (what README tells users). */
export const DAEMON_PERMISSIONS = ["--allow-ffi", "--allow-read", "--allow-run=nft"];

/** A running daemon process. */
export interface RunningDaemon {
  socketPath: string;
  pid: number;
  /** Everything the daemon logged so far. */
  logs(): string;
  /** Open fds of the daemon process. */
  fdCount(): number;
  /**
   * The daemon's fd count once it equals `expected`, or after 5 s whatever it
   * is then (releasing is asynchronous: cancels travel to workers first).
   */
  settledFdCount(expected: number): Promise<number>;
  /**
   * The daemon's socket fds that punchd opened (control connections, attempts'
   * TCP, UDP, capture and raw sockets: see {@linkcode socketFds}), without the
   * Deno runtime's files, caches and resolver sockets, which open and close on
   * their own schedule.
   */
  socketFdCount(): number;
  /** {@linkcode socketFdCount} once it equals `expected`, or after 5 s whatever it is then. */
  settledSocketFdCount(expected: number): Promise<number>;
  /** SIGTERM, then wait (SIGKILL after 20 s); returns the exit code. Idempotent. */
  stop(): Promise<number>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Spawns `punchd` with `args`, optionally behind a command prefix such as
 * `ip netns exec NS`; `sofar()` is what it printed so far (stdout and stderr).
 */
export function spawnPunchd(
  args: string[],
  prefix: string[] = [],
  env: Record<string, string> = {},
): { child: Deno.ChildProcess; output: Promise<string>; sofar(): string } {
  const command = [...prefix, Deno.execPath(), "run", ...DAEMON_PERMISSIONS, MAIN, ...args];
  const child = new Deno.Command(command[0] ?? "", {
    args: command.slice(1),
    // No background version check: its DNS queries would take ports of a lab NAT that
    // allocates them in sequence (between `endpoint` and the attempt) and leave resolver sockets.
    env: { DENO_NO_UPDATE_CHECK: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return { child, ...collectOutput(child) };
}

/**
 * Collects a child's stdout and stderr (interleaved) while it runs:
 * `sofar()` is what arrived until now, `output` everything once both end.
 */
export function collectOutput(
  child: Deno.ChildProcess,
): { output: Promise<string>; sofar(): string } {
  let text = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  const output = Promise.all([drain(child.stdout), drain(child.stderr)]).then(() => text);
  return { output, sofar: () => text };
}

/** Waits until something accepts connections at `path`. */
export async function waitForSocket(path: string, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const probe = Socket.create("unix", "stream");
    try {
      await probe.connect({ family: "unix", path }, AbortSignal.timeout(1000));
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`Cannot reach punchd at ${path}: ${(error as Error).message}`);
      }
    } finally {
      probe.close();
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts punchd on a fresh socket path (or `socketPath`) and waits until it
 * answers; `prefix` runs it elsewhere (e.g. `ip netns exec NS`).
 */
export async function startDaemon(
  extraArgs: string[] = [],
  socketPath?: string,
  prefix: string[] = [],
): Promise<RunningDaemon> {
  const dir = await Deno.makeTempDir({ prefix: "punchd-test-" });
  socketPath ??= `${dir}/punchd.socket`;
  const { child, output, sofar } = spawnPunchd([
    "--socket",
    socketPath,
    "--log-level",
    "debug",
    ...extraArgs,
  ], prefix);
  let stopped: Promise<number> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already exited.
      }
      // A daemon that ignores SIGTERM is a failure to report (its exit code then says SIGKILL),
      // not a test or bench that hangs.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        child.status,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("no exit 20 s after SIGTERM")), 20_000);
        }),
      ]).catch(async () => {
        try {
          child.kill("SIGKILL");
        } catch {
          // Exited meanwhile.
        }
        return await child.status;
      }).finally(() => clearTimeout(timer));
      await output;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return status.code;
    })();
    return stopped;
  };
  try {
    await Promise.race([
      waitForSocket(socketPath),
      child.status.then((s) => {
        throw new Error(`punchd exited with ${s.code} before listening`);
      }),
    ]);
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${sofar()}`);
  }
  return {
    socketPath,
    pid: child.pid,
    logs: sofar,
    fdCount: () => openFds(child.pid).length,
    settledFdCount: async (expected) => {
      let count = openFds(child.pid).length;
      for (let i = 0; i < 50 && count !== expected; i++) {
        await new Promise((r) => setTimeout(r, 100));
        count = openFds(child.pid).length;
      }
      return count;
    },
    socketFdCount: () => socketFds(child.pid),
    settledSocketFdCount: async (expected) => {
      let count = socketFds(child.pid);
      for (let i = 0; i < 50 && count !== expected; i++) {
        await new Promise((r) => setTimeout(r, 100));
        count = socketFds(child.pid);
      }
      return count;
    },
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}

/**
 * How many of process `pid`'s fds are sockets punchd opened: every socket but
 * the C library resolver's (a peer at port 53: punchd does no DNS, but the
 * Deno runtime resolves names on its own threads, and the resolver keeps its
 * socket until the thread ends). An fd that closes while it is read is not counted.
 */
export function socketFds(pid: number): number {
  const resolver = new Set<string>();
  for (const table of ["tcp", "tcp6", "udp", "udp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/net/${table}`);
    } catch {
      continue; // No such protocol (e.g. IPv6 disabled).
    }
    // "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...": ports in hex.
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[2]?.endsWith(":0035") && fields[9] !== undefined) resolver.add(fields[9]);
    }
  }
  let count = 0;
  for (const fd of openFds(pid)) {
    try {
      const link = Deno.readLinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (link !== null && !resolver.has(link[1] ?? "")) count++;
    } catch {
      // Closed since the listing.
    }
  }
  return count;
}

/** Reads `count` reply lines from a raw control connection. */
export async function readLines(
  socket: Socket,
  count: number,
  timeoutMs = 20000,
): Promise<string[]> {
  const lines: string[] = [];
  let pending = "";
  const buf = new Uint8Array(65536);
  const signal = AbortSignal.timeout(timeoutMs);
  const decoder = new TextDecoder();
  while (lines.length < count) {
    const n = await socket.read(buf, signal);
    if (n === 0) {
      throw new Error(`punchd closed the connection after ${lines.length} of ${count} lines`);
    }
    pending += decoder.decode(buf.subarray(0, n), { stream: true });
    const parts = pending.split("\n");
    pending = parts.pop() ?? "";
    lines.push(...parts);
  }
  return lines;
}

/** Reads exactly `length` bytes from a stream socket (10 s limit). */
export async function readExactly(socket: Socket, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let offset = 0;
  while (offset < length) {
    const n = await socket.read(out.subarray(offset), AbortSignal.timeout(10000));
    if (n === 0) throw new Error(`end of stream after ${offset} of ${length} bytes`);
    offset += n;
  }
  return out;
}

/** A raw connection to the control socket. */
export async function rawConnect(path: string): Promise<Socket> {
  const socket = Socket.create("unix", "stream");
  try {
    await socket.connect({ family: "unix", path });
  } catch (error) {
    socket.close();
    throw error;
  }
  return socket;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): number {
  const probe = Socket.create("inet", "stream");
  try {
    probe.bind({ family: "inet", address: "127.0.0.1", port: 0 });
    const address = probe.localAddress();
    return address.family === "unix" ? 0 : address.port;
  } finally {
    probe.close();
  }
}

/** Runs initiate on `a` and respond on `b` for one tcp-direct connection on loopback. */
export async function punchDirect(
  a: PunchdClient,
  b: PunchdClient,
  idA = "a",
  idB = "b",
): Promise<[Socket, Socket]> {
  const [portA, portB] = [freePort(), freePort()];
  const initiator = a.initiate({
    id: idA,
    technique: "tcp-direct",
    srcIp: "127.0.0.1",
    srcPorts: [portA],
    dstIp: "127.0.0.1",
    dstPorts: [portB],
  });
  const first = await initiator.progress[Symbol.asyncIterator]().next();
  assert(!first.done, "initiator sent no progress data");
  const responder = b.respond({
    id: idB,
    technique: "tcp-direct",
    srcIp: "127.0.0.1",
    srcPorts: [portB],
    dstIp: "127.0.0.1",
    dstPorts: [portA],
    extra: first.value,
  });
  return await Promise.all([initiator.socket, responder.socket]);
}
