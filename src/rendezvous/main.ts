/**
 * `punchd-rendezvous`: the rendezvous and probe server.
 *
 * ```
 * deno run --allow-ffi --allow-read src/rendezvous/main.ts --listen 0.0.0.0:7000 --probe-port 7001
 * ```
 *
 * Exit codes: 0 stopped by SIGINT/SIGTERM, 1 cannot start, 2 bad command line.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { parseHostPort } from "../daemon/discovery.ts";
import { Logger, parseLevel } from "../log.ts";
import { RendezvousServer } from "./server.ts";

const HELP = `punchd-rendezvous: rendezvous and probe server for punchd peers

Usage: rendezvous [options]

  --listen IP:PORT     main TCP endpoint (also answers UDP observe); default 0.0.0.0:7000
  --probe-port N       extra probe port on the same address, TCP and UDP (repeatable)
  --max-peers N        registered peers (and UDP registrations) at once, 1-1000000 (default 1000)
  --udp-expiry SECS    a UDP registration without keepalive expires after this, 5-3600 (default 60)
  --log-level LEVEL    debug, info, warn, error (default info)
  -h, --help           print this help

Exit codes: 0 stopped cleanly, 1 cannot start, 2 bad command line.`;

function fail(message: string, code: number): number {
  Deno.stderr.writeSync(new TextEncoder().encode(`rendezvous: ${message}\n`));
  return code;
}

/** Runs the server until SIGINT/SIGTERM; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  // Handle signals from before the sockets exist, so an early SIGTERM still stops cleanly.
  const stopped = new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGINT", resolve);
    Deno.addSignalListener("SIGTERM", resolve);
  });
  let server: RendezvousServer;
  let log: Logger;
  try {
    const { values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: "string" },
        "probe-port": { type: "string", multiple: true },
        "max-peers": { type: "string" },
        "udp-expiry": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      Deno.stdout.writeSync(new TextEncoder().encode(HELP + "\n"));
      return 0;
    }
    log = new Logger(parseLevel(values["log-level"] ?? "info"));
    const listen = parseHostPort(values.listen ?? "0.0.0.0:7000");
    const probePorts = (values["probe-port"] ?? []).map((p) =>
      integerFlag(p, "probe-port", 1, 65535)
    );
    const maxPeers = integerFlag(values["max-peers"] ?? "1000", "max-peers", 1, 1_000_000);
    const udpExpiryMs = integerFlag(values["udp-expiry"] ?? "60", "udp-expiry", 5, 3600) * 1000;
    try {
      server = RendezvousServer.start({ listen, probePorts, maxPeers, udpExpiryMs, log });
    } catch (error) {
      return fail(`cannot start: ${(error as Error).message}`, 1);
    }
  } catch (error) {
    return fail(`${(error as Error).message.split("\n")[0]} (see --help)`, 2);
  }
  await stopped;
  log.info("rendezvous server stopping");
  await server.stop();
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
