import { assert, assertEquals, assertRejects } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { inetAddress } from "../../ffi/structs.ts";
import { joinDatagrams, joinStream } from "../../src/ctl/stdio.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A connected TCP pair on loopback: [ours, the peer's]. */
async function tcpPair(): Promise<[Socket, Socket]> {
  using listener = Socket.create("inet", "stream");
  listener.bind(inetAddress("127.0.0.1", 0));
  listener.listen();
  const ours = Socket.create("inet", "stream");
  const [accepted] = await Promise.all([listener.accept(), ours.connect(listener.localAddress())]);
  return [ours, accepted.socket];
}

/** Two UDP sockets on loopback, connected to each other. */
async function udpPair(): Promise<[Socket, Socket]> {
  const a = Socket.create("inet", "datagram");
  const b = Socket.create("inet", "datagram");
  a.bind(inetAddress("127.0.0.1", 0));
  b.bind(inetAddress("127.0.0.1", 0));
  await a.connect(b.localAddress());
  await b.connect(a.localAddress());
  return [a, b];
}

/** An input stream the test feeds. */
function input() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const stream = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c;
    },
    cancel: () => {
      cancelled = true;
    },
  });
  return {
    stream,
    push: (text: string) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
    cancelled: () => cancelled,
  };
}

/** An output stream that collects what is written and whether it was closed. */
function output() {
  let text = "";
  let closed = false;
  const stream = new WritableStream<Uint8Array>({
    write: (chunk) => {
      text += decoder.decode(chunk, { stream: true });
    },
    close: () => {
      closed = true;
    },
  });
  return { stream, text: () => text, closed: () => closed };
}

/** Everything `socket` reads until end of stream. */
async function readAll(socket: Socket): Promise<string> {
  const buf = new Uint8Array(4096);
  let text = "";
  for (;;) {
    const n = await socket.read(buf, AbortSignal.timeout(5000));
    if (n === 0) return text;
    text += decoder.decode(buf.subarray(0, n));
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 250 && !condition(); i++) await sleep(20);
  assert(condition(), `timed out waiting for ${what}`);
}

Deno.test("joinStream sends the input, half-closes at its end, and writes the peer's data to the output, closing it at the peer's end", async () => {
  const [ours, peer] = await tcpPair();
  using _ours = ours;
  using _peer = peer;
  const i = input();
  const o = output();
  const joined = joinStream(ours, i.stream, o.stream);
  i.push("hello ");
  i.push("peer");
  i.end();
  // The peer reads end of stream only if the input's end became shutdown(SHUT_WR).
  assertEquals(await readAll(peer), "hello peer");
  await peer.write(encoder.encode("hello back"));
  peer.closeWrite();
  assertEquals(await joined, { sent: 10, received: 10, peerGone: false });
  assertEquals(o.text(), "hello back");
  assert(o.closed(), "the output is closed at the peer's end of stream");
});

Deno.test("joinStream closes the output at the peer's end of stream but keeps sending until the input ends (a one-way transfer stays whole)", async () => {
  const [ours, peer] = await tcpPair();
  using _ours = ours;
  using _peer = peer;
  const i = input();
  const o = output();
  peer.closeWrite();
  let done = false;
  const joined = joinStream(ours, i.stream, o.stream).finally(() => done = true);
  await until(o.closed, "the output to close");
  await sleep(100);
  assert(!done, "the join must wait for the input");
  const big = "x".repeat(300_000);
  i.push(big);
  i.push("end");
  i.end();
  assertEquals(await readAll(peer), big + "end");
  assertEquals(await joined, { sent: 300_003, received: 0, peerGone: false });
});

Deno.test("joinStream ends with peerGone when the peer closed entirely and input remains to send", async () => {
  const [ours, peer] = await tcpPair();
  using _ours = ours;
  const i = input();
  const o = output();
  peer.close();
  let done = false;
  const joined = joinStream(ours, i.stream, o.stream).finally(() => done = true);
  await until(o.closed, "the output to close");
  // The first write after the peer's close draws its RST; a later one fails with EPIPE.
  for (let n = 0; n < 100 && !done; n++) {
    if (!i.cancelled()) i.push("more\n");
    await sleep(20);
  }
  const result = await joined;
  assert(result.peerGone, "peerGone");
  assert(i.cancelled(), "the input is cancelled");
});

Deno.test("joinStream rejects with the output's error and cancels the input", async () => {
  const [ours, peer] = await tcpPair();
  using _ours = ours;
  using _peer = peer;
  const i = input();
  const failing = new WritableStream<Uint8Array>({
    write: () => {
      throw new Error("Cannot write to stdout: broken pipe");
    },
  });
  const joined = joinStream(ours, i.stream, failing);
  await peer.write(encoder.encode("data"));
  await assertRejects(joined, /broken pipe/);
  assert(i.cancelled(), "the input is cancelled");
});

Deno.test("joinDatagrams sends each input chunk as a datagram and writes received ones, skipping keepalives and punch datagrams, until the input ends", async () => {
  const [ours, peer] = await udpPair();
  using _ours = ours;
  using _peer = peer;
  const i = input();
  const o = output();
  const joined = joinDatagrams(ours, i.stream, o.stream);
  i.push("one");
  i.push("two");
  const buf = new Uint8Array(2048);
  const got: string[] = [];
  for (let n = 0; n < 2; n++) {
    got.push(decoder.decode(buf.subarray(0, await peer.read(buf, AbortSignal.timeout(5000)))));
  }
  assertEquals(got, ["one", "two"]);
  await peer.write(new Uint8Array(0));
  await peer.write(encoder.encode("PDU2 a late punch datagram"));
  await peer.write(encoder.encode("three"));
  await until(() => o.text() !== "", "a datagram on the output");
  i.end();
  assertEquals(await joined, { sent: 6, received: 5, peerGone: false });
  assertEquals(o.text(), "three");
});

Deno.test("closing stdoutWritable ends the reader's stream at once, not when the process exits", async () => {
  const stdio = new URL("../../src/ctl/stdio.ts", import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { stdoutWritable } from "${stdio}";
       const writer = stdoutWritable().getWriter();
       await writer.write(new TextEncoder().encode("last words"));
       await writer.close();
       await new Promise((r) => setTimeout(r, 3000));`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const started = Date.now();
  const text = await new Response(child.stdout).text();
  const ended = Date.now() - started;
  const status = await child.status;
  const exited = Date.now() - started;
  assertEquals([text, status.code], ["last words", 0]);
  assert(exited >= 3000, `exited after ${exited} ms`);
  assert(ended < exited - 1500, `stdout ended after ${ended} ms, the process after ${exited} ms`);
});
