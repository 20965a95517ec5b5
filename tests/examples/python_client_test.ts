import { assertEquals, assertMatch } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { freePort, type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { hasCommand, isRoot, skipUnless } from "../helpers/skip.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";

const SCRIPT = new URL("../../src/examples/punchd_client.py", import.meta.url).pathname;

function hasPython(): boolean {
  return hasCommand("python3", [
    "-c",
    "import socket; socket.socket.recvmsg; socket.MSG_CMSG_CLOEXEC",
  ]);
}

interface Python {
  child: Deno.ChildProcess;
  lines: AsyncIterator<string>;
  stderr: Promise<string>;
}

/** Runs the example client with `args`. */
function runPython(args: string[]): Python {
  return spawnPython([SCRIPT, ...args]);
}

/** Runs `python3 ARGV` (-B: no bytecode written beside the example). */
function spawnPython(argv: string[]): Python {
  const child = new Deno.Command("python3", {
    args: ["-B", ...argv],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream<string, string>(
      {
        buffer: "",
        transform(chunk, controller) {
          const self = this as unknown as { buffer: string };
          self.buffer = (self.buffer ?? "") + chunk;
          const parts = self.buffer.split("\n");
          self.buffer = parts.pop() ?? "";
          for (const p of parts) controller.enqueue(p);
        },
      } as Transformer<string, string> & { buffer: string },
    ),
  )[Symbol.asyncIterator]();
  return { child, lines, stderr: new Response(child.stderr).text() };
}

/**
 * Runs `body` with a punchd in its own network namespace (loopback only), so
 * that no other daemon on this host holds its instance lock.
 */
async function withDaemon(tag: string, body: (daemon: RunningDaemon) => Promise<void>) {
  await withVoidNamespace(tag, async (ns) => {
    await using daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    await body(daemon);
  });
}

const PYTHON = hasPython();
const ROOT = isRoot();

/** `ignore` for these tests: python3 and root (for the daemon's namespace). */
function needs(name: string): boolean {
  return skipUnless(
    PYTHON,
    name,
    "python3 with socket.recvmsg and MSG_CMSG_CLOEXEC is not installed",
  ) ||
    skipUnless(ROOT, name, "the daemon runs in its own network namespace (root)");
}

async function rest(lines: AsyncIterator<string>): Promise<string[]> {
  const out: string[] = [];
  for (;;) {
    const next = await lines.next();
    if (next.done) return out;
    out.push(next.value);
  }
}

const NAME =
  "the Python client gets a working socket from punchd, both ways and mixed with the Deno client";
Deno.test({
  name: NAME,
  ignore: needs(NAME),
}, async () => {
  await withDaemon("py1", async (daemon) => {
    const [pa, pb] = [freePort(), freePort()];
    // Python initiates, Python responds.
    const a = runPython([
      "--socket",
      daemon.socketPath,
      "--send",
      "from python a",
      "initiate",
      "py1",
      "tcp-direct",
      "127.0.0.1",
      `${pa}`,
      "127.0.0.1",
      `${pb}`,
    ]);
    const first = await a.lines.next();
    assertMatch(first.value ?? "", /^progress \S+$/);
    const extra = (first.value ?? "").slice("progress ".length);
    const b = runPython([
      "--socket",
      daemon.socketPath,
      "--send",
      "from python b",
      "respond",
      "py2",
      "tcp-direct",
      "127.0.0.1",
      `${pb}`,
      "127.0.0.1",
      `${pa}`,
      extra,
    ]);
    const [outA, outB] = await Promise.all([rest(a.lines), rest(b.lines)]);
    const [statusA, statusB] = await Promise.all([a.child.status, b.child.status]);
    assertEquals([statusA.code, statusB.code], [0, 0], `${await a.stderr}\n${await b.stderr}`);
    assertEquals(outA, [`connected 127.0.0.1:${pa} 127.0.0.1:${pb}`, "received from python b"]);
    assertEquals(outB, [`connected 127.0.0.1:${pb} 127.0.0.1:${pa}`, "received from python a"]);

    // Deno initiates, Python responds: the two client libraries interoperate.
    const [pc, pd] = [freePort(), freePort()];
    const deno = await PunchdClient.connect(daemon.socketPath);
    try {
      const attempt = deno.initiate({
        id: "d1",
        technique: "tcp-direct",
        srcIp: "127.0.0.1",
        srcPorts: [pc],
        dstIp: "127.0.0.1",
        dstPorts: [pd],
      });
      const progress = await attempt.progress[Symbol.asyncIterator]().next();
      const c = runPython([
        "--socket",
        daemon.socketPath,
        "--send",
        "hi deno",
        "respond",
        "py3",
        "tcp-direct",
        "127.0.0.1",
        `${pd}`,
        "127.0.0.1",
        `${pc}`,
        progress.value ?? "",
      ]);
      using socket = await attempt.socket;
      const { readable, writable } = socket.streams();
      const writer = writable.getWriter();
      await writer.write(new TextEncoder().encode("hi python"));
      await writer.close();
      assertEquals(await new Response(readable).text(), "hi deno");
      assertEquals(await rest(c.lines), [
        `connected 127.0.0.1:${pd} 127.0.0.1:${pc}`,
        "received hi python",
      ]);
      assertEquals((await c.child.status).code, 0, await c.stderr);
    } finally {
      await deno.close();
    }
  });
});

Deno.test({
  name: "the Python client reports punchd's error and exits 1",
  ignore: needs("python client error path"),
}, async () => {
  await withDaemon("py2", async (daemon) => {
    const bad = runPython([
      "--socket",
      daemon.socketPath,
      "initiate",
      "x",
      "tcp-nope",
      "127.0.0.1",
      "1",
      "127.0.0.1",
      "2",
    ]);
    assertEquals(await rest(bad.lines), []);
    assertEquals((await bad.child.status).code, 1);
    assertMatch(await bad.stderr, /^error unknown technique "tcp-nope"/);
  });
});

const CLOEXEC = "the Python client receives the connected socket with close-on-exec set";
Deno.test({ name: CLOEXEC, ignore: needs(CLOEXEC) }, async () => {
  await withDaemon("py3", async (daemon) => {
    const [pa, pb] = [freePort(), freePort()];
    // The library class, as an application uses it: initiate, then read the received fd's flags.
    const program = `
import fcntl, sys
sys.path.insert(0, ${JSON.stringify(new URL(".", new URL(SCRIPT, "file:")).pathname)})
from punchd_client import PunchdClient
client = PunchdClient(sys.argv[1])
try:
    request = ["initiate", "py", "tcp-direct", "127.0.0.1", sys.argv[2], "127.0.0.1", sys.argv[3]]
    with client.run(request, lambda data: print("progress", data, flush=True)) as conn:
        print("FD_CLOEXEC", fcntl.fcntl(conn.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC, flush=True)
finally:
    client.close()
`;
    const python = spawnPython(["-c", program, daemon.socketPath, `${pa}`, `${pb}`]);
    const deno = await PunchdClient.connect(daemon.socketPath);
    try {
      const offer = await python.lines.next();
      assertMatch(offer.value ?? "", /^progress \S+$/);
      const attempt = deno.respond({
        id: "d",
        technique: "tcp-direct",
        srcIp: "127.0.0.1",
        srcPorts: [pb],
        dstIp: "127.0.0.1",
        dstPorts: [pa],
        extra: (offer.value ?? "").slice("progress ".length),
      });
      using _socket = await attempt.socket;
      assertEquals(await rest(python.lines), ["FD_CLOEXEC 1"]);
      assertEquals((await python.child.status).code, 0, await python.stderr);
    } finally {
      await deno.close();
    }
  });
});
