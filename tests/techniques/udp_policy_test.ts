import { assert, assertEquals } from "../assert.ts";
import type { QueuedError } from "../../ffi/errqueue.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { TechniqueError } from "../../src/errors.ts";
import {
  decodeNotice,
  encodeNotice,
  GiveUp,
  hopeless,
  isIcmpError,
  isPortUnreachable,
  MovedPeer,
  Persistent,
  RefusedPunches,
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

Deno.test("no punch leaves once the sender's signal has aborted, at either TTL", async () => {
  using receiver = Socket.create("inet", "datagram");
  receiver.bind(inetAddress("127.0.0.1", 0));
  using sender = Socket.create("inet", "datagram");
  sender.bind(inetAddress("127.0.0.1", 0));
  const stopped = new AbortController();
  stopped.abort();
  await sendPunch(sender, new Uint8Array([1]), receiver.localAddress(), 1, stopped.signal);
  await sendPunch(sender, new Uint8Array([2]), receiver.localAddress(), null, stopped.signal);
  await sendPunch(
    sender,
    new Uint8Array([3]),
    receiver.localAddress(),
    null,
    AbortSignal.timeout(2000),
  );
  const buf = new Uint8Array(8);
  const got = await receiver.receiveFrom(buf, AbortSignal.timeout(2000));
  assertEquals([got.length, buf[0]], [1, 3]);
});

/** A queued error as the kernel reports an answering NAT's refusal of a punch to 172.16.2.2:30000. */
function refusal(over: Partial<QueuedError> = {}): QueuedError {
  return {
    errno: 111,
    origin: "icmp",
    type: 3,
    code: 3,
    info: 0,
    offender: "172.16.2.2",
    destination: inetAddress("172.16.2.2", 30000),
    payload: new Uint8Array(),
    ...over,
  };
}

Deno.test("ICMP and ICMPv6 port unreachable are told from other errors", () => {
  assert(isPortUnreachable(refusal()));
  assert(isPortUnreachable(refusal({ origin: "icmp6", type: 1, code: 4 })));
  assert(!isPortUnreachable(refusal({ type: 11, code: 0 })), "time exceeded");
  assert(!isPortUnreachable(refusal({ code: 1 })), "host unreachable");
  assert(!isPortUnreachable(refusal({ origin: "icmp6", type: 3, code: 0 })));
  assert(!isPortUnreachable(refusal({ origin: "local" })));
});

Deno.test("only lasting port unreachables from the peer's address for its announced endpoint count", () => {
  let now = 0;
  const refused = new RefusedPunches(1000, () => now);
  const peer = { ip: "172.16.2.2", endpoints: [inetAddress("172.16.2.2", 30000)] };
  const others = [
    refusal({ type: 11, code: 0, offender: "172.16.0.1" }),
    refusal({ offender: "172.16.0.1" }),
    refusal({ destination: inetAddress("172.16.2.2", 30001) }),
    refusal({ destination: null }),
  ];
  for (now = 0; now <= 3000; now += 50) {
    for (const other of others) assertEquals(refused.note(other, peer), null);
  }
  now = 5000;
  assertEquals(refused.note(refusal(), peer), null);
  now = 5500;
  assertEquals(refused.note(refusal(), peer), null);
  assertEquals(refused.note(refusal(), peer), null, "three, but over 500 ms");
  now = 6000;
  assertEquals(
    refused.note(refusal(), peer),
    "udp gave up: for 1000 ms the peer's NAT refused this side's punches to port 30000 (ICMP port unreachable) although the peer's mapping exists: one of the NATs gave its flow another port than announced",
  );
});

Deno.test("lasting evidence needs 3 observations over the whole span", () => {
  let now = 0;
  const evidence = new Persistent(1000, () => now);
  assertEquals(evidence.note(), null);
  now = 5000;
  assertEquals(evidence.note(), null);
  assertEquals(evidence.note(), 5000);
});
