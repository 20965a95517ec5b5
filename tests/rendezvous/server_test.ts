import { assertEquals, assertRejects } from "../assert.ts";
import { bindingTcp, bindingUdp } from "../../src/discovery/stun_client.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import type { RendezvousServer } from "../../src/rendezvous/server.ts";
import { readLines } from "../helpers/daemon.ts";
import { withServer } from "./peers.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

/** A peer connection that sends lines and reads replies. */
class TestPeer {
  readonly socket: Socket;
  private constructor(socket: Socket) {
    this.socket = socket;
  }
  static async connect(server: RendezvousServer): Promise<TestPeer> {
    const socket = Socket.create("inet", "stream");
    await socket.connect(server.address);
    return new TestPeer(socket);
  }
  async ask(line: string, replies = 1): Promise<string[]> {
    await this.socket.write(bytes(line + "\n"));
    return await readLines(this.socket, replies, 5000);
  }
  close(): void {
    this.socket.close();
  }
}

Deno.test("a peer registers, publishes, and another peer queries its endpoint", async () => {
  await withServer({}, async (server) => {
    const a = await TestPeer.connect(server);
    const b = await TestPeer.connect(server);
    try {
      assertEquals(await a.ask("register|alice"), ["ok|register|alice"]);
      assertEquals(await a.ask("publish|tcp|172.16.1.2|4000,4001"), ["ok|publish|tcp"]);
      assertEquals(await b.ask("query|alice|tcp"), ["peer|alice|tcp|172.16.1.2|4000,4001"]);
      assertEquals(await b.ask("query|alice|udp"), [
        "error|query|peer has published no udp endpoint",
      ]);
      assertEquals(server.peerCount, 1);
    } finally {
      a.close();
      b.close();
    }
  });
});

Deno.test("notify forwards an opaque payload with the sender's ID, to many senders at once", async () => {
  await withServer({}, async (server) => {
    const target = await TestPeer.connect(server);
    const senders = await Promise.all([1, 2, 3].map(() => TestPeer.connect(server)));
    try {
      await target.ask("register|bob");
      for (const [i, s] of senders.entries()) {
        assertEquals(await s.ask(`register|s${i}`), [`ok|register|s${i}`]);
        assertEquals(await s.ask(`notify|bob|punch|a${i}|tcp-nutss|nutss1`), ["ok|notify|bob"]);
      }
      assertEquals(await readLines(target.socket, 3, 5000), [
        "notify|s0|punch|a0|tcp-nutss|nutss1",
        "notify|s1|punch|a1|tcp-nutss|nutss1",
        "notify|s2|punch|a2|tcp-nutss|nutss1",
      ]);
    } finally {
      target.close();
      for (const s of senders) s.close();
    }
  });
});

Deno.test("an ID belongs to its connection: no takeover, and a disconnect frees it", async () => {
  await withServer({}, async (server) => {
    const first = await TestPeer.connect(server);
    const second = await TestPeer.connect(server);
    try {
      await first.ask("register|carol");
      assertEquals(await second.ask("register|carol"), ["error|register|peer ID is taken"]);
      assertEquals(await first.ask("register|dave"), [
        "error|register|this connection is registered as carol",
      ]);
      first.close();
      for (let i = 0; i < 50 && server.peerCount > 0; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(await second.ask("query|carol|tcp"), ["error|query|unknown peer"]);
      assertEquals(await second.ask("register|carol"), ["ok|register|carol"]);
    } finally {
      first.close();
      second.close();
    }
  });
});

const BAD: [string, string][] = [
  ["hello", 'error|-|unknown command "hello"'],
  ["register", "error|register|register takes PEER_ID and an optional CREDENTIAL, got 1 fields"],
  ["register|alice|short", "error|register|bad credential (16-128 of A-Z a-z 0-9 _ -)"],
  ["register|", "error|register|bad peer ID (1-128 of A-Z a-z 0-9 . _ : @ + = / -)"],
  ["register|a b", "error|register|bad peer ID (1-128 of A-Z a-z 0-9 . _ : @ + = / -)"],
  [
    "register|" + "x".repeat(129),
    "error|register|bad peer ID (1-128 of A-Z a-z 0-9 . _ : @ + = / -)",
  ],
  ["publish|tcp|1.2.3.4|5", "error|publish|register first"],
  ["publish|sctp|1.2.3.4|5", 'error|publish|unknown protocol "sctp"'],
  ["publish|tcp|1.2.3|5", 'error|publish|bad address "1.2.3"'],
  ["publish|tcp|1.2.3.4|", "error|publish|empty port list"],
  ["query|nobody|tcp", "error|query|unknown peer"],
  ["notify|nobody|x", "error|notify|register first"],
  ["notify|nobody", "error|notify|notify takes PEER_ID and PAYLOAD"],
  ["ping|x", "error|ping|ping takes 1 fields, got 2"],
  ["observe|x", "error|observe|observe takes 1 fields, got 2"],
  ["x".repeat(2000), "error|-|line longer than 1024 bytes"],
];

Deno.test("bad input gets one error line each and the connection stays usable", async () => {
  await withServer({}, async (server) => {
    const peer = await TestPeer.connect(server);
    try {
      for (const [line, reply] of BAD) {
        assertEquals(await peer.ask(line), [reply], line.slice(0, 40));
      }
      await peer.socket.write(new Uint8Array([0x70, 0xff, 0xfe, 0x0a]));
      assertEquals(await readLines(peer.socket, 1, 5000), ["error|-|line is not valid UTF-8"]);
      assertEquals(await peer.ask("ping"), ["pong"]);
      assertEquals(await peer.ask("register|eve"), ["ok|register|eve"]);
      // A payload is the rest of the line, bars included (here sent to itself).
      assertEquals(await peer.ask("notify|eve|payload with spaces|and bars", 2), [
        "notify|eve|payload with spaces|and bars",
        "ok|notify|eve",
      ]);
    } finally {
      peer.close();
    }
  });
});

Deno.test("the number of registered peers is limited", async () => {
  await withServer({ maxPeers: 2 }, async (server) => {
    const peers = await Promise.all([1, 2, 3].map(() => TestPeer.connect(server)));
    try {
      assertEquals(await peers[0]!.ask("register|p0"), ["ok|register|p0"]);
      assertEquals(await peers[1]!.ask("register|p1"), ["ok|register|p1"]);
      assertEquals(await peers[2]!.ask("register|p2"), ["error|register|too many peers"]);
    } finally {
      for (const p of peers) p.close();
    }
  });
});

Deno.test("the server reports the endpoint it sees: observe (TCP, UDP main port) and STUN (probe ports, UDP main port)", async () => {
  const probePort = (() => {
    using s = Socket.create("inet", "stream");
    s.bind(inetAddress("127.0.0.1", 0));
    return (s.localAddress() as { port: number }).port;
  })();
  await withServer({ probePorts: [probePort] }, async (server) => {
    const peer = await TestPeer.connect(server);
    try {
      const local = peer.socket.localAddress() as { port: number };
      assertEquals(await peer.ask("observe"), [`observed|127.0.0.1|${local.port}`]);
    } finally {
      peer.close();
    }
    // A probe port speaks STUN over TCP: it answers the request and closes the connection itself.
    using probe = Socket.create("inet", "stream");
    const probeAddress = inetAddress("127.0.0.1", probePort);
    await probe.connect(probeAddress);
    const { mapped, responseOrigin } = await bindingTcp(
      probe,
      probeAddress,
      AbortSignal.timeout(5000),
    );
    assertEquals(mapped, probe.localAddress());
    assertEquals(responseOrigin, probeAddress);
    assertEquals(await probe.read(new Uint8Array(16), AbortSignal.timeout(5000)), 0);
    // UDP: the main port speaks the text protocol and STUN, the probe port STUN only.
    using udp = Socket.create("inet", "datagram");
    udp.bind(inetAddress("127.0.0.1", 0));
    const me = (udp.localAddress() as { port: number }).port;
    await udp.sendTo(bytes("observe"), server.address);
    const buf = new Uint8Array(100);
    const { length } = await udp.receiveFrom(buf, AbortSignal.timeout(5000));
    assertEquals(new TextDecoder().decode(buf.subarray(0, length)), `observed|127.0.0.1|${me}`);
    for (const port of [server.address.port, probePort]) {
      const result = await bindingUdp(
        udp,
        inetAddress("127.0.0.1", port),
        AbortSignal.timeout(5000),
      );
      assertEquals(result?.mapped, udp.localAddress());
    }
    // The probe port ignores text datagrams (it no longer answers "observe").
    await udp.sendTo(bytes("observe"), inetAddress("127.0.0.1", probePort));
    await assertRejects(() => udp.receiveFrom(buf, AbortSignal.timeout(300)));
  });
});
