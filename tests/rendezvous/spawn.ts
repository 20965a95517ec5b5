/**
 * Runs `punchd-rendezvous` (src/rendezvous/main.ts) as its own process, for
 * attacks that would starve a server sharing the test's event loop, and for
 * process limits (fds) and memory that only a process has.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { collectOutput } from "../helpers/daemon.ts";

const MAIN = new URL("../../src/rendezvous/main.ts", import.meta.url).pathname;

/** A loopback port that was free a moment ago. */
export function freePort(type: "stream" | "datagram" = "stream"): number {
  using s = Socket.create("inet", type);
  s.bind(inetAddress("127.0.0.1", 0));
  return (s.localAddress() as { port: number }).port;
}

/** A running server process. */
export interface ServerProcess {
  address: InetAddress;
  pid: number;
  /** What it logged so far. */
  logs(): string;
  /** Resident memory in KiB, from /proc/PID/status. */
  rssKib(): number;
  /** CPU time (user + system) in clock ticks, from /proc/PID/stat. */
  cpuTicks(): number;
  /** Sends `signal` and waits up to `timeoutMs`; the exit code, or null (then it was killed). */
  stop(signal?: Deno.Signal, timeoutMs?: number): Promise<number | null>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the server on a free loopback port with `args`, behind `prefix` (e.g. prlimit). */
export async function spawnServer(
  args: string[] = [],
  prefix: string[] = [],
): Promise<ServerProcess> {
  const port = freePort();
  const command = [
    ...prefix,
    Deno.execPath(),
    "run",
    "--allow-ffi",
    "--allow-read",
    MAIN,
    "--listen",
    `127.0.0.1:${port}`,
    ...args,
  ];
  const child = new Deno.Command(command[0] ?? "", {
    args: command.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, sofar } = collectOutput(child);
  let exited: number | null = null;
  const status = child.status.then((s) => {
    exited = s.code;
    return s.code;
  });
  const deadline = Date.now() + 20_000;
  while (!sofar().includes("rendezvous server listening")) {
    if (exited !== null || Date.now() > deadline) {
      if (exited === null) child.kill("SIGKILL");
      await status;
      throw new Error(`Cannot start the rendezvous server: ${await output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const proc = (file: string) => Deno.readTextFileSync(`/proc/${child.pid}/${file}`);
  let stopping: Promise<number | null> | null = null;
  const stop = (signal: Deno.Signal = "SIGTERM", timeoutMs = 5000) => {
    stopping ??= (async () => {
      if (exited === null) child.kill(signal);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
      const code = await Promise.race([status, timedOut]);
      clearTimeout(timer);
      if (code === null) child.kill("SIGKILL");
      await status;
      await output;
      return code;
    })();
    return stopping;
  };
  return {
    address: inetAddress("127.0.0.1", port),
    pid: child.pid,
    logs: sofar,
    rssKib: () => Number(/VmRSS:\s+(\d+)/.exec(proc("status"))?.[1] ?? NaN),
    cpuTicks: () => {
      const fields = proc("stat").slice(proc("stat").lastIndexOf(")") + 2).split(" ");
      return Number(fields[11]) + Number(fields[12]);
    },
    stop,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}
