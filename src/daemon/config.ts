/**
 * Command line of `punchd`: flags, defaults, validation and help text.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { lookupGroup } from "../../ffi/syscalls.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import { type Level, LEVELS, parseLevel } from "../log.ts";
import { DEFAULT_LOW_TTL } from "../techniques/tcp_nutss.ts";
import { parseHostPort } from "./discovery.ts";

/** Exit codes of punchd. */
export const EXIT = {
  /** Stopped cleanly (SIGINT/SIGTERM) or printed --help/--version. */
  OK: 0,
  /** Could not start or failed while running (socket in use, permissions). */
  FAILURE: 1,
  /** Bad command line. */
  USAGE: 2,
} as const;

/** The daemon's version. */
export const VERSION = "0.1.0";

/** Parsed configuration. */
export interface Config {
  socketPath: string;
  group?: string;
  gid?: number;
  logLevel: Level;
  attemptTimeoutMs: number;
  maxClients: number;
  maxAttemptsPerClient: number;
  /** Probe servers for endpoint discovery, in order. */
  probes: InetAddress[];
  /** TTL of tcp-nutss's first SYN. */
  lowTtl: number;
  /** Let `udp` fall back to birthday probing. */
  udpBirthday: boolean;
}

/** What the command line asks for. */
export type Invocation = { kind: "help" } | { kind: "version" } | { kind: "run"; config: Config };

/** A bad command line; the message is one line for stderr. */
export class UsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The --help text. */
export const HELP = `punchd ${VERSION}: hole punching daemon

Usage: punchd [options]

Applications connect to the control socket and ask punchd for a direct TCP or
UDP connection to a peer; punchd replies with progress data to forward to the
peer and, on success, passes the connected socket (SCM_RIGHTS).

Options:
  --socket PATH            control socket path (default /tmp/punchd.socket)
  --group NAME             group allowed to use the socket (mode 0660)
  --log-level LEVEL        ${LEVELS.join(", ")} (default info)
  --attempt-timeout SECS   time limit of one attempt, 1-600 (default 10)
  --max-clients N          clients connected at once, 1-65536 (default 1024)
  --max-attempts N         attempts per client at once, 1-65536 (default 256)
  --probe IP:PORT          probe server for endpoint discovery (repeatable;
                           two or more show how the NAT maps ports)
  --nutss-ttl N            TTL of tcp-nutss's first SYN, 1-255 (default 2:
                           crosses the host's own NAT, not the peer's)
  --udp-birthday           let udp fall back to birthday probing when one NAT
                           maps ports per destination (as udp-birthday does)
  -h, --help               print this help and exit
  -V, --version            print the version and exit

Exit codes: 0 stopped cleanly, 1 failure, 2 bad command line.
Techniques: tcp-direct, tcp-nutss (needs CAP_NET_ADMIN for nftables), tcp-syni
(also CAP_NET_RAW for capture and raw sockets), udp, udp-birthday. Root has both.`;

function integer(text: string, flag: string, min: number, max: number): number {
  try {
    return integerFlag(text, flag, min, max);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Parses argv (without the program name). Throws UsageError on any bad flag. */
export function parseCommandLine(args: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        socket: { type: "string" },
        group: { type: "string" },
        "log-level": { type: "string" },
        "attempt-timeout": { type: "string" },
        "max-clients": { type: "string" },
        "max-attempts": { type: "string" },
        probe: { type: "string", multiple: true },
        "nutss-ttl": { type: "string" },
        "udp-birthday": { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0] ?? "bad command line");
  }
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  const config: Config = {
    socketPath: v.socket ?? "/tmp/punchd.socket",
    logLevel: "info",
    attemptTimeoutMs: 10_000,
    maxClients: 1024,
    maxAttemptsPerClient: 256,
    probes: [],
    lowTtl: DEFAULT_LOW_TTL,
    udpBirthday: v["udp-birthday"] === true,
  };
  if (config.socketPath === "") throw new UsageError("--socket: the path is empty");
  if (v["log-level"] !== undefined) {
    try {
      config.logLevel = parseLevel(v["log-level"]);
    } catch (error) {
      throw new UsageError(`--log-level: ${(error as Error).message}`);
    }
  }
  if (v["attempt-timeout"] !== undefined) {
    config.attemptTimeoutMs = integer(v["attempt-timeout"], "attempt-timeout", 1, 600) * 1000;
  }
  if (v["max-clients"] !== undefined) {
    config.maxClients = integer(v["max-clients"], "max-clients", 1, 65536);
  }
  if (v["max-attempts"] !== undefined) {
    config.maxAttemptsPerClient = integer(v["max-attempts"], "max-attempts", 1, 65536);
  }
  for (const probe of v.probe ?? []) {
    try {
      config.probes.push(parseHostPort(probe));
    } catch (error) {
      throw new UsageError(`--probe: ${(error as Error).message}`);
    }
  }
  if (v["nutss-ttl"] !== undefined) config.lowTtl = integer(v["nutss-ttl"], "nutss-ttl", 1, 255);
  if (v.group !== undefined) {
    const gid = /^(0|[1-9][0-9]*)$/.test(v.group) ? Number(v.group) : lookupGroup(v.group);
    if (gid === undefined) throw new UsageError(`--group: no group named "${v.group}"`);
    config.group = v.group;
    config.gid = gid;
  }
  return { kind: "run", config };
}
