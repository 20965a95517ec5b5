/**
 * `relay`: the relay of last resort, through a TURN server's TCP allocation
 * (RFC 6062). Both applications still get an ordinary connected TCP socket:
 * one side's is a data connection to the TURN server that became a byte
 * stream to the peer after ConnectionBind, the other side's is a plain
 * connection to the relayed address.
 *
 * One allocation per attempt, made by the side whose daemon has a TURN
 * server (`--turn`): the initiator when it has one, otherwise the
 * responder. The other side needs no credentials. RFC 6062's Connect is not
 * used: it would need a second allocation (both sides with credentials) and
 * a second relay leg inside the server.
 *
 * ```
 *  allocating side (A)                          connecting side (B)
 *  Allocate ─► relayed address R
 *  "relay1,a,R,S" (with the token first, from the initiator) ─►
 *                                               STUN Binding over TCP to S: its public IP P
 *                    ◄──────────────────────── "relay1,p,P"
 *  CreatePermission(P)
 *  "relay1,r" ────────────────────────────────►
 *                                               connect to R (SRC_PORT when it can)
 *  ◄─ ConnectionAttempt (peer P:port)
 *  ConnectionBind on a new data connection
 *  confirmation over the stream (tcp_confirm.ts, the initiator's token) ◄──────► confirmation
 *  ok (the data connection)                     ok (the connection to R)
 * ```
 *
 * An initiator without a TURN server starts with "relay1,TOKEN,q" and the
 * roles swap. A connection whose confirmation fails (a third host behind
 * P) is closed and A waits for the next ConnectionAttempt. After success,
 * A's worker keeps the control connection and refreshes the allocation
 * while the relayed connection lives (src/turn/keeper.ts).
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { canonicalIp, parseIp } from "../../ffi/ip.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { bindingTcp } from "../discovery/stun_client.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { TechniqueError } from "../errors.ts";
import { TurnControl, type TurnCredentials } from "../turn/client.ts";
import type { TurnKeeper } from "../turn/keeper.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";

/** The tag of every relay message. */
export const RELAY_TAG = "relay1";

/** The initiator's first message. */
export type RelayStart =
  | { token: string; kind: "allocated"; relayed: InetAddress; server: InetAddress }
  | { token: string; kind: "ask" };

function address(ip: string, port: string): InetAddress {
  return parseHostPort(ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`);
}

/** Encodes the initiator's first progress data. */
export function encodeStart(start: RelayStart): string {
  return start.kind === "ask"
    ? `${RELAY_TAG},${start.token},q`
    : `${RELAY_TAG},${start.token},${encodeAllocated(start.relayed, start.server)}`;
}

function encodeAllocated(relayed: InetAddress, server: InetAddress): string {
  return `a,${relayed.address},${relayed.port},${server.address},${server.port}`;
}

/** Decodes the initiator's first progress data; SyntaxError for anything else. */
export function decodeStart(text: string): RelayStart {
  const fields = text.split(",");
  if (fields[0] !== RELAY_TAG || fields.length < 3) {
    throw new SyntaxError(`relay expects "${RELAY_TAG},TOKEN,..." from the initiator`);
  }
  const token = fields[1] ?? "";
  assertAttemptToken(token);
  if (fields[2] === "q" && fields.length === 3) return { token, kind: "ask" };
  const allocated = decodeAllocated(fields.slice(2));
  return { token, kind: "allocated", ...allocated };
}

function decodeAllocated(fields: string[]): { relayed: InetAddress; server: InetAddress } {
  if (fields[0] !== "a" || fields.length !== 5) throw new SyntaxError("bad relay allocation");
  let relayed: InetAddress;
  let server: InetAddress;
  try {
    relayed = address(fields[1] ?? "", fields[2] ?? "");
    server = address(fields[3] ?? "", fields[4] ?? "");
  } catch {
    throw new SyntaxError("bad relay allocation address");
  }
  for (const a of [relayed, server]) {
    if (!isUsableRelayAddress(a.address) || relayed.family !== server.family) {
      throw new RangeError(`relay: the peer's TURN address ${a.address} cannot be a TURN server`);
    }
  }
  return { relayed, server };
}

/**
 * True for an address a remote peer may name as its TURN server or relayed address. The
 * connecting side connects where the peer says: never to this host's loopback, an unspecified,
 * multicast or broadcast address (the peer must not steer a root daemon to local services).
 */
export function isUsableRelayAddress(ip: string): boolean {
  const bytes = parseIp(ip);
  if (bytes.every((b) => b === 0)) return false;
  if (bytes.length === 4) {
    const [a = 0] = bytes;
    return a !== 127 && a < 224 && !bytes.every((b) => b === 255);
  }
  const loopback = bytes.slice(0, 15).every((b) => b === 0) && bytes[15] === 1;
  const mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff;
  return !loopback && bytes[0] !== 0xff && !(mapped && bytes[12] === 127);
}

/** What the technique needs besides the spec. */
export interface RelayOptions {
  /** Holds allocations after success (the worker's). */
  keeper: TurnKeeper;
}

/** The `relay` technique. */
export class Relay implements Technique {
  readonly name = "relay";
  readonly needsFirewall = false;
  readonly #keeper: TurnKeeper | undefined;

  /**
   * A technique whose successful allocations `options.keeper` keeps (the daemon's copy, which
   * only validates requests, has none).
   */
  constructor(options: Partial<RelayOptions> = {}) {
    this.#keeper = options.keeper;
  }

  /** Checks the port count and the initiator's first message. */
  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("relay takes exactly one source port");
    if (spec.role === "respond") {
      const start = decodeStart(spec.extra ?? "");
      if (start.kind === "ask" && spec.turn === undefined) {
        throw new RangeError("relay: neither side has a TURN server (--turn)");
      }
    }
  }

  /** Runs one attempt (see the module doc). */
  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const initiate = spec.role === "initiate";
    if (initiate) {
      const token = newAttemptToken();
      if (spec.turn !== undefined) {
        return await this.#allocating(
          spec,
          context,
          token,
          (allocated) => context.progress(`${RELAY_TAG},${token},${allocated}`),
        );
      }
      context.progress(encodeStart({ token, kind: "ask" }));
      const { relayed, server } = decodeAllocated(await this.#peerFields(context, "a"));
      return await this.#connecting(spec, context, token, relayed, server);
    }
    const start = decodeStart(spec.extra ?? "");
    if (start.kind === "allocated") {
      return await this.#connecting(spec, context, start.token, start.relayed, start.server);
    }
    return await this.#allocating(
      spec,
      context,
      start.token,
      (allocated) => context.progress(`${RELAY_TAG},${allocated}`),
    );
  }

  /** The next peer data `relay1,KIND,...`: its fields from KIND on. */
  async #peerFields(context: AttemptContext, kind: string): Promise<string[]> {
    context.noteError(`waiting for the peer's "${RELAY_TAG},${kind}"`);
    const fields = (await context.nextPeerData()).split(",");
    if (fields[0] !== RELAY_TAG || fields[1] !== kind) {
      throw new TechniqueError(`relay expects the peer data "${RELAY_TAG},${kind},..."`);
    }
    context.noteError("");
    return fields.slice(1);
  }

  async #allocating(
    spec: AttemptSpec,
    context: AttemptContext,
    token: string,
    announce: (allocated: string) => void,
  ): Promise<Socket> {
    const turn = spec.turn;
    if (turn === undefined) throw new TechniqueError("relay: this side has no TURN server");
    const keeper = this.#keeper;
    if (keeper === undefined) throw new TechniqueError("relay: attempts run in the relay worker");
    const server = parseHostPort(turn.server);
    const credentials: TurnCredentials = {};
    if (turn.user !== undefined) credentials.user = turn.user;
    if (turn.password !== undefined) credentials.password = turn.password;
    if (turn.secret !== undefined) credentials.secret = turn.secret;
    const { signal } = context;
    let control: TurnControl;
    try {
      control = await TurnControl.allocate(server, credentials, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      throw new TechniqueError(
        `relay: cannot allocate on ${formatAddress(server)}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    let kept = false;
    try {
      context.log.info("TURN allocation", {
        server: formatAddress(server),
        relayed: formatAddress(control.relayed),
      });
      announce(encodeAllocated(control.relayed, server));
      const [, ip = ""] = await this.#peerFields(context, "p");
      let peerIp: string;
      try {
        peerIp = canonicalIp(ip);
      } catch {
        throw new TechniqueError("relay: the peer's address is no IP address");
      }
      await control.createPermission(peerIp, signal);
      context.progress(`${RELAY_TAG},r`);
      for (;;) {
        const attempt = await control.connectionAttempt(signal);
        if (attempt.peer.address !== peerIp) {
          context.log.warn("relay: a connection from another address", {
            peer: formatAddress(attempt.peer),
          });
          continue;
        }
        const data = await this.#bind(control, attempt.id, spec, context);
        try {
          await confirmPeer(data, {
            token,
            technique: "relay",
            role: spec.role === "initiate" ? "initiator" : "responder",
            signal,
          });
        } catch (error) {
          data.close();
          if (signal.aborted) throw error;
          context.log.warn("relay: a connection failed its confirmation; waiting for the next", {
            peer: formatAddress(attempt.peer),
            error: (error as Error).message,
          });
          continue;
        }
        const local = data.localAddress();
        if (local.family === "unix") throw new TypeError("relay: not an inet socket");
        keeper.hold(control, local, server);
        kept = true;
        context.relayedVia?.(formatAddress(server));
        return data;
      }
    } finally {
      if (!kept) control.close();
    }
  }

  /** ConnectionBind from SRC_PORT when it can be bound, else from a port of the kernel's. */
  async #bind(
    control: TurnControl,
    id: number,
    spec: AttemptSpec,
    context: AttemptContext,
  ): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    try {
      return await control.connectionBind(id, context.signal, local);
    } catch (error) {
      if (context.signal.aborted || !/EADDRINUSE/.test((error as Error).message)) throw error;
      return await control.connectionBind(id, context.signal);
    }
  }

  async #connecting(
    spec: AttemptSpec,
    context: AttemptContext,
    token: string,
    relayed: InetAddress,
    server: InetAddress,
  ): Promise<Socket> {
    const { signal } = context;
    // The public IP the TURN server (and so the relay) sees this side connect from.
    let publicIp: string;
    {
      using probe = Socket.create(server.family, "stream");
      await probe.connect(server, signal);
      publicIp = (await bindingTcp(probe, server, signal)).mapped.address;
    }
    context.progress(`${RELAY_TAG},p,${publicIp}`);
    await this.#peerFields(context, "r");
    const socket = await this.#connect(spec, relayed, signal);
    try {
      await confirmPeer(socket, {
        token,
        technique: "relay",
        role: spec.role === "initiate" ? "initiator" : "responder",
        signal,
      });
    } catch (error) {
      socket.close();
      throw error;
    }
    context.relayedVia?.(formatAddress(server));
    return socket;
  }

  async #connect(spec: AttemptSpec, relayed: InetAddress, signal: AbortSignal): Promise<Socket> {
    for (const port of [spec.srcPorts[0] ?? 0, 0]) {
      const socket = Socket.create(relayed.family, "stream", { reuseAddress: true });
      try {
        socket.bind(inetAddress(spec.srcIp, port));
        await socket.connect(relayed, signal);
        return socket;
      } catch (error) {
        socket.close();
        if (signal.aborted || port === 0 || !/EADDRINUSE/.test((error as Error).message)) {
          throw error;
        }
      }
    }
    throw new TechniqueError("relay: cannot connect to the relayed address");
  }
}
