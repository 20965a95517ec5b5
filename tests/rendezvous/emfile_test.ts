import { assert, assertEquals } from "../assert.ts";
import { LinePeer } from "./peers.ts";
import { spawnServer } from "./spawn.ts";

/** Connections to open: well past what 64 fds leave the server (about 30 for sockets). */
const FLOOD = 60;

Deno.test("out of fds, the server closes the connections it cannot take, keeps serving its peers and recovers", async () => {
  const server = await spawnServer(
    ["--max-connections-per-ip", "1000", "--register-timeout", "60"],
    [
      "prlimit",
      "--nofile=64:64",
    ],
  );
  const flood: LinePeer[] = [];
  const peer = await LinePeer.connect(server.address);
  try {
    assertEquals(await peer.ask("register|survivor"), ["ok|register|survivor"]);
    for (let i = 0; i < FLOOD; i++) flood.push(await LinePeer.connect(server.address));
    // Every connection is either served or closed at once: none is left hanging in the backlog.
    const outcomes = await Promise.all(flood.map(async (f) => {
      await f.send("ping").catch(() => {});
      return await f.readToEnd(1000).catch(() => "still open");
    }));
    const shed = outcomes.filter((o) => o === "").length;
    const served = outcomes.filter((o) => o === "still open").length;
    assert(shed > 0, "some connections were shed");
    assertEquals(served + shed, FLOOD);
    // Out of fds, the server neither spins nor stops answering its peers.
    const before = server.cpuTicks();
    await new Promise((r) => setTimeout(r, 1000));
    assert(server.cpuTicks() - before < 30, "the server spins while out of fds");
    assertEquals(await peer.ask("ping", 1, 2000), ["pong"]);
    // One warning for the whole episode, not one per attempt.
    assertEquals(server.logs().split("out of file descriptors").length - 1, 1);
    // fds come back: new connections are served again.
    for (const f of flood.splice(0)) f.close();
    await new Promise((r) => setTimeout(r, 1200));
    const late = await LinePeer.connect(server.address);
    try {
      assertEquals(await late.ask("ping", 1, 3000), ["pong"]);
    } finally {
      late.close();
    }
    assertEquals(await server.stop("SIGTERM", 3000), 0);
  } finally {
    peer.close();
    for (const f of flood) f.close();
    await server.stop("SIGKILL");
  }
});
