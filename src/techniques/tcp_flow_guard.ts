/**
 * Guarding one TCP flow of an attempt against blind forged segments, for
 * tcp-nutss and tcp-syni.
 *
 * A blind attacker who knows only the two public endpoints can send one
 * SYN-ACK with random numbers to a host whose socket is connecting: its
 * kernel answers with an RST, which also clears the NATs' state of the
 * flow. So, for the whole attempt, on each host and each flow:
 *
 * - `rst-out`: no RST of the flow leaves the host;
 * - `syn-ack`: an inbound SYN-ACK of the flow passes only if it acknowledges
 *   this host's ISN + 1.
 *
 * The ISN is this side's own choice, made before the socket connects
 * ({@linkcode presetIsn}), so both guards are in the kernel before the
 * flow's first packet leaves. (Learning the kernel's ISN from a capture of
 * the SYN would leave a window between the SYN and the guard.)
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
import type { Socket } from "../../ffi/socket.ts";
import type { InetAddress } from "../../ffi/structs.ts";
import type { Flow } from "../firewall/guards.ts";
import type { AttemptContext } from "./technique.ts";

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
 * Installs the guards of the flow `local` -> `peer` whose SYN carries `isn`:
 * rst-out and syn-ack (ack `isn + 1`), plus `extra` kinds (time-exceeded for
 * a low-TTL SYN, pure-syn for tcp-syni's responder), all in one go. Resolves
 * once the kernel has them all; the daemon removes them when the attempt ends.
 */
export async function guardFlow(
  context: AttemptContext,
  local: InetAddress,
  peer: InetAddress,
  isn: number,
  extra: ("time-exceeded" | "pure-syn")[] = [],
): Promise<void> {
  const flow = flowOf(local, peer);
  await Promise.all([
    ...extra.map((kind) => context.firewall.add({ kind, flow })),
    context.firewall.add({ kind: "rst-out", flow }),
    context.firewall.add({ kind: "syn-ack", flow, ack: (isn + 1) >>> 0 }),
  ]);
}
