/**
 * `udp` (and `udp-birthday`): UDP hole punching.
 *
 * Both sides bind their source port and send punch datagrams to each
 * other's public endpoint(s) every `intervalMs` until each knows that the
 * other received one. A punch never carries the attempt's token: the token
 * keys an HMAC over it (see `udp_punch.ts` for the 42-byte datagram), and a
 * punch counts only when it comes from the peer's address (DST_IP and
 * DST_PORTS; any port of DST_IP only while birthday probing), so neither a
 * forged nor a captured and replayed punch can complete an attempt:
 *
 * ```
 * offset size field
 *  0      4   "PDU2"  magic and version
 *  4      1   ROLE    "I" initiator or "R" responder
 *  5      1   FLAGS   bit 0 SEEN: the sender has received the other's punch;
 *                     bit 1 LAST (only with SEEN): the sender's last punch; other bits 0
 *  6      8   NONCE   the sender's, random, one per side and attempt
 * 14      8   ECHO    with SEEN, the NONCE of the other's punch it received; else zeros
 * 22      4   COUNT   the sender's punch number, big-endian
 * 26     16   MAC     first 16 bytes of HMAC-SHA256 keyed by TOKEN over
 *                     "punchd udp PDU2" 0x00, LEN, IP (LEN bytes), bytes 0-25
 * ```
 * TOKEN is the attempt's 16 token bytes; IP the responder's address as the
 * initiator punches it (its DST_IP), LEN 4 or 16. FLAGS is under the MAC,
 * so no one without the token can forge a LAST (or strip one).
 *
 * Hand-over. The application gets a socket `connect()`ed to the endpoint
 * the other's first accepted punch came from, bound to the local port it
 * reached, and its first read there must never be a punch: the other's
 * punches in flight when a side hands over would reach the application as
 * data. So a side hands over only once it knows that no more can come:
 *
 * ```
 *  first accepted punch ─► connected socket
 *        │ (a SEEN punch echoing our NONCE? then done at once)
 *        ▼
 *   CONFIRMING ── SEEN punch every intervalMs (what is queued is read first)
 *        │ the other's SEEN punch echoing our NONCE (LAST or not)
 *        ▼
 *   DONE: a SEEN punch, then a SEEN|LAST punch; nothing else is ever sent
 *        │ the other's LAST ─────────────────────────────────► hand over
 *        │ a datagram that is not a punch (stays queued) ─────► hand over
 *        │ fallback wait ran out (what is queued read first) ─► hand over
 *  (CONFIRMING also hands over, sending nothing, at a datagram that is
 *   not a punch: the other has handed over already.)
 * ```
 * Why the other's LAST suffices: it is the last datagram the other sends,
 * and every punch it sent before (plain ones from its punching socket, SEEN
 * ones from its connected socket, probes) left before it on the same path,
 * so they arrived before it: each sender stops for good once its peer is
 * found, before its first SEEN punch (`sendPunch` and the birthday senders
 * check the attempt's `found` signal before every send). Each side sends
 * one LAST, on becoming done, so with no loss the two LASTs are the last
 * datagrams of the exchange and each side hands over on the other's. Both
 * finishing at once is the same: each sends its pair, each hands over on
 * the other's LAST. The SEEN punch before the LAST makes the other done
 * when the LAST is lost (either of the two suffices), and the punches
 * already queued when a LAST is read (a duplicated datagram) are taken off
 * before the hand-over. A side reads what is queued before it sends its
 * next SEEN punch or gives up waiting: a LAST that sat unread behind a busy
 * event loop spares the punch, or ends the wait after all.
 *
 * Typical timing: B's punch reaches A (A's first), A's SEEN punch reaches B
 * (B's first, echoing B: B is done and sends its pair), B's pair reaches A
 * (A done, holds B's LAST: A sends its pair and hands over), A's LAST
 * reaches B (B hands over): 2 round trips from B's first punch, no wait
 * (it was 1.5 round trips and a fixed 150 ms linger).
 *
 * Loss. A side that is done waits for the other's LAST at most
 * `2 × intervalMs + 3 × RTT + 5 ms`, capped at `lingerMs` (default 150).
 * RTT is sampled when the side becomes done: from its first SEEN punch when
 * the other's LAST made it done (that LAST answers a SEEN punch sent no
 * earlier), else from its first punch of any TTL (whatever the other echoed
 * left no earlier), so it is an upper bound of the round trip and includes
 * the other's processing (for an initiator made done by a SEEN punch also
 * the offer's trip through the rendezvous channel). Only a lost LAST or a
 * busy peer makes the wait run out, so it is generous: a daemon with many
 * attempts can take tens of milliseconds to answer, which the two punch
 * intervals cover. A LAST is never sent twice (a second one could reach the
 * other application once the first has ended its wait).
 * - The other's LAST lost: this side hands over when the wait runs out;
 *   the other sends nothing more (it has handed over, or it waits too).
 * - A side's SEEN punch and its LAST both lost while the other is not done:
 *   the other keeps sending SEEN punches, one per interval, until that
 *   application's first datagram ends the other's wait (it hands over
 *   then). A punch reordered on the path behind the LAST that followed it,
 *   a LAST duplicated after it was read, and the punches of a peer whose
 *   event loop runs seconds late (1,000 attempts at once through one
 *   daemon pair: about half the hand-overs met one) arrive after the
 *   hand-over too.
 *
 * None of them reaches the application: before handing over, a side
 * attaches a socket filter (SO_ATTACH_FILTER, classic BPF) to the socket
 * that drops every 42-byte datagram carrying `PDU2`, the other's ROLE and
 * the other's NONCE (8 random bytes of this attempt), then takes off what
 * was queued before the filter. The filter stays with the socket the
 * application gets; it passes everything else, costs a few instructions
 * per datagram, and the application may replace it (SO_ATTACH_FILTER) or
 * remove it (SO_DETACH_FILTER).
 *
 * Mixing with a punchd from before LAST (same MAGIC): the older side's
 * strict codec takes a LAST for the other application's first datagram; it
 * hands over with that punch queued (its application reads one `PDU2`
 * datagram first), and this side, never getting a LAST, hands over on its
 * fallback wait. Both connect.
 *
 * Progress: the initiator sends `udp2:TOKEN:MODE:IP` (TOKEN in 32 lowercase
 * hex digits; IP: its DST_IP in canonical text), the responder answers with
 * `udp2r:MODE` (forwarded back as peer data). MODE is `e` when the side's
 * NAT maps ports predictably (or it is unknown), `h` when probing showed
 * endpoint-dependent mapping (a new port per destination).
 *
 * Birthday probing (opt-in: the `udp-birthday` technique, or `--udp-birthday`
 * for `udp`): when exactly one side is `h`, that side opens `hardPorts`
 * sockets, each sending punches to the easy side's endpoint (each gets its
 * own random public port), while the easy side sends punches to random
 * ports of the hard side's address, at most `easyProbes` of them at
 * `probeRate` per second, and from then on accepts punches from any port of
 * that address. A probe that hits one of the hard side's open mappings
 * passes its NAT (the mapping was opened towards the easy side's endpoint),
 * and the answer passes the easy side's NAT (it has sent to that port). With 256 ports open in a 64,512-port range and 2,048 probes, a
 * match is missed with probability (1 - 256/64512)^2048, about 0.03 %.
 * Both sides `h`: it gives up at once, since nothing can be predicted.
 *
 * The initiator's first punches have a low TTL (`spec.lowTtl`, else 2), so
 * that they cannot reach an answering NAT on the peer's side before the
 * peer's own mapping exists; a side announces itself (offer, answer) only
 * after its first punches have left, and a birthday hard side opens its
 * ports before that. `udp_policy.ts` has the rules, and when an attempt
 * gives up early (telling the peer with the progress line `udp2x:CODE`).
 *
 * @module
 */

import { canonicalIp, parseIp } from "../../ffi/ip.ts";
import { DEFAULT_HOP_LIMIT } from "../discovery/hop_limit.ts";
import { SO_ERROR, SOL_SOCKET } from "../../ffi/constants.ts";
import { Socket } from "../../ffi/socket.ts";
import {
  formatAddress,
  type InetAddress,
  inetAddress,
  type SocketAddress,
} from "../../ffi/structs.ts";
import { observeUdp, parseHostPort } from "../discovery/endpoint.ts";
import { TechniqueError } from "../errors.ts";
import { udpDropProgram } from "../packet/bpf.ts";
import { delay } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";
import { PortShare } from "./udp_port_share.ts";
import {
  acceptPunch,
  encodePunch,
  NONCE_LENGTH,
  type PeerAddressing,
  type Punch,
  PUNCH_LENGTH,
  punchFields,
  PunchKey,
  type PunchRole,
  sameNonce,
  TOKEN_LENGTH,
} from "./udp_punch.ts";
import { StrayLog } from "./udp_strays.ts";
import {
  decodeNotice,
  dropQueued,
  encodeNotice,
  GiveUp,
  hopeless,
  isIcmpError,
  type Mode,
  MovedPeer,
  RefusedPunches,
  sendPunch,
} from "./udp_policy.ts";

export { PUNCH_MAGIC } from "./udp_punch.ts";

/** Tunables (injected in tests). */
export interface UdpOptions {
  /** Milliseconds between punch rounds (default 50). */
  intervalMs?: number;
  /**
   * Milliseconds at most to wait for the peer's LAST punch once this side
   * has sent its own (default 150); the wait is shorter on a short round
   * trip (see the module doc). Without loss no side waits for it.
   */
  lingerMs?: number;
  /** Sockets the hard side opens in birthday mode (default 256). */
  hardPorts?: number;
  /** Random ports the easy side probes in birthday mode (default 2048). */
  easyProbes?: number;
  /** Birthday probes per second from the easy side (default 1000). */
  probeRate?: number;
  /** Birthday probing without the `udp-birthday` name (daemon flag --udp-birthday). */
  birthday?: boolean;
  /** Milliseconds of the peer's punches from an unannounced port before giving up (default 1000). */
  movedMs?: number;
  /** Milliseconds a NAT classification is reused for the same local endpoint (default 60000). */
  modeMs?: number;
  /** Milliseconds the easy side waits for an answer after its last birthday probe (default 1000). */
  probeGraceMs?: number;
}

export type { Mode };

/** The initiator's progress data: what the responder needs to punch and to check punches. */
export interface Offer {
  /** 32 lowercase hex digits: the 16 bytes that key every punch's MAC. */
  token: string;
  mode: Mode;
  /** The responder's address as the initiator punches it (canonical text). */
  ip: string;
}

const OFFER_FORMAT = 'udp expects EXTRA "udp2:TOKEN:MODE:IP"';

/** The initiator's progress data. */
export function encodeOffer(offer: Offer): string {
  return `udp2:${offer.token}:${offer.mode}:${offer.ip}`;
}

/** Parses the initiator's progress data (the responder's EXTRA); only the canonical IP text. */
export function decodeOffer(text: string): Offer {
  if (text.startsWith("udp1:")) {
    throw new SyntaxError(
      `${OFFER_FORMAT}; "udp1:..." comes from an older punchd, whose punches show the token`,
    );
  }
  const m = text.match(/^udp2:([0-9a-f]{32}):([eh]):([0-9a-f.:]{2,45})$/);
  const ip = m?.[3] ?? "";
  let canonical: string | null = null;
  try {
    canonical = canonicalIp(ip);
  } catch {
    // Reported below.
  }
  if (m === null || canonical !== ip) throw new SyntaxError(OFFER_FORMAT);
  return { token: m[1] ?? "", mode: m[2] === "h" ? "h" : "e", ip };
}

/** The key of an attempt's punches, from the offer. */
export function offerKey(offer: Offer): PunchKey {
  const token = Uint8Array.from(offer.token.match(/../g) ?? [], (h) => parseInt(h, 16));
  return new PunchKey(token, offer.ip);
}

/** The answer's format. */
const ANSWER = /^udp2r:([eh])$/;

/** What one attempt punches with. */
interface Plan {
  local: InetAddress;
  peers: InetAddress[];
  /** Where the peer's punches may come from (`anyPort` set once birthday probing starts). */
  peer: PeerAddressing;
  key: PunchKey;
  role: PunchRole;
  mine: Mode;
  theirs: Promise<Mode>;
  birthday: boolean;
  /** TTL (hop limit) of punches sent before the peer's mapping is known to exist. */
  lowTtl: number;
  /** Sends this side's progress (offer or answer); called once its first punches have left. */
  announce: () => void;
}

/** What the senders share with the rest of an attempt. */
interface SendState {
  /** The peer's mapping is known to exist: punches go at full TTL. */
  peerMapped: boolean;
  /** The peer's mode, once known. */
  theirs: Mode | null;
  /** When this side's first punch left (performance.now(), any TTL): see #handOver's RTT sample. */
  firstPunchAt: number | null;
}

/** Why a side handed over (logged): the peer's LAST, its data, or the fallback wait ran out. */
type Handover = "last" | "data" | "fallback";

/** A side that is done: the round trip it measured, and until when it waits for the peer's LAST. */
interface Finished {
  rttMs: number;
  until: number;
}

/** Milliseconds added to the fallback wait (timer and scheduling slack). */
const FLOOR_MS = 5;

/** This side's punches: a nonce for the attempt and a running count. */
class Puncher {
  readonly nonce = crypto.getRandomValues(new Uint8Array(NONCE_LENGTH));
  readonly #key: PunchKey;
  readonly #role: PunchRole;
  #count = 0;

  constructor(key: PunchKey, role: PunchRole) {
    this.#key = key;
    this.#role = role;
  }

  /** The next punch; with `echo` (the peer's nonce) it says SEEN, with `last` also LAST. */
  next(echo: Uint8Array | null = null, last = false): Uint8Array<ArrayBuffer> {
    const count = this.#count;
    this.#count = (count + 1) >>> 0;
    return encodePunch({
      role: this.#role,
      seen: echo !== null,
      last: echo !== null && last,
      nonce: this.nonce,
      echo: echo ?? new Uint8Array(NONCE_LENGTH),
      count,
    }, this.#key);
  }
}

/** The `udp` technique. */
export class Udp implements Technique {
  readonly name: string;
  readonly needsFirewall = false;
  readonly #o: Required<UdpOptions>;
  /** NAT classifications per local endpoint (shared by concurrent attempts on it), with their time. */
  readonly #modes = new Map<string, { mode: Promise<Mode>; at: number }>();

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
      movedMs: options.movedMs ?? 1000,
      modeMs: options.modeMs ?? 60000,
      probeGraceMs: options.probeGraceMs ?? 1000,
    };
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) {
      throw new RangeError(`${this.name} takes exactly one source port`);
    }
    if (spec.role === "respond") {
      const offer = decodeOffer(spec.extra ?? "");
      if (parseIp(offer.ip).length !== parseIp(spec.srcIp).length) {
        throw new RangeError(`${this.name}: the offer's address and SRC_IP differ in family`);
      }
    }
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    const peer = { ip: inetAddress(spec.dstIp, 0).address, ports: spec.dstPorts, anyPort: false };
    const birthday = this.#o.birthday || spec.birthday === true;
    const lowTtl = spec.lowTtl ?? DEFAULT_HOP_LIMIT;
    const mine = birthday ? await this.#mode(local, spec, context) : "e";
    let offer: Offer;
    let theirs: Promise<Mode>;
    let announce: () => void;
    if (spec.role === "initiate") {
      const token = Array.from(
        crypto.getRandomValues(new Uint8Array(TOKEN_LENGTH)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      const own: Offer = { token, mode: mine, ip: peer.ip };
      offer = own;
      announce = () => context.progress(encodeOffer(own));
      theirs = context.nextPeerData().then((data) => {
        const m = data.match(ANSWER);
        if (m === null) {
          throw new TechniqueError(
            `udp expected "udp2r:MODE" from the peer, got "${data.slice(0, 40)}"`,
          );
        }
        return m[1] === "h" ? "h" : "e";
      });
      theirs.catch(() => {});
    } else {
      offer = decodeOffer(spec.extra ?? "");
      theirs = Promise.resolve(offer.mode);
      announce = () => context.progress(`udp2r:${mine}`);
    }
    // What is already known to be hopeless ends here, once the peer has been told this side's mode.
    const reason = hopeless(mine, spec.role === "respond" ? offer.mode : null);
    if (reason !== null) {
      announce();
      throw new TechniqueError(reason);
    }
    const role = spec.role === "initiate" ? "I" : "R";
    const key = offerKey(offer);
    return await this.#punch(
      { local, peers, peer, key, role, mine, theirs, birthday, lowTtl, announce },
      context,
    );
  }

  /**
   * This side's mapping, from two probe servers: `h` when they saw different
   * ports, `e` when they saw the same one or there is nothing to ask. One
   * classification serves every attempt on the local endpoint for `modeMs`
   * (a second socket bound to the port of a running attempt could lose the
   * probe servers' answers to it).
   */
  #mode(local: InetAddress, spec: AttemptSpec, context: AttemptContext): Promise<Mode> {
    const probes = (spec.probes ?? []).map((text) => parseHostPort(text)).filter((p) =>
      p.family === local.family
    );
    if (probes.length < 2) {
      context.log.info(
        "birthday probing needs two probe servers to classify the NAT; assuming a predictable one",
      );
      return Promise.resolve("e");
    }
    const key = formatAddress(local);
    const now = performance.now();
    for (const [k, v] of this.#modes) if (now - v.at >= this.#o.modeMs) this.#modes.delete(k);
    const known = this.#modes.get(key);
    if (known !== undefined) return known.mode;
    const mode = (async (): Promise<Mode> => {
      const seen = new Set<number>();
      for (const probe of probes.slice(0, 2)) {
        seen.add((await observeUdp(local, probe, context.signal)).port);
      }
      return seen.size > 1 ? "h" : "e";
    })();
    this.#modes.set(key, { mode, at: now });
    return mode.then((m) => {
      context.log.info("NAT classified", { mode: m === "h" ? "per destination" : "predictable" });
      return m;
    }, (error) => {
      this.#modes.delete(key);
      if (context.signal.aborted) throw error;
      context.log.warn("cannot classify the NAT; assuming a predictable one", {
        error: (error as Error).message,
      });
      return "e";
    });
  }

  /** Punches until the peer's punch arrives, confirms, and hands over a connected socket. */
  async #punch(p: Plan, context: AttemptContext): Promise<Socket> {
    // Senders stop once the peer is found; the attempt's own signal ends everything.
    const found = new AbortController();
    const sending = AbortSignal.any([context.signal, found.signal]);
    const strays = new StrayLog(context.log);
    const moved = new MovedPeer(this.#o.movedMs);
    const refused = new RefusedPunches(this.#o.movedMs);
    // The responder's offer left after the initiator's first punches: that mapping exists.
    const state: SendState = { peerMapped: p.role === "R", theirs: null, firstPunchAt: null };
    const puncher = new Puncher(p.key, p.role);
    const share = PortShare.acquire(p.local);
    let unregister = () => {};
    const extra: Socket[] = [];
    let conn: Socket | null = null;
    try {
      // The first accepted punch tells the peer's endpoint, its nonce and which local port it reached.
      const first = await new Promise<
        { from: SocketAddress; local: InetAddress; punch: Punch }
      >((resolve, reject) => {
        let done = false;
        const take = (bytes: Uint8Array, from: SocketAddress, local: InetAddress) => {
          const got = acceptPunch(bytes, from, p);
          if (got === "wrong port" && !done) {
            const reason = moved.note(from);
            if (reason !== null) reject(new GiveUp("moved", reason));
          }
          if (typeof got === "string") return got;
          if (!done) {
            done = true;
            resolve({ from, local, punch: got });
          }
          return null;
        };
        unregister = share.register({
          offer: (bytes, from) => take(bytes, from, p.local),
          refused: (reason, from) => strays.note(reason, from),
          icmp: (error) => {
            if (done || !state.peerMapped || p.peer.anyPort) return;
            // While birthday probing, refusals of the plain punches are expected.
            if (p.birthday && (p.mine === "h" || state.theirs !== "e")) return;
            const reason = refused.note(error, { ip: p.peer.ip, endpoints: p.peers });
            if (reason !== null) reject(new GiveUp("refused", reason));
          },
        });
        const listen = async (socket: Socket) => {
          const buf = new Uint8Array(128);
          const local = socket.localAddress() as InetAddress;
          for (;;) {
            let got: { length: number; from: SocketAddress };
            try {
              got = await socket.receiveFrom(buf, sending);
            } catch (error) {
              // An ICMP error says nothing about the attempt: it was read, and so cleared.
              if (!sending.aborted && isIcmpError(error)) continue;
              throw error;
            }
            const reason = take(buf.subarray(0, got.length), got.from, local);
            if (reason !== null) strays.note(reason, got.from);
          }
        };
        const watch = (socket: Socket) =>
          void listen(socket).catch((e) => sending.aborted ? undefined : reject(e));
        this.#senders(p, state, share.socket, extra, () => puncher.next(), watch, sending, context)
          .catch((e) => sending.aborted ? undefined : reject(e));
        this.#notices(p, context).catch((e) => sending.aborted ? undefined : reject(e));
        context.signal.addEventListener("abort", () => reject(context.signal.reason), {
          once: true,
        });
      });
      // Every sender checks this before each send: none sends again (see #handOver).
      found.abort(new TechniqueError("peer found"));
      // From now on the peer's datagrams land on a socket connected to it, on the same local port.
      conn = Socket.create(first.local.family, "datagram", { reuseAddress: true, reusePort: true });
      conn.bind(first.local);
      await conn.connect(first.from);
      context.log.debug("peer's punch received", {
        from: formatAddress(first.from),
        on: formatAddress(first.local),
      });
      const peerPunch = (bytes: Uint8Array): ReturnType<typeof acceptPunch> => {
        const got = acceptPunch(bytes, first.from, p);
        return typeof got !== "string" && !sameNonce(got.nonce, first.punch.nonce) ? "forged" : got;
      };
      const how = await this.#handOver(
        conn,
        puncher,
        first.punch,
        peerPunch,
        state,
        strays,
        context.signal,
      );
      // From now on the kernel drops the peer's late punches (sent before it knew it was done;
      // a busy peer can send them long after its LAST was due), then those already queued go.
      conn.attachFilter(
        udpDropProgram(PUNCH_LENGTH, punchFields(p.role === "I" ? "R" : "I", first.punch.nonce)),
      );
      await dropQueued(conn, (bytes) => peerPunch(bytes) !== "not a punch");
      context.log.info("udp punched", {
        local: formatAddress(first.local),
        peer: formatAddress(first.from),
        birthday: first.local.port !== p.local.port,
        handover: how.why,
        rtt_ms: how.rttMs === null ? "-" : how.rttMs.toFixed(1),
      });
      // An ICMP error from the punching (a punch that an answering NAT
      // refused before the peer's mapping existed) would surface as
      // ECONNREFUSED on the application's first call: reading SO_ERROR clears it.
      conn.getOption(SOL_SOCKET, SO_ERROR);
      const result = conn;
      conn = null;
      return result;
    } catch (error) {
      // The peer would wait for its deadline: tell it why this side stops.
      if (error instanceof GiveUp && !context.signal.aborted) {
        context.progress(encodeNotice(error.notice));
      }
      throw error;
    } finally {
      found.abort(new TechniqueError("attempt finished"));
      unregister();
      share.release();
      for (const s of extra) s.close();
      conn?.close();
      strays.flush();
    }
  }

  /**
   * On the connected socket: the hand-over (the module doc's diagram).
   * Sends SEEN punches every `intervalMs` until the peer's SEEN punch that
   * echoes this side's NONCE (this side is then done), sends a SEEN punch
   * and a SEEN|LAST punch and no other, and returns once the peer's LAST
   * has arrived (no punch of the peer's can follow it), at the peer's first
   * datagram that is not a punch (it stays queued), or when the fallback
   * wait runs out.
   */
  async #handOver(
    conn: Socket,
    puncher: Puncher,
    first: Punch,
    peerPunch: (bytes: Uint8Array) => ReturnType<typeof acceptPunch>,
    state: SendState,
    strays: StrayLog,
    signal: AbortSignal,
  ): Promise<{ why: Handover; rttMs: number | null }> {
    const from = conn.peerAddress();
    const buf = new Uint8Array(128);
    const echoesUs = (punch: Punch) => punch.seen && sameNonce(punch.echo, puncher.nonce);
    let firstSeenAt: number | null = null;
    const send = async (last: boolean) => {
      firstSeenAt ??= performance.now();
      await conn.write(puncher.next(first.nonce, last), signal).catch(() => {});
    };
    /**
     * This side is done (`by`: the peer's punch that says so): a SEEN punch
     * and its LAST leave (either tells the peer it is done), and the wait
     * for the peer's LAST is set from the round trip.
     */
    const finish = async (by: Punch): Promise<Finished> => {
      const now = performance.now();
      const rttMs = now - ((by.last ? firstSeenAt : null) ?? state.firstPunchAt ?? now);
      await send(false);
      await send(true);
      return { rttMs, until: performance.now() + this.#fallbackMs(rttMs) };
    };
    let peerLast = false;
    let done: Finished | null = null;
    if (echoesUs(first)) {
      peerLast = first.last;
      done = await finish(first);
    }
    let nextSeen = 0;
    for (;;) {
      if (done !== null && peerLast) {
        await dropQueued(conn, (bytes) => peerPunch(bytes) !== "not a punch");
        return { why: "last", rttMs: done.rttMs };
      }
      // What is queued is read before a SEEN punch is sent again or the
      // wait given up: a LAST already here makes either needless.
      const due = done === null ? nextSeen : done.until;
      const now = performance.now();
      const wait = now >= due
        ? AbortSignal.abort()
        : AbortSignal.any([signal, AbortSignal.timeout(Math.ceil(due - now))]);
      let n: number;
      try {
        n = await conn.peek(buf, wait);
      } catch (error) {
        if (signal.aborted) throw error;
        // An ICMP error (an answering NAT refusing an earlier punch) was read and cleared.
        if (isIcmpError(error)) continue;
        if (!wait.aborted) throw error;
        // Nothing queued: time for the next SEEN punch, or the wait is over.
        if (performance.now() < due) continue;
        if (done !== null) return { why: "fallback", rttMs: done.rttMs };
        await send(false);
        nextSeen = performance.now() + this.#o.intervalMs;
        continue;
      }
      const got = peerPunch(buf.subarray(0, n));
      // Application data: the peer has handed over, so it has this side's
      // punches and needs nothing more. It stays queued.
      if (got === "not a punch") return { why: "data", rttMs: done?.rttMs ?? null };
      await conn.read(buf, signal);
      if (typeof got === "string") {
        strays.note(got, from);
      } else if (done === null) {
        if (echoesUs(got)) {
          peerLast = got.last;
          done = await finish(got);
        }
      } else if (got.last) {
        peerLast = true;
      }
    }
  }

  /**
   * How long a side that has sent its LAST waits for the peer's (which only
   * loss or a busy peer keeps away): two punch intervals plus three round
   * trips and `FLOOR_MS`, at most `lingerMs` (see the module doc).
   */
  #fallbackMs(rttMs: number): number {
    return Math.min(this.#o.lingerMs, 2 * this.#o.intervalMs + 3 * rttMs + FLOOR_MS);
  }

  /**
   * Sends punches: the plain rounds (low TTL until the peer's mapping is
   * known to exist, see `udp_policy.ts`), the hard side's birthday ports
   * (opened before this side announces itself), and the easy side's probes
   * once it knows that the hard side's ports are open. Announces this side
   * after its first punches.
   */
  async #senders(
    p: Plan,
    state: SendState,
    main: Socket,
    extra: Socket[],
    punch: () => Uint8Array<ArrayBuffer>,
    watch: (socket: Socket) => void,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    let theirs: Mode | null = null;
    let answer: unknown = null;
    p.theirs.then((m) => theirs = m, (e) => answer = e ?? new Error("no answer"));
    const hard = p.birthday && p.mine === "h";
    state.firstPunchAt ??= performance.now();
    if (hard) await this.#openHardPorts(p, extra, punch, watch, signal, context);
    let probing = false;
    let probed = false;
    for (let round = 0; !signal.aborted; round++) {
      if (answer !== null) throw answer;
      if (probed) {
        throw new GiveUp(
          "probes",
          `udp gave up: birthday probing sent ${this.#o.easyProbes} probes to random ports of the peer's address and none was answered`,
        );
      }
      state.theirs = theirs;
      if (theirs !== null && !state.peerMapped) {
        state.peerMapped = true;
        context.log.debug("the peer's mapping exists: punching at full TTL");
      }
      const ttl = state.peerMapped && !hard ? null : p.lowTtl;
      for (const peer of p.peers) await sendPunch(main, punch(), peer, ttl, signal);
      if (round === 0) p.announce();
      if (theirs !== null) {
        const reason = hopeless(p.mine, theirs);
        if (reason !== null) throw new TechniqueError(reason);
        if (p.birthday && theirs === "h" && p.mine === "e" && !probing) {
          probing = true;
          this.#probeRandomPorts(p, main, punch, signal, context).then(
            () => probed = true,
            () => {},
          );
        }
      }
      await delay(this.#o.intervalMs, signal);
    }
  }

  /**
   * Hard side: many sockets, each a new mapping, all sending punches to the
   * easy side at the low TTL (they only open this side's NAT; the easy
   * side's probes come to them). Resolves once each has sent its first.
   */
  async #openHardPorts(
    p: { peers: InetAddress[]; local: InetAddress; lowTtl: number },
    extra: Socket[],
    punch: () => Uint8Array<ArrayBuffer>,
    watch: (socket: Socket) => void,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    context.log.info("birthday probing: opening ports", { count: this.#o.hardPorts });
    for (let i = 0; i < this.#o.hardPorts; i++) {
      const socket = Socket.create(p.local.family, "datagram", {
        reuseAddress: true,
        reusePort: true,
      });
      extra.push(socket);
      socket.bind({ ...p.local, port: 0 });
      socket.setHopLimit(p.lowTtl);
      watch(socket);
    }
    const round = async () => {
      for (const socket of extra) {
        for (const peer of p.peers) {
          // No punch leaves once the peer is found (see #handOver).
          if (signal.aborted) return;
          await socket.sendTo(punch(), peer, signal).catch(() => {});
        }
      }
    };
    await round();
    // Each socket punches every interval, for as long as the attempt runs.
    (async () => {
      for (;;) {
        await delay(Math.max(this.#o.intervalMs * 4, 200), signal);
        await round();
      }
    })().catch(() => {});
  }

  /**
   * Easy side: punches to random ports of the hard side's address, bounded
   * in count and rate. Resolves `probeGraceMs` after the last one (the
   * attempt has found nothing by then), rejects when the attempt ends first.
   */
  async #probeRandomPorts(
    p: { peers: InetAddress[]; peer: PeerAddressing },
    main: Socket,
    punch: () => Uint8Array<ArrayBuffer>,
    signal: AbortSignal,
    context: AttemptContext,
  ): Promise<void> {
    const target = p.peers[0];
    if (target === undefined) throw new RangeError("Cannot probe without a destination port");
    // The answers come from whichever port the hard side's NAT gave the socket that got the probe.
    p.peer.anyPort = true;
    context.log.info("birthday probing: probing random ports", {
      budget: this.#o.easyProbes,
      rate: this.#o.probeRate,
    });
    const batch = 10;
    const pause = (1000 * batch) / this.#o.probeRate;
    const ports = crypto.getRandomValues(new Uint16Array(this.#o.easyProbes));
    for (let i = 0; i < ports.length; i += batch) {
      for (const port of ports.subarray(i, i + batch)) {
        const to = { ...target, port: 1024 + (port % (65536 - 1024)) };
        await sendPunch(main, punch(), to, null, signal);
      }
      await delay(pause, signal);
    }
    context.log.info("birthday probing: every probe sent", { count: this.#o.easyProbes });
    await delay(this.#o.probeGraceMs, signal);
  }

  /**
   * The peer's `udp2x:CODE` line (it gave up on its own evidence) ends this
   * side too. The initiator's first peer data is the answer; later lines
   * that are not a notice are ignored.
   */
  async #notices(p: Plan, context: AttemptContext): Promise<void> {
    if (p.role === "I") await p.theirs;
    for (;;) {
      const reason = decodeNotice(await context.nextPeerData());
      if (reason !== null) throw new TechniqueError(reason);
    }
  }
}
