/**
 * Command line of `punchd`: flags, defaults, validation and help text.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { lookupGroup } from "../../ffi/syscalls.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import { type Level, LEVELS, parseLevel } from "../log.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { parsePortRanges, type PortRange } from "./ports.ts";
import { configFileArgs, ConfigFileError, type SettingKind } from "./config_file.ts";
import { DEFAULT_SOCKET_PATH } from "../control/server.ts";

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
  maxClientsPerUser: number;
  maxAttemptsPerClient: number;
  maxAttemptsPerUser: number;
  /** Attempt starts admitted per second, all clients together (a tenth of them at once). */
  startRate: number;
  maxGuards: number;
  maxGuardsPerUser: number;
  /** Milliseconds an idle technique worker lives on. */
  workerIdleMs: number;
  /** Source ports non-root clients may use (undefined: all unprivileged ones). */
  allowPorts?: PortRange[];
  /** Source ports non-root clients may never use. */
  denyPorts?: PortRange[];
  /**
   * Discovery servers for `endpoint`, in order: STUN servers (`--stun`) and
   * punchd rendezvous probe ports (`--probe`, which speak STUN too), over
   * UDP and TCP at the same port.
   */
  probes: InetAddress[];
  /** TURN server for the `relay` technique (RFC 6062 TCP allocations); undefined: no relay. */
  turn?: TurnConfig;
  /** Keepalive set on every TCP socket handed over; undefined: off. */
  tcpKeepalive?: TcpKeepalive;
  /** TTL of the low-TTL SYNs (tcp-nutss, tcp-direct); undefined: discovered per destination (`auto`). */
  lowTtl?: number;
  /** Let `udp` fall back to birthday probing. */
  udpBirthday: boolean;
  /** Where to serve Prometheus metrics (`--metrics`); undefined: nowhere. */
  metrics?: InetAddress;
  /** The configuration file read (`--config`). */
  configPath?: string;
}

/** A TURN server and the long-term credentials punchd uses with it (never logged). */
export interface TurnConfig {
  server: InetAddress;
  /** Static long-term credentials (`--turn-user` and `--turn-password-file`). */
  user?: string;
  password?: string;
  /**
   * Shared secret of the TURN REST API scheme (coturn's `static-auth-secret`):
   * username `EXPIRY:USER`, password base64(HMAC-SHA1(secret, username)).
   */
  secret?: string;
}

/** TCP keepalive of handed-over sockets (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT). */
export interface TcpKeepalive {
  idleSecs: number;
  intervalSecs: number;
  count: number;
}

/** The default `--tcp-keepalive`: a probe after 60 s idle, every 10 s, 6 unanswered ones end it. */
export const DEFAULT_TCP_KEEPALIVE: TcpKeepalive = { idleSecs: 60, intervalSecs: 10, count: 6 };

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
  --socket PATH            control socket path (default ${DEFAULT_SOCKET_PATH}); its
                           directory must be writable by root only (created 0750
                           root:GROUP when missing)
  --group NAME             group allowed to use the socket (mode 0660)
  --log-level LEVEL        ${LEVELS.join(", ")} (default info)
  --attempt-timeout SECS   time limit of one attempt, 1-600 (default 10)
  --max-clients N          clients connected at once, 1-65536 (default 1024)
  --max-clients-per-user N clients of one non-root user at once, 1-65536
                           (default 64)
  --max-attempts N         attempts per client at once, 1-65536 (default 256)
  --max-attempts-per-user N  attempts of one non-root user at once, 1-1000000
                           (default 512)
  --start-rate N           attempts started per second, all clients together,
                           shared fairly, N/10 at once after a pause,
                           1-1000000 (default 200)
  --max-guards N           firewall set elements held at once, 1-1000000
                           (default 16384)
  --max-guards-per-user N  firewall set elements held at once by one non-root
                           user, 1-1000000 (default 4096)
  --allow-ports RANGES     source ports non-root clients may use, e.g.
                           20000-60000,7000 (default: every unprivileged port)
  --deny-ports RANGES      source ports non-root clients may never use
  --worker-idle SECS       stop a technique worker after this long without
                           attempts, returning its memory, 1-3600 (default 30)
  --stun IP:PORT           STUN server (RFC 8489, UDP and TCP at that port) for
                           endpoint discovery (repeatable; two or more show
                           how the NAT maps ports; one with OTHER-ADDRESS also
                           shows how it filters, RFC 5780)
  --probe IP:PORT          a punchd rendezvous server's probe port (it speaks
                           STUN: the same as --stun; --stun servers come first)
  --turn IP:PORT           TURN server (RFC 5766/6062, TCP) for the relay
                           technique, the last step of auto (default: none)
  --turn-user NAME         TURN long-term credential user name
  --turn-password-file PATH  file holding the TURN password (first line)
  --turn-secret-file PATH  file holding a TURN REST API shared secret (coturn's
                           static-auth-secret) instead of a password
  --tcp-keepalive IDLE,INTERVAL,COUNT|off
                           keepalive of every TCP socket handed over, seconds
                           (default 60,10,6: keeps NAT mappings alive, ends a
                           dead path within 2 minutes)
  --nutss-ttl N|auto       TTL of the low-TTL SYNs (tcp-nutss, tcp-direct), 1-255,
                           or auto (default): per destination, the hops to
                           leave the host's own NATs and firewalls, found by
                           TTL-limited probes (at least 2; 2 when they cannot
                           tell)
  --udp-birthday           let udp fall back to birthday probing when one NAT
                           maps ports per destination (as udp-birthday does)
  --metrics IP:PORT        serve Prometheus metrics at http://IP:PORT/metrics
                           (default: off; anyone who reaches it reads the
                           counters: keep it on loopback)
  --config PATH            read settings from a TOML file first: each key is a
                           long option without --, e.g. group = "punchd",
                           stun = ["192.0.2.1:3478"], udp-birthday = true;
                           options on the command line win
  -h, --help               print this help and exit
  -V, --version            print the version and exit

Exit codes: 0 stopped cleanly, 1 failure, 2 bad command line or configuration file.
Techniques: tcp-direct, tcp-nutss (needs CAP_NET_ADMIN for nftables), tcp-syni
(also CAP_NET_RAW for capture and raw sockets), tcp-prime, udp, udp-birthday,
udp-prime, relay (a TURN server: --turn). Root has both capabilities.`;

function integer(text: string, flag: string, min: number, max: number): number {
  try {
    return integerFlag(text, flag, min, max);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** The command line's options (also the configuration file's keys, but config/help/version). */
const OPTIONS = {
  socket: { type: "string" },
  group: { type: "string" },
  "log-level": { type: "string" },
  "attempt-timeout": { type: "string" },
  "max-clients": { type: "string" },
  "max-attempts": { type: "string" },
  "max-clients-per-user": { type: "string" },
  "max-attempts-per-user": { type: "string" },
  "start-rate": { type: "string" },
  "max-guards": { type: "string" },
  "max-guards-per-user": { type: "string" },
  "allow-ports": { type: "string" },
  "worker-idle": { type: "string" },
  "deny-ports": { type: "string" },
  probe: { type: "string", multiple: true },
  stun: { type: "string", multiple: true },
  turn: { type: "string" },
  "turn-user": { type: "string" },
  "turn-password-file": { type: "string" },
  "turn-secret-file": { type: "string" },
  "tcp-keepalive": { type: "string" },
  "nutss-ttl": { type: "string" },
  "udp-birthday": { type: "boolean" },
  metrics: { type: "string" },
  config: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/** Settings a configuration file may hold, and their kinds. */
export const CONFIG_SETTINGS: Readonly<Record<string, SettingKind>> = Object.fromEntries(
  Object.entries(OPTIONS).filter(([name]) => !["config", "help", "version"].includes(name)).map((
    [name, option],
  ) => [
    name,
    option.type === "boolean" ? "boolean" : "multiple" in option ? "multiple" : "string",
  ]),
);

/**
 * Parses argv (without the program name), with the settings of `--config
 * FILE` under it (the command line wins). Throws UsageError on any bad flag;
 * a bad file's error names the file.
 */
export function parseCommandLine(args: readonly string[]): Invocation {
  let raw;
  try {
    raw = parseArgs({ args: [...args], strict: true, allowPositionals: false, options: OPTIONS })
      .values;
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0] ?? "bad command line");
  }
  const path = raw.config;
  if (raw.help || raw.version || path === undefined || path === "") return parseFlags(args);
  const given = new Set<string>();
  for (const arg of args) {
    const name = arg.match(/^--([a-z0-9-]+)/)?.[1];
    if (name !== undefined) given.add(name);
  }
  let fileArgs: string[];
  try {
    fileArgs = configFileArgs(path, CONFIG_SETTINGS, given);
    parseFlags(fileArgs);
  } catch (error) {
    if (error instanceof ConfigFileError) throw new UsageError(error.message);
    if (error instanceof UsageError) {
      throw new UsageError(`${path}: ${error.message.replace(/^--/, "")}`);
    }
    throw error;
  }
  return parseFlags([...fileArgs, ...args]);
}

function parseFlags(args: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: OPTIONS,
    });
  } catch (error) {
    throw new UsageError((error as Error).message.split("\n")[0] ?? "bad command line");
  }
  const v = parsed.values;
  if (v.help) return { kind: "help" };
  if (v.version) return { kind: "version" };
  const config: Config = {
    socketPath: v.socket ?? DEFAULT_SOCKET_PATH,
    logLevel: "info",
    attemptTimeoutMs: 10_000,
    maxClients: 1024,
    maxClientsPerUser: 64,
    maxAttemptsPerClient: 256,
    maxAttemptsPerUser: 512,
    startRate: 200,
    maxGuards: 16384,
    maxGuardsPerUser: 4096,
    workerIdleMs: 30_000,
    probes: [],
    tcpKeepalive: DEFAULT_TCP_KEEPALIVE,
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
  if (v["max-clients-per-user"] !== undefined) {
    config.maxClientsPerUser = integer(v["max-clients-per-user"], "max-clients-per-user", 1, 65536);
  }
  if (v["max-attempts-per-user"] !== undefined) {
    config.maxAttemptsPerUser = integer(
      v["max-attempts-per-user"],
      "max-attempts-per-user",
      1,
      1_000_000,
    );
  }
  if (v["max-guards"] !== undefined) {
    config.maxGuards = integer(v["max-guards"], "max-guards", 1, 1_000_000);
  }
  if (v["max-guards-per-user"] !== undefined) {
    config.maxGuardsPerUser = integer(
      v["max-guards-per-user"],
      "max-guards-per-user",
      1,
      1_000_000,
    );
  }
  if (v["worker-idle"] !== undefined) {
    config.workerIdleMs = integer(v["worker-idle"], "worker-idle", 1, 3600) * 1000;
  }
  for (const flag of ["allow-ports", "deny-ports"] as const) {
    const text = v[flag];
    if (text === undefined) continue;
    try {
      const ranges = parsePortRanges(text);
      if (flag === "allow-ports") config.allowPorts = ranges;
      else config.denyPorts = ranges;
    } catch (error) {
      throw new UsageError(`--${flag}: ${(error as Error).message}`);
    }
  }
  if (v["max-attempts"] !== undefined) {
    config.maxAttemptsPerClient = integer(v["max-attempts"], "max-attempts", 1, 65536);
  }
  if (v["start-rate"] !== undefined) {
    config.startRate = integer(v["start-rate"], "start-rate", 1, 1_000_000);
  }
  for (const flag of ["stun", "probe"] as const) {
    for (const server of v[flag] ?? []) {
      try {
        config.probes.push(parseHostPort(server));
      } catch (error) {
        throw new UsageError(`--${flag}: ${(error as Error).message}`);
      }
    }
  }
  if (config.probes.length > 8) throw new UsageError("--stun/--probe: at most 8 servers");
  const turn = parseTurn(v);
  if (turn !== undefined) config.turn = turn;
  if (v["tcp-keepalive"] !== undefined) {
    const keepalive = parseKeepalive(v["tcp-keepalive"]);
    if (keepalive === undefined) delete config.tcpKeepalive;
    else config.tcpKeepalive = keepalive;
  }
  if (v["nutss-ttl"] !== undefined && v["nutss-ttl"] !== "auto") {
    config.lowTtl = integer(v["nutss-ttl"], "nutss-ttl", 1, 255);
  }
  if (v.metrics !== undefined) {
    try {
      config.metrics = parseHostPort(v.metrics);
    } catch (error) {
      throw new UsageError(`--metrics: ${(error as Error).message}`);
    }
  }
  if (v.config !== undefined) {
    if (v.config === "") throw new UsageError("--config: the path is empty");
    config.configPath = v.config;
  }
  if (v.group !== undefined) {
    const gid = /^(0|[1-9][0-9]*)$/.test(v.group) ? Number(v.group) : lookupGroup(v.group);
    if (gid === undefined) throw new UsageError(`--group: no group named "${v.group}"`);
    config.group = v.group;
    config.gid = gid;
  }
  return { kind: "run", config };
}

/** Reads the first line of a secret file; UsageError naming the flag when it cannot. */
function readSecret(path: string, flag: string): string {
  let text;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    throw new UsageError(`--${flag}: cannot read ${path}: ${(error as Error).message}`);
  }
  const line = text.split(/\r?\n/)[0] ?? "";
  if (line === "") throw new UsageError(`--${flag}: ${path} is empty`);
  if (line.length > 512) {
    throw new UsageError(`--${flag}: the secret is longer than 512 characters`);
  }
  return line;
}

function parseTurn(v: {
  turn?: string | undefined;
  "turn-user"?: string | undefined;
  "turn-password-file"?: string | undefined;
  "turn-secret-file"?: string | undefined;
}): TurnConfig | undefined {
  const credentials = v["turn-user"] ?? v["turn-password-file"] ?? v["turn-secret-file"];
  if (v.turn === undefined) {
    if (credentials !== undefined) {
      throw new UsageError("--turn-user/--turn-password-file/--turn-secret-file need --turn");
    }
    return undefined;
  }
  let server;
  try {
    server = parseHostPort(v.turn);
  } catch (error) {
    throw new UsageError(`--turn: ${(error as Error).message}`);
  }
  const user = v["turn-user"];
  if (user !== undefined && !/^[\x21-\x7e]{1,128}$/.test(user)) {
    throw new UsageError("--turn-user: 1-128 printable ASCII characters without spaces");
  }
  const passwordFile = v["turn-password-file"];
  const secretFile = v["turn-secret-file"];
  if (passwordFile !== undefined && secretFile !== undefined) {
    throw new UsageError("--turn-password-file and --turn-secret-file exclude each other");
  }
  if (passwordFile !== undefined) {
    if (user === undefined) throw new UsageError("--turn-password-file needs --turn-user");
    return { server, user, password: readSecret(passwordFile, "turn-password-file") };
  }
  if (secretFile !== undefined) {
    return {
      server,
      ...(user !== undefined ? { user } : {}),
      secret: readSecret(secretFile, "turn-secret-file"),
    };
  }
  throw new UsageError("--turn needs --turn-user with --turn-password-file, or --turn-secret-file");
}

function parseKeepalive(text: string): TcpKeepalive | undefined {
  if (text === "off") return undefined;
  const parts = text.split(",");
  if (parts.length !== 3) {
    throw new UsageError(`--tcp-keepalive: expected IDLE,INTERVAL,COUNT or off, got "${text}"`);
  }
  return {
    idleSecs: integer(parts[0] ?? "", "tcp-keepalive", 1, 32767),
    intervalSecs: integer(parts[1] ?? "", "tcp-keepalive", 1, 32767),
    count: integer(parts[2] ?? "", "tcp-keepalive", 1, 127),
  };
}
