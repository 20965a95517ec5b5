/**
 * Starts punchd's processes in a lab: the rendezvous/probe server in the
 * internet namespace and one punchd per host, with the probe ports as
 * `--probe`. Stops and reaps all of them.
 *
 * @module
 */

import { collectOutput, type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import type { Lab } from "./lab.ts";

const RENDEZVOUS_MAIN = new URL("../../src/rendezvous/main.ts", import.meta.url).pathname;

/** The rendezvous server's main port. */
export const RENDEZVOUS_PORT = 7000;
/** Its probe ports, which punchd gets as `--probe` (two show how a NAT maps ports). */
export const PROBE_PORTS = [7001, 7002];

/** A process whose output is collected while it runs. */
export interface Service {
  child: Deno.ChildProcess;
  output(): string;
  /** Waits for the process to exit by itself; returns the exit code. */
  wait(): Promise<number>;
  /** SIGTERM, then wait; returns the exit code. Idempotent. */
  stop(): Promise<number>;
}

/** Spawns `command` in a lab namespace and collects its output. */
export function spawnService(lab: Lab, ns: string, command: string[]): Service {
  const child = lab.spawn(ns, command);
  const { output: drained, sofar } = collectOutput(child);
  let stopped: Promise<number> | null = null;
  return {
    child,
    output: sofar,
    wait: async () => {
      const status = await child.status;
      await drained;
      return status.code;
    },
    stop: () => {
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already exited.
        }
        const status = await child.status;
        await drained;
        return status.code;
      })();
      return stopped;
    },
  };
}

/** Waits until `service` (anything with its output so far) printed something matching `pattern`. */
export async function waitForOutput(
  service: Pick<Service, "output">,
  pattern: RegExp,
  timeoutMs = 15000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(service.output())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for ${pattern}; output so far:\n${service.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The lab's running processes. */
export interface LabServices {
  rendezvous: Service;
  /** punchd on host A and host B. */
  a: RunningDaemon;
  b: RunningDaemon;
  /** `IP:PORT` of the rendezvous server. */
  rendezvousAddress: string;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the rendezvous server and both daemons; on failure stops what started. */
export async function startServices(lab: Lab, daemonArgs: string[] = []): Promise<LabServices> {
  const rendezvousAddress = `${lab.serverIp}:${RENDEZVOUS_PORT}`;
  const server = (address: string) =>
    spawnService(lab, lab.internet.ns, [
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-read",
      RENDEZVOUS_MAIN,
      "--listen",
      address,
      ...PROBE_PORTS.flatMap((port) => ["--probe-port", String(port)]),
    ]);
  // One server per address family: the IPv6 one only probes (its peers use the IPv4 one).
  const servers = [server(rendezvousAddress)];
  if (lab.options.ipv6) servers.push(server(`[${lab.v6.server}]:${RENDEZVOUS_PORT}`));
  const [rendezvous] = servers as [Service];
  const started: RunningDaemon[] = [];
  const stop = async () => {
    await Promise.all([...started.map((d) => d.stop()), ...servers.map((s) => s.stop())]);
  };
  try {
    for (const s of servers) await waitForOutput(s, /rendezvous server listening/);
    const probes = PROBE_PORTS.flatMap((port) => ["--probe", `${lab.serverIp}:${port}`]);
    if (lab.options.ipv6) {
      probes.push(...PROBE_PORTS.flatMap((port) => ["--probe", `[${lab.v6.server}]:${port}`]));
    }
    for (const host of [lab.hostA, lab.hostB]) {
      started.push(
        await startDaemon([...probes, ...daemonArgs], undefined, ["ip", "netns", "exec", host.ns]),
      );
    }
  } catch (error) {
    await stop();
    throw error;
  }
  const [a, b] = started as [RunningDaemon, RunningDaemon];
  return { rendezvous, a, b, rendezvousAddress, stop, [Symbol.asyncDispose]: stop };
}
