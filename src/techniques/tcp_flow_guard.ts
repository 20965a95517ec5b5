/**
 * Guarding one TCP flow of an attempt against blind forged segments, for
 * tcp-nutss and tcp-syni.
 *
 * A blind attacker who knows only the two public endpoints can send one
 * SYN-ACK with random numbers to a host whose socket is connecting. It does
 * damage in two places:
 *
 * 1. The host: its kernel answers with an RST, which also clears the NATs'
 *    state of the flow. So, for the whole attempt, on each host and each
 *    flow, `rst-out` lets no RST of the flow leave, and `syn-ack` lets an
 *    inbound SYN-ACK of the flow pass only if it acknowledges this host's
 *    ISN + 1. The ISN is this side's own choice, made before the socket
 *    connects ({@linkcode presetIsn}), so both guards are in the kernel
 *    before the flow's first packet leaves.
 * 2. The host's NAT, when it is Linux conntrack (most home routers): a
 *    SYN-ACK in reply to the SYN the NAT let out sets the NAT's idea of
 *    the reply direction's sequence space, whether or not the NAT then finds
 *    it valid. The peer's real SYN (or SYN-ACK) takes over only if its
 *    sequence number lies "after" the forged one, which is a coin toss;
 *    otherwise the NAT lets the peer's packet in but marks this host's
 *    answer invalid and no longer translates it: the handshake hangs
 *    half-open. No guard on the host can reach into the NAT, but the host
 *    can make the NAT forget the flow ({@linkcode FlowGuard.resetNat}): an
 *    RST of the flow with a low TTL (it dies before the peer's NAT) moves
 *    the NAT's entry to CLOSE, and the next SYN of the flow makes it start a
 *    fresh one.
 *
 * @module
 */

import {
  IPPROTO_TCP,
  TCP_QUEUE_SEQ,
  TCP_REPAIR,
  TCP_REPAIR_QUEUE,
  TCP_SEND_QUEUE,
} from "../../ffi/constants.ts";
import type { RawSender } from "../../ffi/packet_socket.ts";
import type { Socket } from "../../ffi/socket.ts";
import { type InetAddress, inetAddress } from "../../ffi/structs.ts";
import type { Flow, Guard } from "../firewall/guards.ts";
import type { AttemptSpec } from "./protocol.ts";
import { resetPacket } from "./tcp_raw.ts";
import type { AttemptContext, GuardPlan } from "./technique.ts";

/** getsockopt(TCP_INFO): struct tcp_info, whose first byte is the socket's state. */
const TCP_INFO = 11;
/** The kernel's TCP states (include/net/tcp_states.h) punchd looks at. */
export const TCP_STATE = { ESTABLISHED: 1, SYN_SENT: 2, SYN_RECV: 3 } as const;

/** A random initial sequence number, never 0 (0 tells the kernel to choose one itself). */
export function randomIsn(): number {
  for (;;) {
    const [isn] = crypto.getRandomValues(new Uint32Array(1));
    if (isn !== undefined && isn !== 0) return isn;
  }
}

/**
 * Makes `isn` the sequence number of the SYN that `socket`'s next connect()
 * sends. The socket must be unconnected; needs CAP_NET_ADMIN. In repair
 * mode the send queue's sequence number of a closed socket is writable, and
 * connect() keeps a non-zero one instead of drawing its own; repair mode is
 * left before connect(), which then runs an ordinary handshake.
 */
export function presetIsn(socket: Socket, isn: number): void {
  socket.setOption(IPPROTO_TCP, TCP_REPAIR, 1);
  try {
    socket.setOption(IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
    socket.setOption(IPPROTO_TCP, TCP_QUEUE_SEQ, isn | 0);
  } finally {
    socket.setOption(IPPROTO_TCP, TCP_REPAIR, 0);
  }
}

/** The kernel's TCP state of `socket` (see {@linkcode TCP_STATE}). */
export function tcpState(socket: Socket): number {
  // The first four bytes of struct tcp_info read as a C int: the state is its first byte (u8).
  return socket.getOption(IPPROTO_TCP, TCP_INFO) & 0xff;
}

/**
 * Closes `socket` without sending anything (no RST, no FIN), whatever its
 * state: in repair mode close() only drops the socket. Needs CAP_NET_ADMIN.
 */
export function closeQuietly(socket: Socket): void {
  try {
    socket.setOption(IPPROTO_TCP, TCP_REPAIR, 1);
  } finally {
    socket.close();
  }
}

/** The flow `local` -> `peer` as the firewall keys it. */
export function flowOf(local: InetAddress, peer: InetAddress): Flow {
  return {
    localIp: local.address,
    localPort: local.port,
    remoteIp: peer.address,
    remotePort: peer.port,
  };
}

/**
 * The guards {@linkcode FlowGuard.install} asks for, in its order: rst-out,
 * syn-ack (ack `isn + 1`), then `extra`.
 */
export function flowGuards(
  local: InetAddress,
  peer: InetAddress,
  isn: number,
  extra: readonly ("time-exceeded" | "pure-syn")[] = [],
): Guard[] {
  const flow = flowOf(local, peer);
  return [
    { kind: "rst-out", flow },
    { kind: "syn-ack", flow, ack: (isn + 1) >>> 0 },
    ...extra.map((kind) => ({ kind, flow })),
  ];
}

/**
 * The ISNs and guards of an attempt that follows `plan` (technique.ts
 * {@linkcode GuardPlan}): one flow per destination port, in order, each
 * guarded as {@linkcode FlowGuard.install} does.
 */
export function plannedGuards(
  spec: AttemptSpec,
  plan: GuardPlan,
): { isns: number[]; guards: Guard[] } {
  const local = inetAddress(spec.srcIp, spec.srcPorts[0] ?? 0);
  const shared = randomIsn();
  const isns = spec.dstPorts.map(() => plan.sharedIsn ? shared : randomIsn());
  const guards = spec.dstPorts.flatMap((port, i) =>
    flowGuards(local, inetAddress(spec.dstIp, port), isns[i] ?? shared, plan.extra)
  );
  return { isns, guards };
}

/**
 * The ISNs the daemon chose for `count` flows (`spec.isns`, see
 * {@linkcode plannedGuards}), or new ones when it chose none.
 */
export function attemptIsns(spec: AttemptSpec, count: number, shared = false): number[] {
  const chosen = spec.isns;
  if (
    chosen !== undefined && chosen.length === count &&
    chosen.every((isn) => Number.isInteger(isn) && isn > 0 && isn <= 0xffffffff)
  ) {
    return [...chosen];
  }
  const one = randomIsn();
  return Array.from({ length: count }, () => shared ? one : randomIsn());
}

/** The guards of one flow of an attempt (the daemon removes them when the attempt ends). */
export class FlowGuard {
  readonly #context: AttemptContext;
  readonly #local: InetAddress;
  readonly #peer: InetAddress;
  readonly #flow: Flow;
  #rstOut: number;
  #synAck: number;

  private constructor(
    context: AttemptContext,
    local: InetAddress,
    peer: InetAddress,
    handles: [number, number],
  ) {
    this.#context = context;
    this.#local = local;
    this.#peer = peer;
    this.#flow = flowOf(local, peer);
    [this.#rstOut, this.#synAck] = handles;
  }

  /**
   * Installs the guards of the flow `local` -> `peer` whose SYN carries
   * `isn`: rst-out and syn-ack (ack `isn + 1`), plus `extra` kinds
   * (time-exceeded for a low-TTL SYN, pure-syn for tcp-syni's responder),
   * all at once. Resolves once the kernel has them all.
   */
  static async install(
    context: AttemptContext,
    local: InetAddress,
    peer: InetAddress,
    isn: number,
    extra: ("time-exceeded" | "pure-syn")[] = [],
  ): Promise<FlowGuard> {
    const [rstOut, synAck] = await Promise.all(
      flowGuards(local, peer, isn, extra).map((guard) => context.firewall.add(guard)),
    );
    return new FlowGuard(context, local, peer, [rstOut ?? 0, synAck ?? 0]);
  }

  /** Lets only SYN-ACKs acknowledging `isn + 1` in from now on (a new socket, a new ISN). */
  async acceptIsn(isn: number): Promise<void> {
    const old = this.#synAck;
    this.#synAck = await this.#context.firewall.add({
      kind: "syn-ack",
      flow: this.#flow,
      ack: (isn + 1) >>> 0,
    });
    await this.#context.firewall.remove(old);
  }

  /**
   * Makes this host's NAT forget the flow: sends an RST of the flow with
   * sequence number `seq` (the connecting socket's next one, which the NAT
   * accepts) and TTL `ttl` (low: it must die before the peer's NAT) through
   * `raw`, with the rst-out guard lifted for that one packet. The caller
   * makes sure its kernel sends nothing meanwhile (no socket of the flow,
   * or one whose SYN-ACKs the syn-ack guard holds off), and then sends a SYN
   * of the flow, which the NAT takes for a new connection.
   */
  async resetNat(raw: RawSender, seq: number, ttl: number, signal: AbortSignal): Promise<void> {
    const packet = resetPacket(this.#local, this.#peer, seq, ttl);
    await this.#context.firewall.remove(this.#rstOut);
    try {
      await raw.send(packet, this.#peer, signal);
    } finally {
      this.#rstOut = await this.#context.firewall.add({ kind: "rst-out", flow: this.#flow });
    }
  }
}
