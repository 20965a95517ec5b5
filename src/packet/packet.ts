/**
 * Whole IP packets: build one (IP header + TCP/UDP/ICMP) and parse one into
 * its layers. Pure: no I/O.
 *
 * @module
 */

import { icmp, type IcmpMessage, icmpv6 } from "./icmp.ts";
import { ipv4, type Ipv4Header, ipv6, type Ipv6Header, PROTO } from "./ip.ts";
import { tcp, type TcpSegment } from "./tcp.ts";
import { udp, type UdpDatagram } from "./udp.ts";

/**
 * A parsed packet: the IP header and the transport layer punchd understands
 * (none for an IPv4 fragment: its payload is not a whole segment).
 */
export interface ParsedPacket {
  ip: Ipv4Header | Ipv6Header;
  protocol: number;
  tcp?: TcpSegment;
  udp?: UdpDatagram;
  icmp?: IcmpMessage;
  /** True when the IPv4 header checksum and the parsed transport layer's checksum are right. */
  checksumsValid: boolean;
}

/** Parses an IPv4 or IPv6 packet (no IPv6 extension headers). */
export function parsePacket(buf: Uint8Array): ParsedPacket {
  if (buf.length === 0) throw new RangeError("Cannot parse an empty packet");
  const version = (buf[0] ?? 0) >> 4;
  let ip: Ipv4Header | Ipv6Header, protocol: number, payload: Uint8Array, headerOk = true;
  if (version === 4) {
    const { value, bytesRead } = ipv4.decode(buf);
    if (value.totalLength > buf.length) {
      throw new RangeError(
        `Cannot parse packet: total length ${value.totalLength} exceeds ${buf.length} bytes`,
      );
    }
    ip = value;
    protocol = value.protocol;
    payload = buf.subarray(bytesRead, value.totalLength);
    headerOk = ipv4.verify(buf);
  } else if (version === 6) {
    const { value, bytesRead } = ipv6.decode(buf);
    if (bytesRead + value.payloadLength > buf.length) {
      throw new RangeError(
        `Cannot parse packet: payload length ${value.payloadLength} exceeds the buffer`,
      );
    }
    ip = value;
    protocol = value.nextHeader;
    payload = buf.subarray(bytesRead, bytesRead + value.payloadLength);
  } else {
    throw new TypeError(`Cannot parse packet: IP version ${version}`);
  }
  const parsed: ParsedPacket = { ip, protocol, checksumsValid: headerOk };
  if (ip.version === 4 && (ip.moreFragments || ip.fragmentOffset !== 0)) return parsed;
  if (protocol === PROTO.TCP) {
    parsed.tcp = tcp.decode(payload).value;
    parsed.checksumsValid &&= tcp.verify(payload, ip.source, ip.destination);
  } else if (protocol === PROTO.UDP) {
    const { value, bytesRead } = udp.decode(payload);
    parsed.udp = value;
    parsed.checksumsValid &&= udp.verify(payload.subarray(0, bytesRead), ip.source, ip.destination);
  } else if (protocol === PROTO.ICMP) {
    parsed.icmp = icmp.decode(payload).value;
    parsed.checksumsValid &&= icmp.verify(payload);
  } else if (protocol === PROTO.ICMPV6) {
    parsed.icmp = icmpv6.decode(payload).value;
    parsed.checksumsValid &&= icmpv6.verify(payload, ip.source, ip.destination);
  }
  return parsed;
}

/** Builds a whole IPv4 or IPv6 packet carrying a TCP segment (checksums computed). */
export function buildTcpPacket(
  source: Uint8Array,
  destination: Uint8Array,
  segment: Omit<TcpSegment, "checksum">,
  { ttl = 64, id = 0 }: { ttl?: number; id?: number } = {},
): Uint8Array {
  const body = tcp.encode(segment, source, destination);
  const header = source.length === 4
    ? ipv4.encode({
      tos: 0,
      totalLength: 20 + body.length,
      id,
      dontFragment: true,
      moreFragments: false,
      fragmentOffset: 0,
      ttl,
      protocol: PROTO.TCP,
      source,
      destination,
      options: new Uint8Array(0),
    })
    : ipv6.encode({
      trafficClass: 0,
      flowLabel: 0,
      payloadLength: body.length,
      nextHeader: PROTO.TCP,
      hopLimit: ttl,
      source,
      destination,
    });
  const out = new Uint8Array(header.length + body.length);
  out.set(header);
  out.set(body, header.length);
  return out;
}

/** Re-exported layer codecs. */
export { icmp, icmpv6, ipv4, ipv6, PROTO, tcp, udp };
export type { IcmpMessage, Ipv4Header, Ipv6Header, TcpSegment, UdpDatagram };
