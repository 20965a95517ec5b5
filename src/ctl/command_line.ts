/**
 * Command line of `punchctl`: commands, flags, defaults, validation and the
 * help text (from which the man page is generated: keep it complete).
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { canonicalIp } from "../../ffi/ip.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import { parseChoice, parsePorts, type TechniqueChoice } from "../control/codec.ts";
import { DEFAULT_SOCKET_PATH } from "../client/client.ts";
import { VERSION } from "../daemon/config.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { isPeerId } from "../rendezvous/codec.ts";

/** Exit codes of punchctl. */
export const EXIT = {
  /** Done: the command succeeded (connect/listen: connected, and the data flowed until both ends closed). */
  OK: 0,
  /** Failed: punchd unreachable or refusing, no connection, an I/O error. */
  FAILURE: 1,
  /** Bad command line. */
  USAGE: 2,
} as const;

/** A bad command line; the message is one line for stderr. */
export class UsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Flags every command takes. */
export interface Common {
  /** punchd's control socket. */
  socket: string;
  /** JSON instead of text for people. */
  json: boolean;
  /** Milliseconds the command may take (see the help text per command). */
  timeoutMs: number;
  /** Only errors on stderr (connect, listen). */
  quiet: boolean;
}

/** An IP address with ports. */
export interface HostPorts {
  ip: string;
  ports: number[];
}

/** What to punch through the rendezvous server (connect, listen). */
export interface SessionFlags {
  rendezvous: InetAddress;
  id: string;
  credentialFile?: string;
  /** undefined: the address the route to the rendezvous server leaves from. */
  localIp?: string;
  /** undefined: a free port picked at start. */
  port?: number;
  technique: TechniqueChoice;
}

/** What the command line asks for. */
export type Invocation =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "status" | "report"; common: Common }
  | {
    kind: "initiate" | "respond";
    common: Common;
    id: string;
    technique: TechniqueChoice;
    src: HostPorts;
    dst: HostPorts;
    /** respond: the initiator's first progress data. */
    extra?: string;
  }
  | { kind: "connect"; common: Common; session: SessionFlags; peer: string }
  | { kind: "listen"; common: Common; session: SessionFlags };

/** The commands, for the first positional argument. */
export const COMMANDS = ["status", "report", "initiate", "respond", "connect", "listen"] as const;
type CommandName = typeof COMMANDS[number];

/** Default --timeout per command, seconds. */
export const DEFAULT_TIMEOUT_SECS: Record<CommandName, number> = {
  status: 10,
  report: 60,
  initiate: 30,
  respond: 30,
  connect: 30,
  listen: 30,
};

/** The --help text. */
export const HELP = `punchctl ${VERSION}: talk to punchd, the hole punching daemon

Usage:
  punchctl status [--json] [options]
  punchctl report [--json] [options]
  punchctl initiate --src IP:PORTS --dst IP:PORTS [attempt options] [options]
  punchctl respond --src IP:PORTS --dst IP:PORTS --extra DATA [attempt options]
                   [options]
  punchctl connect --rendezvous IP:PORT --id ID [session options] [options] PEER
  punchctl listen --rendezvous IP:PORT --id ID [session options] [options]

Commands:
  status     punchd's version, uptime, clients and attempts now, firewall guards
             held, and per technique: attempts, successes, failures by reason
             class, cancels and time-to-connect percentiles; which techniques
             cannot run on this host and why.
  report     what this host's NAT does, per address family: public address,
             port mapping, RFC 5780 mapping and filtering, port preservation,
             hairpinning, hops to leave the host's own NATs (punchd runs
             discovery against its --stun/--probe servers: takes seconds).
  initiate   start one attempt by hand, for debugging: prints each progress
             reply as "progress DATA" on stdout as it comes (hand the first to
             the peer's "punchctl respond --extra DATA"), and each line of
             the peer's data it passes on as "peer DATA"; ends with
             "connected with TECHNIQUE in MS ms: local ..., remote ..." (and
             closes the connection) or "failed: REASON". Stdin lines are the
             peer's data: "DATA" typed by hand, or the peer's punchctl output
             ("progress DATA", text or --json, is taken; its other lines are
             skipped), so one side's stdout can feed the other's stdin. On a
             terminal, stderr shows one status line that updates.
  respond    answer the peer's attempt by hand: like initiate, with the peer's
             first progress data as --extra.
  connect    punch a connection to PEER through a punchd rendezvous server and
             join it to stdin/stdout, like netcat: register as --id, publish
             the endpoint punchd predicts, initiate to PEER's published one,
             relay the attempt's progress through the server; once connected,
             stdin goes to the peer and the peer's data to stdout.
  listen     the same, waiting for one peer to connect (without time limit)
             and answering its attempt.

Options:
  --socket PATH        punchd's control socket
                       (default ${DEFAULT_SOCKET_PATH})
  --json               status, report: the reply as one line of JSON; initiate,
                       respond: one JSON object per line on stdout instead of
                       text; connect, listen: status lines on stderr as JSON
  --timeout SECS       time limit, 1-3600: status (default 10) and report
                       (default 60) wait this long for punchd's reply;
                       initiate, respond and connect (default 30) cancel the
                       attempt after it; listen (default 30) counts it from the
                       peer's request. The data phase has no time limit.
  -q, --quiet          connect, listen: print nothing on stderr but errors
  -h, --help           print this help and exit
  -V, --version        print the version and exit

Attempt options (initiate, respond):
  --src IP:PORTS       local address and ports punchd binds, e.g. 10.0.1.2:4000
                       or [fd00::2]:4000,4001
  --dst IP:PORTS       the peer's (public) address and ports
  --technique T        a technique, auto (default), auto-udp, or a list
                       (tcp-syni,tcp-nutss); techniques: tcp-direct, tcp-nutss,
                       tcp-syni, tcp-prime, udp, udp-birthday, udp-prime, relay
  --id ID              attempt ID, 1-64 of A-Z a-z 0-9 _ . : @ + -
                       (default punchctl-PID)
  --extra DATA         respond: the initiator's first progress data

Session options (connect, listen):
  --rendezvous IP:PORT the punchd rendezvous server (IP literal, no DNS)
  --id ID              this peer's ID at the server, 1-128 of
                       A-Z a-z 0-9 . _ : @ + = / -
  --credential-file PATH  register with the credential in this file: the ID's
                       token when the server runs with --secret-file, or 16-128
                       of A-Z a-z 0-9 _ - to bind the ID to it otherwise
  --local-ip IP        local address (default: the one the route to the
                       rendezvous server leaves from)
  --port N             local port, 1-65535 (default: a free one)
  --technique T        as above (default auto; auto-udp or a UDP technique
                       carries datagrams: each stdin read is one datagram)

Data (connect, listen): stdout carries only the peer's data; everything else
goes to stderr. TCP: stdin's end shuts down the sending half (the peer reads
end of stream); the peer's end of stream closes stdout once written. punchctl
exits when both directions have ended (exit code 0), or when the peer closed
the connection entirely while stdin still had data (1). UDP: punchctl exits
when stdin ends; empty datagrams (punchd's keepalive, sent every 15 s) are not
written.

Examples:
  R=192.0.2.7:7000    # the rendezvous server
  # ssh to peer bob through a punched TCP connection
  ssh -o ProxyCommand="punchctl connect --rendezvous $R --id me %h" bob
  # copy a file: first on bob, then on alice
  punchctl listen --rendezvous $R --id bob > file
  punchctl connect --rendezvous $R --id alice bob < file

Permissions (deno run): --allow-ffi --allow-read. The user needs access to
punchd's socket (punchd --group).

Exit codes: 0 success, 1 failure, 2 bad command line.`;

const OPTIONS = {
  socket: { type: "string" },
  json: { type: "boolean" },
  timeout: { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  src: { type: "string" },
  dst: { type: "string" },
  technique: { type: "string" },
  id: { type: "string" },
  extra: { type: "string" },
  rendezvous: { type: "string" },
  "credential-file": { type: "string" },
  "local-ip": { type: "string" },
  port: { type: "string" },
} as const;
type OptionName = keyof typeof OPTIONS;

const COMMON: readonly OptionName[] = ["socket", "json", "timeout", "help", "version"];
/** connect and listen: a whole attempt through a rendezvous server. */
const SESSION: readonly OptionName[] = [
  ...COMMON,
  "quiet",
  "rendezvous",
  "id",
  "credential-file",
  "local-ip",
  "port",
  "technique",
];
const ALLOWED: Record<CommandName, readonly OptionName[]> = {
  status: COMMON,
  report: COMMON,
  initiate: [...COMMON, "src", "dst", "technique", "id"],
  respond: [...COMMON, "src", "dst", "technique", "id", "extra"],
  connect: SESSION,
  listen: SESSION,
};

function usage<T>(run: () => T, flag?: string): T {
  try {
    return run();
  } catch (error) {
    const message = (error as Error).message.split("\n")[0] ?? "bad command line";
    throw new UsageError(flag === undefined ? message : `--${flag}: ${message}`);
  }
}

/** Parses `IP:PORTS`: `10.0.1.2:4000`, `[fd00::2]:4000,4001`. */
export function parseHostPorts(text: string, flag: string): HostPorts {
  const match = text.match(/^\[([^\]]+)\]:([0-9,]+)$/) ?? text.match(/^([^:\[\]]+):([0-9,]+)$/);
  if (match === null) {
    throw new UsageError(`--${flag}: expected IP:PORTS or [IPv6]:PORTS, got "${text}"`);
  }
  return {
    ip: usage(() => canonicalIp(match[1] ?? ""), flag),
    ports: usage(() => parsePorts(match[2] ?? ""), flag),
  };
}

function technique(text: string | undefined): TechniqueChoice {
  const choice = (text ?? "auto") as TechniqueChoice;
  usage(() => parseChoice(choice), "technique");
  return choice;
}

function required(value: string | undefined, flag: string, command: string): string {
  if (value === undefined) throw new UsageError(`${command} needs --${flag}`);
  return value;
}

/** Parses argv (without the program name); throws UsageError on any bad argument. */
export function parseCommandLine(args: readonly string[], pid = Deno.pid): Invocation {
  const parsed = usage(() =>
    parseArgs({ args: [...args], strict: true, allowPositionals: true, options: OPTIONS })
  );
  const v = parsed.values;
  const [command, ...rest] = parsed.positionals;
  if (v.help || command === "help") return { kind: "help" };
  if (v.version) return { kind: "version" };
  if (command === undefined) throw new UsageError("a command is needed: " + COMMANDS.join(", "));
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new UsageError(`unknown command "${command}" (commands: ${COMMANDS.join(", ")})`);
  }
  const name = command as CommandName;
  for (const flag of Object.keys(v) as OptionName[]) {
    if (!ALLOWED[name].includes(flag)) throw new UsageError(`${name} takes no --${flag}`);
  }
  if (name === "connect" ? rest.length !== 1 : rest.length !== 0) {
    throw new UsageError(
      name === "connect"
        ? "connect needs exactly one PEER (the peer's ID at the rendezvous server)"
        : `${name} takes no argument "${rest[0]}"`,
    );
  }
  const common: Common = {
    socket: v.socket ?? DEFAULT_SOCKET_PATH,
    json: v.json === true,
    timeoutMs:
      usage(() =>
        integerFlag(v.timeout ?? String(DEFAULT_TIMEOUT_SECS[name]), "timeout", 1, 3600)
      ) * 1000,
    quiet: v.quiet === true,
  };
  if (common.socket === "") throw new UsageError("--socket: the path is empty");
  switch (name) {
    case "status":
    case "report":
      return { kind: name, common };
    case "initiate":
    case "respond": {
      const id = v.id ?? `punchctl-${pid}`;
      if (!/^[A-Za-z0-9_.:@+-]{1,64}$/.test(id)) {
        throw new UsageError("--id: an attempt ID is 1-64 of A-Z a-z 0-9 _ . : @ + -");
      }
      const attempt = {
        common,
        id,
        technique: technique(v.technique),
        src: parseHostPorts(required(v.src, "src", name), "src"),
        dst: parseHostPorts(required(v.dst, "dst", name), "dst"),
      };
      return name === "respond"
        ? { kind: name, ...attempt, extra: required(v.extra, "extra", name) }
        : { kind: name, ...attempt };
    }
    case "connect":
    case "listen": {
      const id = required(v.id, "id", name);
      const rendezvous = required(v.rendezvous, "rendezvous", name);
      if (!isPeerId(id)) {
        throw new UsageError("--id: a peer ID is 1-128 of A-Z a-z 0-9 . _ : @ + = / -");
      }
      const session: SessionFlags = {
        rendezvous: usage(() => parseHostPort(rendezvous), "rendezvous"),
        id,
        technique: technique(v.technique),
      };
      if (v["credential-file"] !== undefined) session.credentialFile = v["credential-file"];
      if (v["local-ip"] !== undefined) {
        const text = v["local-ip"];
        session.localIp = usage(() => canonicalIp(text), "local-ip");
      }
      if (v.port !== undefined) {
        const text = v.port;
        session.port = usage(() => integerFlag(text, "port", 1, 65535));
      }
      if (name === "listen") return { kind: name, common, session };
      const peer = rest[0] ?? "";
      if (!isPeerId(peer)) {
        throw new UsageError(`bad PEER "${peer}": 1-128 of A-Z a-z 0-9 . _ : @ + = / -`);
      }
      return { kind: name, common, session, peer };
    }
  }
}
