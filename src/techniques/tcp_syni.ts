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
 *  first socket dropped silently;
 *  new socket, ISN a, full TTL ──SYN(a)────► captured (the stack drops it: no RST)
 *                                           TCP_REPAIR socket: snd b+1, rcv a+1,
 *                                              options as B's kernel negotiates
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
 * Both sockets end up as the kernels would have built them. A's is an
 * ordinary client socket, connected by its second SYN: the kernel times the
 * handshake from that SYN (with a copy of the first one, the first RTT
 * sample spanned the whole wait for "syniready", 14-250 ms) and resends it
 * itself (1 s, 3 s, ...) if it is lost. The first socket keeps the low TTL
 * for its whole life, so that its kernel's SYN retransmissions, should the
 * wait pass one second, die before B's NAT too (one at full TTL reached an
 * unprimed NAT and got the attempt reset). B's socket carries what B's
 * kernel would offer that peer (ffi/tcp_syn_options.ts: the route's MSS, the
 * window scale its receive buffer limit calls for, SACK and timestamps as
 * the sysctls allow), negotiated against A's SYN option by option, and its
 * advertised MSS leaves room for the timestamp option as the kernel's does.
 * What remains different: B's first RTT sample (its data's first ACK) is
 * the kernel's too, but A's includes B's turnaround between the SYN and the
 * SYN-ACK in user space (1-3 ms on a quiet machine, tens on a loaded one);
 * later samples pull the estimate in at 1/8 each, and min_rtt is right.
 *
 * Forged segments (tcp_flow_guard.ts): both ISNs are chosen before the
 * first packet, so the guards are in place before it leaves. While A waits
 * for "syniready", its NAT holds the flow open and a blind SYN-ACK sent to
 * it corrupts the NAT's record of the reply direction; the low-TTL RST
 * right before the second SYN makes the NAT start afresh, so B's
 * SYN-ACK is the first reply it sees. B sends its SYN-ACK again every
 * RESEND_MS until A's ACK shows up, at most MAX_SYN_ACKS times. Forged
 * SYN-ACKs that arrive during the few milliseconds of the handshake itself
 * can still leave A's NAT out of step; the attempt then fails on both sides
 * (the confirmation never completes), and the application may try again.
 * A captured SYN that is not the one A announced is ignored, and logged at
 * most once a second per attempt with a count (tcp_warn_limit.ts).
 *
 * Several destination ports (what `endpoint` predicts for a NAT that
 * allocates ports in sequence, `delta`; at most {@linkcode MAX_DST_PORTS}):
 * the initiator runs one flow per port of the responder's, each with its own
 * socket, ISN, guards and SYN, and announces all SYNs in one progress line;
 * the responder primes its NAT towards each port of the initiator's, in the
 * order given, and builds its socket for the first announced SYN that
 * arrives, from whichever of those ports. The first flow to complete wins;
 * the initiator closes the others (a connecting socket closes silently).
 * Each side's NAT maps its flows in the order they leave, so the n-th
 * predicted port meets the n-th flow.
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
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { repairConnect } from "../../ffi/tcp_repair.ts";
import { kernelSynOptions } from "../../ffi/tcp_syn_options.ts";
import { TechniqueError } from "../errors.ts";
import { tcpFlowProgram } from "../packet/bpf.ts";
import { buildTcpPacket, parsePacket } from "../packet/packet.ts";
import { FLAGS, type TcpOptions, type TcpSegment } from "../packet/tcp.ts";
import type { AttemptSpec } from "./protocol.ts";
import { findLowTtl } from "./low_ttl.ts";
import type { AttemptContext, GuardPlan, Technique } from "./technique.ts";
import { assertAttemptToken, confirmPeer, newAttemptToken } from "./tcp_confirm.ts";
import { attemptIsns, closeQuietly, FlowGuard, presetIsn, randomIsn } from "./tcp_flow_guard.ts";
import { DEFAULT_HOP_LIMIT, HopFinder } from "../discovery/hop_limit.ts";
import { assertLocalAddress, assertOwnFlow } from "./tcp_raw.ts";
import { PacketWarning } from "./tcp_warn_limit.ts";

/** The responder's progress data: its NAT is primed. */
export const SYNI_READY = "syniready";
/**
 * Destination ports tcp-syni tries at most: one flow each (`endpoint`
 * predicts at most two for one source port, `delta`).
 */
export const MAX_DST_PORTS = 4;
/** The bytes of the timestamp option in every segment once timestamps are on (with padding). */
const TIMESTAMP_OPTION_BYTES = 12;
/**
 * SYN-ACK sends, at most this many times (10 s): a forged SYN-ACK can leave
 * the initiator's NAT out of step until one of ours takes over again
 * (tcp_flow_guard.ts), so the responder keeps trying while the attempt runs.
 */
const MAX_SYN_ACKS = 20;
/** Milliseconds between two sends of either. */
const RESEND_MS = 500;

/** One SYN of the initiator: one flow, towards one of the responder's ports. */
export interface SynFlow {
  /** The SYN's sequence number (the flow's ISN). */
  seq: number;
  /** The options of its SYN (the timestamp's echo is always 0). */
  options: TcpOptions;
}

/** What the initiator tells the responder: the attempt token and its SYNs, one per flow. */
export interface SynInfo {
  /** The attempt token (32 lowercase hex digits) that keys the confirmations. */
  token: string;
  /** The SYNs, in the order of the initiator's DST_PORTS (1 to {@linkcode MAX_DST_PORTS}). */
  flows: SynFlow[];
}

/**
 * The initiator's progress data: `syni2:TOKEN:FLOW[;FLOW...]`, each FLOW
 * `SEQ:MSS:WSCALE:SACK:TSVAL` (`-` for an option not offered). With one flow
 * it is the format of punchd versions that took one port.
 */
export function encodeSynInfo(info: SynInfo): string {
  assertAttemptToken(info.token);
  if (info.flows.length < 1 || info.flows.length > MAX_DST_PORTS) {
    throw new RangeError(`Cannot encode SYN info: 1 to ${MAX_DST_PORTS} flows`);
  }
  const flow = ({ seq, options: o }: SynFlow) =>
    `${seq}:${o.mss ?? "-"}:${o.windowScale ?? "-"}:${o.sackPermitted ? 1 : 0}:${
      o.timestamp?.value ?? "-"
    }`;
  return `syni2:${info.token}:${info.flows.map(flow).join(";")}`;
}

const FLOW_PATTERN = /^(\d{1,10}):(\d{1,5}|-):(\d{1,2}|-):([01]):(\d{1,10}|-)$/;

/** Parses {@linkcode encodeSynInfo}'s text; throws SyntaxError or RangeError. */
export function decodeSynInfo(text: string): SynInfo {
  const usage = 'tcp-syni expects EXTRA "syni2:TOKEN:SEQ:MSS:WSCALE:SACK:TSVAL[;...]"';
  const m = text.match(/^syni2:([0-9a-f]{32}):(.*)$/);
  if (m === null) throw new SyntaxError(usage);
  const parts = (m[2] ?? "").split(";");
  if (parts.length > MAX_DST_PORTS) {
    throw new RangeError(`tcp-syni takes at most ${MAX_DST_PORTS} SYNs`);
  }
  const num = (s: string | undefined) => (s === undefined || s === "-" ? undefined : Number(s));
  const flows = parts.map((part): SynFlow => {
    const f = part.match(FLOW_PATTERN);
    if (f === null) throw new SyntaxError(usage);
    const seq = num(f[1]) ?? -1;
    if (seq > 0xffffffff) throw new RangeError("tcp-syni sequence number out of range");
    const options: TcpOptions = {};
    const mss = num(f[2]);
    const ws = num(f[3]);
    const ts = num(f[5]);
    if (mss !== undefined) options.mss = mss;
    if (ws !== undefined) options.windowScale = ws;
    if (f[4] === "1") options.sackPermitted = true;
    if (ts !== undefined) {
      if (ts > 0xffffffff) throw new RangeError("tcp-syni timestamp out of range");
      options.timestamp = { value: ts, echo: 0 };
    }
    return { seq, options };
  });
  return { token: m[1] ?? "", flows };
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

/**
 * True when `syn` is the announced SYN, sent again by a new socket: the same
 * options, and a timestamp that is the announced one or later (the kernel
 * keeps one clock offset per address pair, so a later SYN's TSval has moved
 * on by the time that passed).
 */
function sameOptions(syn: TcpOptions, announced: TcpOptions): boolean {
  const [ts, was] = [syn.timestamp?.value, announced.timestamp?.value];
  return syn.mss === announced.mss && syn.windowScale === announced.windowScale &&
    !!syn.sackPermitted === !!announced.sackPermitted &&
    (ts === undefined || was === undefined ? ts === was : ((ts - was) >>> 0) < 0x80000000);
}

/** Tunables (injected in tests). */
export interface TcpSyniOptions {
  /**
   * Milliseconds the peer's confirmation may take (default: the attempt's own timeout, so the
   * attempt's deadline bounds it: under load the peer's punchd may reach the exchange seconds
   * after this side's socket connected; 1,000 attempts at once lost a third to a fixed 8 s).
   */
  confirmMs?: number;
  /** Finds the low TTL when the attempt has none (default: a new finder). */
  hops?: HopFinder;
}

/** One flow of the initiator: its own socket and ISN towards one of the responder's ports. */
interface InitiatorFlow {
  peer: InetAddress;
  isn: number;
  guard: FlowGuard;
  socket: Socket;
  connecting: Promise<void>;
  connected: boolean;
}

/** The `tcp-syni` technique. */
export class TcpSyni implements Technique {
  readonly name = "tcp-syni";
  readonly needsFirewall = true;
  readonly #confirmMs: number | undefined;
  readonly #hops: HopFinder;

  /** Builds the technique with its tunables. */
  constructor(options: TcpSyniOptions = {}) {
    this.#confirmMs = options.confirmMs;
    this.#hops = options.hops ?? new HopFinder();
  }

  guardPlan(spec: AttemptSpec): GuardPlan {
    return spec.role === "initiate"
      ? { extra: ["time-exceeded"] }
      : { extra: ["pure-syn"], sharedIsn: true };
  }

  validate(spec: AttemptSpec): void {
    if (spec.srcPorts.length !== 1) throw new RangeError("tcp-syni takes exactly one source port");
    if (spec.dstPorts.length < 1 || spec.dstPorts.length > MAX_DST_PORTS) {
      throw new RangeError(`tcp-syni takes 1 to ${MAX_DST_PORTS} destination ports`);
    }
    if (spec.role === "respond") decodeSynInfo(spec.extra ?? "");
  }

  async run(spec: AttemptSpec, context: AttemptContext): Promise<Socket> {
    const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
    const peers = spec.dstPorts.map((port) => inetAddress(spec.dstIp, port));
    // B's priming SYN must cross every NAT of B's (and no more): B finds the TTL. A's SYN is
    // sent again at full TTL, so a low TTL that dies inside A's own NATs costs nothing, and A
    // does not probe (hop probes are new flows: behind a NAT that allocates ports in sequence they
    // would take the ports A's peer was told to expect).
    const confirmMs = this.#confirmMs ?? spec.timeoutMs;
    const lowTtl = await findLowTtl(
      this.#hops,
      spec,
      context,
      "low TTL of the first SYN",
      spec.role === "initiate" ? spec.lowTtl ?? DEFAULT_HOP_LIMIT : spec.lowTtl,
    );
    // Chosen by the daemon with the guards it put in already (guardPlan), or here.
    const isns = attemptIsns(spec, peers.length, spec.role === "respond");
    return spec.role === "initiate"
      ? await this.#initiate(local, peers, isns, lowTtl, newAttemptToken(), confirmMs, context)
      : await this.#respond(
        local,
        peers,
        isns[0] ?? randomIsn(),
        lowTtl,
        decodeSynInfo(spec.extra ?? ""),
        confirmMs,
        context,
      );
  }

  /**
   * One flow per destination port, all from `local`: each gets its own ISN,
   * guards and SYN, and all SYNs are announced in one progress line; the
   * first flow the responder's SYN-ACK completes wins, the others are closed
   * (a connecting socket closes without a packet).
   */
  async #initiate(
    local: InetAddress,
    peers: readonly InetAddress[],
    isns: readonly number[],
    lowTtl: number,
    token: string,
    confirmMs: number,
    context: AttemptContext,
  ): Promise<Socket> {
    const { signal } = context;
    const flows: InitiatorFlow[] = [];
    const captures: CaptureSocket[] = [];
    let raw: RawSender | undefined;
    try {
      // One ISN per flow, chosen before its guards, so that they are in before its first SYN.
      const guards = await Promise.all(
        peers.map((peer, i) =>
          FlowGuard.install(context, local, peer, isns[i] ?? 0, ["time-exceeded"])
        ),
      );
      for (const [i, peer] of peers.entries()) {
        const isn = isns[i] ?? 0;
        const guard = guards[i] as FlowGuard;
        const capture = CaptureSocket.open(tcpFlowProgram({
          source: parseIp(local.address),
          destination: parseIp(peer.address),
          sourcePort: local.port,
          destinationPort: peer.port,
          synOnly: true,
        }));
        captures.push(capture);
        const flow: InitiatorFlow = {
          peer,
          isn,
          guard,
          socket: connectingSocket(local, isn),
          connecting: Promise.resolve(),
          connected: false,
        };
        flows.push(flow);
        // The TTL stays low for this socket's life: its kernel's SYN retransmissions (after 1 s,
        // 3 s, ...) must not reach the peer's NAT before the peer primes it either.
        flow.socket.setHopLimit(lowTtl);
        connect(flow, signal);
      }
      // The kernel's own SYNs: their options are the connections'.
      const syns = await Promise.all(captures.map((capture) => this.#ownSyn(capture, signal)));
      for (const capture of captures) capture.close();
      syns.forEach((syn, i) => {
        if (syn.seq !== flows[i]?.isn) {
          throw new TechniqueError("tcp-syni: the kernel's SYN does not carry the chosen ISN");
        }
      });
      context.log.debug("captured own SYNs", { seqs: syns.map((syn) => syn.seq).join(",") });
      context.progress(encodeSynInfo({
        token,
        flows: syns.map((syn) => ({ seq: syn.seq, options: syn.options })),
      }));
      const ready = await context.nextPeerData();
      if (ready !== SYNI_READY) {
        throw new TechniqueError(
          `tcp-syni expected "${SYNI_READY}" from the peer, got "${ready.slice(0, 40)}"`,
        );
      }
      raw = RawSender.open(local.family);
      for (const flow of flows) {
        // Our NAT may have learnt a forged reply direction since our SYN went out: make it
        // forget the flow, so that the SYN below opens a fresh entry just before the SYN-ACK.
        await flow.guard.resetNat(raw, (flow.isn + 1) >>> 0, lowTtl, signal);
        // The same SYN again, now at full TTL: it passes the peer's primed NAT. A new socket
        // sends it (same ISN, same options, the timestamp clock moved on) rather than a copy
        // of the first: the kernel then times the handshake from this SYN, not from the first
        // one (its first RTT sample would span the whole wait for "syniready"), and resends it
        // itself if it is lost. The first socket goes without a packet.
        closeQuietly(flow.socket);
        flow.socket = connectingSocket(local, flow.isn);
        connect(flow, signal);
      }
      const winner = (await firstConnected(flows)).socket;
      for (const flow of flows) if (flow.socket !== winner) flow.socket.close();
      if (flows.length > 1) {
        context.log.info("connected flow", { to: formatAddress(winner.peerAddress()) });
      }
      await confirmPeer(winner, {
        token,
        technique: this.name,
        role: "initiator",
        signal,
        timeoutMs: confirmMs,
      });
      return winner;
    } catch (error) {
      for (const flow of flows) flow.socket.close();
      throw error;
    } finally {
      for (const capture of captures) capture.close();
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

  /**
   * Primes this side's NAT towards each of the initiator's ports, then builds
   * the connection with the first announced SYN that arrives, from whichever
   * of those ports its NAT gave it.
   */
  async #respond(
    local: InetAddress,
    peers: readonly InetAddress[],
    b: number,
    lowTtl: number,
    expected: SynInfo,
    confirmMs: number,
    context: AttemptContext,
  ): Promise<Socket> {
    const { signal } = context;
    assertLocalAddress(local);
    const localIp = parseIp(local.address);
    // Before our first packet: no pure SYN of a flow reaches our stack (no RST to A's SYN),
    // no RST of a flow leaves, no SYN-ACK passes (we never expect one: ack b+1 only).
    await Promise.all(
      peers.map((peer) => FlowGuard.install(context, local, peer, b, ["pure-syn"])),
    );
    const captures: CaptureSocket[] = [];
    let raw: RawSender | undefined;
    // The other flows' waits for a SYN end when one arrives.
    const found = new AbortController();
    const mismatched = new PacketWarning(
      context.log,
      "ignoring a SYN that does not match the initiator's",
    );
    let repaired: Socket | undefined;
    try {
      for (const peer of peers) {
        captures.push(CaptureSocket.open(tcpFlowProgram({
          source: parseIp(peer.address),
          destination: localIp,
          sourcePort: peer.port,
          destinationPort: local.port,
        })));
      }
      raw = RawSender.open(local.family);
      const sender = raw;
      const clock = timestampClock();
      const ts = clock.now();
      // What this host's kernel would offer the peer (route MSS, window scale, SACK, timestamps).
      const offer = kernelSynOptions(local, peers[0] as InetAddress);
      const offered: TcpOptions = {
        mss: offer.mss,
        ...(offer.sackPermitted ? { sackPermitted: true } : {}),
        ...(offer.timestamps ? { timestamp: { value: ts, echo: 0 } } : {}),
        ...(offer.windowScale !== undefined ? { windowScale: offer.windowScale } : {}),
      };
      const send = async (
        peer: InetAddress,
        segment: Omit<TcpSegment, "checksum">,
        ttl: number,
      ) => {
        const packet = buildTcpPacket(localIp, parseIp(peer.address), segment, {
          ttl,
        }) as Uint8Array<ArrayBuffer>;
        assertOwnFlow(packet, local, peer);
        await sender.send(packet, peer, signal);
      };
      // Prime our NAT with the sequence number and options our socket will use.
      for (const peer of peers) {
        await send(peer, {
          sourcePort: local.port,
          destinationPort: peer.port,
          seq: b,
          ack: 0,
          flags: FLAGS.SYN,
          window: offer.window,
          urgent: 0,
          options: offered,
          payload: new Uint8Array(0),
        }, lowTtl);
      }
      context.progress(SYNI_READY);
      const waiting = AbortSignal.any([signal, found.signal]);
      const { syn, index } = await Promise.race(
        captures.map(async (capture, index) => ({
          syn: await this.#peerSyn(capture, expected, waiting, mismatched),
          index,
        })),
      );
      found.abort();
      const peer = peers[index] as InetAddress;
      const capture = captures[index] as CaptureSocket;
      const a1 = (syn.seq + 1) >>> 0;
      const theirs = syn.options;
      // Negotiated as the kernel does: each option only when both SYNs carry it.
      const sack = !!theirs.sackPermitted && offer.sackPermitted;
      const timestamps = theirs.timestamp !== undefined && offer.timestamps;
      const scaling = theirs.windowScale !== undefined && offer.windowScale !== undefined;
      const connection = {
        local,
        remote: peer,
        sendSeq: (b + 1) >>> 0,
        recvSeq: a1,
        // The kernel's clamp is the peer's MSS option (536 without one, RFC 879).
        mss: theirs.mss ?? 536,
        advertisedMss: offer.mss - (timestamps ? TIMESTAMP_OPTION_BYTES : 0),
        sackPermitted: sack,
        peerWindow: syn.window,
        ...(scaling
          ? {
            windowScale: {
              send: Math.min(theirs.windowScale ?? 0, 14),
              receive: offer.windowScale ?? 0,
            },
          }
          : {}),
        // The socket's clock counts on from the priming SYN's, in milliseconds.
        ...(timestamps ? { timestamp: clock.now() } : {}),
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
          mss: offer.mss,
          ...(sack ? { sackPermitted: true } : {}),
          ...(timestamps && theirs.timestamp
            ? { timestamp: { value: clock.now(), echo: theirs.timestamp.value } }
            : {}),
          ...(scaling && offer.windowScale !== undefined ? { windowScale: offer.windowScale } : {}),
        },
        payload: new Uint8Array(0),
      });
      for (let sent = 1;; sent++) {
        await send(peer, synAck(), 64);
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
        timeoutMs: confirmMs,
      });
      const result = repaired;
      repaired = undefined;
      return result;
    } finally {
      found.abort();
      mismatched.flush();
      repaired?.close();
      for (const capture of captures) capture.close();
      raw?.close();
    }
  }

  /**
   * The peer's SYN as it arrives through our NAT: the sequence number and
   * options it announced. Its TCP checksum is not looked at: a SYN its
   * kernel sent may reach a capture between virtual interfaces with the
   * checksum still left to the (absent) hardware, and this stack never takes
   * the SYN in (the pure-syn guard drops it); the sequence number, 32 random
   * bits only the peer was told, is what identifies it.
   */
  async #peerSyn(
    capture: CaptureSocket,
    expected: SynInfo,
    signal: AbortSignal,
    mismatched: PacketWarning,
  ): Promise<TcpSegment> {
    for (;;) {
      const t = parsePacket((await capture.next(signal)).packet).tcp;
      if (t === undefined || !(t.flags & FLAGS.SYN) || t.flags & FLAGS.ACK) continue;
      if (!expected.flows.some((f) => t.seq === f.seq && sameOptions(t.options, f.options))) {
        mismatched.note({ seq: t.seq, expected: expected.flows.map((f) => f.seq).join(",") });
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

/** A socket bound to `local` whose connect() sends a SYN with sequence number `isn`. */
function connectingSocket(local: InetAddress, isn: number): Socket {
  const socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
  try {
    socket.bind(local);
    presetIsn(socket, isn);
    return socket;
  } catch (error) {
    socket.close();
    throw error;
  }
}

/** Starts `flow`'s socket connecting; `flow.connected` turns true when it completes. */
function connect(flow: InitiatorFlow, signal: AbortSignal): void {
  const socket = flow.socket;
  flow.connecting = socket.connect(flow.peer, signal);
  flow.connecting.then(() => {
    if (flow.socket === socket) flow.connected = true;
  }, () => {});
}

/**
 * The first flow whose handshake completes; when every one fails, the first
 * flow's error (an attempt's timeout or cancel fails them all alike).
 */
async function firstConnected(flows: readonly InitiatorFlow[]): Promise<InitiatorFlow> {
  try {
    return await Promise.any(flows.map(async (flow) => {
      await flow.connecting;
      return flow;
    }));
  } catch (error) {
    if (error instanceof AggregateError) throw error.errors[0];
    throw error;
  }
}
