import { assert, assertEquals, assertRejects } from "../assert.ts";
import { AF_UNIX, SOCK_STREAM } from "../../ffi/constants.ts";
import { FdClosedError, reactor } from "../../ffi/reactor.ts";
import { Socket } from "../../ffi/socket.ts";
import * as sys from "../../ffi/syscalls.ts";
import { note } from "../helpers/skip.ts";

function pair(): [Socket, Socket] {
  const [a, b] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  return [new Socket(a), new Socket(b)];
}

const one = new Uint8Array([1]);

/** The soft RLIMIT_NOFILE of this process. */
function fdLimit(): number {
  const limits = Deno.readTextFileSync(`/proc/${Deno.pid}/limits`);
  const match = limits.match(/^Max open files\s+(\d+|unlimited)/m);
  return match?.[1] === undefined || match[1] === "unlimited" ? Infinity : Number(match[1]);
}

Deno.test("one reactor waits on two thousand sockets at once and wakes each exactly when ready", async () => {
  const count = Math.min(2000, Math.floor((fdLimit() - 200) / 2));
  if (count < 2000) note(`NOTE: the fd limit allows only ${count} socket pairs in this run`);
  const pairs = Array.from({ length: count }, pair);
  try {
    const reads = pairs.map(([, b]) => b.read(new Uint8Array(1)));
    await new Promise((r) => setTimeout(r, 50));
    assertEquals(reactor().waitingFds, count);
    // While all of them wait, an unrelated socket still gets served: waiting
    // does not hold one runtime thread per socket.
    const [x, y] = pair();
    for (let i = 0; i < 50; i++) {
      await x.write(one);
      assertEquals(await y.read(new Uint8Array(1)), 1);
    }
    x.close();
    y.close();
    // Wake them in reverse order; each read resolves with its byte.
    for (const [a] of [...pairs].reverse()) await a.write(one);
    assertEquals(await Promise.all(reads), pairs.map(() => 1));
    assertEquals(reactor().waitingFds, 0);
  } finally {
    for (const [a, b] of pairs) {
      a.close();
      b.close();
    }
  }
});

Deno.test("a reader and a writer can wait on the same socket", async () => {
  const [a, b] = pair();
  try {
    // Fill a's send buffer so a writer must wait, while a reader waits too.
    const big = new Uint8Array(1 << 20);
    const writing = a.write(big);
    const reading = a.read(new Uint8Array(1));
    let drained = 0;
    const buf = new Uint8Array(65536);
    while (drained < big.length) drained += await b.read(buf);
    await writing;
    await b.write(one);
    assertEquals(await reading, 1);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("an aborted wait rejects with the signal's reason and leaves the fd usable", async () => {
  const [a, b] = pair();
  try {
    const controller = new AbortController();
    const reading = a.read(new Uint8Array(1), controller.signal);
    controller.abort(new Error("gave up"));
    await assertRejects(() => reading, { message: "gave up" });
    assertEquals(reactor().waitingFds, 0);
    await b.write(one);
    assertEquals(await a.read(new Uint8Array(1)), 1);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("closing a socket rejects its pending waits with FdClosedError", async () => {
  const [a, b] = pair();
  const reading = a.read(new Uint8Array(1));
  a.close();
  const error = await reading.then(() => null, (e) => e);
  assert(error instanceof FdClosedError, String(error));
  b.close();
});

Deno.test("a slow peer does not stall the others", async () => {
  const [slowA, slowB] = pair();
  const pairs = Array.from({ length: 20 }, pair);
  try {
    const stalled = slowB.read(new Uint8Array(1));
    const served = pairs.map(async ([a, b]) => {
      await a.write(one);
      return await b.read(new Uint8Array(1));
    });
    assertEquals(await Promise.all(served), pairs.map(() => 1));
    await slowA.write(one);
    assertEquals(await stalled, 1);
  } finally {
    slowA.close();
    slowB.close();
    for (const [a, b] of pairs) {
      a.close();
      b.close();
    }
  }
});
