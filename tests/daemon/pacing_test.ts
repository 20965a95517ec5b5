/**
 * `--start-rate`: attempt starts are paced, all clients together, and a
 * client that asks now and then is not queued behind one that asks for
 * many (src/control/pacer.ts).
 *
 * The starts here are `respond` requests with bad progress data: they pass
 * the pacer like any start and end at once with an error, so the test needs
 * no network.
 */

import { assert, assertEquals } from "../assert.ts";
import { rawConnect, readLines, startDaemon } from "../helpers/daemon.ts";

const encoder = new TextEncoder();

/** A start that the daemon refuses once it is admitted: tcp-nutss needs the initiator's token. */
const start = (id: string) =>
  encoder.encode(`respond|${id}|tcp-nutss|127.0.0.1|20000|127.0.0.1|30000|garbage\n`);
const REFUSAL = 'tcp-nutss expects EXTRA "nutss2:TOKEN"';

Deno.test("attempt starts are paced, and a client that asks once is served before a busy one's queue", async () => {
  // 50 starts a second, 5 at once after a pause.
  await using daemon = await startDaemon(["--start-rate", "50"]);
  const busy = await rawConnect(daemon.socketPath);
  const light = await rawConnect(daemon.socketPath);
  try {
    const count = 60;
    const lines = Array.from({ length: count }, (_, i) => start(`b${i}`));
    const all = new Uint8Array(lines.reduce((n, l) => n + l.length, 0));
    lines.reduce((at, l) => (all.set(l, at), at + l.length), 0);
    const sent = performance.now();
    await busy.write(all);
    // The busy client's replies, each with the time it arrived.
    const arrivals: number[] = [];
    const replies: string[] = [];
    const reading = (async () => {
      while (replies.length < count) {
        for (const line of await readLines(busy, 1)) {
          replies.push(line);
          arrivals.push(performance.now());
        }
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await light.write(start("l0"));
    assertEquals(await readLines(light, 1), [`error|l0|${REFUSAL}`]);
    const lightAt = performance.now();
    await reading;
    assertEquals(replies, Array.from({ length: count }, (_, i) => `error|b${i}|${REFUSAL}`));
    const last = arrivals[count - 1] ?? 0;
    assert(
      lightAt < last,
      `the light client's start waited for all ${count} of the busy client's`,
    );
    // 60 starts at 50 a second, 5 of them at once: at least 1.1 s, whatever the machine.
    assert(last - sent >= 1000, `${count} starts took ${Math.round(last - sent)} ms: not paced`);
  } finally {
    busy.close();
    light.close();
  }
});

Deno.test("other requests are not paced", async () => {
  await using daemon = await startDaemon(["--start-rate", "1"]);
  const client = await rawConnect(daemon.socketPath);
  try {
    // The one start the bucket holds goes through; the statuses after it do not wait for tokens.
    await client.write(start("s0"));
    assertEquals(await readLines(client, 1), [`error|s0|${REFUSAL}`]);
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      await client.write(encoder.encode(`status|q${i}\n`));
      const [reply] = await readLines(client, 1);
      assert(reply?.startsWith(`status|q${i}|`), reply);
    }
    // At one start a second, 20 paced requests would take 20 s.
    assert(performance.now() - started < 10_000, "status requests waited for start tokens");
  } finally {
    client.close();
  }
});
