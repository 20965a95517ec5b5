/**
 * `punchd-rendezvous`: the rendezvous and probe server.
 *
 * ```
 * deno run --allow-ffi --allow-read src/rendezvous/main.ts --listen 0.0.0.0:7000 --probe-port 7001
 * ```
 *
 * Every limit against floods has a flag with a default meant for a public
 * server (see HELP below); `--secret-file` makes registrations take a token
 * (`--print-token ID` mints one).
 *
 * Exit codes: 0 stopped by SIGINT/SIGTERM, 1 cannot start, 2 bad command line.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { Logger, parseLevel } from "../log.ts";
import { isPeerId } from "./codec.ts";
import { tokenFor } from "./credentials.ts";
import { type RendezvousAuth, type RendezvousOptions, RendezvousServer } from "./server.ts";

/** The --help text (also the man page punchd-rendezvous(8)). */
export const HELP = `punchd-rendezvous: rendezvous and probe server for punchd peers

Usage: punchd-rendezvous [options]

  --listen IP:PORT     main TCP endpoint (UDP there: the UDP protocol and STUN Binding);
                       default 0.0.0.0:7000
  --probe-port N       extra probe port on the same address, TCP and UDP, that speaks STUN
                       (RFC 8489 Binding; RFC 3489 clients too): punchd's --probe, or any
                       STUN client (repeatable)
  --max-peers N        registered peers (and UDP registrations) at once, 1-1000000 (default 1000)
  --udp-expiry SECS    a UDP registration without keepalive expires after this, 5-3600 (default 60)

Limits against floods (per source address: an IPv4 address, or an IPv6 /64):
  --max-connections N          TCP connections at once, 1-1000000 (default 4096)
  --max-connections-per-ip N   TCP connections at once per address, 1-1000000 (default 32)
  --max-ids-per-ip N           registered IDs at once per address, 1-1000000 (default 16)
  --max-udp-names-per-ip N     UDP names at once per address, 1-1000000 (default 16)
  --udp-connect-rate N         UDP connects per second to one name (each makes the server
                               send a datagram to the name's endpoint), 1-10000 (default 20)
  --register-timeout SECS      close a connection not registered after this, 1-3600 (default 10)
  --notify-rate N              notifications per second per connection, 1-10000 (default 20);
                               beyond it the sender gets "error|notify|rate limit exceeded",
                               and is disconnected after 256 refusals in a row
  --notify-burst N             notifications in a burst per connection, 1-10000 (default 40)
  --max-queued-kib N           replies queued per connection; a full queue pauses reading
                               that connection, 4-65536 (default 64)
  --stuck-timeout SECS         close a connection that reads nothing while replies wait,
                               1-3600 (default 30)

Authentication of registrations (credentials travel in clear text: they stop
anyone on the internet from taking an ID, not an eavesdropper on the path):
  --secret-file PATH   require register|ID|TOKEN (TCP and UDP), TOKEN being the ID's token
                       under this server secret (a file of at least 16 bytes, mode 0600).
                       Without it, a credential is optional: the first registration with
                       one binds the ID to it (trust on first use).
  --binding-ttl SECS   without --secret-file, a bound ID stays bound this long after its
                       last registration ends, 1-604800 (default 3600)
  --print-token ID     print the token of ID under --secret-file and exit
  --log-level LEVEL    debug, info, warn, error (default info)
  -h, --help           print this help

Exit codes: 0 stopped cleanly, 1 cannot start, 2 bad command line.`;

/** Reads a server secret: the file's bytes without trailing whitespace, at least 16. */
function readSecret(path: string, log: Logger | null): Uint8Array {
  const bytes = Deno.readFileSync(path);
  let end = bytes.length;
  while (end > 0 && [0x0a, 0x0d, 0x20, 0x09].includes(bytes[end - 1] ?? 0)) end--;
  if (end < 16) {
    throw new RangeError(
      `Cannot use ${path} as a secret: it holds ${end} bytes, at least 16 needed`,
    );
  }
  const mode = Deno.statSync(path).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    log?.warn("the secret file is readable by others; chmod 600 it", { path });
  }
  return bytes.slice(0, end);
}

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
        "max-connections": { type: "string" },
        "max-connections-per-ip": { type: "string" },
        "max-ids-per-ip": { type: "string" },
        "max-udp-names-per-ip": { type: "string" },
        "udp-connect-rate": { type: "string" },
        "register-timeout": { type: "string" },
        "notify-rate": { type: "string" },
        "notify-burst": { type: "string" },
        "max-queued-kib": { type: "string" },
        "stuck-timeout": { type: "string" },
        "secret-file": { type: "string" },
        "binding-ttl": { type: "string" },
        "print-token": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      Deno.stdout.writeSync(new TextEncoder().encode(HELP + "\n"));
      return 0;
    }
    log = new Logger(parseLevel(values["log-level"] ?? "info"));
    const secretFile = values["secret-file"];
    if (values["print-token"] !== undefined) {
      if (secretFile === undefined) throw new SyntaxError("--print-token needs --secret-file");
      if (!isPeerId(values["print-token"])) throw new RangeError("--print-token: bad peer ID");
      const token = tokenFor(readSecret(secretFile, null), values["print-token"]);
      Deno.stdout.writeSync(new TextEncoder().encode(token + "\n"));
      return 0;
    }
    const count = (flag: keyof typeof values, fallback: number, max = 1_000_000) => {
      const text = values[flag];
      return integerFlag(typeof text === "string" ? text : String(fallback), flag, 1, max);
    };
    const auth: RendezvousAuth = secretFile === undefined
      ? { mode: "open", bindingTtlMs: count("binding-ttl", 3600, 604_800) * 1000 }
      : { mode: "secret", secret: readSecret(secretFile, log) };
    const listen = parseHostPort(values.listen ?? "0.0.0.0:7000");
    const probePorts = (values["probe-port"] ?? []).map((p) =>
      integerFlag(p, "probe-port", 1, 65535)
    );
    const maxPeers = integerFlag(values["max-peers"] ?? "1000", "max-peers", 1, 1_000_000);
    const udpExpiryMs = integerFlag(values["udp-expiry"] ?? "60", "udp-expiry", 5, 3600) * 1000;
    const options: RendezvousOptions = {
      listen,
      probePorts,
      maxPeers,
      udpExpiryMs,
      maxConnections: count("max-connections", 4096),
      maxConnectionsPerAddress: count("max-connections-per-ip", 32),
      maxIdsPerAddress: count("max-ids-per-ip", 16),
      maxUdpNamesPerAddress: count("max-udp-names-per-ip", 16),
      udpConnectRate: count("udp-connect-rate", 20, 10_000),
      registerTimeoutMs: count("register-timeout", 10, 3600) * 1000,
      notifyRate: count("notify-rate", 20, 10_000),
      notifyBurst: count("notify-burst", 40, 10_000),
      maxQueuedBytes: integerFlag(values["max-queued-kib"] ?? "64", "max-queued-kib", 4, 65536) *
        1024,
      stuckTimeoutMs: count("stuck-timeout", 30, 3600) * 1000,
      auth,
      log,
    };
    try {
      server = RendezvousServer.start(options);
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
