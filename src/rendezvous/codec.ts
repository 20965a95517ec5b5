/**
 * The rendezvous server's line protocol (TCP, one message per line of at
 * most 1024 bytes before `\n`, fields separated by `|`).
 *
 * Requests (peer to server) and their replies:
 * ```
 * register|PEER_ID[|CREDENTIAL]  ok|register|PEER_ID        (CREDENTIAL: see credentials.ts)
 * publish|PROTO|IP|PORTS         ok|publish|PROTO          (after register)
 * query|PEER_ID|PROTO            peer|PEER_ID|PROTO|IP|PORTS
 * notify|PEER_ID|PAYLOAD         ok|notify|PEER_ID         (after register; the target
 *                                                           receives notify|FROM_ID|PAYLOAD)
 * observe                        observed|IP|PORT          (this connection's public endpoint)
 * ping                           pong
 * anything wrong                 error|COMMAND|REASON      (COMMAND "-" when unreadable)
 * ```
 * CREDENTIAL is 16-128 of `A-Z a-z 0-9 _ -` (base64url or hex); a server
 * with `--secret-file` requires it, otherwise it is optional and binds the ID
 * to it. A wrong credential closes the connection after the error reply.
 *
 * PEER_ID is 1-128 of `A-Z a-z 0-9 . _ : @ + = / -` (a public key in base64
 * fits); PROTO is `tcp` or `udp`; PAYLOAD is printable ASCII and may contain
 * `|` (it is the rest of the line). A disconnect unregisters the peer.
 *
 * Probe ports answer without being asked: a TCP connection receives
 * `observed|IP|PORT` and is closed by the server; any UDP datagram is
 * answered with `observed|IP|PORT`.
 *
 * UDP on the server's main port (one datagram per request, one or two per
 * answer), for peers that punch UDP with the server's help, as the seeds'
 * UDP demos do:
 * ```
 * register|NAME[|CRED] registered|NAME|IP|PORT   the name (or session ID) now points at the
 *                                                sender's public endpoint; only that endpoint
 *                                                may renew it, until it expires
 * keepalive|NAME       alive|NAME                renews the registration (and the sender's NAT
 *                                                mapping); registrations expire after 60 s
 *                                                without one (--udp-expiry)
 * connect|NAME         peer|NAME|IP|PORT         to the sender, and peer|-|IP|PORT (the sender's
 *                                                endpoint) to NAME: both punch to each other;
 *                      unknown|NAME              when NAME is not registered
 *                      error|connect|rate limit exceeded  beyond 20 connects per second
 *                                                to one NAME (--udp-connect-rate)
 * observe              observed|IP|PORT
 * anything else        error|COMMAND|REASON
 * ```
 * One peer can register a session ID once and take any number of clients
 * that `connect` to it.
 *
 * @module
 */

import { canonicalIp } from "../../ffi/ip.ts";
import type { SocketAddress } from "../../ffi/structs.ts";
import { parsePorts } from "../control/codec.ts";

/** Maximum line length in bytes before the `\n`. */
export const MAX_LINE = 1024;

/** A rendezvous request. */
export type RendezvousRequest =
  | { type: "register"; peerId: string; credential?: string }
  | { type: "publish"; protocol: "tcp" | "udp"; ip: string; ports: number[] }
  | { type: "query"; peerId: string; protocol: "tcp" | "udp" }
  | { type: "notify"; peerId: string; payload: string }
  | { type: "observe" }
  | { type: "ping" };

/** A request that could not be decoded; `command` names it in the reply. */
export class RendezvousError extends Error {
  /** The request's command, or "-". */
  readonly command: string;
  /** Builds the error with the reason to send back. */
  constructor(command: string, reason: string) {
    super(reason);
    this.name = "RendezvousError";
    this.command = command;
  }
}

const PEER_ID = /^[A-Za-z0-9._:@+=\/-]{1,128}$/;
const PAYLOAD = /^[\x20-\x7e]{1,900}$/;
const CREDENTIAL = /^[A-Za-z0-9_-]{16,128}$/;

/** True when `text` has the shape of a credential: 16-128 of base64url (hex fits too). */
export function isCredential(text: string): boolean {
  return CREDENTIAL.test(text);
}

/** True when `id` is a valid peer ID. */
export function isPeerId(id: string): boolean {
  return PEER_ID.test(id);
}

function protocol(command: string, text: string | undefined): "tcp" | "udp" {
  if (text === "tcp" || text === "udp") return text;
  throw new RendezvousError(command, `unknown protocol "${(text ?? "").slice(0, 20)}"`);
}

function peerId(command: string, text: string | undefined): string {
  if (text !== undefined && isPeerId(text)) return text;
  throw new RendezvousError(command, "bad peer ID (1-128 of A-Z a-z 0-9 . _ : @ + = / -)");
}

/** Decodes one request line (without `\n`). Throws RendezvousError. */
export function decodeRendezvousRequest(line: string): RendezvousRequest {
  if (line.endsWith("\r")) line = line.slice(0, -1);
  const bar = line.indexOf("|");
  const command = bar < 0 ? line : line.slice(0, bar);
  const known = ["register", "publish", "query", "notify", "observe", "ping"];
  if (!known.includes(command)) {
    throw new RendezvousError("-", `unknown command "${command.slice(0, 20)}"`);
  }
  if (command === "notify") {
    const parts = line.split("|");
    const payload = parts.slice(2).join("|");
    if (parts.length < 3) throw new RendezvousError(command, "notify takes PEER_ID and PAYLOAD");
    const target = peerId(command, parts[1]);
    if (!PAYLOAD.test(payload)) {
      throw new RendezvousError(command, "bad payload (1-900 printable ASCII characters)");
    }
    return { type: "notify", peerId: target, payload };
  }
  const fields = line.split("|");
  if (command === "register") {
    if (fields.length !== 2 && fields.length !== 3) {
      throw new RendezvousError(
        command,
        `register takes PEER_ID and an optional CREDENTIAL, got ${fields.length} fields`,
      );
    }
    const id = peerId(command, fields[1]);
    if (fields.length === 2) return { type: "register", peerId: id };
    const credential = fields[2] ?? "";
    if (!isCredential(credential)) {
      throw new RendezvousError(command, "bad credential (16-128 of A-Z a-z 0-9 _ -)");
    }
    return { type: "register", peerId: id, credential };
  }
  const expected: Record<string, number> = {
    publish: 4,
    query: 3,
    observe: 1,
    ping: 1,
  };
  if (fields.length !== expected[command]) {
    throw new RendezvousError(
      command,
      `${command} takes ${expected[command]} fields, got ${fields.length}`,
    );
  }
  switch (command) {
    case "publish": {
      let ip: string;
      try {
        ip = canonicalIp(fields[2] ?? "");
      } catch {
        throw new RendezvousError(command, `bad address "${(fields[2] ?? "").slice(0, 60)}"`);
      }
      let ports: number[];
      try {
        ports = parsePorts(fields[3] ?? "");
      } catch (error) {
        throw new RendezvousError(command, (error as Error).message);
      }
      return { type: "publish", protocol: protocol(command, fields[1]), ip, ports };
    }
    case "query":
      return {
        type: "query",
        peerId: peerId(command, fields[1]),
        protocol: protocol(command, fields[2]),
      };
    case "observe":
      return { type: "observe" };
    default:
      return { type: "ping" };
  }
}

/** The `observed|IP|PORT\n` line for an inet address; TypeError for a unix one. */
export function observedLine(address: SocketAddress): string {
  if (address.family === "unix") throw new TypeError("Cannot observe a unix socket address");
  return `observed|${address.address}|${address.port}\n`;
}

/** A reply or server-initiated message, parsed by peers. */
export type RendezvousReply =
  | { type: "ok"; command: string; detail: string }
  | { type: "peer"; peerId: string; protocol: "tcp" | "udp"; ip: string; ports: number[] }
  | { type: "notify"; from: string; payload: string }
  | { type: "observed"; ip: string; port: number }
  | { type: "pong" }
  | { type: "error"; command: string; reason: string };

const PORT = /^[1-9][0-9]{0,4}$/;

/** The value of `parse(text)`, or undefined when it throws. */
function attempt<T>(parse: () => T): T | undefined {
  try {
    return parse();
  } catch {
    return undefined;
  }
}

/** Decodes one server line, or returns undefined when it is not one the server sends. */
function reply(fields: string[]): RendezvousReply | undefined {
  const [kind, first = "", second = ""] = fields;
  switch (kind) {
    case "ok": {
      if (fields.length !== 3) return undefined;
      const valid = first === "publish"
        ? second === "tcp" || second === "udp"
        : (first === "register" || first === "notify") && isPeerId(second);
      return valid ? { type: "ok", command: first, detail: second } : undefined;
    }
    case "peer": {
      if (fields.length !== 5 || !isPeerId(first) || (second !== "tcp" && second !== "udp")) {
        return undefined;
      }
      const ip = attempt(() => canonicalIp(fields[3] ?? ""));
      const ports = attempt(() => parsePorts(fields[4] ?? ""));
      if (ip === undefined || ports === undefined) return undefined;
      return { type: "peer", peerId: first, protocol: second, ip, ports };
    }
    case "notify": {
      const payload = fields.slice(2).join("|");
      if (fields.length < 3 || !isPeerId(first) || !PAYLOAD.test(payload)) return undefined;
      return { type: "notify", from: first, payload };
    }
    case "observed": {
      const port = Number(second);
      const ip = attempt(() => canonicalIp(first));
      if (fields.length !== 3 || ip === undefined || !PORT.test(second) || port > 65535) {
        return undefined;
      }
      return { type: "observed", ip, port };
    }
    case "pong":
      return fields.length === 1 ? { type: "pong" } : undefined;
    case "error": {
      const reason = fields.slice(2).join("|");
      if (fields.length < 3 || first === "" || reason === "") return undefined;
      return { type: "error", command: first, reason };
    }
  }
  return undefined;
}

/**
 * Parses a line the server sent (for peers): exactly the lines the server
 * writes (peer IDs valid, addresses canonicalized, ports 1-65535 in plain
 * decimal). Throws SyntaxError on anything else.
 */
export function decodeRendezvousReply(line: string): RendezvousReply {
  const decoded = reply(line.split("|"));
  if (decoded !== undefined) return decoded;
  throw new SyntaxError(`Cannot parse rendezvous message "${line.slice(0, 80)}"`);
}
