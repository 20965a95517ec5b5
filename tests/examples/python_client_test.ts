import { assertEquals, assertMatch } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { freePort, startDaemon } from "../helpers/daemon.ts";
import { skipUnless } from "../helpers/skip.ts";

const SCRIPT = new URL("../../src/examples/punchd_client.py", import.meta.url).pathname;

function hasPython(): boolean {
  try {
    const out = new Deno.Command("python3", {
      args: ["-c", "import socket; socket.recv_fds"],
      stdout: "null",
      stderr: "null",
    })
      .outputSync();
    return out.success;
  } catch {
    return false;
  }
}

interface Python {
  child: Deno.ChildProcess;
  lines: AsyncIterator<string>;
  stderr: Promise<string>;
}

function runPython(args: string[]): Python {
  const child = new Deno.Command("python3", {
    args: [SCRIPT, ...args],
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
  ignore: skipUnless(hasPython(), NAME, "python3 with socket.recv_fds (3.9+) is not installed"),
}, async () => {
  await using daemon = await startDaemon();
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

Deno.test({
  name: "the Python client reports punchd's error and exits 1",
  ignore: skipUnless(
    hasPython(),
    "python client error path",
    "python3 with socket.recv_fds (3.9+) is not installed",
  ),
}, async () => {
  await using daemon = await startDaemon();
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
