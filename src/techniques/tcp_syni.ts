/**
 * `tcp-syni`: TCP hole punching by SYN injection (SYNI: Holzapfel, Wander,
 * Wacker, Weis, IEEE NCA 2011, DOI 10.1109/NCA.2011.66), in a form that
 * passes Linux conntrack NATs. Neither host goes through a simultaneous
 * open: the initiator's kernel runs an ordinary client handshake and the
 * responder's socket is built established with TCP_REPAIR.
 *
 * On the wire (A initiates from A:pA to B's public P_B:pB; B answers from
 * B:pB to A's public P_A:pA; SEG(seq, ack)):
 *
 * ```
 *  A (initiator)                           B (responder)
 *  guards: drop ICMP time-exceeded quoting
 *    the flow, outgoing RSTs, inbound
 *    SYN-ACKs whose ack is not a+1
 *  capture own outgoing SYN
 *  connect(), ISN a, TTL low ──SYN(a)──X   (opens A's NAT, dies before B's)
 *  progress "syni2:TOKEN:a:OPTIONS" ──────► guards: drop pure SYNs, outgoing RSTs,
 *                                             inbound SYN-ACKs whose ack is not b+1
 *                                           capture segments from P_A:pA
 *                                           raw SYN(b), TTL low ──X  (opens B's NAT;
 *                                              its seq and options are the real ones)
 *  peer data "syniready" ◄───────────────── progress "syniready"
 *  raw RST(a+1), TTL low ──X               (A's NAT forgets the flow: see below)
 *  raw SYN(a), full TTL ───────────────────► captured (the stack drops it: no RST)
 *                                           TCP_REPAIR socket: snd b+1, rcv a+1,
 *                                              negotiated MSS, wscale, SACK, TS
 *  ◄─────────────────────────────────────── raw SYN-ACK(b, a+1), full TTL
 *  kernel: ESTABLISHED ── ACK(a+1, b+1) ───► captured: done (else SYN-ACK resent)
 *  ─────────── "initiator" (16 bytes) ─────►
 *  ◄────────── "responder" (16 bytes) ──────
 *  ─────────── "initiator-done" (16 bytes) ► (tcp_confirm.ts)
 *  ok                                      ok
 * ```
 *
 * A's NAT sees an ordinary outgoing client handshake with no inbound SYN,
 * which is where tcp-nutss fails (NATs that drop an inbound SYN on a flow
 * that left as a SYN). B's NAT sees its own SYN first, then the inbound SYN,
 * then its SYN-ACK; the priming SYN carries the sequence number and options
 * B's socket really uses, since conntrack tracks the window from it.
 *
 * Forged segments (tcp_flow_guard.ts): both ISNs are chosen before the
 * first packet, so the guards are in place before it leaves. While A waits
 * for "syniready", its NAT holds the flow open and a blind SYN-ACK sent to
 * it corrupts the NAT's record of the reply direction; the low-TTL RST
 * right before the SYN's re-injection makes the NAT start afresh, so B's
 * SYN-ACK is the first reply it sees. B sends its SYN-ACK again every
 * RESEND_MS until A's ACK shows up, at most MAX_SYN_ACKS times. Forged
 * SYN-ACKs that arrive during the few milliseconds of the handshake itself
 * can still leave A's NAT out of step; the attempt then fails on both sides
 * (the confirmation never completes), and the application may try again.
 * A captured SYN that is not the one A announced is ignored, and logged at
 * most once a second per attempt with a count (tcp_warn_limit.ts).
 *
 * Safety: every raw packet has the host's own address and the attempt's
 * own ports as its source and the attempt's peer as its destination
 * ({@linkcode assertOwnFlow}); capture sockets see only the attempt's flow.
 *
 * @module
 */

import { parseIp } from "../../ffi/ip.ts";
import { CaptureSocket, RawSender } from "../../ffi/packet_socket.ts";
import { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { repairConnect } from "../../ffi/tcp_repair.ts";
import { TechniqueError } from "../errors.ts";
import { tcpFlowProgram } from "../packet/bpf.ts";
import { buildTcpPacket, parsePacket } from "../packet/packet.ts";
import { FLAGS, type TcpOptions, type TcpSegment } from "../packet/tcp.ts";
import { delay } from "./delay.ts";
import type { AttemptSpec } from "./protocol.ts";
import type { AttemptContext, Technique } from "./technique.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";
import { FlowGuard, presetIsn, randomIsn } from "./tcp_flow_guard.ts";
import { DEFAULT_LOW_TTL } from "./tcp_nutss.ts";
import { assertLocalAddress, assertOwnFlow } from "./tcp_raw.ts";
import { PacketWarning } from "./tcp_warn_limit.ts";

/** The responder's progress data: its NAT is primed. */
export const SYNI_READY = "syniready";
/** The window scale the responder offers. */
const RESPONDER_WSCALE = 7;
/** SYN(a) re-injections, at most this many times. */
const MAX_SENDS = 3;
/**
 * SYN-ACK sends, at most this many times (10 s): a forged SYN-ACK can leave
 * the initiator's NAT out of step until one of ours takes over again
 * (tcp_flow_guard.ts), so the responder keeps trying while the attempt runs.
 */
const MAX_SYN_ACKS = 20;
/** Milliseconds between two sends of either. */
const RESEND_MS = 500;

/** What the initiator tells the responder: the attempt token and its SYN. */
export interface SynInfo {
  /** The attempt token (32 lowercase hex digits) that keys the confirmations. */
  token: string;
  /** The SYN's sequence number (the initiator's ISN). */
  seq: number;
  /** The options of its SYN (the timestamp's echo is always 0). */
  options: TcpOptions;
}

/**
 * The initiator's progress data: `syni2:TOKEN:SEQ:MSS:WSCALE:SACK:TSVAL`
 * (`-` for an option not offered).
 */
export function encodeSynInfo(info: SynInfo): string {
  assertAttemptToken(info.token);
  const o = info.options;
  return `syni2:${info.token}:${info.seq}:${o.mss ?? "-"}:${o.windowScale ?? "-"}:${
    o.sackPermitted ? 1 : 0
  }:${o.timestamp?.value ?? "-"}`;
}

/** Parses {@linkcode encodeSynInfo}'s text; throws SyntaxError or RangeError. */
export function decodeSynInfo(text: string): SynInfo {
  const m = text.match(
    /^syni2:([0-9a-f]{32}):(\d{1,10}):(\d{1,5}|-):(\d{1,2}|-):([01]):(\d{1,10}|-)$/,
  );
  if (m === null) {
    throw new SyntaxError('tcp-syni expects EXTRA "syni2:TOKEN:SEQ:MSS:WSCALE:SACK:TSVAL"');
  }
  const num = (s: string | undefined) => (s === undefined || s === "-" ? undefined : Number(s));
  const token = m[1] ?? "";
  const seq = num(m[2]) ?? -1;
  if (seq > 0xffffffff) throw new RangeError("tcp-syni sequence number out of range");
  const options: TcpOptions = {};
  const mss = num(m[3]);
  const ws = num(m[4]);
  const ts = num(m[6]);
  if (mss !== undefined) options.mss = mss;
  if (ws !== undefined) options.windowScale = ws;
  if (m[5] === "1") options.sackPermitted = true;
  if (ts !== undefined) {
    if (ts > 0xffffffff) throw new RangeError("tcp-syni timestamp out of range");
    options.timestamp = { value: ts, echo: 0 };
  }
  return { token, seq, options };
}

/**
 * The responder's TCP timestamp clock: a random start (as Linux gives each
 * connection its own offset), counting milliseconds like the kernel's, so
 * that the priming SYN, the SYN-ACKs and the repaired socket's segments
 * carry one clock (the socket's part: timestampOption in ffi/tcp_repair.ts).
 */
function timestampClock(): { now(): number } {
  const [start = 0] = crypto.getRandomValues(new Uint32Array(1));
  const since = performance.now();
  return { now: () => (start + Math.floor(performance.now() - since)) >>> 0 };
}

function sameOptions(a: TcpOptions, b: TcpOptions): boolean {
  return a.mss === b.mss && a.windowScale === b.windowScale &&
    !!a.sackPermitted === !!b.sackPermitted &&
    a.timestamp?.value === b.timestamp?.value;
}

/** Tunables (injected in tests). */
export interface TcpSyniOptions {
  /** Milliseconds the peer's confirmation may take (default 8000). */
  confirmMs?: number;
}

/** The `tcp-syni` technique. */
export class TcpSyni implements Technique {
  readonly name = "tcp-syni";
  readonly needsFirewall = true;
  readonly #confirmMs: number;

  /** Builds the technique with its tunables. */
  constructor(options: TcpSyniOptions = {}) {
    this.#confirmMs = options.confirmMs ?? 8000;
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("tcp-syni takes exactly one source port");
    if (spec.dstPorts.length !== 1) {
      throw new RangeError("tcp-syni takes exactly one destination port");
    }
    if (spec.role === "respond") decodeSynInfo(spec.extra ?? "");
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peer = inetAddress(spec.dstIp, spec.dstPorts[0] ?? 0);
    const lowTtl = spec.lowTtl ?? DEFAULT_LOW_TTL;
    return spec.role === "initiate"
      ? await this.#initiate(local, peer, lowTtl, newAttemptToken(), context)
      : await this.#respond(local, peer, lowTtl, decodeSynInfo(spec.extra ?? ""), context);
  }

  async #initiate(
    local: InetAddress,
    peer: InetAddress,
    lowTtl: number,
    token: string,
    context: AttemptContext,
  ): Promise<Socket> {
    const { signal } = context;
    const isn = randomIsn();
    const guard = await FlowGuard.install(context, local, peer, isn, ["time-exceeded"]);
    const capture = CaptureSocket.open(tcpFlowProgram({
      source: parseIp(local.address),
      destination: parseIp(peer.address),
      sourcePort: local.port,
      destinationPort: peer.port,
      synOnly: true,
    }));
    const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
    let raw: RawSender | undefined;
    try {
      socket.bind(local);
      presetIsn(socket, isn);
      const normalTtl = socket.hopLimit();
      socket.setHopLimit(lowTtl);
      const connecting = socket.connect(peer, signal);
      socket.setHopLimit(normalTtl);
      let connected = false;
      connecting.then(() => connected = true, () => {});
      // The kernel's own SYN: its options are the connection's.
      const syn = await this.#ownSyn(capture, signal);
      capture.close();
      if (syn.seq !== isn) {
        throw new TechniqueError("tcp-syni: the kernel's SYN does not carry the chosen ISN");
      }
      context.log.debug("captured own SYN", { seq: syn.seq });
      context.progress(encodeSynInfo({ token, seq: syn.seq, options: syn.options }));
      const ready = await context.nextPeerData();
      if (ready !== SYNI_READY) {
        throw new TechniqueError(
          `tcp-syni expected "${SYNI_READY}" from the peer, got "${ready.slice(0, 40)}"`,
        );
      }
      raw = RawSender.open(local.family);
      // Our NAT may have learnt a forged reply direction since our SYN went out: make it forget
      // the flow, so that the SYN below opens a fresh entry just before the peer's SYN-ACK.
      await guard.resetNat(raw, (isn + 1) >>> 0, lowTtl, signal);
      // Re-inject the same SYN at full TTL: it now passes the peer's primed NAT.
      const { checksum: _, ...segment } = syn;
      const packet = buildTcpPacket(parseIp(local.address), parseIp(peer.address), segment, {
        ttl: normalTtl,
      }) as Uint8Array<ArrayBuffer>;
      assertOwnFlow(packet, local, peer);
      for (let i = 0; i < MAX_SENDS && !connected; i++) {
        await raw.send(packet, peer, signal);
        await Promise.race([connecting.catch(() => {}), delay(RESEND_MS, signal)]);
      }
      await connecting;
      await confirmPeer(socket, {
        token,
        technique: this.name,
        role: "initiator",
        signal,
        timeoutMs: this.#confirmMs,
      });
      return socket;
    } catch (error) {
      socket.close();
      throw error;
    } finally {
      capture.close();
      raw?.close();
    }
  }

  async #ownSyn(capture: CaptureSocket, signal: AbortSignal): Promise<TcpSegment> {
    for (;;) {
      const parsed = parsePacket((await capture.next(signal)).packet);
      if (
        parsed.tcp !== undefined && parsed.tcp.flags & FLAGS.SYN && !(parsed.tcp.flags & FLAGS.ACK)
      ) return parsed.tcp;
    }
  }

  async #respond(
    local: InetAddress,
    peer: InetAddress,
    lowTtl: number,
    expected: SynInfo,
    context: AttemptContext,
  ): Promise<Socket> {
    const { signal } = context;
    assertLocalAddress(local);
    const localIp = parseIp(local.address);
    const peerIp = parseIp(peer.address);
    const b = randomIsn();
    // Before our first packet: no pure SYN of the flow reaches our stack (no RST to A's SYN),
    // no RST of the flow leaves, no SYN-ACK passes (we never expect one: ack b+1 only).
    await FlowGuard.install(context, local, peer, b, ["pure-syn"]);
    const capture = CaptureSocket.open(tcpFlowProgram({
      source: peerIp,
      destination: localIp,
      sourcePort: peer.port,
      destinationPort: local.port,
    }));
    const raw = RawSender.open(local.family);
    const mismatched = new PacketWarning(
      context.log,
      "ignoring a SYN that does not match the initiator's",
    );
    let repaired: Socket | undefined;
    try {
      const clock = timestampClock();
      const ts = clock.now();
      const mss = local.family === "inet" ? 1460 : 1440;
      const send = async (segment: Omit<TcpSegment, "checksum">, ttl: number) => {
        const packet = buildTcpPacket(localIp, peerIp, segment, { ttl }) as Uint8Array<ArrayBuffer>;
        assertOwnFlow(packet, local, peer);
        await raw.send(packet, peer, signal);
      };
      // Prime our NAT with the sequence number and options our socket will use.
      await send({
        sourcePort: local.port,
        destinationPort: peer.port,
        seq: b,
        ack: 0,
        flags: FLAGS.SYN,
        window: 65535,
        urgent: 0,
        options: {
          mss,
          sackPermitted: true,
          timestamp: { value: ts, echo: 0 },
          windowScale: RESPONDER_WSCALE,
        },
        payload: new Uint8Array(0),
      }, lowTtl);
      context.progress(SYNI_READY);
      const syn = await this.#peerSyn(capture, expected, signal, mismatched);
      const a1 = (syn.seq + 1) >>> 0;
      const theirs = syn.options;
      const connection = {
        local,
        remote: peer,
        sendSeq: (b + 1) >>> 0,
        recvSeq: a1,
        mss: Math.min(theirs.mss ?? 536, mss),
        sackPermitted: !!theirs.sackPermitted,
        peerWindow: syn.window,
        ...(theirs.windowScale !== undefined
          ? { windowScale: { send: theirs.windowScale, receive: RESPONDER_WSCALE } }
          : {}),
        // The socket's clock counts on from the priming SYN's, in milliseconds.
        ...(theirs.timestamp !== undefined ? { timestamp: clock.now() } : {}),
      };
      const built = repairConnect(connection);
      repaired = built.socket;
      const synAck = (): Omit<TcpSegment, "checksum"> => ({
        sourcePort: local.port,
        destinationPort: peer.port,
        seq: b,
        ack: a1,
        flags: FLAGS.SYN | FLAGS.ACK,
        window: built.receiveWindow,
        urgent: 0,
        options: {
          mss,
          ...(theirs.sackPermitted ? { sackPermitted: true } : {}),
          ...(theirs.timestamp
            ? { timestamp: { value: clock.now(), echo: theirs.timestamp.value } }
            : {}),
          ...(theirs.windowScale !== undefined ? { windowScale: RESPONDER_WSCALE } : {}),
        },
        payload: new Uint8Array(0),
      });
      for (let sent = 1;; sent++) {
        await send(synAck(), 64);
        if (await this.#ackSeen(capture, (b + 1) >>> 0, signal)) break;
        if (sent >= MAX_SYN_ACKS) {
          throw new TechniqueError("tcp-syni: the peer never acknowledged the SYN-ACK");
        }
        context.noteError("SYN-ACK not acknowledged; resending");
      }
      await confirmPeer(repaired, {
        token: expected.token,
        technique: this.name,
        role: "responder",
        signal,
        timeoutMs: this.#confirmMs,
      });
      const result = repaired;
      repaired = undefined;
      return result;
    } finally {
      mismatched.flush();
      repaired?.close();
      capture.close();
      raw.close();
    }
  }

  /** The peer's SYN as it arrives through our NAT: the sequence number and options it announced. */
  async #peerSyn(
    capture: CaptureSocket,
    expected: SynInfo,
    signal: AbortSignal,
    mismatched: PacketWarning,
  ): Promise<TcpSegment> {
    for (;;) {
      const parsed = parsePacket((await capture.next(signal)).packet);
      const t = parsed.tcp;
      if (t === undefined || !(t.flags & FLAGS.SYN) || t.flags & FLAGS.ACK) continue;
      if (
        !parsed.checksumsValid || t.seq !== expected.seq ||
        !sameOptions(t.options, expected.options)
      ) {
        mismatched.note({ seq: t.seq, expected: expected.seq });
        continue;
      }
      return t;
    }
  }

  /** True once the peer acknowledges `ack` within RESEND_MS. */
  async #ackSeen(capture: CaptureSocket, ack: number, signal: AbortSignal): Promise<boolean> {
    const wait = AbortSignal.any([signal, AbortSignal.timeout(RESEND_MS)]);
    try {
      for (;;) {
        const t = parsePacket((await capture.next(wait)).packet).tcp;
        if (t !== undefined && t.flags & FLAGS.ACK && !(t.flags & FLAGS.SYN) && t.ack === ack) {
          return true;
        }
      }
    } catch (error) {
      if (signal.aborted) throw error;
      return false;
    }
  }
}
