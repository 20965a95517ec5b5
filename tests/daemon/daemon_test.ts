import { assert, assertEquals, assertMatch, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import {
  freePort,
  punchDirect,
  rawConnect,
  readExactly,
  readLines,
  spawnPunchd,
  startDaemon,
} from "../helpers/daemon.ts";
import { hasIpv6Loopback, isRoot, skipUnless } from "../helpers/skip.ts";
import { VOID_LOCAL, VOID_PEER, withVoidNamespace } from "../helpers/void_ns.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

/** What each open fd of process `pid` is (for failure messages). */
function describeFds(pid: number): string {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(`${entry.name} -> ${Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`)}`);
    } catch {
      out.push(`${entry.name} -> ?`);
    }
  }
  return out.join("\n");
}
const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("two clients receive both ends of one tcp-direct connection and bytes flow both ways", async () => {
  await using daemon = await startDaemon();
  const a = await PunchdClient.connect(daemon.socketPath);
  const b = await PunchdClient.connect(daemon.socketPath);
  try {
    const [sa, sb] = await punchDirect(a, b);
    using _sa = sa;
    using _sb = sb;
    assertEquals(sa.localAddress(), sb.peerAddress());
    assertEquals(sa.peerAddress(), sb.localAddress());
    const payload = crypto.getRandomValues(new Uint8Array(65536));
    const [, got] = await Promise.all([sa.write(payload), readExactly(sb, payload.length)]);
    assertEquals(got, payload);
    await sb.write(bytes("pong"));
    assertEquals(text(await readExactly(sa, 4)), "pong");
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("the passed sockets work as streams", async () => {
  await using daemon = await startDaemon();
  const a = await PunchdClient.connect(daemon.socketPath);
  const b = await PunchdClient.connect(daemon.socketPath);
  try {
    const [sa, sb] = await punchDirect(a, b);
    const left = sa.streams();
    const right = sb.streams();
    const writer = left.writable.getWriter();
    await writer.write(bytes("hello "));
    await writer.write(bytes("stream"));
    await writer.close(); // half-close: the peer reads end of stream
    const received = await new Response(right.readable).text();
    assertEquals(received, "hello stream");
    sa.close();
    sb.close();
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("the control socket is mode 0660 and removed on SIGTERM with exit code 0", async () => {
  const daemon = await startDaemon();
  const info = await Deno.stat(daemon.socketPath);
  assertEquals((info.mode ?? 0) & 0o777, 0o660);
  assert(info.isSocket);
  const code = await daemon.stop();
  assertEquals(code, 0);
  await assertRejects(() => Deno.stat(daemon.socketPath), Deno.errors.NotFound);
});

Deno.test("a stale socket file is replaced and a live daemon's socket is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-test-" });
  const path = `${dir}/punchd.socket`;
  try {
    // A socket file nobody listens on: what a killed daemon leaves.
    const stale = Socket.create("unix", "stream");
    stale.bind({ family: "unix", path });
    stale.close();
    await using first = await startDaemon([], path);
    const client = await PunchdClient.connect(path);
    await client.close();
    // A second daemon on the same path must refuse and leave the first alone.
    const { child, output } = spawnPunchd(["--socket", path]);
    const status = await child.status;
    assertEquals(status.code, 1);
    assertMatch(await output, /another punchd is answering/);
    const again = await PunchdClient.connect(path);
    await again.close();
    assertEquals(first.pid > 0, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a regular file at the socket path is refused and left in place", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-test-" });
  const path = `${dir}/punchd.socket`;
  try {
    await Deno.writeTextFile(path, "precious");
    const { child, output } = spawnPunchd(["--socket", path]);
    assertEquals((await child.status).code, 1);
    assertMatch(await output, /exists and is not a socket/);
    assertEquals(await Deno.readTextFile(path), "precious");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad flags exit with code 2 and one line on stderr; --help exits 0", async () => {
  for (
    const args of [["--bogus"], ["--attempt-timeout", "0x10"], ["--log-level", "loud"], [
      "--group",
      "no-such-group-xyz",
    ]]
  ) {
    const { child, output } = spawnPunchd(args);
    assertEquals((await child.status).code, 2, args.join(" "));
    const out = (await output).trim();
    assertEquals(out.split("\n").length, 1, out);
    assertMatch(out, /^punchd: .*\(see --help\)$/);
  }
  const { child, output } = spawnPunchd(["--help"]);
  assertEquals((await child.status).code, 0);
  assertMatch(await output, /--socket PATH/);
});

Deno.test("a duplicate active attempt ID is refused while the first attempt goes on", async () => {
  await using daemon = await startDaemon();
  const raw = await rawConnect(daemon.socketPath);
  try {
    const [p1, p2] = [freePort(), freePort()];
    await raw.write(bytes(`initiate|dup|tcp-direct|127.0.0.1|${p1}|127.0.0.1|${p2}\n`));
    const [progress] = await readLines(raw, 1);
    assertMatch(progress ?? "", /^progress\|dup\|direct2:[0-9a-f]{32}$/);
    await raw.write(bytes(`initiate|dup|tcp-direct|127.0.0.1|${p2}|127.0.0.1|${p1}\n`));
    const [refusal] = await readLines(raw, 1);
    assertMatch(refusal ?? "", /^error\|dup\|.*already active/);
    await raw.write(bytes("cancel|dup\n"));
    const [cancelled] = await readLines(raw, 1);
    assertEquals(cancelled, "error|dup|cancelled: by client");
  } finally {
    raw.close();
  }
});

Deno.test("cancel ends an attempt with an error and frees its port", async () => {
  await using daemon = await startDaemon();
  const client = await PunchdClient.connect(daemon.socketPath);
  try {
    const [port, closed] = [freePort(), freePort()];
    const attempt = client.initiate({
      id: "c1",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [port],
      dstIp: "127.0.0.1",
      dstPorts: [closed],
    });
    await attempt.progress[Symbol.asyncIterator]().next();
    await attempt.cancel();
    const error = await attempt.socket.then(() => null, (e) => e);
    assert(error instanceof PunchdError);
    assertEquals(error.reason, "cancelled: by client");
    // The attempt's listener is gone: a plain listener (no SO_REUSEPORT) can take the port.
    await new Promise((r) => setTimeout(r, 200));
    using listener = Socket.create("inet", "stream", { reuseAddress: true });
    listener.bind(inetAddress("127.0.0.1", port));
    listener.listen();
  } finally {
    await client.close();
  }
});

Deno.test("an attempt that cannot connect fails within its timeout with a clear reason", async () => {
  await using daemon = await startDaemon(["--attempt-timeout", "1"]);
  const client = await PunchdClient.connect(daemon.socketPath);
  try {
    const attempt = client.initiate({
      id: "t1",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.1",
      dstPorts: [freePort()],
    });
    const started = performance.now();
    const error = await attempt.socket.then(() => null, (e) => e);
    assert(error instanceof PunchdError);
    assertMatch(error.reason, /timed out after 1000 ms/);
    assert(performance.now() - started < 5000, "the timeout was not honoured");
  } finally {
    await client.close();
  }
});

Deno.test("endpoint reports the local endpoint and refuses a port in use", async () => {
  await using daemon = await startDaemon();
  const client = await PunchdClient.connect(daemon.socketPath);
  try {
    const port = freePort();
    assertEquals(await client.endpoint("e1", "tcp", "127.0.0.1", [port]), {
      ip: "127.0.0.1",
      ports: [port],
      source: "local",
    });
    using busy = Socket.create("inet", "stream");
    busy.bind(inetAddress("127.0.0.1", 0));
    busy.listen();
    const busyPort = (busy.localAddress() as { port: number }).port;
    const error = await client.endpoint("e2", "tcp", "127.0.0.1", [busyPort]).then(
      () => null,
      (e) => e,
    );
    assert(error instanceof PunchdError);
    assertMatch(error.reason, new RegExp(`SRC_PORT ${busyPort} is in use by another tcp socket`));
    const unspecified = await client.endpoint("e3", "udp", "0.0.0.0", [port]).then(
      () => null,
      (e) => e,
    );
    assert(unspecified instanceof PunchdError);
    assertMatch(unspecified.reason, /unspecified/);
  } finally {
    await client.close();
  }
});

Deno.test("a client that disconnects cancels its attempts and the daemon holds no extra fds", async () => {
  await using daemon = await startDaemon();
  // Warm up: the worker and its reactor exist from the first attempt on.
  const a = await PunchdClient.connect(daemon.socketPath);
  const b = await PunchdClient.connect(daemon.socketPath);
  const [sa, sb] = await punchDirect(a, b);
  sa.close();
  sb.close();
  await a.close();
  await b.close();
  await new Promise((r) => setTimeout(r, 300));
  const baseline = daemon.fdCount();
  const client = await PunchdClient.connect(daemon.socketPath);
  const attempts = Array.from({ length: 20 }, (_, i) =>
    client.initiate({
      id: `d${i}`,
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.1",
      dstPorts: [freePort()],
    }));
  for (const attempt of attempts) await attempt.progress[Symbol.asyncIterator]().next();
  assert(daemon.fdCount() > baseline, "the attempts hold no sockets");
  await client.close();
  for (const attempt of attempts) await attempt.socket.catch(() => {});
  assertEquals(await daemon.settledFdCount(baseline), baseline);
});

const IPV6 = "tcp-direct works over IPv6 loopback";
Deno.test({
  name: IPV6,
  ignore: skipUnless(hasIpv6Loopback(), IPV6, "no IPv6 loopback (::1) here"),
}, async () => {
  await using daemon = await startDaemon();
  const a = await PunchdClient.connect(daemon.socketPath);
  const b = await PunchdClient.connect(daemon.socketPath);
  try {
    const [pa, pb] = [freePort(), freePort()];
    const initiator = a.initiate({
      id: "v6a",
      technique: "tcp-direct",
      srcIp: "::1",
      srcPorts: [pa],
      dstIp: "::1",
      dstPorts: [pb],
    });
    const extra = (await initiator.progress[Symbol.asyncIterator]().next()).value ?? "";
    const responder = b.respond({
      id: "v6b",
      technique: "tcp-direct",
      srcIp: "::1",
      srcPorts: [pb],
      dstIp: "::1",
      dstPorts: [pa],
      extra,
    });
    using sa = await initiator.socket;
    using sb = await responder.socket;
    assertEquals(sa.peerAddress(), { family: "inet6", address: "::1", port: pb });
    await sa.write(bytes("six"));
    assertEquals(text(await readExactly(sb, 3)), "six");
  } finally {
    await a.close();
    await b.close();
  }
});

const GROUP = "--group sets the control socket's group";
Deno.test({
  name: GROUP,
  ignore: skipUnless(Deno.uid() === 0, GROUP, "chown to another group needs root"),
}, async () => {
  await using daemon = await startDaemon(["--group", "65534"]);
  const info = await Deno.stat(daemon.socketPath);
  assertEquals(info.gid, 65534);
  assertEquals((info.mode ?? 0) & 0o777, 0o660);
});

Deno.test("SIGTERM cancels running attempts, tells their clients, and exits 0", async () => {
  const daemon = await startDaemon();
  const raw = await rawConnect(daemon.socketPath);
  try {
    await raw.write(
      bytes(`initiate|s1|tcp-direct|127.0.0.1|${freePort()}|127.0.0.1|${freePort()}\n`),
    );
    assertMatch((await readLines(raw, 1))[0] ?? "", /^progress\|s1\|direct2:[0-9a-f]{32}$/);
    const stopping = daemon.stop();
    const lines = await readLines(raw, 2);
    assertEquals(lines, [
      "error|s1|cancelled: daemon shutting down",
      "error|-|daemon shutting down",
    ]);
    assertEquals(await stopping, 0);
  } finally {
    raw.close();
  }
});

const GUARDED_STOP = "SIGTERM tells the client of an attempt that held firewall guards too";
Deno.test({
  name: GUARDED_STOP,
  // It lost its cancelled reply (and the daemon hung) when retiring the worker closed an fd
  // number the worker had closed already and an nft pipe had taken (workers_test.ts).
  ignore: skipUnless(isRoot(), GUARDED_STOP, "network namespaces and nftables need root"),
}, async () => {
  await withVoidNamespace("stop", async (ns) => {
    const daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    const raw = await rawConnect(daemon.socketPath);
    try {
      // tcp-nutss holds guards while it waits for a peer in the void.
      await raw.write(bytes(`initiate|g1|tcp-nutss|${VOID_LOCAL}|41000|${VOID_PEER}|42000\n`));
      assertMatch((await readLines(raw, 1))[0] ?? "", /^progress\|g1\|nutss2:/);
      await new Promise((r) => setTimeout(r, 200));
      const stopping = daemon.stop();
      const lines = await readLines(raw, 2);
      assertEquals(lines.sort(), [
        "error|-|daemon shutting down",
        "error|g1|cancelled: daemon shutting down",
      ]);
      assertEquals(await stopping, 0);
    } finally {
      raw.close();
    }
  });
});

Deno.test("a client that never reads its replies stalls nobody else", async () => {
  await using daemon = await startDaemon(["--log-level", "info"]);
  // Warm up: the daemon's reactor (an epoll fd and an eventfd) opens on its first wait.
  const warm = await PunchdClient.connect(daemon.socketPath);
  await warm.endpoint("warm", "tcp", "127.0.0.1", [freePort()]);
  await warm.close();
  await new Promise((r) => setTimeout(r, 200));
  const baseline = daemon.fdCount();
  const flooder = await rawConnect(daemon.socketPath);
  const other = await PunchdClient.connect(daemon.socketPath);
  try {
    // Far more error replies than the socket buffers hold: punchd's writes to
    // this client block, and it stops reading from it (backpressure).
    const line = bytes("cancel|nope\n");
    const chunk = new Uint8Array(line.length * 1000);
    for (let i = 0; i < 1000; i++) chunk.set(line, i * line.length);
    const flood = (async () => {
      for (let i = 0; i < 200; i++) await flooder.write(chunk, AbortSignal.timeout(5000));
    })().catch(() => "blocked");
    await new Promise((r) => setTimeout(r, 500));
    for (let i = 0; i < 20; i++) {
      const port = freePort();
      assertEquals((await other.endpoint(`o${i}`, "tcp", "127.0.0.1", [port])).ports, [port]);
    }
    flooder.close();
    await flood;
  } finally {
    flooder.close();
    await other.close();
  }
  const settled = await daemon.settledFdCount(baseline);
  assertEquals(settled, baseline, describeFds(daemon.pid));
});
