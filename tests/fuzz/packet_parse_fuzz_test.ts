/**
 * Fuzz test of the packet codecs that read whole packets (src/packet/):
 * UDP, ICMP/ICMPv6 with quoted flows, the Internet checksum and parsePacket,
 * each with at least 100,000 generated, mutated and random inputs and fixed
 * seeds (in each test's name).
 *
 * What a user relies on: a packet off the wire either parses or throws
 * TypeError/RangeError "Cannot ..."; `checksumsValid` is only true when every
 * checksum in the packet is right; an IPv4 fragment is never read as a
 * transport segment; a quoted flow is read only from bytes the quote has.
 */

import fc from "fast-check";
import { assert, assertEquals, assertStrictEquals } from "../assert.ts";
import { internetChecksum, sumWords, transportChecksum } from "../../src/packet/checksum.ts";
import { quotedFlow } from "../../src/packet/icmp.ts";
import { buildTcpPacket, icmp, icmpv6, parsePacket, PROTO, udp } from "../../src/packet/packet.ts";
import {
  addresses,
  decoded,
  edits,
  icmpMessage,
  tcpSegment,
  u8,
  udpDatagram,
  wrap,
} from "./packet_arbitraries.ts";
import { type ByteMutation, ipv4Bytes, ipv6Bytes, mutateAllBytes, params } from "./fuzz.ts";

const SEED = 0x9ac7e7;

function checkUdp(buf: Uint8Array, source: Uint8Array, destination: Uint8Array): void {
  const result = decoded(() => udp.decode(buf));
  if (result === undefined) return;
  const { value, bytesRead } = result;
  assert(bytesRead >= 8 && bytesRead <= buf.length);
  assertStrictEquals(bytesRead, 8 + value.payload.length);
  const { checksum: _, ...fields } = value;
  const again = udp.encode(fields, source, destination);
  assertEquals(
    again.subarray(0, 6),
    buf.subarray(0, 6).map((b, i) => i === 4 || i === 5 ? again[i]! : b),
  );
  const back = udp.decode(again).value;
  assertEquals(back, { ...value, checksum: back.checksum });
  assertStrictEquals(transportChecksum(source, destination, PROTO.UDP, again), 0);
}

Deno.test(`packet fuzz: UDP datagrams, 20,000 round-trips and 80,000 mutated or random (seed ${SEED + 7})`, () => {
  fc.assert(
    fc.property(udpDatagram, addresses, (d, [src, dst]) => {
      const bytes = udp.encode(d, src, dst);
      assertStrictEquals(bytes.length, udp.encodedLength(d));
      assertStrictEquals(transportChecksum(src, dst, PROTO.UDP, bytes), 0);
      const { value, bytesRead } = udp.decode(bytes);
      assertStrictEquals(bytesRead, bytes.length);
      assert(value.checksum !== 0, "a computed UDP checksum of 0 must be sent as 0xffff");
      assertEquals(value, { ...d, checksum: value.checksum });
    }),
    params(SEED + 7, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.tuple(udpDatagram, addresses, edits).map(([d, [s, t], m]) =>
            [mutateAllBytes(udp.encode(d, s, t), m), s, t] as const
          ),
        },
        {
          weight: 1,
          arbitrary: fc.tuple(fc.uint8Array({ maxLength: 40 }), addresses).map(([b, [s, d]]) =>
            [b, s, d] as const
          ),
        },
      ),
      ([buf, src, dst]) => checkUdp(buf, src, dst),
    ),
    params(SEED + 8, 80_000),
  );
});

/** A time exceeded body quoting a TCP or UDP packet (as routers send, 8 bytes of transport). */
const quotedPacket = fc.tuple(addresses, tcpSegment, fc.nat(40)).map(([[src, dst], s, cut]) => {
  const packet = buildTcpPacket(src, dst, { ...s, options: {} });
  const ipLength = src.length === 4 ? 20 : 40;
  return { packet: packet.slice(0, ipLength + 8 + cut), src, dst, s };
});

Deno.test(`packet fuzz: ICMP and ICMPv6 messages and quoted flows, 20,000 round-trips and 80,000 mutated (seed ${SEED + 9})`, () => {
  fc.assert(
    fc.property(icmpMessage, fc.tuple(ipv6Bytes, ipv6Bytes), quotedPacket, (m, [s6, d6], q) => {
      const v4 = icmp.encode(m);
      assertStrictEquals(v4.length, icmp.encodedLength(m));
      assertStrictEquals(internetChecksum(v4), 0);
      assertEquals(icmp.decode(v4), {
        value: { ...m, checksum: icmp.decode(v4).value.checksum },
        bytesRead: v4.length,
      });
      const v6 = icmpv6.encode(m, s6, d6);
      assertStrictEquals(transportChecksum(s6, d6, PROTO.ICMPV6, v6), 0);
      assertEquals(icmpv6.decode(v6).value, { ...m, checksum: icmpv6.decode(v6).value.checksum });
      const flow = quotedFlow(q.packet);
      assertEquals([flow.source, flow.destination, flow.protocol], [q.src, q.dst, PROTO.TCP]);
      assertEquals([flow.sourcePort, flow.destinationPort, flow.seq], [
        q.s.sourcePort,
        q.s.destinationPort,
        q.s.seq,
      ]);
    }),
    params(SEED + 9, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        quotedPacket.map((q) => q.packet),
        icmpMessage.map((m) => icmp.encode(m)),
        fc.uint8Array({ maxLength: 80 }),
      ),
      edits,
      (bytes, m) => {
        const buf = mutateAllBytes(bytes, m);
        const message = decoded(() => icmp.decode(buf));
        if (message !== undefined) {
          assertEquals(icmp.decode(icmp.encode(message.value)).value.body, message.value.body);
        }
        const flow = decoded(() => quotedFlow(buf));
        if (flow === undefined) return;
        const version = (buf[0] ?? 0) >> 4;
        const offset = version === 4 ? ((buf[0] ?? 0) & 0x0f) * 4 : 40;
        assert(offset + 4 <= buf.length, "ports read past the quote");
        assert(flow.seq === undefined || offset + 8 <= buf.length, "seq read past the quote");
        assertStrictEquals(flow.source.length, version === 4 ? 4 : 16);
      },
    ),
    params(SEED + 10, 80_000),
  );
});

// ---------------------------------------------------------------------------
// Checksums

/** RFC 1071 the slow way: one's complement sum folded after every word. */
function referenceChecksum(data: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < data.length; i += 2) {
    sum += ((data[i] ?? 0) << 8) | (data[i + 1] ?? 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

Deno.test(`packet fuzz: the Internet checksum equals RFC 1071's on 100,000 inputs (seed ${SEED + 11})`, () => {
  fc.assert(
    fc.property(
      fc.oneof(
        { weight: 19, arbitrary: fc.uint8Array({ maxLength: 200 }) },
        // Long runs of 0xff make the running sum carry many times before it is folded.
        {
          weight: 1,
          arbitrary: fc.uint8Array({ minLength: 1000, maxLength: 3000 }).map((b) =>
            b.fill(0xff, 0, b.length >> 1)
          ),
        },
      ),
      fc.nat(),
      (data, split) => {
        const sum = internetChecksum(data);
        assertStrictEquals(sum, referenceChecksum(data));
        // Sums continue across an even split, and a packet carrying its checksum sums to zero.
        const at = data.length === 0 ? 0 : (split % (data.length + 1)) & ~1;
        assertStrictEquals(
          sumWords(data.subarray(at), sumWords(data.subarray(0, at))),
          sumWords(data),
        );
        if (data.length >= 2 && data.length % 2 === 0) {
          const withSum = data.slice();
          withSum[0] = 0;
          withSum[1] = 0;
          const c = internetChecksum(withSum);
          withSum[0] = c >> 8;
          withSum[1] = c & 0xff;
          assertStrictEquals(internetChecksum(withSum), 0);
        }
      },
    ),
    params(SEED + 11, 100_000),
  );
});

// ---------------------------------------------------------------------------
// Whole packets

const builtPacket: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(addresses, tcpSegment, u8).map(([[src, dst], s, ttl]) => {
    try {
      return buildTcpPacket(src, dst, s, { ttl });
    } catch {
      return buildTcpPacket(src, dst, { ...s, options: {} }, { ttl });
    }
  }),
  fc.tuple(addresses, udpDatagram).map(([[src, dst], d]) =>
    wrap(src, dst, PROTO.UDP, udp.encode(d, src, dst))
  ),
  fc.tuple(ipv4Bytes, ipv4Bytes, icmpMessage).map(([src, dst, m]) =>
    wrap(src, dst, PROTO.ICMP, icmp.encode(m))
  ),
  fc.tuple(ipv6Bytes, ipv6Bytes, icmpMessage).map(([src, dst, m]) =>
    wrap(src, dst, PROTO.ICMPV6, icmpv6.encode(m, src, dst))
  ),
);

/** parsePacket's value or error, and what it promises about the bytes. */
function checkPacket(buf: Uint8Array, edited: readonly ByteMutation[]): void {
  const parsed = decoded(() => parsePacket(buf));
  if (parsed === undefined) return;
  const { ip } = parsed;
  let body: Uint8Array;
  if (ip.version === 4) {
    const headerLength = ip.options.length + 20;
    assert(ip.totalLength <= buf.length);
    body = buf.subarray(headerLength, ip.totalLength);
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      // A fragment's payload is not a whole transport segment (a later one not even its start).
      assert(
        parsed.tcp === undefined && parsed.udp === undefined && parsed.icmp === undefined,
        "a fragment was parsed as a transport segment",
      );
      return;
    }
  } else {
    assert(40 + ip.payloadLength <= buf.length);
    body = buf.subarray(40, 40 + ip.payloadLength);
  }
  const layers = [parsed.tcp, parsed.udp, parsed.icmp].filter((l) => l !== undefined);
  assert(layers.length <= 1);
  if (!parsed.checksumsValid) return;
  // checksumsValid promises every checksum in the packet is right.
  const why = `checksumsValid on a packet with a wrong checksum (${JSON.stringify(edited)})`;
  if (ip.version === 4) {
    assertStrictEquals(internetChecksum(buf.subarray(0, ip.options.length + 20)), 0, why);
  }
  if (parsed.tcp) {
    assertStrictEquals(transportChecksum(ip.source, ip.destination, PROTO.TCP, body), 0, why);
  }
  if (parsed.udp && (ip.version === 6 || parsed.udp.checksum !== 0)) {
    const length = 8 + parsed.udp.payload.length;
    assertStrictEquals(
      transportChecksum(ip.source, ip.destination, PROTO.UDP, body.subarray(0, length)),
      0,
      why,
    );
  }
  if (parsed.icmp && parsed.protocol === PROTO.ICMP) {
    assertStrictEquals(internetChecksum(body), 0, why);
  }
  if (parsed.icmp && parsed.protocol === PROTO.ICMPV6) {
    assertStrictEquals(transportChecksum(ip.source, ip.destination, PROTO.ICMPV6, body), 0, why);
  }
}

Deno.test(`packet fuzz: parsePacket on 20,000 built and 100,000 mutated or random packets (seed ${SEED + 12})`, () => {
  fc.assert(
    fc.property(builtPacket, (packet) => {
      const parsed = parsePacket(packet);
      assert(parsed.checksumsValid, "a built packet has valid checksums");
      assertStrictEquals([parsed.tcp, parsed.udp, parsed.icmp].filter((l) => l).length, 1);
    }),
    params(SEED + 12, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc.tuple(builtPacket, edits).map(([p, m]) =>
            [mutateAllBytes(p, m), m] as const
          ),
        },
        {
          weight: 1,
          arbitrary: fc.uint8Array({ maxLength: 120 }).map((b) =>
            [b, [] as ByteMutation[]] as const
          ),
        },
      ),
      ([buf, m]) => checkPacket(buf, m),
    ),
    params(SEED + 13, 100_000),
  );
});
