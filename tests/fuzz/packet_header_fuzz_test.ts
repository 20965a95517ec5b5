/**
 * Fuzz test of the packet header codecs (src/packet/ip.ts, tcp.ts): IPv4,
 * IPv6, TCP segments and TCP option areas, each with 100,000 generated,
 * mutated and random inputs and fixed seeds (in each test's name).
 *
 * What a user relies on: bytes off the wire either decode or throw
 * TypeError/RangeError "Cannot ..."; a decoded header re-encodes to the bytes
 * it came from (up to its checksum); no length field sends a decoder outside
 * its buffer.
 */

import fc from "fast-check";
import { assert, assertEquals, assertStrictEquals } from "../assert.ts";
import { ipv4, ipv6, tcp } from "../../src/packet/packet.ts";
import { decodeOptions, encodeOptions } from "../../src/packet/tcp.ts";
import {
  addresses,
  decoded,
  edits,
  encodeTcp,
  ipv4Fields,
  ipv6Fields,
  tcpOptions,
  tcpSegment,
} from "./packet_arbitraries.ts";
import { mutateAllBytes, params } from "./fuzz.ts";

const SEED = 0x9ac7e7;

/** Checks a decoded IPv4 header against the bytes it came from and re-encodes it. */
function checkIpv4(buf: Uint8Array): void {
  const result = decoded(() => ipv4.decode(buf));
  if (result === undefined) return;
  const { value, bytesRead } = result;
  assert(bytesRead >= 20 && bytesRead <= 60 && bytesRead <= buf.length, `bytesRead ${bytesRead}`);
  assertStrictEquals(value.options.length, bytesRead - 20);
  assert(value.totalLength >= bytesRead);
  const { version: _, checksum, ...fields } = value;
  const again = ipv4.encode(fields);
  assert(ipv4.verify(again));
  assertEquals(ipv4.decode(again).value, { ...value, checksum: ipv4.decode(again).value.checksum });
  // Only the checksum and the reserved flag bit may differ from what was read.
  const original = buf.slice(0, bytesRead);
  original[6]! &= 0x7f;
  again.set([checksum >> 8, checksum & 0xff], 10);
  assertEquals(again, original);
}

function checkIpv6(buf: Uint8Array): void {
  const result = decoded(() => ipv6.decode(buf));
  if (result === undefined) return;
  assertStrictEquals(result.bytesRead, 40);
  const { version: _, ...fields } = result.value;
  const again = ipv6.encode(fields);
  assertEquals(again, buf.slice(0, 40));
}

Deno.test(`packet fuzz: IPv4 headers, 20,000 round-trips and 80,000 mutated or random (seed ${SEED})`, () => {
  fc.assert(
    fc.property(ipv4Fields, (h) => {
      const bytes = ipv4.encode(h);
      assertStrictEquals(bytes.length, ipv4.encodedLength(h));
      assert(ipv4.verify(bytes));
      const { value, bytesRead } = ipv4.decode(bytes);
      assertStrictEquals(bytesRead, bytes.length);
      assertEquals(value, { version: 4, ...h, checksum: value.checksum });
    }),
    params(SEED, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.tuple(ipv4Fields, edits).map(([h, m]) => mutateAllBytes(ipv4.encode(h), m)),
        },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 70 }) },
      ),
      checkIpv4,
    ),
    params(SEED + 1, 80_000),
  );
});

Deno.test(`packet fuzz: IPv6 headers, 20,000 round-trips and 80,000 mutated or random (seed ${SEED + 2})`, () => {
  fc.assert(
    fc.property(ipv6Fields, (h) => {
      const bytes = ipv6.encode(h);
      assertStrictEquals(bytes.length, ipv6.encodedLength());
      assertEquals(ipv6.decode(bytes), { value: { version: 6, ...h }, bytesRead: 40 });
    }),
    params(SEED + 2, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.tuple(ipv6Fields, edits).map(([h, m]) => mutateAllBytes(ipv6.encode(h), m)),
        },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 60 }) },
      ),
      checkIpv6,
    ),
    params(SEED + 3, 80_000),
  );
});

function checkTcp(buf: Uint8Array, source: Uint8Array, destination: Uint8Array): void {
  const result = decoded(() => tcp.decode(buf));
  if (result === undefined) return;
  const { value, bytesRead } = result;
  assertStrictEquals(bytesRead, buf.length);
  const headerLength = ((buf[12] ?? 0) >> 4) * 4;
  assertEquals(value.payload, buf.slice(headerLength));
  assertEquals(decodeOptions(buf.subarray(20, headerLength)), value.options);
  for (const u of value.options.unknown ?? []) assert(u.kind > 1 && u.data.length <= 253);
  assert(value.options.mss === undefined || value.options.mss <= 0xffff);
  const again = encodeTcp(value, source, destination);
  if (again === undefined) return;
  assert(tcp.verify(again, source, destination));
  const back = tcp.decode(again).value;
  assertEquals(back, { ...value, checksum: back.checksum });
}

Deno.test(`packet fuzz: TCP segments, 20,000 round-trips and 80,000 mutated or random (seed ${SEED + 4})`, () => {
  fc.assert(
    fc.property(tcpSegment, addresses, (s, [src, dst]) => {
      const bytes = encodeTcp(s, src, dst);
      if (bytes === undefined) return;
      assertStrictEquals(bytes.length, tcp.encodedLength(s));
      assert(tcp.verify(bytes, src, dst));
      const { value } = tcp.decode(bytes);
      assertEquals(value, { ...s, checksum: value.checksum });
    }),
    params(SEED + 4, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        {
          weight: 3,
          arbitrary: fc.tuple(tcpSegment, addresses, edits).map(([s, [src, dst], m]) => {
            const bytes = encodeTcp(s, src, dst) ?? encodeTcp({ ...s, options: {} }, src, dst)!;
            return [mutateAllBytes(bytes, m), src, dst] as const;
          }),
        },
        {
          weight: 1,
          arbitrary: fc.tuple(fc.uint8Array({ maxLength: 80 }), addresses).map(([b, [s, d]]) =>
            [b, s, d] as const
          ),
        },
      ),
      ([buf, src, dst]) => checkTcp(buf, src, dst),
    ),
    params(SEED + 5, 80_000),
  );
});

Deno.test(`packet fuzz: TCP option areas, 100,000 random or edited decode within bounds (seed ${SEED + 6})`, () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 40 }),
        fc.tuple(tcpOptions, edits).map(([o, m]) => {
          try {
            return mutateAllBytes(encodeOptions(o), m);
          } catch {
            return mutateAllBytes(new Uint8Array(0), m);
          }
        }),
      ),
      (area) => {
        const options = decoded(() => decodeOptions(area));
        if (options === undefined) return;
        for (const u of options.unknown ?? []) assert(u.kind > 1);
        if (options.windowScale !== undefined) assert(options.windowScale <= 255);
      },
    ),
    params(SEED + 6, 100_000),
  );
});
