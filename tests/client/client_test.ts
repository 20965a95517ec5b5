import { assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import { closeOnExec } from "../../ffi/syscalls.ts";
import { freePort, startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";

const NAME = "the Deno client receives the connected sockets with close-on-exec set";
Deno.test({
  name: NAME,
  ignore: skipUnless(isRoot(), NAME, "the daemon runs in its own network namespace (root)"),
}, async () => {
  // Its own namespace: no instance lock shared with another daemon on this host.
  await withVoidNamespace("cl", async (ns) => {
    await using daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    const client = await PunchdClient.connect(daemon.socketPath);
    try {
      const [pa, pb] = [freePort(), freePort()];
      const common = { technique: "tcp-direct", srcIp: "127.0.0.1", dstIp: "127.0.0.1" } as const;
      const a = client.initiate({ ...common, id: "a", srcPorts: [pa], dstPorts: [pb] });
      const offer = await a.progress[Symbol.asyncIterator]().next();
      const b = client.respond({
        ...common,
        id: "b",
        srcPorts: [pb],
        dstPorts: [pa],
        extra: offer.value ?? "",
      });
      using socketA = await a.socket;
      using socketB = await b.socket;
      assertEquals([closeOnExec(socketA.fd), closeOnExec(socketB.fd)], [true, true]);
    } finally {
      await client.close();
    }
  });
});

Deno.test("a status question's ID and an application's attempt ID never cross (replies are routed by ID)", async () => {
  await using daemon = await startDaemon();
  const client = await PunchdClient.connect(daemon.socketPath, { daemonUid: Deno.uid() ?? 0 });
  try {
    // The application's attempt takes the ID the next status question would have used.
    const attempt = client.initiate({
      id: "status-1",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.2",
      dstPorts: [freePort()],
    });
    const status = client.status();
    // And an attempt cannot take the ID of a status question in flight.
    assertThrows(
      () =>
        client.initiate({
          id: "status-2",
          technique: "tcp-direct",
          srcIp: "127.0.0.1",
          srcPorts: [freePort()],
          dstIp: "127.0.0.2",
          dstPorts: [freePort()],
        }),
      Error,
      "in use by a status or report question",
    );
    assertEquals((await status).pid, daemon.pid);
    await attempt.cancel();
    // Its own reply reaches it, not the status question's waiter.
    await assertRejects(
      () => attempt.socket,
      (e) => e instanceof PunchdError && /cancelled/.test(e.message),
    );
  } finally {
    await client.close();
  }
});
