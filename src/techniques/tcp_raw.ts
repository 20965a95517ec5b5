/**
 * Safety checks and small packets for the TCP techniques that send raw
 * segments of their own flow (tcp-syni's SYNs and SYN-ACKs, the RST that
 * resets a NAT's state of a flow).
 *
 * Every raw packet has the host's own address and the attempt's own port as
 * its source and the attempt's peer as its destination
 * ({@linkcode assertOwnFlow}), checked on the bytes about to leave.
 *
 * @module
 */

import { formatIp, parseIp } from "../../ffi/ip.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../errors.ts";
import { buildTcpPacket, parsePacket } from "../packet/packet.ts";
import { FLAGS } from "../packet/tcp.ts";

/** Throws unless `packet` leaves from the attempt's own address and port towards its peer. */
export function assertOwnFlow(packet: Uint8Array, local: InetAddress, peer: InetAddress): void {
  const p = parsePacket(packet);
  const ok = p.tcp !== undefined && formatIp(p.ip.source) === local.address &&
    p.tcp.sourcePort === local.port &&
    formatIp(p.ip.destination) === peer.address && p.tcp.destinationPort === peer.port;
  if (!ok) throw new TechniqueError("Cannot inject: the packet is not the attempt's own flow");
}

/** Throws unless `address` is one of this host's addresses (binding to it succeeds). */
export function assertLocalAddress(address: InetAddress): void {
  using probe = Socket.create(address.family, "stream", { reuseAddress: true, reusePort: true });
  try {
    probe.bind(address);
  } catch (error) {
    throw new TechniqueError(
      `Cannot use ${formatAddress(address)} as the attempt's own endpoint: ${
        (error as Error).message
      }`,
    );
  }
}

/**
 * An RST (no ACK) of the flow `local` -> `peer` with sequence number `seq`
 * and `ttl`, checked by {@linkcode assertOwnFlow}.
 */
export function resetPacket(
  local: InetAddress,
  peer: InetAddress,
  seq: number,
  ttl: number,
): Uint8Array<ArrayBuffer> {
  const packet = buildTcpPacket(parseIp(local.address), parseIp(peer.address), {
    sourcePort: local.port,
    destinationPort: peer.port,
    seq: seq >>> 0,
    ack: 0,
    flags: FLAGS.RST,
    window: 0,
    urgent: 0,
    options: {},
    payload: new Uint8Array(0),
  }, { ttl }) as Uint8Array<ArrayBuffer>;
  assertOwnFlow(packet, local, peer);
  return packet;
}
