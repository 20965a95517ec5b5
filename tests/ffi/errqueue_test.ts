import { assertEquals, assertThrows } from "../assert.ts";
import {
  decodeExtendedError,
  enableErrorQueue,
  nextQueuedError,
  readErrorQueue,
} from "../../ffi/errqueue.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";

// struct sock_extended_err of a time-exceeded from router 10.0.1.1, then its sockaddr_in.
const TIME_EXCEEDED = Uint8Array.from([
  ...[0x71, 0x00, 0x00, 0x00], // ee_errno 113 (EHOSTUNREACH), little endian
  0x02, // ee_origin SO_EE_ORIGIN_ICMP
  0x0b, // ee_type 11: time exceeded
  0x00, // ee_code 0: TTL exceeded in transit
  0x00, // ee_pad
  ...[0x00, 0x00, 0x00, 0x00], // ee_info
  ...[0x00, 0x00, 0x00, 0x00], // ee_data
  ...[0x02, 0x00], // sin_family AF_INET
  ...[0x00, 0x00], // sin_port
  ...[10, 0, 1, 1], // sin_addr: the offender
  ...new Array(8).fill(0), // sin_zero
]);

Deno.test("a time-exceeded's extended error decodes with its offender", () => {
  assertEquals(decodeExtendedError(TIME_EXCEEDED), {
    errno: 113,
    origin: "icmp",
    type: 11,
    code: 0,
    info: 0,
    offender: "10.0.1.1",
  });
});

Deno.test("an extended error without an offender (AF_UNSPEC) has offender null", () => {
  const local = TIME_EXCEEDED.slice();
  local[4] = 1; // SO_EE_ORIGIN_LOCAL
  local[16] = 0; // AF_UNSPEC
  assertEquals(decodeExtendedError(local).offender, null);
  assertEquals(decodeExtendedError(local).origin, "local");
});

Deno.test("a short extended error is a RangeError", () => {
  assertThrows(() => decodeExtendedError(TIME_EXCEEDED.subarray(0, 15)), {
    name: "RangeError",
    message: /15 bytes, need 16/,
  });
});

/** A loopback port with nothing bound to it (bound once, then released). */
function closedPort(): number {
  const s = Socket.create("inet", "datagram");
  try {
    s.bind(inetAddress("127.0.0.1", 0));
    const address = s.localAddress();
    return address.family === "unix" ? 0 : address.port;
  } finally {
    s.close();
  }
}

Deno.test("a datagram to a closed loopback port queues a port unreachable naming its sender", async () => {
  using socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  enableErrorQueue(socket);
  assertEquals(readErrorQueue(socket), null);
  const port = closedPort();
  await socket.sendTo(new TextEncoder().encode("probe"), inetAddress("127.0.0.1", port));
  const queued = await nextQueuedError(socket, AbortSignal.timeout(5000));
  assertEquals(queued.origin, "icmp");
  assertEquals([queued.type, queued.code], [3, 3]);
  assertEquals(queued.errno, 111); // ECONNREFUSED
  assertEquals(queued.offender, "127.0.0.1");
  assertEquals(queued.destination, { family: "inet", address: "127.0.0.1", port });
  assertEquals(new TextDecoder().decode(queued.payload), "probe");
  assertEquals(readErrorQueue(socket), null);
});

Deno.test("waiting for a queued error honours the signal", async () => {
  using socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  enableErrorQueue(socket);
  const controller = new AbortController();
  const waiting = nextQueuedError(socket, controller.signal);
  controller.abort(new Error("stop"));
  await waiting.then(
    () => {
      throw new Error("resolved");
    },
    (error) => assertEquals((error as Error).message, "stop"),
  );
});

Deno.test("IPv6: a datagram to a closed ::1 port queues an ICMPv6 port unreachable naming its sender", async () => {
  const probe = Socket.create("inet6", "datagram");
  let port: number;
  try {
    probe.bind(inetAddress("::1", 0));
    const address = probe.localAddress();
    port = address.family === "unix" ? 0 : address.port;
  } finally {
    probe.close();
  }
  using socket = Socket.create("inet6", "datagram");
  socket.bind(inetAddress("::1", 0));
  enableErrorQueue(socket);
  await socket.sendTo(new TextEncoder().encode("probe6"), inetAddress("::1", port));
  const queued = await nextQueuedError(socket, AbortSignal.timeout(5000));
  assertEquals([queued.origin, queued.type, queued.code], ["icmp6", 1, 4]);
  assertEquals(queued.offender, "::1");
  assertEquals(queued.destination, { family: "inet6", address: "::1", port });
});
