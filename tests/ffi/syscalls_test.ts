import { assert, assertEquals, assertRejects, assertThrows } from "../assert.ts";
import { AF_UNIX, POLLIN, POLLOUT, SOCK_STREAM } from "../../ffi/constants.ts";
import { ECONNREFUSED, SyscallError } from "../../ffi/errno.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import * as sys from "../../ffi/syscalls.ts";
import { hasIpv6Loopback, skipUnless } from "../helpers/skip.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("a failing call throws SyscallError with syscall, errno and its name", async () => {
  // Find a closed loopback port: bind, read the port, close, connect to it.
  const probe = Socket.create("inet", "stream");
  probe.bind(inetAddress("127.0.0.1", 0));
  const address = probe.localAddress();
  probe.close();
  using client = Socket.create("inet", "stream");
  try {
    await client.connect(address);
    assert(false, "connect to a closed port succeeded");
  } catch (e) {
    assert(e instanceof SyscallError);
    assertEquals([e.syscall, e.errno, e.code], ["connect", ECONNREFUSED, "ECONNREFUSED"]);
    assertEquals(e.message, "Cannot connect: ECONNREFUSED (111)");
  }
});

Deno.test("binding a port in use fails with EADDRINUSE", () => {
  using a = Socket.create("inet", "stream");
  a.bind(inetAddress("127.0.0.1", 0));
  a.listen();
  using b = Socket.create("inet", "stream");
  assertThrows(
    () => b.bind(a.localAddress()),
    (e: Error) => e instanceof SyscallError && e.code === "EADDRINUSE",
  );
});

Deno.test("SCM_RIGHTS passes several fds that work on the receiving side", async () => {
  const [a, b] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  using left = new Socket(a);
  using right = new Socket(b);
  // Two more socketpairs; pass one end of each.
  const [p1, q1] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  const [p2, q2] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  using keep1 = new Socket(q1);
  using keep2 = new Socket(q2);
  await left.sendWithFds(bytes("ok|x\n"), [p1, p2]);
  sys.close(p1);
  sys.close(p2);
  const buf = new Uint8Array(64);
  const received = await right.receiveWithFds(buf, 4);
  assertEquals(text(buf.subarray(0, received.length)), "ok|x\n");
  assertEquals(received.fds.length, 2);
  assertEquals(received.controlTruncated, false);
  using r1 = new Socket(received.fds[0]!);
  using r2 = new Socket(received.fds[1]!);
  await r1.write(bytes("one"));
  await r2.write(bytes("two"));
  const n1 = await keep1.read(buf);
  assertEquals(text(buf.subarray(0, n1)), "one");
  const n2 = await keep2.read(buf);
  assertEquals(text(buf.subarray(0, n2)), "two");
});

Deno.test("receiving more fds than there is room for reports truncation and leaks none", async () => {
  const [a, b] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  using left = new Socket(a);
  using right = new Socket(b);
  const before = sys.openFds().length;
  const pairs = [0, 1, 2, 3].map(() => sys.socketpair(AF_UNIX, SOCK_STREAM));
  await left.sendWithFds(bytes("x"), pairs.map(([p]) => p));
  // Room for one fd is CMSG_SPACE(4) = 24 bytes, which alignment rounds up to two.
  const received = await right.receiveWithFds(new Uint8Array(8), 1);
  assertEquals(received.fds.length, 2);
  assertEquals(received.controlTruncated, true);
  for (const fd of received.fds) sys.close(fd);
  for (const [p, q] of pairs) {
    sys.close(p);
    sys.close(q);
  }
  assertEquals(sys.openFds().length, before);
});

Deno.test("SO_PEERCRED reports this process for a socketpair", () => {
  const [a, b] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  using left = new Socket(a);
  using _right = new Socket(b);
  const cred = sys.peerCredentials(left.fd);
  assertEquals(cred.pid, Deno.pid);
  assertEquals(cred.uid, Deno.uid());
  assertEquals(cred.gid, Deno.gid());
});

Deno.test("pollNow reports readiness without waiting", async () => {
  const [a, b] = sys.socketpair(AF_UNIX, SOCK_STREAM);
  using left = new Socket(a);
  using right = new Socket(b);
  assertEquals(sys.pollNow([{ fd: right.fd, events: POLLIN }])[0]?.revents, 0);
  await left.write(bytes("x"));
  assertEquals(
    sys.pollNow([{ fd: right.fd, events: POLLIN | POLLOUT }])[0]?.revents,
    POLLIN | POLLOUT,
  );
});

Deno.test("close is idempotent and later use throws a clear error", async () => {
  const socket = Socket.create("inet", "stream");
  const fd = socket.fd;
  socket.close();
  socket.close();
  assertEquals(socket.fd, -1);
  assertEquals(sys.isOpen(fd), false);
  await assertRejects(() => socket.read(new Uint8Array(1)), {
    message: "Cannot read: the socket is closed",
  });
});

Deno.test("datagrams go both ways with sendTo and receiveFrom", async () => {
  using a = Socket.create("inet", "datagram");
  using b = Socket.create("inet", "datagram");
  a.bind(inetAddress("127.0.0.1", 0));
  b.bind(inetAddress("127.0.0.1", 0));
  await a.sendTo(bytes("ping"), b.localAddress());
  const buf = new Uint8Array(16);
  const got = await b.receiveFrom(buf);
  assertEquals(text(buf.subarray(0, got.length)), "ping");
  assertEquals(got.from, a.localAddress());
});

const IPV6_TEST = "IPv6 loopback connects and reports canonical addresses";
Deno.test({
  name: IPV6_TEST,
  ignore: skipUnless(hasIpv6Loopback(), IPV6_TEST, "this host has no IPv6 loopback (::1)"),
}, async () => {
  using listener = Socket.create("inet6", "stream");
  listener.bind(inetAddress("::1", 0));
  listener.listen();
  using client = Socket.create("inet6", "stream");
  const [accepted] = await Promise.all([
    listener.accept(),
    client.connect(listener.localAddress()),
  ]);
  using server = accepted.socket;
  assertEquals(server.peerAddress(), client.localAddress());
  assertEquals(accepted.address.family, "inet6");
  assertEquals((accepted.address as { address: string }).address, "::1");
});

Deno.test("receiveFrom takes a datagram from an unbound unix socket (no address) as from an unnamed one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-unnamed-" });
  try {
    using receiver = Socket.create("unix", "datagram");
    receiver.bind({ family: "unix", path: `${dir}/r` });
    using sender = Socket.create("unix", "datagram");
    await sender.sendTo(new TextEncoder().encode("READY=1"), { family: "unix", path: `${dir}/r` });
    const buf = new Uint8Array(64);
    const { length, from } = await receiver.receiveFrom(buf, AbortSignal.timeout(5000));
    assertEquals(new TextDecoder().decode(buf.subarray(0, length)), "READY=1");
    assertEquals(from, { family: "unix", path: "" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
