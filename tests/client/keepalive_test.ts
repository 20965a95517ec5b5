import { assert, assertEquals, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { SyscallError } from "../../ffi/errno.ts";
import { keepUdpAlive, UDP_KEEPALIVE_DATAGRAM } from "../../src/client/keepalive.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two UDP sockets on loopback, connected to each other. */
function udpPair(): [Socket, Socket] {
  const a = Socket.create("inet", "datagram");
  const b = Socket.create("inet", "datagram");
  a.bind({ family: "inet", address: "127.0.0.1", port: 0 });
  b.bind({ family: "inet", address: "127.0.0.1", port: 0 });
  void a.connect(b.localAddress());
  void b.connect(a.localAddress());
  return [a, b];
}

/** Reads every datagram waiting on `socket` within `ms`; returns their lengths. */
async function drain(socket: Socket, ms: number): Promise<number[]> {
  const signal = AbortSignal.timeout(ms);
  const lengths: number[] = [];
  const buf = new Uint8Array(2048);
  for (;;) {
    try {
      lengths.push(await socket.read(buf, signal));
    } catch {
      return lengths;
    }
  }
}

Deno.test("the keepalive datagram is empty", () => {
  assertEquals(UDP_KEEPALIVE_DATAGRAM.byteLength, 0);
});

Deno.test("keepUdpAlive sends an empty datagram every interval, which the peer reads as 0 bytes", async () => {
  const [a, b] = udpPair();
  try {
    using keepalive = keepUdpAlive(a, 100);
    const lengths = await drain(b, 1000);
    assert(lengths.length >= 3 && lengths.length <= 11, `${lengths.length} datagrams in 1 s`);
    assert(lengths.every((n) => n === 0), `lengths ${lengths}`);
    assert(keepalive.sent >= lengths.length, `${keepalive.sent} sent, ${lengths.length} read`);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("keepUdpAlive sends nothing once stopped, and stop is idempotent", async () => {
  const [a, b] = udpPair();
  try {
    const keepalive = keepUdpAlive(a, 50);
    await sleep(200);
    keepalive.stop();
    assertEquals(keepalive.active, false);
    await drain(b, 100);
    const sent = keepalive.sent;
    assertEquals(await drain(b, 300), []);
    keepalive[Symbol.dispose]();
    assertEquals(keepalive.sent, sent);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("keepUdpAlive stops by itself when the socket is closed", async () => {
  const [a, b] = udpPair();
  try {
    const keepalive = keepUdpAlive(a, 50);
    assertEquals(keepalive.active, true);
    a.close();
    await sleep(200);
    assertEquals(keepalive.sent, 0);
    assertEquals(keepalive.active, false);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("keepUdpAlive reports a refused send and keeps sending", async () => {
  const [a, b] = udpPair();
  b.close(); // Loopback answers a's datagrams with ICMP port unreachable: ECONNREFUSED.
  const errors: Error[] = [];
  const keepalive = keepUdpAlive(a, 50, { onError: (e) => errors.push(e) });
  try {
    await sleep(500);
    assert(errors.length >= 1, "no error reported");
    assert(errors[0] instanceof SyscallError);
    assertEquals(errors[0].message, "Cannot send: ECONNREFUSED (111)");
    assert(keepalive.sent >= 2, `only ${keepalive.sent} sent`);
  } finally {
    keepalive.stop();
    a.close();
  }
});

Deno.test("keepUdpAlive refuses bad intervals, stream sockets and unconnected sockets", () => {
  const [a, b] = udpPair();
  const unconnected = Socket.create("inet", "datagram");
  const stream = Socket.create("inet", "stream");
  try {
    for (const ms of [0, -1, 1.5, Number.NaN, 2 ** 31]) {
      assertThrows(
        () => keepUdpAlive(a, ms),
        RangeError,
        `Cannot keep a UDP path alive: interval must be 1 to 2147483647 ms, got ${ms}`,
      );
    }
    assertThrows(
      () => keepUdpAlive(stream),
      TypeError,
      "Cannot keep a UDP path alive: the socket is not a datagram socket",
    );
    assertThrows(
      () => keepUdpAlive(unconnected),
      TypeError,
      "Cannot keep a UDP path alive: the socket is not connected",
    );
  } finally {
    a.close();
    b.close();
    unconnected.close();
    stream.close();
  }
});
