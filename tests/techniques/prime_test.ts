import { assertEquals, assertThrows } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { Logger } from "../../src/log.ts";
import type { AttemptSpec } from "../../src/techniques/protocol.ts";
import { TcpPrime } from "../../src/techniques/tcp_prime.ts";
import type { AttemptContext } from "../../src/techniques/technique.ts";
import {
  decodeUdpPrimeOffer,
  encodeUdpPrimeOffer,
  primeMessage,
  UdpPrime,
} from "../../src/techniques/udp_prime.ts";

const NONCE = "0123456789abcdef";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function spec(over: Partial<AttemptSpec>): AttemptSpec {
  return {
    technique: "udp-prime",
    role: "respond",
    id: "x",
    client: 1,
    srcIp: "127.0.0.1",
    srcPorts: [1],
    dstIp: "127.0.0.1",
    dstPorts: [2],
    timeoutMs: 5000,
    ...over,
  };
}

/** Peer data for a context: `push` delivers it to the attempt, now or when it asks. */
class PeerData {
  #queued: string[] = [];
  #waiting: ((data: string) => void)[] = [];

  push(data: string): void {
    const waiter = this.#waiting.shift();
    if (waiter !== undefined) waiter(data);
    else this.#queued.push(data);
  }

  next(signal: AbortSignal): Promise<string> {
    const queued = this.#queued.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.#waiting.push(resolve);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }
}

/** A context whose peer data comes from `peerData`; progress lands in `sent`. */
function context(signal: AbortSignal, peerData = new PeerData(), sent: string[] = []) {
  const attempt: AttemptContext = {
    signal,
    progress: (data) => sent.push(data),
    nextPeerData: () => peerData.next(signal),
    log: new Logger("error"),
    noteError: () => {},
    firewall: { add: () => Promise.resolve(1), remove: () => Promise.resolve() },
  };
  return attempt;
}

/** A datagram socket on 127.0.0.1, any port. */
function udpSocket(): Socket {
  const socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  return socket;
}

/** Waits (2 s at most) until `list` has an entry. */
async function filled(list: string[]): Promise<void> {
  for (let i = 0; i < 200 && list.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
}

function portOf(socket: Socket): number {
  const address = socket.localAddress();
  return address.family === "unix" ? 0 : address.port;
}

Deno.test("udp-prime's EXTRA: prime1 for a plain peer, prime1:NONCE for punchd", () => {
  assertEquals(decodeUdpPrimeOffer("prime1"), null);
  assertEquals(decodeUdpPrimeOffer(encodeUdpPrimeOffer(NONCE)), NONCE);
  for (
    const bad of ["", "prime2", "prime1:", `prime1:${NONCE.toUpperCase()}`, `prime1:${NONCE}0`]
  ) {
    assertThrows(
      () => decodeUdpPrimeOffer(bad),
      SyntaxError,
      'udp-prime expects EXTRA "prime1" or "prime1:NONCE"',
    );
  }
});

Deno.test("tcp-prime and udp-prime validate ports, TTL and EXTRA before anything starts", () => {
  const tcp = new TcpPrime();
  const udp = new UdpPrime();
  tcp.validate(spec({ technique: "tcp-prime", extra: "prime1", dstPorts: [2, 3] }));
  tcp.validate(spec({ technique: "tcp-prime", role: "initiate" }));
  assertThrows(
    () => tcp.validate(spec({ technique: "tcp-prime", extra: `prime1:${NONCE}` })),
    SyntaxError,
    'tcp-prime expects EXTRA "prime1"',
  );
  udp.validate(spec({ extra: `prime1:${NONCE}` }));
  for (const technique of [tcp, udp]) {
    assertThrows(
      () => technique.validate(spec({ extra: "prime1", srcPorts: [1, 2] })),
      RangeError,
      "exactly one source port",
    );
    assertThrows(
      () => technique.validate(spec({ extra: "prime1", lowTtl: 256 })),
      RangeError,
      "low TTL must be 1-255",
    );
  }
});

Deno.test("a udp-prime responder hands over only the peer's port, with its first datagram still queued", async () => {
  const peer = udpSocket();
  const stranger = udpSocket();
  const local = udpSocket();
  const localPort = portOf(local);
  local.close();
  const controller = new AbortController();
  const sent: string[] = [];
  const running = new UdpPrime().run(
    spec({ srcPorts: [localPort], dstPorts: [portOf(peer)], extra: "prime1" }),
    context(controller.signal, new PeerData(), sent),
  );
  let handed: Socket | undefined;
  running.then((s) => handed = s, () => {});
  try {
    await filled(sent);
    assertEquals(sent, ["primed1"]);
    const to = inetAddress("127.0.0.1", localPort);
    // On loopback the priming datagram reaches the peer: it is the documented one.
    const buf = new Uint8Array(64);
    const primed = await peer.receiveFrom(buf, AbortSignal.timeout(2000));
    assertEquals(decoder.decode(buf.subarray(0, primed.length)), "punchd-prime1-p");
    await stranger.sendTo(encoder.encode("from a stranger"), to);
    await new Promise((r) => setTimeout(r, 200));
    assertEquals(handed, undefined);
    await peer.sendTo(encoder.encode("first"), to);
    await peer.sendTo(encoder.encode("second"), to);
    const socket = await running;
    try {
      assertEquals(socket.peerAddress(), inetAddress("127.0.0.1", portOf(peer)));
      const n = await socket.read(buf, AbortSignal.timeout(2000));
      assertEquals(decoder.decode(buf.subarray(0, n)), "first");
      const m = await socket.read(buf, AbortSignal.timeout(2000));
      assertEquals(decoder.decode(buf.subarray(0, m)), "second");
    } finally {
      socket.close();
    }
  } finally {
    controller.abort();
    await running.then((s) => s.close(), () => {});
    peer.close();
    stranger.close();
  }
});

Deno.test("two udp-prime punchds exchange hello, ack and done, and neither application sees them", async () => {
  const ports = [udpSocket(), udpSocket()].map((s) => {
    const p = portOf(s);
    s.close();
    return p;
  });
  const [portA, portB] = [ports[0] ?? 0, ports[1] ?? 0];
  const controller = new AbortController();
  const fromA: string[] = [];
  const toA = new PeerData();
  const initiator = new UdpPrime().run(
    spec({ role: "initiate", srcPorts: [portA], dstPorts: [portB] }),
    context(controller.signal, toA, fromA),
  );
  await filled(fromA);
  const offer = fromA[0] ?? "";
  const fromB: string[] = [];
  const responder = new UdpPrime().run(
    spec({ srcPorts: [portB], dstPorts: [portA], extra: offer }),
    context(controller.signal, new PeerData(), fromB),
  );
  try {
    await filled(fromB);
    assertEquals(fromB, ["primed1"]);
    toA.push("primed1");
    const [a, b] = await Promise.all([initiator, responder]);
    try {
      await a.write(encoder.encode("app data a"));
      await b.write(encoder.encode("app data b"));
      const buf = new Uint8Array(64);
      const n = await b.read(buf, AbortSignal.timeout(2000));
      assertEquals(decoder.decode(buf.subarray(0, n)), "app data a");
      const m = await a.read(buf, AbortSignal.timeout(2000));
      assertEquals(decoder.decode(buf.subarray(0, m)), "app data b");
    } finally {
      a.close();
      b.close();
    }
  } finally {
    controller.abort();
    await initiator.then((s) => s.close(), () => {});
    await responder.then((s) => s.close(), () => {});
  }
  assertEquals(primeMessage("d", NONCE).length, 31);
});

/**
 * A relay on loopback between A and B (A's DST port is `forA`'s, B's is
 * `forB`'s): what A sends reaches B at once, what B sends reaches A
 * `delayMs` late.
 */
class SlowRelay {
  readonly forA = udpSocket();
  readonly forB = udpSocket();
  readonly #stop = new AbortController();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #loops: Promise<void>[];

  constructor(portA: number, portB: number, delayMs: number) {
    const a = inetAddress("127.0.0.1", portA);
    const b = inetAddress("127.0.0.1", portB);
    const pump = async (from: Socket, to: Socket, address: typeof a, ms: number) => {
      const buf = new Uint8Array(2048);
      try {
        for (;;) {
          const { length } = await from.receiveFrom(buf, this.#stop.signal);
          const data = buf.slice(0, length);
          if (ms === 0) {
            await to.sendTo(data, address);
            continue;
          }
          const timer = setTimeout(() => {
            this.#timers.delete(timer);
            to.sendTo(data, address).catch(() => {});
          }, ms);
          this.#timers.add(timer);
        }
      } catch {
        // Stopped.
      }
    };
    this.#loops = [
      pump(this.forA, this.forB, b, 0),
      pump(this.forB, this.forA, a, delayMs),
    ];
  }

  async close(): Promise<void> {
    this.#stop.abort();
    for (const timer of this.#timers) clearTimeout(timer);
    await Promise.all(this.#loops);
    this.forA.close();
    this.forB.close();
  }
}

Deno.test("udp-prime's exchange leaves no hello, ack or done to either application when one direction is 800 ms slow", async () => {
  const ports = [udpSocket(), udpSocket()].map((s) => {
    const p = portOf(s);
    s.close();
    return p;
  });
  const [portA, portB] = [ports[0] ?? 0, ports[1] ?? 0];
  const relay = new SlowRelay(portA, portB, 800);
  const controller = new AbortController();
  const fromA: string[] = [];
  const toA = new PeerData();
  const fromB: string[] = [];
  const initiator = new UdpPrime().run(
    spec({ role: "initiate", srcPorts: [portA], dstPorts: [portOf(relay.forA)] }),
    context(controller.signal, toA, fromA),
  );
  let responder: Promise<Socket> | undefined;
  try {
    await filled(fromA);
    responder = new UdpPrime().run(
      spec({ srcPorts: [portB], dstPorts: [portOf(relay.forB)], extra: fromA[0] ?? "" }),
      context(controller.signal, new PeerData(), fromB),
    );
    await filled(fromB);
    toA.push(fromB[0] ?? "");
    const [a, b] = await Promise.all([initiator, responder]);
    try {
      await a.write(encoder.encode("app data a"));
      await b.write(encoder.encode("app data b"));
      const buf = new Uint8Array(64);
      const n = await b.read(buf, AbortSignal.timeout(3000));
      assertEquals(decoder.decode(buf.subarray(0, n)), "app data a");
      const m = await a.read(buf, AbortSignal.timeout(3000));
      assertEquals(decoder.decode(buf.subarray(0, m)), "app data b");
    } finally {
      a.close();
      b.close();
    }
  } finally {
    controller.abort();
    await initiator.then((s) => s.close(), () => {});
    await responder?.then((s) => s.close(), () => {});
    await relay.close();
  }
});
