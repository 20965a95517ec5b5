import { assertEquals, assertThrows } from "../assert.ts";
import { AF_INET, AF_INET6, AF_UNIX, SCM_RIGHTS, SOL_SOCKET } from "../../ffi/constants.ts";
import {
  cmsg,
  cmsgSpace,
  decodeMsghdr,
  EPOLL_EVENT_SIZE,
  epollEvent,
  MSGHDR_SIZE,
  pollfd,
  rightsFds,
  rightsMessage,
  sockaddr,
  sockaddrLl,
  ucred,
  unsafeEncodeMsghdr,
} from "../../ffi/structs.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("sockaddr_in encodes family (host order), port and address (network order)", () => {
  const bytes = sockaddr.encode({ family: "inet", address: "192.0.2.1", port: 8080 });
  // sin_family=2 (LE) | sin_port=0x1f90 (BE) | 192.0.2.1 | 8 bytes zero padding
  assertEquals(hex(bytes), "0200" + "1f90" + "c0000201" + "0000000000000000");
  assertEquals(sockaddr.decode(bytes), {
    value: { family: "inet", address: "192.0.2.1", port: 8080 },
    bytesRead: 16,
  });
  assertEquals(new DataView(bytes.buffer).getUint16(0, true), AF_INET);
});

Deno.test("sockaddr_in6 round-trips address, port and scope", () => {
  const addr = { family: "inet6" as const, address: "fe80::1", port: 443, scopeId: 3 };
  const bytes = sockaddr.encode(addr);
  assertEquals(bytes.length, 28);
  assertEquals(new DataView(bytes.buffer).getUint16(0, true), AF_INET6);
  // family | port 443 | flowinfo 0 | fe80::1 | scope 3
  assertEquals(
    hex(bytes),
    "0a00" + "01bb" + "00000000" + "fe800000000000000000000000000001" + "03000000",
  );
  assertEquals(sockaddr.decode(bytes).value, addr);
});

Deno.test("sockaddr_un carries the path with a terminating NUL", () => {
  const bytes = sockaddr.encode({ family: "unix", path: "/tmp/x" });
  assertEquals(bytes.length, 2 + 6 + 1);
  assertEquals(new DataView(bytes.buffer).getUint16(0, true), AF_UNIX);
  assertEquals(bytes[bytes.length - 1], 0);
  assertEquals(sockaddr.decode(bytes).value, { family: "unix", path: "/tmp/x" });
  assertEquals(sockaddr.encodedLength({ family: "unix", path: "/tmp/x" }), 9);
});

Deno.test("sockaddr refuses bad input instead of truncating it", () => {
  assertThrows(() => sockaddr.encode({ family: "unix", path: "x".repeat(108) }), RangeError);
  assertThrows(() => sockaddr.encode({ family: "unix", path: "a\0b" }), TypeError);
  assertThrows(() => sockaddr.encode({ family: "inet", address: "::1", port: 1 }), TypeError);
  assertThrows(
    () => sockaddr.encode({ family: "inet", address: "1.2.3.4", port: 70000 }),
    RangeError,
  );
  assertThrows(() => sockaddr.decode(new Uint8Array(1)), RangeError);
  assertThrows(
    () => sockaddr.decode(sockaddr.encode({ family: "inet", address: "1.2.3.4", port: 1 }), 8),
    RangeError,
  );
  assertThrows(() => sockaddr.decode(new Uint8Array([99, 0, 0, 0])), TypeError);
});

Deno.test("cmsg carries several fds in one SCM_RIGHTS message", () => {
  const message = rightsMessage([3, 4, 250]);
  assertEquals([message.level, message.type], [SOL_SOCKET, SCM_RIGHTS]);
  const bytes = cmsg.encode([message]);
  assertEquals(bytes.length, cmsgSpace(12));
  assertEquals(bytes.length, 32); // 16 header + 12 data padded to 16
  // cmsg_len = 16 + 12 = 28, level 1, type 1, then the three ints
  assertEquals(hex(bytes.subarray(0, 16)), "1c00000000000000" + "01000000" + "01000000");
  const decoded = cmsg.decode(bytes);
  assertEquals(rightsFds(decoded.value), [3, 4, 250]);
});

Deno.test("cmsg decodes consecutive messages and rejects out-of-bounds lengths", () => {
  const bytes = cmsg.encode([rightsMessage([7]), rightsMessage([8, 9])]);
  assertEquals(rightsFds(cmsg.decode(bytes).value), [7, 8, 9]);
  const broken = bytes.slice();
  new DataView(broken.buffer).setBigUint64(0, 1000n, true);
  assertThrows(() => cmsg.decode(broken), RangeError);
  assertThrows(() => cmsg.decode(bytes, bytes.length + 1), RangeError);
  assertThrows(() => rightsMessage([]), RangeError);
  assertThrows(() => rightsMessage([-1]), RangeError);
});

Deno.test("msghdr points at its iovec and control buffers", () => {
  const data = new Uint8Array([1, 2, 3]);
  const control = new Uint8Array(32);
  const { msghdr, iovec } = unsafeEncodeMsghdr({ name: null, iov: [data], control });
  assertEquals(msghdr.length, MSGHDR_SIZE);
  const dv = new DataView(msghdr.buffer);
  assertEquals(dv.getBigUint64(0, true), 0n); // msg_name
  assertEquals(
    dv.getBigUint64(16, true),
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iovec))),
  );
  assertEquals(dv.getBigUint64(24, true), 1n); // msg_iovlen
  assertEquals(dv.getBigUint64(40, true), 32n); // msg_controllen
  const iv = new DataView(iovec.buffer);
  assertEquals(
    iv.getBigUint64(0, true),
    BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data))),
  );
  assertEquals(iv.getBigUint64(8, true), 3n);
  assertEquals(decodeMsghdr(msghdr).value, { nameLength: 0, controlLength: 32, flags: 0 });
  assertThrows(() => decodeMsghdr(new Uint8Array(10)), RangeError);
});

Deno.test("pollfd, ucred and epoll_event round-trip", () => {
  const entries = [{ fd: 5, events: 1, revents: 0 }, { fd: 6, events: 4, revents: 0x10 }];
  assertEquals(pollfd.decode(pollfd.encode(entries)).value, entries);
  assertEquals(pollfd.encodedLength(entries), 16);
  const cred = { pid: 1234, uid: 1000, gid: 100 };
  assertEquals(ucred.decode(ucred.encode(cred)).value, cred);
  assertThrows(() => ucred.decode(new Uint8Array(11)), RangeError);
  const events = [{ events: 0x4000_0001, data: (7n << 32n) | 9n }];
  const bytes = epollEvent.encode(events);
  assertEquals(bytes.length, EPOLL_EVENT_SIZE);
  assertEquals(epollEvent.decode(bytes, 1).value, events);
  assertThrows(() => epollEvent.decode(bytes, 2), RangeError);
});

// Found by tests/fuzz: decode claimed 20 bytes read from the 18 the kernel reports for Ethernet.
Deno.test("sockaddr_ll decodes the 12 + halen bytes the kernel reports, and reads no more", () => {
  // sll_family=17 (host order) | sll_protocol=0x0800 (BE) | ifindex 2 | hatype 1 | PACKET_HOST |
  // halen 6 | 02:00:00:00:00:01
  const bytes = new Uint8Array(18);
  const dv = new DataView(bytes.buffer);
  dv.setUint16(0, 17, true);
  dv.setUint16(2, 0x0800, false);
  dv.setInt32(4, 2, true);
  dv.setUint16(8, 1, true);
  bytes.set([0, 6, 2, 0, 0, 0, 0, 1], 10);
  const { value, bytesRead } = sockaddrLl.decode(bytes);
  assertEquals(bytesRead, 18);
  assertEquals(value, {
    protocol: 0x0800,
    ifindex: 2,
    hatype: 1,
    pkttype: 0,
    address: new Uint8Array([2, 0, 0, 0, 0, 1]),
  });
});
