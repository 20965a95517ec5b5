/**
 * `punchd`, the hole punching daemon: entry point.
 *
 * ```
 * sudo deno run --allow-ffi --allow-read --allow-run=nft src/daemon/main.ts --socket /run/punchd/punchd.socket
 * ```
 *
 * @module
 */

import { Logger } from "../log.ts";
import { limitArenas } from "../../ffi/syscalls.ts";
import { EXIT, HELP, parseCommandLine, UsageError, VERSION } from "./config.ts";
import { Daemon, type DaemonOptions } from "./daemon.ts";
import { MetricsServer } from "./metrics.ts";
import { sdNotify } from "./notify.ts";

const encoder = new TextEncoder();

function print(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  stream.writeSync(encoder.encode(text + "\n"));
}

/** Runs the daemon until SIGINT/SIGTERM; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  let invocation;
  try {
    invocation = parseCommandLine(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    print(Deno.stderr, `punchd: ${error.message} (see --help)`);
    return EXIT.USAGE;
  }
  if (invocation.kind === "help") {
    print(Deno.stdout, HELP);
    return EXIT.OK;
  }
  if (invocation.kind === "version") {
    print(Deno.stdout, `punchd ${VERSION}`);
    return EXIT.OK;
  }
  const { config } = invocation;
  // Technique workers are threads that come and go (--worker-idle): with glibc's default of
  // eight malloc arenas per core, each new one could take an arena of its own, and an arena keeps
  // its fragments after its thread ends. Measured over 10,000 attempts: idle RSS grew 12 MB
  // above the 1,000 mark with the default, about 6 MB with two arenas (MALLOC_ARENA_MAX=2).
  limitArenas(2);
  const log = new Logger(config.logLevel);
  const options: DaemonOptions = {
    socketPath: config.socketPath,
    log,
    attemptTimeoutMs: config.attemptTimeoutMs,
    maxClients: config.maxClients,
    maxClientsPerUser: config.maxClientsPerUser,
    maxAttemptsPerClient: config.maxAttemptsPerClient,
    maxAttemptsPerUser: config.maxAttemptsPerUser,
    startRate: config.startRate,
    maxGuards: config.maxGuards,
    maxGuardsPerUser: config.maxGuardsPerUser,
    workerIdleMs: config.workerIdleMs,
    ports: {},
    probes: config.probes,
    ...(config.lowTtl !== undefined ? { lowTtl: config.lowTtl } : {}),
    udpBirthday: config.udpBirthday,
    ...(config.tcpKeepalive !== undefined ? { tcpKeepalive: config.tcpKeepalive } : {}),
    ...(config.turn !== undefined ? { turn: config.turn } : {}),
  };
  if (config.gid !== undefined) options.gid = config.gid;
  if (config.allowPorts !== undefined) {
    options.ports = { ...options.ports, allow: config.allowPorts };
  }
  if (config.denyPorts !== undefined) options.ports = { ...options.ports, deny: config.denyPorts };
  // Last resort: a rejection nobody handled is a bug, but one client's bug
  // must not stop the daemon (and leave its socket and table behind).
  const carryOn = (event: PromiseRejectionEvent | ErrorEvent) => {
    event.preventDefault();
    const reason = "reason" in event ? event.reason : event.error;
    log.error("unhandled error (a bug; punchd carries on)", {
      error: reason instanceof Error ? reason.stack ?? reason.message : String(reason),
    });
  };
  globalThis.addEventListener("unhandledrejection", carryOn);
  globalThis.addEventListener("error", carryOn);
  // Signals are handled from before the socket exists: a SIGTERM that
  // arrives while the daemon starts still stops it cleanly.
  let daemon: Daemon | null = null;
  let metrics: MetricsServer | null = null;
  let stopRequested = false;
  const stop = () => {
    if (!stopRequested) void sdNotify("STOPPING=1");
    stopRequested = true;
    void metrics?.close();
    void daemon?.stop();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    try {
      daemon = await Daemon.start(options);
    } catch (error) {
      log.error((error as Error).message);
      return EXIT.FAILURE;
    }
    if (config.metrics !== undefined) {
      const running = daemon;
      try {
        metrics = MetricsServer.listen(config.metrics, () => running.status(), log);
      } catch (error) {
        log.error((error as Error).message);
        await daemon.stop();
        return EXIT.FAILURE;
      }
    }
    if (stopRequested) {
      void metrics?.close();
      void daemon.stop();
    } else {
      await sdNotify(`READY=1\nSTATUS=serving ${config.socketPath}\nMAINPID=${Deno.pid}`);
    }
    await daemon.finished;
    await daemon.stop();
    await metrics?.close();
    return EXIT.OK;
  } finally {
    globalThis.removeEventListener("unhandledrejection", carryOn);
    globalThis.removeEventListener("error", carryOn);
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
