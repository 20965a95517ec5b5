/**
 * The session against a real rendezvous server and punchd on loopback:
 * what it reports, what it ignores, how it gives up, and a whole
 * connect/accept pair.
 *
 * @module
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { parseHostPort } from "../../src/discovery/endpoint.ts";
import { RendezvousClient, RendezvousRefused } from "../../src/rendezvous/client.ts";
import { Session, type SessionEvent, type SessionOptions } from "../../src/ctl/session.ts";
import { freePort, type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { rendezvousServer } from "./servers.ts";

const NEEDS = "punchd runs as root";

/** Runs `body` with a rendezvous server and punchd on loopback; stops both. */
async function withServers(
  body: (server: string, daemon: RunningDaemon) => Promise<void>,
): Promise<void> {
  const server = await rendezvousServer();
  try {
    await using daemon = await startDaemon();
    await body(server.address, daemon);
  } finally {
    await server.stop();
  }
}

function options(
  server: string,
  daemon: RunningDaemon,
  id: string,
  events: SessionEvent[],
  over: Partial<SessionOptions> = {},
): SessionOptions {
  return {
    punchdSocket: daemon.socketPath,
    rendezvous: parseHostPort(server),
    id,
    localIp: "127.0.0.1",
    port: freePort(),
    technique: "tcp-direct",
    onEvent: (e) => events.push(e),
    ...over,
  };
}

const IGNORES = "accept ignores notifications that are no attempt and keeps waiting";
Deno.test({ name: IGNORES, ignore: skipUnless(isRoot(), IGNORES, NEEDS) }, async () => {
  await withServers(async (server, daemon) => {
    const events: SessionEvent[] = [];
    await using bob = await Session.open(options(server, daemon, "bob", events));
    const mallory = await RendezvousClient.connect(parseHostPort(server));
    try {
      await mallory.register("mallory");
      const stop = new AbortController();
      const waiting = bob.accept(stop.signal);
      for (
        const payload of [
          "hello",
          "punch|a1|no-such-technique|127.0.0.1|4000|x",
          "punch|a1|tcp-direct|127.0.0.1",
          "peer|a1|data",
        ]
      ) {
        await mallory.notify("bob", payload);
      }
      for (let i = 0; i < 100 && events.length < 6; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      stop.abort(new Error("stopped by the test"));
      await assertRejects(waiting, /stopped by the test/);
      assertEquals(events.map((e) => e.kind), [
        "registered",
        "waiting",
        "ignored",
        "ignored",
        "ignored",
        "ignored",
      ]);
      assertEquals(events[2], { kind: "ignored", from: "mallory", payload: "hello" });
    } finally {
      await mallory.close();
    }
  });
});

const GIVES_UP = "connect cancels the attempt after attemptTimeoutMs and says so";
Deno.test({ name: GIVES_UP, ignore: skipUnless(isRoot(), GIVES_UP, NEEDS) }, async () => {
  await withServers(async (server, daemon) => {
    // bob publishes a UDP endpoint nobody answers on.
    using silent = Socket.create("inet", "datagram");
    silent.bind(inetAddress("127.0.0.1", 0));
    const local = silent.localAddress();
    const bob = await RendezvousClient.connect(parseHostPort(server));
    try {
      await bob.register("bob");
      await bob.publish("udp", "127.0.0.1", [local.family === "unix" ? 0 : local.port]);
      const events: SessionEvent[] = [];
      await using alice = await Session.open(
        options(server, daemon, "alice", events, { technique: "udp", attemptTimeoutMs: 1500 }),
      );
      const started = Date.now();
      await assertRejects(alice.connect("bob"), {
        message: "Cannot connect to bob: no connection within 1.5 s",
      });
      assert(Date.now() - started < 5000, "gave up in time");
      assertEquals(events.slice(0, 3).map((e) => e.kind), ["registered", "initiating", "progress"]);
    } finally {
      await bob.close();
    }
  });
});

const REFUSED = "open fails with the server's refusal of a wrong credential";
Deno.test({ name: REFUSED, ignore: skipUnless(isRoot(), REFUSED, NEEDS) }, async () => {
  await withServers(async (server, daemon) => {
    const first = await Session.open(
      options(server, daemon, "carol", [], { credential: "carol-secret-0123456789" }),
    );
    await first.close();
    await assertRejects(
      Session.open(options(server, daemon, "carol", [], { credential: "not-carols-0123456789" })),
      (error: unknown) => {
        assert(error instanceof RendezvousRefused, String(error));
        assertMatch((error as Error).message, /^rendezvous server refused register/);
        return true;
      },
    );
  });
});

const PAIR = "connect and accept on loopback hand both sides a connected socket";
Deno.test({ name: PAIR, ignore: skipUnless(isRoot(), PAIR, NEEDS) }, async () => {
  await withServers(async (server, daemon) => {
    const bobEvents: SessionEvent[] = [];
    const aliceEvents: SessionEvent[] = [];
    await using bob = await Session.open(options(server, daemon, "bob", bobEvents));
    await using alice = await Session.open(options(server, daemon, "alice", aliceEvents));
    const accepted = bob.accept(AbortSignal.timeout(20_000));
    const connected = await alice.connect("bob", AbortSignal.timeout(20_000));
    const answered = await accepted;
    using a = connected.socket;
    using b = answered.socket;
    assertEquals([connected.peer, answered.peer], ["bob", "alice"]);
    assertEquals([connected.technique, answered.technique], ["tcp-direct", "tcp-direct"]);
    assertEquals([connected.protocol, answered.protocol], ["tcp", "tcp"]);
    await a.write(new TextEncoder().encode("ping"));
    const buf = new Uint8Array(16);
    const n = await b.read(buf, AbortSignal.timeout(5000));
    assertEquals(new TextDecoder().decode(buf.subarray(0, n)), "ping");
    const last = aliceEvents.at(-1);
    assertEquals(last?.kind, "connected");
    assertEquals(
      bobEvents.map((e) => e.kind).filter((k) => k !== "progress" && k !== "peer"),
      ["registered", "waiting", "incoming", "connected"],
    );
  });
});
