import { assertEquals, assertRejects } from "../assert.ts";
import { RendezvousClient } from "../../src/rendezvous/client.ts";
import { withServer } from "./peers.ts";

// Found by the example peer test: the peer's last relayed message arrived as its attempt ended,
// and the next wait for a notification got a signal that was aborted already; an abort listener
// added then never runs, so the peer never printed "connected" (1 run in 10-25).
Deno.test("nextNotification with a signal aborted already rejects at once instead of waiting forever", async () => {
  await withServer({}, async (server) => {
    const client = await RendezvousClient.connect(server.address);
    try {
      await client.register("bob");
      const done = new AbortController();
      done.abort(new Error("attempt over"));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        client.nextNotification(done.signal).then(() => "resolved", (e: Error) => e.message),
        new Promise<string>((r) => timer = setTimeout(() => r("still waiting after 2 s"), 2000)),
      ]);
      clearTimeout(timer);
      assertEquals(outcome, "attempt over");
    } finally {
      await client.close();
    }
  });
});

Deno.test("nextNotification rejects when its signal aborts while it waits", async () => {
  await withServer({}, async (server) => {
    const client = await RendezvousClient.connect(server.address);
    try {
      await client.register("bob");
      const waiting = client.nextNotification(AbortSignal.timeout(50));
      await assertRejects(() => waiting);
    } finally {
      await client.close();
    }
  });
});
