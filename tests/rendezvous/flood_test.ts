import { assert, assertEquals, assertMatch } from "../assert.ts";
import { SO_RCVBUF, SOL_SOCKET } from "../../ffi/constants.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { Logger } from "../../src/log.ts";
import { RendezvousServer } from "../../src/rendezvous/server.ts";
import { LinePeer, UdpPeer } from "./peers.ts";
import { observeTcp } from "../../src/discovery/endpoint.ts";
import { freePort, spawnServer } from "./spawn.ts";

const quiet = new Logger("error", () => {});
const PINGS = new TextEncoder().encode("ping\n".repeat(80_000)); // 400 KB

/** Writes the 400 KB of pings in the background, for at most `ms`; never reads. */
function pipeline(attacker: Socket, ms: number): Promise<void> {
  return attacker.write(PINGS, AbortSignal.timeout(ms)).catch(() => {});
}

Deno.test("400 KB of pipelined pings that are never read starve nobody, and SIGTERM still stops the server", async () => {
  const probePort = freePort();
  const server = await spawnServer(["--probe-port", String(probePort)]);
  const attacker = Socket.create("inet", "stream");
  try {
    await attacker.connect(server.address, AbortSignal.timeout(5000));
    const flood = pipeline(attacker, 8000);
    await new Promise((r) => setTimeout(r, 300));
    // TCP: a fresh peer registers and pings.
    const other = await LinePeer.connect(server.address);
    try {
      assertEquals(await other.ask("register|bystander", 1, 2000), ["ok|register|bystander"]);
      assertEquals(await other.ask("ping", 1, 2000), ["pong"]);
    } finally {
      other.close();
    }
    // UDP on the main port, and the TCP probe port.
    const udp = new UdpPeer();
    try {
      assertMatch(await udp.ask(server.address, "observe", 2000), /^observed\|127\.0\.0\.1\|/);
    } finally {
      udp.close();
    }
    const probe = inetAddress("127.0.0.1", probePort);
    const mapping = await observeTcp(inetAddress("127.0.0.1", 0), probe, AbortSignal.timeout(2000));
    assertEquals(mapping.port, mapping.localPort);
    const started = Date.now();
    assertEquals(await server.stop("SIGTERM", 3000), 0);
    assert(Date.now() - started < 3000);
    await flood;
  } finally {
    attacker.close();
    await server.stop("SIGKILL");
  }
});

Deno.test("a peer that pipelines without reading is paused, not dropped, until it is stuck past the timeout", async () => {
  const server = RendezvousServer.start({
    listen: inetAddress("127.0.0.1", 0),
    log: quiet,
    maxQueuedBytes: 4096,
    stuckTimeoutMs: 1500,
  });
  const attacker = Socket.create("inet", "stream");
  // A small receive window, so that the replies fill the kernel's buffers soon.
  attacker.setOption(SOL_SOCKET, SO_RCVBUF, 4096);
  const big = await LinePeer.connect(server.address);
  try {
    // Queries whose replies are 8 times longer than themselves: 9 MB of replies.
    assertEquals(await big.ask("register|big"), ["ok|register|big"]);
    const ports = Array.from({ length: 16 }, (_, i) => 10000 + i).join(",");
    assertEquals(await big.ask(`publish|tcp|10.0.0.1|${ports}`), ["ok|publish|tcp"]);
    await attacker.connect(server.address, AbortSignal.timeout(5000));
    const queries = new TextEncoder().encode("query|big|tcp\n".repeat(80_000));
    const flood = attacker.write(queries, AbortSignal.timeout(6000)).catch(() => {});
    await new Promise((r) => setTimeout(r, 700));
    // Paused, not dropped: still connected, and the server answers others.
    assertEquals(server.connectionCount, 2);
    assertEquals(await big.ask("ping", 1, 1000), ["pong"]);
    // Reading replies lets it go on: the queue drains and the server reads again.
    const n = await attacker.read(new Uint8Array(65536), AbortSignal.timeout(2000));
    assert(n > 0);
    // Then it reads nothing any more: dropped after the stuck timeout.
    const deadline = Date.now() + 6000;
    while (server.connectionCount > 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assertEquals(server.connectionCount, 1);
    await flood;
  } finally {
    attacker.close();
    big.close();
    await server.stop();
  }
});
