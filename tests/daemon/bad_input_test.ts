import { assert, assertEquals, assertMatch } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { freePort, rawConnect, readLines, startDaemon } from "../helpers/daemon.ts";

/** A small seeded PRNG (mulberry32) so that a failing run can be repeated. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TYPES = [
  "initiate",
  "respond",
  "peer",
  "cancel",
  "endpoint",
  "ok",
  "progress",
  "error",
  "INITIATE",
  "",
];
const FIELDS = [
  "tcp-direct",
  "udp",
  "tcp",
  "127.0.0.1",
  "::1",
  "10.0.0.256",
  "1,2",
  ",",
  "",
  "0",
  "65536",
  "0x10",
  " 1",
  "1e2",
  "a b",
  "é",
  "\u0000",
  "-",
  "x".repeat(80),
];

/** Lines that are each guaranteed to be answered with exactly one `error|...`. */
function badLines(count: number, seed: number): Uint8Array[] {
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;
  const encoder = new TextEncoder();
  const lines: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const kind = i % 4;
    if (kind === 0) {
      // Random bytes (no newline), sometimes longer than the 500-byte limit.
      const length = Math.floor(random() * 700);
      const line = new Uint8Array(length);
      for (let j = 0; j < length; j++) {
        const b = Math.floor(random() * 256);
        line[j] = b === 0x0a ? 0x0b : b;
      }
      if (length > 0) line[0] = 0x7e; // "~": never a message type
      lines.push(line);
    } else if (kind === 1) {
      // A known or near-miss type with random fields: wrong counts, bad values.
      const fields = [pick(TYPES), `id${i}`];
      const n = Math.floor(random() * 9);
      for (let j = 0; j < n; j++) fields.push(pick(FIELDS));
      // "cancel|id" and "peer|id|x" of unknown attempts are errors too; nothing here can start an attempt
      // because a valid initiate/respond needs valid addresses in fixed places, which the bad values break.
      if (fields[0] === "initiate" || fields[0] === "respond" || fields[0] === "endpoint") {
        fields.push("0x10");
      }
      lines.push(encoder.encode(fields.join("|")));
    } else if (kind === 2) {
      // Invalid UTF-8 inside an otherwise plausible message.
      lines.push(new Uint8Array([...encoder.encode(`cancel|id${i}`), 0xc3, 0x28]));
    } else {
      // Over-long line made of a valid prefix.
      lines.push(
        encoder.encode(
          `initiate|id${i}|tcp-direct|` + "1".repeat(500 + Math.floor(random() * 300)),
        ),
      );
    }
  }
  return lines;
}

Deno.test("thousands of malformed lines each get an error, and the daemon still serves and holds no extra fds", async () => {
  await using daemon = await startDaemon(["--log-level", "info"]);
  // Warm up the tcp-direct worker so its fds are in the baseline.
  const warm = await PunchdClient.connect(daemon.socketPath);
  await warm.endpoint("w", "tcp", "127.0.0.1", [freePort()]);
  const w = warm.initiate({
    id: "w",
    technique: "tcp-direct",
    srcIp: "127.0.0.1",
    srcPorts: [freePort()],
    dstIp: "127.0.0.1",
    dstPorts: [freePort()],
  });
  await w.progress[Symbol.asyncIterator]().next();
  await w.cancel();
  await w.socket.catch(() => {});
  await warm.close();
  await new Promise((r) => setTimeout(r, 200));
  const baseline = daemon.fdCount();

  const count = 3000;
  const lines = badLines(count, 20261122);
  const raw = await rawConnect(daemon.socketPath);
  // A second client that must keep being served while the first one floods.
  const bystander = await PunchdClient.connect(daemon.socketPath);
  try {
    const writing = (async () => {
      for (let i = 0; i < lines.length; i += 100) {
        const batch = lines.slice(i, i + 100);
        const size = batch.reduce((s, l) => s + l.length + 1, 0);
        const buf = new Uint8Array(size);
        let offset = 0;
        for (const l of batch) {
          buf.set(l, offset);
          buf[offset + l.length] = 0x0a;
          offset += l.length + 1;
        }
        await raw.write(buf);
      }
    })();
    const bystanderAnswer = bystander.endpoint("b1", "tcp", "127.0.0.1", [freePort()]);
    const [replies] = await Promise.all([readLines(raw, count, 60000), writing]);
    assertEquals((await bystanderAnswer).source, "local");
    assertEquals(replies.length, count);
    for (const [i, reply] of replies.entries()) {
      assertMatch(
        reply,
        /^error\|[^|]+\|[\x20-\x7b\x7d\x7e]+$/,
        `reply ${i} to a bad line was "${reply}"`,
      );
    }
    // The flooded connection is still usable for a good request.
    const port = freePort();
    await raw.write(new TextEncoder().encode(`endpoint|good|tcp|127.0.0.1|${port}\n`));
    const [good] = await readLines(raw, 1);
    assertEquals(good, `endpoint|good|127.0.0.1|${port}|local`);
  } finally {
    raw.close();
    await bystander.close();
  }
  assertEquals(
    await daemon.settledFdCount(baseline),
    baseline,
    "the daemon holds more fds than before the bad input",
  );
  assertMatch(daemon.logs(), /client connected/);
  assert(!daemon.logs().includes("Uncaught"), daemon.logs());
});
