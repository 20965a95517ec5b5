import { assert, assertEquals } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../../src/errors.ts";
import {
  decodeNotice,
  encodeNotice,
  GiveUp,
  hopeless,
  isIcmpError,
  MovedPeer,
  sendPunch,
} from "../../src/techniques/udp_policy.ts";

Deno.test("only two NATs that both map per destination are hopeless", () => {
  assertEquals(hopeless("e", "e"), null);
  assertEquals(hopeless("e", "h"), null);
  assertEquals(hopeless("h", "e"), null);
  assertEquals(hopeless("h", null), null);
  assert(hopeless("h", "h")?.startsWith("udp gave up: both NATs map ports per destination"));
});

Deno.test("the peer's punches from another port are evidence after 3 of them over movedMs", () => {
  let now = 0;
  const moved = new MovedPeer(1000, () => now);
  const from = inetAddress("172.16.2.2", 40001);
  assertEquals(moved.note(from), null);
  now = 2000;
  assertEquals(moved.note(from), null, "two punches are not enough, however far apart");
  now = 999;
  const early = new MovedPeer(1000, () => now);
  now = 0;
  for (let i = 0; i < 50; i++) assertEquals(early.note(from), null);
  now = 1000;
  assertEquals(
    early.note(from),
    "udp gave up: for 1000 ms the peer's punches came from port 40001, not from its announced port: its NAT gave this flow another port (one taken by an earlier flow, or a mapping per destination), so punches to the announced port cannot reach it",
  );
});

Deno.test("a notice round-trips to the peer's reason; other progress is no notice", () => {
  assertEquals(encodeNotice("moved"), "udp2x:moved");
  assertEquals(
    decodeNotice(encodeNotice("probes")),
    "udp gave up: the peer gave up: the peer's birthday probes hit none of this side's ports",
  );
  assertEquals(decodeNotice("udp2x:later"), "udp gave up: the peer gave up: code later");
  assertEquals(decodeNotice("udp2x:tostring"), "udp gave up: the peer gave up: code tostring");
  for (const other of ["udp2r:e", "udp2x:", "udp2x:MOVED", "udp2x:moved:x", " udp2x:moved"]) {
    assertEquals(decodeNotice(other), null, other);
  }
});

Deno.test("a give-up carries the code the peer is told and is a TechniqueError", () => {
  const error = new GiveUp("moved", "udp gave up: because");
  assert(error instanceof TechniqueError);
  assertEquals([error.notice, error.message], ["moved", "udp gave up: because"]);
});

Deno.test("the ECONNREFUSED an ICMP port unreachable leaves on a connected UDP socket is an ICMP error", async () => {
  using closed = Socket.create("inet", "datagram");
  closed.bind(inetAddress("127.0.0.1", 0));
  const target = closed.localAddress();
  closed.close();
  using socket = Socket.create("inet", "datagram");
  socket.bind(inetAddress("127.0.0.1", 0));
  await socket.connect(target);
  await socket.write(new Uint8Array([1]));
  const error = await socket.read(new Uint8Array(16), AbortSignal.timeout(2000)).then(
    () => null,
    (e) => e,
  );
  assert(isIcmpError(error), String(error));
  assert(!isIcmpError(new Error("Cannot read: the socket is closed")));
});

Deno.test("a low-TTL punch leaves and the socket's own TTL is restored", async () => {
  using receiver = Socket.create("inet", "datagram");
  receiver.bind(inetAddress("127.0.0.1", 0));
  using sender = Socket.create("inet", "datagram");
  sender.bind(inetAddress("127.0.0.1", 0));
  const normal = sender.hopLimit();
  const signal = AbortSignal.timeout(2000);
  // TTL 1 still reaches a local address (nothing forwards it).
  await sendPunch(sender, new Uint8Array([7]), receiver.localAddress(), 1, signal);
  assertEquals(sender.hopLimit(), normal);
  await sendPunch(sender, new Uint8Array([8]), receiver.localAddress(), null, signal);
  const buf = new Uint8Array(8);
  const first = await receiver.receiveFrom(buf, signal);
  assertEquals([first.length, buf[0]], [1, 7]);
  const second = await receiver.receiveFrom(buf, signal);
  assertEquals([second.length, buf[0]], [1, 8]);
});
