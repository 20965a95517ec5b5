/**
 * Fuzz test of the struct codecs in ffi/structs.ts that read bytes the
 * kernel fills in from the network or from other processes: sockaddr
 * (in, in6, un), cmsghdr sequences (SCM_RIGHTS from a peer) and sockaddr_ll,
 * with generated, mutated and random inputs (and random lengths, as the
 * kernel reports them) and fixed seeds (in each test's name).
 *
 * What a user relies on: a decoder either returns a value or throws
 * TypeError/RangeError "Cannot ..."; it never reads past `length` or its
 * buffer; a decoded value re-encodes to bytes that decode to the same value.
 */

import fc from "fast-check";
import { assert, assertEquals, assertStrictEquals } from "../assert.ts";
import { AF_INET, AF_INET6, AF_UNIX } from "../../ffi/constants.ts";
import { formatIp, parseIp } from "../../ffi/ip.ts";
import {
  cmsg,
  type ControlMessage,
  type LinkAddress,
  rightsFds,
  sockaddr,
  sockaddrLl,
  type SocketAddress,
} from "../../ffi/structs.ts";
import { decoded, edits } from "./packet_arbitraries.ts";
import { canonicalAddress, mutateAllBytes, params } from "./fuzz.ts";

const SEED = 0x57c7;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const SUN_PATH_MAX = 107;

/** A unix socket path: any characters but NUL, at most 107 bytes of UTF-8. */
const unixPath = fc
  .string({
    maxLength: 60,
    unit: fc.oneof(
      fc.constantFrom("/", ".", "a", "\u00e9", "\u{1f600}"),
      fc.string({ minLength: 1, maxLength: 1, unit: "binary" }),
    ),
  })
  .map((s) => s.replaceAll("\0", "_"))
  .filter((s) => new TextEncoder().encode(s).length <= SUN_PATH_MAX);

const socketAddress: fc.Arbitrary<SocketAddress> = fc.oneof(
  fc.record({ address: canonicalAddress, port: fc.nat(0xffff), scopeId: fc.nat(0xffffffff) }).map(
    ({ address, port, scopeId }): SocketAddress => {
      if (!address.includes(":")) return { family: "inet", address, port };
      return scopeId === 0
        ? { family: "inet6", address, port }
        : { family: "inet6", address, port, scopeId };
    },
  ),
  unixPath.map((path): SocketAddress => ({ family: "unix", path })),
);

/** Bytes with the family field set to one the decoder knows (or not), and a reported length. */
function withFamily(bytes: Uint8Array, family: number): Uint8Array {
  const out = bytes.length >= 2 ? bytes.slice() : new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, family, LITTLE_ENDIAN);
  return out;
}

function checkSockaddr(buf: Uint8Array, length: number): void {
  const result = decoded(() => sockaddr.decode(buf, length));
  if (result === undefined) return;
  const { value, bytesRead } = result;
  assert(bytesRead <= length && bytesRead <= buf.length, `read ${bytesRead} of ${length}`);
  let again: Uint8Array;
  if (value.family === "unix") {
    // The path is the bytes up to the first NUL, as UTF-8 (invalid bytes become U+FFFD).
    try {
      again = sockaddr.encode(value);
    } catch (error) {
      // Only a path the kernel allows and sockaddr_un cannot hold with its NUL may be refused.
      assert(error instanceof RangeError, String(error));
      assert(new TextEncoder().encode(value.path).length > SUN_PATH_MAX, error.message);
      return;
    }
  } else {
    assertStrictEquals(formatIp(parseIp(value.address)), value.address, "address not canonical");
    assert(Number.isInteger(value.port) && value.port >= 0 && value.port <= 0xffff);
    again = sockaddr.encode(value);
  }
  assertEquals(sockaddr.decode(again).value, value);
}

Deno.test(`structs fuzz: sockaddr, 20,000 round-trips and 80,000 mutated or random with random lengths (seed ${SEED})`, () => {
  fc.assert(
    fc.property(socketAddress, (address) => {
      const bytes = sockaddr.encode(address);
      assertStrictEquals(bytes.length, sockaddr.encodedLength(address));
      assertEquals(sockaddr.decode(bytes), { value: address, bytesRead: bytes.length });
    }),
    params(SEED, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.tuple(socketAddress, edits).map(([a, m]) => mutateAllBytes(sockaddr.encode(a), m)),
        fc.tuple(fc.uint8Array({ maxLength: 130 }), fc.constantFrom(AF_INET, AF_INET6, AF_UNIX))
          .map(([b, f]) => withFamily(b, f)),
        fc.uint8Array({ maxLength: 130 }),
      ),
      fc.oneof(fc.constant(-1), fc.integer({ min: -4, max: 140 })),
      (buf, l) => checkSockaddr(buf, l === -1 ? buf.length : l),
    ),
    params(SEED + 1, 80_000),
  );
});

const controlMessage: fc.Arbitrary<ControlMessage> = fc.record({
  level: fc.oneof(fc.constant(1), fc.integer({ min: -0x80000000, max: 0x7fffffff })),
  type: fc.oneof(fc.constant(1), fc.integer({ min: -0x80000000, max: 0x7fffffff })),
  data: fc.uint8Array({ maxLength: 40 }),
});

function checkCmsg(buf: Uint8Array, length: number): void {
  const result = decoded(() => cmsg.decode(buf, length));
  if (result === undefined) return;
  const { value, bytesRead } = result;
  assert(bytesRead <= Math.max(0, length) && bytesRead <= buf.length, `read ${bytesRead}`);
  const data = value.reduce((sum, m) => sum + 16 + m.data.length, 0);
  assert(data <= bytesRead, "messages claim more bytes than were read");
  for (const fd of rightsFds(value)) assert(Number.isInteger(fd));
  assertEquals(cmsg.decode(cmsg.encode(value)).value, value);
}

Deno.test(`structs fuzz: cmsghdr sequences, 20,000 round-trips and 80,000 mutated or random with random lengths (seed ${SEED + 2})`, () => {
  fc.assert(
    fc.property(fc.array(controlMessage, { maxLength: 4 }), (messages) => {
      const bytes = cmsg.encode(messages);
      assertStrictEquals(bytes.length, cmsg.encodedLength(messages));
      assertEquals(cmsg.decode(bytes), { value: messages, bytesRead: bytes.length });
    }),
    params(SEED + 2, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.tuple(fc.array(controlMessage, { minLength: 1, maxLength: 3 }), edits).map(([m, e]) =>
          mutateAllBytes(cmsg.encode(m), e)
        ),
        fc.uint8Array({ maxLength: 120 }),
      ),
      fc.oneof(fc.constant(-1), fc.integer({ min: -4, max: 130 })),
      (buf, l) => checkCmsg(buf, l === -1 ? buf.length : Math.min(l, buf.length)),
    ),
    params(SEED + 3, 80_000),
  );
});

const linkAddress: fc.Arbitrary<LinkAddress> = fc.record({
  protocol: fc.nat(0xffff),
  ifindex: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
  hatype: fc.nat(0xffff),
  pkttype: fc.nat(0xff),
  address: fc.uint8Array({ maxLength: 8 }),
});

Deno.test(`structs fuzz: sockaddr_ll, 20,000 round-trips and 80,000 mutated or random (seed ${SEED + 4})`, () => {
  fc.assert(
    fc.property(linkAddress, (a) => {
      const bytes = sockaddrLl.encode(a);
      assertStrictEquals(bytes.length, sockaddrLl.encodedLength());
      assertEquals(sockaddrLl.decode(bytes), { value: a, bytesRead: 12 + a.address.length });
    }),
    params(SEED + 4, 20_000),
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.tuple(linkAddress, edits).map(([a, m]) => mutateAllBytes(sockaddrLl.encode(a), m)),
        fc.uint8Array({ maxLength: 24 }).map((b) => withFamily(b, 17)),
        fc.uint8Array({ maxLength: 24 }),
      ),
      (buf) => {
        const result = decoded(() => sockaddrLl.decode(buf));
        if (result === undefined) return;
        assert(result.bytesRead <= buf.length, `read ${result.bytesRead} of ${buf.length} bytes`);
        assertEquals(sockaddrLl.decode(sockaddrLl.encode(result.value)).value, result.value);
      },
    ),
    params(SEED + 5, 80_000),
  );
});
