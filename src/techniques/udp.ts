/**
 * `udp` (and `udp-birthday`): UDP hole punching.
 *
 * Both sides bind their source port and send punch datagrams to each
 * other's public endpoint(s) every `intervalMs` until each knows that the
 * other received one; every punch carries the attempt's token, so a stray
 * or forged datagram cannot complete an attempt:
 *
 * ```
 * PDU1|TOKEN|ROLE|SEEN       ROLE: I (initiator) or R (responder)
 *                            SEEN: 1 once the sender has received the other's punch
 * ```
 * A side is done when it has received the other's punch and a punch with
 * SEEN=1 (the other has received one of its own); it then sends two more
 * with SEEN=1, discards punches for `lingerMs`, and hands the application a
 * socket `connect()`ed to the endpoint the other's punches came from.
 *
 * Progress: the initiator sends `udp1:TOKEN:MODE`, the responder answers
 * with `udp1r:MODE` (forwarded back as peer data). MODE is `e` when the
 * side's NAT maps ports predictably (or it is unknown), `h` when probing
 * showed endpoint-dependent mapping (a new port per destination).
 *
 * Birthday probing (opt-in: the `udp-birthday` technique, or `--udp-birthday`
 * for `udp`): when exactly one side is `h`, that side opens `hardPorts`
 * sockets, each sending punches to the easy side's endpoint (each gets its
 * own random public port), while the easy side sends punches to random
 * ports of the hard side's address, at most `easyProbes` of them at
 * `probeRate` per second. A probe that hits one of the hard side's open
 * mappings passes its NAT (the mapping was opened towards the easy side's
 * endpoint), and the answer passes the easy side's NAT (it has sent to that
 * port). With 256 ports open in a 64,512-port range and 2,048 probes, a
 * match is missed with probability (1 - 256/64512)^2048, about 0.03 %.
 * Both sides `h`: it gives up at once, since nothing can be predicted.
 *
 * @module
 */

import { SO_ERROR, SOL_SOCKET } from "../../ffi/constants.ts";
import { Socket } from "../../ffi/socket.ts";
import {
  formatAddress,
  type InetAddress,
  inetAddress,
  type SocketAddress,
} from "../../ffi/structs.ts";
import { observeUdp, parseHostPort } from "../daemon/discovery.ts";
import { TechniqueError } from "../errors.ts";
import { delay } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";

/** First bytes of every punch datagram. */
export const PUNCH_MAGIC = "PDU1";

/** Tunables (injected in tests). */
export interface UdpOptions {
  /** Milliseconds between punch rounds (default 50). */
  intervalMs?: number;
  /** Milliseconds to discard late punches before handing over (default 150). */
  lingerMs?: number;
  /** Sockets the hard side opens in birthday mode (default 256). */
  hardPorts?: number;
  /** Random ports the easy side probes in birthday mode (default 2048). */
  easyProbes?: number;
  /** Birthday probes per second from the easy side (default 1000). */
  probeRate?: number;
  /** Birthday probing without the `udp-birthday` name (daemon flag --udp-birthday). */
  birthday?: boolean;
}

/** Which way a side's NAT maps ports. */
export type Mode = "e" | "h";

/** A parsed punch datagram. */
export interface Punch {
  token: string;
  role: "I" | "R";
  seen: boolean;
}

/** Encodes a punch datagram. */
export function encodePunch(p: Punch): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${PUNCH_MAGIC}|${p.token}|${p.role}|${p.seen ? 1 : 0}`);
}

/** Parses a punch datagram; null for anything else. */
export function decodePunch(bytes: Uint8Array): Punch | null {
  if (bytes.length > 64) return null;
  const m = new TextDecoder().decode(bytes).match(/^PDU1\|([0-9a-f]{32})\|([IR])\|([01])$/);
  if (m === null) return null;
  return { token: m[1] ?? "", role: m[2] === "I" ? "I" : "R", seen: m[3] === "1" };
}

/** The initiator's progress data. */
export function encodeOffer(token: string, mode: Mode): string {
  return `udp1:${token}:${mode}`;
}

/** Parses the initiator's progress data (the responder's EXTRA). */
export function decodeOffer(text: string): { token: string; mode: Mode } {
  const m = text.match(/^udp1:([0-9a-f]{32}):([eh])$/);
  if (m === null) throw new SyntaxError('udp expects EXTRA "udp1:TOKEN:MODE"');
  return { token: m[1] ?? "", mode: m[2] === "h" ? "h" : "e" };
}

/** The `udp` technique. */
export class Udp implements Technique {
  readonly name: string;
  readonly needsFirewall = false;
  readonly #o: Required<UdpOptions>;

  /** Builds `udp` (or `udp-birthday` when `name` says so). */
  constructor(name: "udp" | "udp-birthday" = "udp", options: UdpOptions = {}) {
    this.name = name;
    this.#o = {
      intervalMs: options.intervalMs ?? 50,
      lingerMs: options.lingerMs ?? 150,
      hardPorts: options.hardPorts ?? 256,
      easyProbes: options.easyProbes ?? 2048,
      probeRate: options.probeRate ?? 1000,
      birthday: options.birthday ?? name === "udp-birthday",
    };
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) {
      throw new RangeError(`${this.name} takes exactly one source port`);
    }
    if (spec.role === "respond") decodeOffer(spec.extra ?? "");
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const birthday = this.#o.birthday || spec.birthday === true;
    const mine = birthday ? await this.#mode(local, spec, context) : "e";
    let token: string;
    let theirs: Promise<Mode>;
    if (spec.role === "initiate") {
      token = Array.from(
        crypto.getRandomValues(new Uint8Array(16)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      context.progress(encodeOffer(token, mine));
      theirs = context.nextPeerData().then((data) => {
        const m = data.match(/^udp1r:([eh])$/);
        if (m === null) {
          throw new TechniqueError(
            `udp expected "udp1r:MODE" from the peer, got "${data.slice(0, 40)}"`,
          );
        }
        return m[1] === "h" ? "h" : "e";
      });
      theirs.catch(() => {});
    } else {
      const offer = decodeOffer(spec.extra ?? "");
      token = offer.token;
      theirs = Promise.resolve(offer.mode);
      context.progress(`udp1r:${mine}`);
    }
    const role = spec.role === "initiate" ? "I" : "R";
    return await this.#punch({ local, peers, token, role, mine, theirs, birthday }, context);
  }

  /** This side's mapping, from two probe servers: `h` when they saw different ports. */
  async #mode(local: InetAddress, spec: AttemptSpec, context: AttemptContext): Promise<Mode> {
    const probes = (spec.probes ?? []).map((text) => parseHostPort(text)).filter((p) =>
      p.family === local.family
    );
    if (probes.length < 2) {
      context.log.info(
        "birthday probing needs two probe servers to classify the NAT; assuming a predictable one",
      );
      return "e";
    }
    const seen = new Set<number>();
    for (const probe of probes.slice(0, 2)) {
      seen.add((await observeUdp(local, probe, context.signal)).port);
    }
    return seen.size > 1 ? "h" : "e";
  }

  async #punch(
    p: {
      local: InetAddress;
      peers: InetAddress[];
      token: string;
      role: "I" | "R";
      mine: Mode;
      theirs: Promise<Mode>;
      birthday: boolean;
    },
    context: AttemptContext,
  ): Promise<Socket> {
    // Senders stop once the peer is found; the attempt's own signal ends everything.
    const found = new AbortController();
    const sending = AbortSignal.any([context.signal, found.signal]);
    const share = PortShare.acquire(p.local);
    const extra: Socket[] = [];
    let conn: Socket | null = null;
    try {
      // The first valid punch tells the peer's endpoint and which local port it reached.
      const first = await new Promise<{ from: SocketAddress; local: InetAddress }>(
        (resolve, reject) => {
          const onPunch = (punch: Punch, from: SocketAddress, local: InetAddress) => {
            if (punch.role !== p.role) resolve({ from, local });
          };
          share.register(
            p.token,
            (punch, from) => onPunch(punch, from, p.local),
            (from) =>
              context.log.debug("ignored a forged or stray punch", { from: formatAddress(from) }),
          );
          const listen = async (socket: Socket) => {
            const buf = new Uint8Array(128);
            const local = socket.localAddress() as InetAddress;
            for (;;) {
              const { length, from } = await socket.receiveFrom(buf, sending);
              const got = decodePunch(buf.subarray(0, length));
              if (got !== null && got.token === p.token) onPunch(got, from, local);
            }
          };
          const watch = (socket: Socket) =>
            void listen(socket).catch((e) => sending.aborted ? undefined : reject(e));
          const punch = () => encodePunch({ token: p.token, role: p.role, seen: false });
          this.#senders(p, share.socket, extra, punch, watch, sending, context).catch((e) =>
            sending.aborted ? undefined : reject(e)
          );
          context.signal.addEventListener("abort", () => reject(context.signal.reason), {
            once: true,
          });
        },
      );
      found.abort(new TechniqueError("peer found"));
      // From now on the peer's datagrams land on a socket connected to it, on the same local port.
      conn = Socket.create(first.local.family, "datagram", { reuseAddress: true, reusePort: true });
      conn.bind(first.local);
      await conn.connect(first.from);
      context.log.debug("peer's punch received", {
        from: formatAddress(first.from),
        on: formatAddress(first.local),
      });
      await this.#confirm(conn, p.token, p.role, context.signal);
      await this.#linger(conn, p.token, context.signal);
      context.log.info("udp punched", {
        local: formatAddress(first.local),
        peer: formatAddress(first.from),
        birthday: first.local.port !== p.local.port,
      });
      // An ICMP error from the punching (a punch that reached the peer's
      // port before its socket existed) would surface as ECONNREFUSED on the
      // application's first call: reading SO_ERROR clears it.
      conn.getOption(SOL_SOCKET, SO_ERROR);
      const result = conn;
      conn = null;
      return result;
    } finally {
      found.abort(new TechniqueError("attempt finished"));
      share.unregister(p.token);
      share.release();
      for (const s of extra) s.close();
      conn?.close();
    }
  }

  /**
   * On the connected socket: punches with SEEN=1 until a punch from the peer
   * with SEEN=1 arrives (it has ours), then two more so that it can finish.
   */
  async #confirm(conn: Socket, token: string, role: "I" | "R", signal: AbortSignal): Promise<void> {
    const seen = encodePunch({ token, role, seen: true });
    const buf = new Uint8Array(128);
    for (;;) {
      await conn.write(seen, signal).catch(() => {});
      const wait = AbortSignal.any([signal, AbortSignal.timeout(this.#o.intervalMs)]);
      try {
        for (;;) {
          const n = await conn.peek(buf, wait);
          const got = decodePunch(buf.subarray(0, n));
          if (got === null) {
            // Application data: the peer has finished, so it has our punch.
            for (let i = 0; i < 2; i++) await conn.write(seen, signal).catch(() => {});
            return;
          }
          await conn.read(buf, signal);
          if (got.token === token && got.role !== role && got.seen) {
            for (let i = 0; i < 2; i++) await conn.write(seen, signal).catch(() => {});
            return;
          }
        }
      } catch (error) {
        if (signal.aborted) throw error;
      }
    }
  }

  /** Sends punches: the plain rounds, and birthday probing once both modes are known. */
  async #senders(
    p: {
      peers: InetAddress[];
      local: InetAddress;
      mine: Mode;
      theirs: Promise<Mode>;
      birthday: boolean;
    },
    main: Socket,
    extra: Socket[],
    punch: () => Uint8Array<ArrayBuffer>,
    watch: (socket: Socket) => void,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    let theirs: Mode | null = null;
    p.theirs.then((m) => theirs = m, () => {});
    let birthdayStarted = false;
    for (let round = 0; !signal.aborted; round++) {
      for (const peer of p.peers) await main.sendTo(punch(), peer, signal).catch(() => {});
      if (p.birthday && theirs !== null && !birthdayStarted) {
        birthdayStarted = true;
        if (p.mine === "h" && theirs === "h") {
          throw new TechniqueError(
            "udp gave up: both NATs map ports per destination (birthday probing needs one predictable side)",
          );
        }
        if (p.mine === "h") this.#openHardPorts(p, extra, punch, watch, signal, context);
        if (theirs === "h") this.#probeRandomPorts(p, main, punch, signal, context);
      }
      await delay(this.#o.intervalMs, signal);
    }
  }

  /** Hard side: many sockets, each a new mapping, all sending to the easy side. */
  #openHardPorts(
    p: { peers: InetAddress[]; local: InetAddress },
    extra: Socket[],
    punch: () => Uint8Array<ArrayBuffer>,
    watch: (socket: Socket) => void,
    signal: AbortSignal,
    context: AttemptContext,
  ): void {
    context.log.info("birthday probing: opening ports", { count: this.#o.hardPorts });
    for (let i = 0; i < this.#o.hardPorts; i++) {
      const socket = Socket.create(p.local.family, "datagram", {
        reuseAddress: true,
        reusePort: true,
      });
      extra.push(socket);
      socket.bind({ ...p.local, port: 0 });
      watch(socket);
    }
    // Each socket punches every interval, for as long as the attempt runs.
    (async () => {
      while (!signal.aborted) {
        for (const socket of extra) {
          for (const peer of p.peers) await socket.sendTo(punch(), peer, signal).catch(() => {});
        }
        await delay(Math.max(this.#o.intervalMs * 4, 200), signal);
      }
    })().catch(() => {});
  }

  /** Easy side: punches to random ports of the hard side's address, bounded in count and rate. */
  #probeRandomPorts(
    p: { peers: InetAddress[] },
    main: Socket,
    punch: () => Uint8Array<ArrayBuffer>,
    signal: AbortSignal,
    context: AttemptContext,
  ): void {
    const target = p.peers[0];
    if (target === undefined) return;
    context.log.info("birthday probing: probing random ports", {
      budget: this.#o.easyProbes,
      rate: this.#o.probeRate,
    });
    (async () => {
      const batch = 10;
      const pause = (1000 * batch) / this.#o.probeRate;
      const ports = crypto.getRandomValues(new Uint16Array(this.#o.easyProbes));
      for (let i = 0; i < ports.length && !signal.aborted; i += batch) {
        for (const port of ports.subarray(i, i + batch)) {
          await main.sendTo(punch(), { ...target, port: 1024 + (port % (65536 - 1024)) }, signal)
            .catch(() => {});
        }
        await delay(pause, signal);
      }
      context.noteError(`birthday probing: ${this.#o.easyProbes} probes sent without a match`);
    })().catch(() => {});
  }

  /** Drops the peer's last punches for `lingerMs`; stops at the first datagram that is not one (it stays queued). */
  async #linger(socket: Socket, token: string, signal: AbortSignal): Promise<void> {
    const wait = AbortSignal.any([signal, AbortSignal.timeout(this.#o.lingerMs)]);
    const buf = new Uint8Array(128);
    try {
      for (;;) {
        const n = await socket.peek(buf, wait);
        const got = decodePunch(buf.subarray(0, n));
        if (got === null || got.token !== token) return;
        await socket.read(buf, signal);
      }
    } catch {
      if (signal.aborted) throw signal.reason;
    }
  }
}

/**
 * One unconnected socket per local endpoint, shared by this worker's
 * concurrent attempts on that port (a session's many clients): datagrams
 * are routed to attempts by token. Separate sockets with SO_REUSEPORT would
 * hash each peer to one of them, often the wrong attempt's.
 */
class PortShare {
  static readonly #shares = new Map<string, PortShare>();
  readonly socket: Socket;
  readonly #key: string;
  readonly #handlers = new Map<string, (punch: Punch, from: SocketAddress) => void>();
  readonly #strays = new Map<string, (from: SocketAddress) => void>();
  #refs = 0;

  private constructor(socket: Socket, key: string) {
    this.socket = socket;
    this.#key = key;
    void this.#loop();
  }

  /** The share for `local`, binding its socket on first use. */
  static acquire(local: InetAddress): PortShare {
    const key = formatAddress(local);
    let share = PortShare.#shares.get(key);
    if (share === undefined) {
      const socket = Socket.create(local.family, "datagram", {
        reuseAddress: true,
        reusePort: true,
      });
      try {
        socket.bind(local);
      } catch (error) {
        socket.close();
        throw error;
      }
      share = new PortShare(socket, key);
      PortShare.#shares.set(key, share);
    }
    share.#refs++;
    return share;
  }

  /** Routes punches carrying `token` to `handler`; `stray` hears of every other datagram. */
  register(
    token: string,
    handler: (punch: Punch, from: SocketAddress) => void,
    stray: (from: SocketAddress) => void,
  ): void {
    this.#handlers.set(token, handler);
    this.#strays.set(token, stray);
  }

  /** Stops routing `token`. */
  unregister(token: string): void {
    this.#handlers.delete(token);
    this.#strays.delete(token);
  }

  /** Drops one reference; the last one closes the socket. */
  release(): void {
    if (--this.#refs > 0) return;
    PortShare.#shares.delete(this.#key);
    this.socket.close();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(128);
    try {
      for (;;) {
        const { length, from } = await this.socket.receiveFrom(buf);
        const punch = decodePunch(buf.subarray(0, length));
        const handler = punch === null ? undefined : this.#handlers.get(punch.token);
        if (punch !== null && handler !== undefined) handler(punch, from);
        else for (const stray of this.#strays.values()) stray(from);
      }
    } catch {
      // Closed by the last release.
    }
  }
}
