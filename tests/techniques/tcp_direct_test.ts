import { assert, assertEquals, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { Logger } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import {
  decodeDirectInfo,
  encodeDirectInfo,
  MAX_PENDING,
  TcpDirect,
} from "../../src/techniques/tcp_direct.ts";
import type { AttemptContext } from "../../src/techniques/technique.ts";

const base: AttemptSpec = {
  technique: "tcp-direct",
  role: "initiate",
  id: "x",
  client: 1,
  srcIp: "10.0.1.2",
  srcPorts: [1],
  dstIp: "10.0.2.2",
  dstPorts: [2],
  timeoutMs: 1000,
};

const TOKEN = "00112233445566778899aabbccddeeff";

Deno.test("tcp-direct takes no TTL or the priming TTL 1-255 (none: hop discovery)", () => {
  const direct = new TcpDirect();
  direct.validate(base);
  direct.validate({ ...base, lowTtl: 1 });
  direct.validate({ ...base, lowTtl: 255 });
  for (const lowTtl of [0, 256, 2.5]) {
    assertThrows(() => direct.validate({ ...base, lowTtl }), {
      name: "RangeError",
      message: "tcp-direct low TTL must be 1-255",
    });
  }
});

Deno.test("a tcp-direct responder needs the initiator's direct2:TOKEN", () => {
  const direct = new TcpDirect();
  assertEquals(encodeDirectInfo(TOKEN), `direct2:${TOKEN}`);
  assertEquals(decodeDirectInfo(`direct2:${TOKEN}`), TOKEN);
  direct.validate({ ...base, role: "respond", extra: `direct2:${TOKEN}` });
  for (const extra of [undefined, "", "direct1", "direct2", "direct2:", `direct2:${TOKEN}0`]) {
    assertThrows(
      () =>
        direct.validate({ ...base, role: "respond", ...(extra !== undefined ? { extra } : {}) }),
      {
        name: "SyntaxError",
        message: "tcp-direct expects EXTRA direct2:TOKEN (the peer's punchd may be older)",
      },
      String(extra),
    );
  }
});

/** A context whose progress lands in `sent` (and wakes `onProgress`). */
function context(signal: AbortSignal, onProgress: (data: string) => void): AttemptContext {
  return {
    signal,
    progress: onProgress,
    nextPeerData: () => new Promise<string>(() => {}),
    log: new Logger("error"),
    noteError: () => {},
    firewall: {
      add: () => Promise.reject(new Error("no firewall")),
      remove: () => Promise.resolve(),
    },
  };
}

/** A TCP port on 127.0.0.1 nothing listens on right now. */
function freePort(): number {
  using socket = Socket.create("inet", "stream");
  socket.bind(inetAddress("127.0.0.1", 0));
  const address = socket.localAddress();
  return address.family === "unix" ? 0 : address.port;
}

async function readExactly(socket: Socket, length: number, signal: AbortSignal): Promise<string> {
  const out = new Uint8Array(length);
  for (let have = 0; have < length;) {
    const part = new Uint8Array(length - have);
    const n = await socket.read(part, signal);
    assert(n > 0, "end of stream");
    out.set(part.subarray(0, n), have);
    have += n;
  }
  return new TextDecoder().decode(out);
}

/** Reads until the end of the stream; resolves with the bytes that came before it. */
async function readToEnd(socket: Socket, signal: AbortSignal): Promise<number> {
  let total = 0;
  const buf = new Uint8Array(64);
  for (let n = await socket.read(buf, signal); n > 0; n = await socket.read(buf, signal)) {
    total += n;
  }
  return total;
}

for (const victim of ["initiate", "respond"] as const) {
  Deno.test(`a tcp-direct ${victim === "initiate" ? "initiator" : "responder"} hands over no connection from the peer's address without the token; the peer still wins`, async () => {
    const signal = AbortSignal.timeout(10_000);
    const portA = freePort();
    const portB = freePort();
    const spec = (role: "initiate" | "respond", extra?: string): AttemptSpec => ({
      technique: "tcp-direct",
      role,
      id: role,
      client: 1,
      srcIp: "127.0.0.1",
      srcPorts: [role === "initiate" ? portA : portB],
      dstIp: "127.0.0.1",
      dstPorts: [role === "initiate" ? portB : portA],
      timeoutMs: 10_000,
      ...(extra !== undefined ? { extra } : {}),
    });
    const { promise: progressed, resolve: progress } = Promise.withResolvers<string>();
    const technique = new TcpDirect({ retryMs: 50, confirmMs: 8000 });
    const impostors: Socket[] = [];
    let a: Socket | undefined;
    let b: Socket | undefined;
    try {
      const initiator = technique.run(spec("initiate"), context(signal, progress));
      const extra = await progressed;
      // Connections from 127.0.0.1 at other ports: one writes 16 bytes of garbage, one is silent.
      const target = inetAddress("127.0.0.1", victim === "initiate" ? portA : portB);
      let responder: Promise<Socket>;
      if (victim === "initiate") {
        for (let i = 0; i < 2; i++) impostors.push(Socket.create("inet", "stream"));
        await Promise.all(impostors.map((s) => s.connect(target, signal)));
        await impostors[0]!.write(new Uint8Array(16).fill(0x41), signal);
        // Both sit in the initiator's confirmation before the responder runs.
        await new Promise((r) => setTimeout(r, 200));
        responder = technique.run(spec("respond", extra), context(signal, () => {}));
      } else {
        responder = technique.run(spec("respond", extra), context(signal, () => {}));
        for (let i = 0; i < 2; i++) impostors.push(Socket.create("inet", "stream"));
        // The responder's listener is up once run() got past bind; connect until it answers.
        for (const s of impostors) {
          for (let tries = 0;; tries++) {
            try {
              await s.connect(target, signal);
              break;
            } catch (error) {
              if (tries > 100) throw error;
              await new Promise((r) => setTimeout(r, 5));
            }
          }
        }
        await impostors[0]!.write(new Uint8Array(16).fill(0x41), signal);
      }
      [a, b] = await Promise.all([initiator, responder]);
      assertEquals(a.peerAddress(), inetAddress("127.0.0.1", portB));
      assertEquals(b.peerAddress(), inetAddress("127.0.0.1", portA));
      await a.write(new TextEncoder().encode("ping"), signal);
      assertEquals(await readExactly(b, 4, signal), "ping");
      await b.write(new TextEncoder().encode("pong"), signal);
      assertEquals(await readExactly(a, 4, signal), "pong");
      // The impostors were closed: at most the victim's first 16-byte message, then the end.
      for (const s of impostors) assert((await readToEnd(s, signal)) <= 16);
    } finally {
      a?.close();
      b?.close();
      for (const s of impostors) s.close();
    }
  });
}

Deno.test("silent connections from the peer's address beyond the limit do not hold off the peer", async () => {
  const signal = AbortSignal.timeout(15_000);
  const [portA, portB, unpublished] = [freePort(), freePort(), freePort()];
  // The initiator connects to B from portA, a port B was not told (like a random-mapping NAT's).
  const initiatorSpec: AttemptSpec = {
    technique: "tcp-direct",
    role: "initiate",
    id: "a",
    client: 1,
    srcIp: "127.0.0.1",
    srcPorts: [portA],
    dstIp: "127.0.0.1",
    dstPorts: [portB],
    timeoutMs: 15_000,
  };
  const { promise: progressed, resolve: progress } = Promise.withResolvers<string>();
  // Its first connect is refused (B is not up yet), the next one comes 2.5 s later.
  const initiatorSide = new TcpDirect({ retryMs: 2500, confirmMs: 8000 });
  // B's own connects go nowhere and are not retried within the test.
  const responderSide = new TcpDirect({ retryMs: 60_000, confirmMs: 8000 });
  const silent: Socket[] = [];
  let a: Socket | undefined;
  let b: Socket | undefined;
  try {
    const started = performance.now();
    const initiator = initiatorSide.run(initiatorSpec, context(signal, progress));
    const responder = responderSide.run({
      ...initiatorSpec,
      role: "respond",
      id: "b",
      srcPorts: [portB],
      dstPorts: [unpublished],
      extra: await progressed,
    }, context(signal, () => {}));
    // Twice MAX_PENDING silent connections from 127.0.0.1 fill B's confirmations first.
    const target = inetAddress("127.0.0.1", portB);
    for (let i = 0; i < 2 * MAX_PENDING; i++) {
      const s = Socket.create("inet", "stream");
      silent.push(s);
      for (let tries = 0;; tries++) {
        try {
          await s.connect(target, signal);
          break;
        } catch (error) {
          if (tries > 100) throw error;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    }
    assert(performance.now() - started < 2000, "the silent connections came too late");
    // The newer ones pushed the oldest out at once: at most MAX_PENDING are held.
    const soon = AbortSignal.any([signal, AbortSignal.timeout(1000)]);
    for (const s of silent.slice(0, MAX_PENDING)) assertEquals(await readToEnd(s, soon), 0);
    [a, b] = await Promise.all([initiator, responder]);
    const ms = performance.now() - started;
    // Had they held B's slots, the peer would wait for their 8 s confirmation deadline.
    assert(ms < 6000, `the peer won after ${Math.round(ms)} ms`);
    assertEquals(b.peerAddress(), inetAddress("127.0.0.1", portA));
    await a.write(new TextEncoder().encode("ping"), signal);
    assertEquals(await readExactly(b, 4, signal), "ping");
    for (const s of silent) assertEquals(await readToEnd(s, signal), 0);
  } finally {
    a?.close();
    b?.close();
    for (const s of silent) s.close();
  }
});
