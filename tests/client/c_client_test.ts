/**
 * The C client library (src/client/c), compiled with cc (-Werror, and with AddressSanitizer
 * and UndefinedBehaviorSanitizer when the compiler has them), through its example program:
 * against a real punchd (an attempt between two C clients, the daemon's errors), against an
 * impostor listening where punchd should, and against a scripted fake punchd that misbehaves
 * (one row per misbehaviour and the error it must produce).
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { AF_UNIX, SOCK_STREAM } from "../../ffi/constants.ts";
import { lockFile, setNonBlocking, socketpair } from "../../ffi/syscalls.ts";
import { freePort, type RunningDaemon, startDaemon } from "../helpers/daemon.ts";
import { canRunMembers, finishMember, spawnImpostor } from "../helpers/member.ts";
import { hasCommand, isRoot, note, skipUnless } from "../helpers/skip.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";

const SOURCES = new URL("../../src/client/c/", import.meta.url).pathname;
const CC = Deno.env.get("CC") ?? "cc";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sanitizer reports end the program with this code, which the example never uses. */
const SANITIZER_EXIT = 86;
const SANITIZER_ENV = {
  ASAN_OPTIONS: `detect_leaks=1:exitcode=${SANITIZER_EXIT}`,
  UBSAN_OPTIONS: `print_stacktrace=1:halt_on_error=1:exitcode=${SANITIZER_EXIT}`,
};

const HAVE_CC = hasCommand(CC);

async function run(args: string[]): Promise<void> {
  const out = await new Deno.Command(args[0] ?? "", { args: args.slice(1), stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${args.join(" ")}: ${decoder.decode(out.stderr)}`);
}

/** True when `cc flags` builds a program that runs (the sanitizer runtimes may be missing). */
async function sanitizersWork(dir: string, flags: string[]): Promise<boolean> {
  await Deno.writeTextFile(`${dir}/probe.c`, "int main(void) { return 0; }\n");
  try {
    await run([CC, ...flags, "-o", `${dir}/probe`, `${dir}/probe.c`]);
    await run([`${dir}/probe`]);
    return true;
  } catch {
    return false;
  }
}

/** Where the library and example were built, and the compiler flags they were built with. */
interface Build {
  dir: string;
  flags: string[];
}

let built: Promise<Build> | undefined;

/** The library and example program, compiled once for this file into a temporary directory. */
function build(): Promise<Build> {
  built ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "punchd-c-client-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    const sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"];
    const useSanitizers = await sanitizersWork(dir, sanitize);
    if (!useSanitizers) note(`NOTE: ${CC} cannot build with ${sanitize[0]}: C tests run without`);
    const flags = [
      "-std=c99",
      "-Wall",
      "-Wextra",
      "-Wpedantic",
      "-Werror",
      "-g",
      "-O1",
      ...(useSanitizers ? sanitize : []),
    ];
    await run([CC, ...flags, "-c", "-o", `${dir}/punchd.o`, `${SOURCES}punchd.c`]);
    await run([
      CC,
      ...flags,
      "-I",
      SOURCES,
      "-o",
      `${dir}/punchd_example`,
      `${SOURCES}punchd_example.c`,
      `${dir}/punchd.o`,
    ]);
    return { dir, flags };
  })();
  return built;
}

/** The example program's path. */
async function example(): Promise<string> {
  return `${(await build()).dir}/punchd_example`;
}

/** A running example program. */
interface Example {
  child: Deno.ChildProcess;
  /** The next stdout line, or null at the end. */
  line(): Promise<string | null>;
  /** Exit code, every stdout line not yet read, and stderr. */
  finish(): Promise<{ code: number; stdout: string[]; stderr: string }>;
}

async function runExample(args: string[], stdin: "null" | "piped" = "null"): Promise<Example> {
  const child = new Deno.Command(await example(), {
    args,
    env: SANITIZER_ENV,
    stdin,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  let pending = "";
  let ended = false;
  const line = async (): Promise<string | null> => {
    for (;;) {
      const nl = pending.indexOf("\n");
      if (nl >= 0) {
        const text = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        return text;
      }
      if (ended) return null;
      const { value, done } = await reader.read();
      if (done) ended = true;
      else pending += value;
    }
  };
  return {
    child,
    line,
    finish: async () => {
      const stdout: string[] = [];
      for (let next = await line(); next !== null; next = await line()) stdout.push(next);
      const { code } = await child.status;
      return { code, stdout, stderr: await stderr };
    },
  };
}

/** Sockets of process `pid` beyond stdio, each with whether it has close-on-exec set. */
function socketsOf(pid: number): boolean[] {
  const out: boolean[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    if (Number(entry.name) <= 2) continue;
    try {
      if (!Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`).startsWith("socket:")) continue;
      const info = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${entry.name}`);
      const flags = parseInt(info.match(/^flags:\s+([0-7]+)$/m)?.[1] ?? "0", 8);
      out.push((flags & 0o2000000) !== 0);
    } catch {
      // Closed since the listing.
    }
  }
  return out;
}

const MAKE = "make c-client builds libpunchd.a and the example, and a program links with -lpunchd";
Deno.test({
  name: MAKE,
  ignore: skipUnless(HAVE_CC, MAKE, `no C compiler (${CC})`) ||
    skipUnless(hasCommand("make"), MAKE, "no make"),
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-c-make-" });
  try {
    const root = new URL("../../", import.meta.url).pathname;
    await run([
      "make",
      "-s",
      "-C",
      root,
      "c-client",
      `C_BUILD=${dir}`,
      `CC=${CC}`,
      "CFLAGS=-O2 -Werror",
    ]);
    const usage = await new Deno.Command(`${dir}/punchd_example`, { stderr: "piped" }).output();
    assertEquals(usage.code, 2);
    assertMatch(decoder.decode(usage.stderr), /^usage: punchd_example /);
    // An application of its own: the header from the source tree, the library from the build.
    await Deno.writeTextFile(
      `${dir}/app.c`,
      `#include <stdio.h>
#include "punchd.h"
int main(int argc, char **argv) {
  char err[256];
  punchd *p = punchd_open(argv[argc - 1], 0, err, sizeof err);
  if (p == NULL) { printf("%s\\n", err); return 1; }
  punchd_close(p);
  return 0;
}
`,
    );
    await run([
      CC,
      "-std=c99",
      "-Wall",
      "-Werror",
      "-I",
      SOURCES,
      "-o",
      `${dir}/app`,
      `${dir}/app.c`,
      "-L",
      dir,
      "-lpunchd",
    ]);
    const app = await new Deno.Command(`${dir}/app`, {
      args: [`${dir}/nothing.socket`],
      stdout: "piped",
    })
      .output();
    assertEquals(app.code, 1);
    assertEquals(
      decoder.decode(app.stdout),
      `Cannot connect to punchd at ${dir}/nothing.socket: No such file or directory\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- A real punchd ------------------------------------------------------------------------

const ROOT = isRoot();

function needsDaemon(name: string): boolean {
  return skipUnless(HAVE_CC, name, `no C compiler (${CC})`) ||
    skipUnless(ROOT, name, "the daemon runs in its own network namespace (root)");
}

/** Runs `body` with a punchd in its own network namespace (no instance lock shared). */
async function withDaemon(tag: string, body: (daemon: RunningDaemon) => Promise<void>) {
  await withVoidNamespace(tag, async (ns) => {
    await using daemon = await startDaemon([], undefined, ["ip", "netns", "exec", ns]);
    await body(daemon);
  });
}

const CONNECT = "two C clients get a connected socket from punchd that carries data both ways";
Deno.test({ name: CONNECT, ignore: needsDaemon(CONNECT) }, async () => {
  await withDaemon("cc1", async (daemon) => {
    const [pa, pb] = [freePort(), freePort()];
    const common = ["--socket", daemon.socketPath, "--timeout", "20000"];
    const a = await runExample([
      ...common,
      "--send",
      "from c a",
      "initiate",
      "c1",
      "tcp-direct",
      "127.0.0.1",
      `${pa}`,
      "127.0.0.1",
      `${pb}`,
    ]);
    const first = await a.line();
    assertMatch(first ?? "", /^progress \S+$/);
    const b = await runExample([
      ...common,
      "--send",
      "from c b",
      "respond",
      "c2",
      "tcp-direct",
      "127.0.0.1",
      `${pb}`,
      "127.0.0.1",
      `${pa}`,
      (first ?? "").slice("progress ".length),
    ]);
    const [outA, outB] = await Promise.all([a.finish(), b.finish()]);
    assertEquals(outA, {
      code: 0,
      stdout: [`connected 127.0.0.1:${pa} 127.0.0.1:${pb}`, "received from c b"],
      stderr: "",
    });
    assertEquals(outB, {
      code: 0,
      stdout: [`connected 127.0.0.1:${pb} 127.0.0.1:${pa}`, "received from c a"],
      stderr: "",
    });
  });
});

const DAEMON_ERRORS = "the C client surfaces punchd's error replies and endpoint answers";
Deno.test({ name: DAEMON_ERRORS, ignore: needsDaemon(DAEMON_ERRORS) }, async () => {
  await withDaemon("cc2", async (daemon) => {
    const common = ["--socket", daemon.socketPath, "--timeout", "20000"];
    const bad = await runExample([
      ...common,
      "initiate",
      "x",
      "tcp-nope",
      "127.0.0.1",
      "1",
      "127.0.0.1",
      "2",
    ]);
    assertEquals(await bad.finish(), {
      code: 1,
      stdout: [],
      stderr: 'error unknown technique "tcp-nope"\n',
    });
    const ports = await runExample([...common, "endpoint", "e", "tcp", "127.0.0.1", "0"]);
    assertEquals(await ports.finish(), {
      code: 1,
      stdout: [],
      stderr: 'error bad port "0" (1..65535)\n',
    });
    const port = freePort();
    const endpoint = await runExample([...common, "endpoint", "e", "tcp", "127.0.0.1", `${port}`]);
    assertEquals(await endpoint.finish(), {
      code: 0,
      stdout: [`endpoint 127.0.0.1 ${port} local`],
      stderr: "",
    });
  });
});

const INFO = "the C client's status and report requests bring punchd's JSON, unparsed";
Deno.test({ name: INFO, ignore: needsDaemon(INFO) }, async () => {
  await withDaemon("cc3", async (daemon) => {
    const common = ["--socket", daemon.socketPath, "--timeout", "20000"];
    const status = await (await runExample([...common, "status", "q1"])).finish();
    assertEquals([status.code, status.stderr, status.stdout.length], [0, "", 1]);
    assertMatch(status.stdout[0] ?? "", /^status \{.*\}$/);
    const value = JSON.parse((status.stdout[0] ?? "").slice("status ".length));
    // The one client connected is this example.
    assertEquals([value.pid, value.clients, value.attempts], [daemon.pid, 1, 0]);
    assertEquals(value.techniques["tcp-direct"].attempts, 0);
    const report = await (await runExample([...common, "report", "q2"])).finish();
    assertEquals([report.code, report.stderr, report.stdout.length], [0, "", 1]);
    assertMatch(report.stdout[0] ?? "", /^report \{.*\}$/);
    // No discovery server given: nothing asked, and the notes say so.
    const nat = JSON.parse((report.stdout[0] ?? "").slice("report ".length));
    assertEquals(nat.servers, []);
    assertMatch(nat.ipv4.notes.join(" "), /no IPv4 discovery server/);
  });
});

// ---- An impostor ---------------------------------------------------------------------------

const IMPOSTOR =
  "the C client refuses a socket whose listener is not root: an impostor gets nothing";
Deno.test({
  name: IMPOSTOR,
  ignore: skipUnless(HAVE_CC, IMPOSTOR, `no C compiler (${CC})`) ||
    skipUnless(canRunMembers(), IMPOSTOR, "needs root, setpriv and python3"),
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-c-impostor-" });
  await Deno.chmod(dir, 0o777);
  const path = `${dir}/punchd.socket`;
  // A user outside punchd's group listening where clients look; it prints what it receives.
  const { child: impostor, next } = spawnImpostor(path);
  try {
    assertEquals(await next(), "up");
    const client = await runExample([
      "--socket",
      path,
      "--timeout",
      "10000",
      "initiate",
      "i1",
      "tcp-direct",
      "127.0.0.1",
      "40000",
      "127.0.0.1",
      "40001",
    ]);
    const out = await client.finish();
    assertEquals([out.code, out.stdout], [1, []]);
    assertMatch(
      out.stderr,
      /^error Cannot connect to punchd at .*: the process listening there \(pid \d+\) runs as uid 65534, not 0: not punchd\n$/,
    );
    // What reached the impostor: the connection and nothing else.
    assertEquals(await next(), "b''");
  } finally {
    await finishMember(impostor);
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- A fake punchd that misbehaves ---------------------------------------------------------

/** The request the examples below send, unless a row says otherwise. */
const INITIATE = ["initiate", "i1", "tcp-direct", "127.0.0.1", "4000", "127.0.0.1", "4001"];
const INITIATE_LINE = INITIATE.join("|");

/** Reads one request line (without `\n`), or what came before the end of the stream. */
async function readRequest(conn: Socket, signal: AbortSignal): Promise<string> {
  const buf = new Uint8Array(1024);
  let text = "";
  while (!text.includes("\n")) {
    const n = await conn.read(buf, signal);
    if (n === 0) return text;
    text += decoder.decode(buf.subarray(0, n));
  }
  return text.slice(0, text.indexOf("\n"));
}

/**
 * Runs `body` with a fake punchd (this process: uid 0 when root, so `--daemon-uid` is passed
 * as this uid) at a fresh path: it accepts one connection, reads the request and answers with
 * `serve`, then keeps the connection open until `body` is done. `request` resolves to the
 * request it read ("" when the client sent nothing).
 */
async function withFake(
  serve: (conn: Socket) => Promise<void>,
  body: (path: string, request: Promise<string>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "punchd-c-fake-" });
  const path = `${dir}/punchd.socket`;
  const listener = Socket.create("unix", "stream");
  const controller = new AbortController();
  let conn: Socket | undefined;
  let served: Promise<string> = Promise.resolve("");
  try {
    listener.bind({ family: "unix", path });
    listener.listen(4);
    served = (async () => {
      conn = (await listener.accept(controller.signal)).socket;
      const request = await readRequest(conn, controller.signal);
      if (request !== "") await serve(conn);
      return request;
    })();
    // Handled here so that a client going away mid-answer does not crash the runner; rows
    // that await `request` still see the failure.
    served.catch(() => {});
    await body(path, served);
  } finally {
    controller.abort();
    await served.catch(() => {}); // Ended by the abort when body did not wait for it.
    conn?.close();
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The example against a fake punchd, with this process's uid as punchd's. */
function fakeArgs(path: string, args: string[] = INITIATE): string[] {
  return ["--socket", path, "--daemon-uid", `${Deno.uid()}`, "--timeout", "10000", ...args];
}

const lines = (...text: string[]) => encoder.encode(text.map((t) => `${t}\n`).join(""));

/** Writes `data` in pieces of `size` bytes, yielding between them: the client reads partial lines. */
async function dribble(conn: Socket, data: Uint8Array<ArrayBuffer>, size: number): Promise<void> {
  for (let off = 0; off < data.byteLength; off += size) {
    await conn.write(data.slice(off, off + size));
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A JSON object of exactly `length` bytes with a `|` inside. */
function json(length: number): string {
  const head = '{"pipe":"a|b","pad":"';
  return `${head}${"x".repeat(length - head.length - 2)}"}`;
}

interface Row {
  name: string;
  /** The example's command (default INITIATE). */
  args?: string[];
  /** The fake's answer once it has read the request. */
  serve: (conn: Socket) => Promise<void>;
  /** The request the fake must have read. */
  request: string;
  code: number;
  stdout: string[];
  stderr: string | RegExp;
}

const ROWS: Row[] = [
  {
    name: "a status reply's JSON comes back raw, | and all",
    args: ["status", "s1"],
    serve: (conn) => conn.write(lines('status|s1|{"version":"1|2","clients":1}')),
    request: "status|s1",
    code: 0,
    stdout: ['status {"version":"1|2","clients":1}'],
    stderr: "",
  },
  {
    name: "a 16 KiB report arriving in small pieces is read whole",
    args: ["report", "r1"],
    serve: (conn) => dribble(conn, lines(`report|r1|${json(16384)}`), 997),
    request: "report|r1",
    code: 0,
    stdout: [`report ${json(16384)}`],
    stderr: "",
  },
  {
    name: "a status line longer than 16 KiB is refused without waiting for its end",
    args: ["status", "s1"],
    serve: (conn) => conn.write(encoder.encode(`status|s1|${json(20000)}`)),
    request: "status|s1",
    code: 1,
    stdout: [],
    stderr: "error Cannot read punchd's reply: line longer than 16456 bytes\n",
  },
  {
    name: "a JSON field over 16384 bytes is refused",
    args: ["status", "s1"],
    serve: (conn) => conn.write(lines(`status|s1|${json(16385)}`)),
    request: "status|s1",
    code: 1,
    stdout: [],
    stderr:
      /^error Cannot read punchd's reply "status\|s1\|.*\.\.\.": JSON longer than 16384 bytes\n$/,
  },
  {
    name: "a progress line longer than 500 bytes is refused",
    serve: (conn) => conn.write(lines(`progress|i1|${"d".repeat(600)}`)),
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: "error Cannot read punchd's reply: line longer than 500 bytes\n",
  },
  {
    name: "an ok without a socket is an error",
    serve: (conn) => conn.write(lines("progress|i1|offer", "ok|i1")),
    request: INITIATE_LINE,
    code: 1,
    stdout: ["progress offer"],
    stderr: "error Cannot read punchd's reply: ok|i1 came without a socket\n",
  },
  {
    name: "an ok whose descriptor is not a socket is an error",
    serve: async (conn) => {
      const dir = await Deno.makeTempDir({ prefix: "punchd-c-file-" });
      const fd = lockFile(`${dir}/not-a-socket`);
      try {
        await conn.sendWithFds(lines("ok|i1"), [fd]);
      } finally {
        new Socket(fd).close(); // Closes the file fd (Socket only owns the number).
        await Deno.remove(dir, { recursive: true });
      }
    },
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: "error Cannot read punchd's reply: ok|i1 came with a descriptor that is not a socket\n",
  },
  {
    name: "more descriptors than one message may carry (MSG_CTRUNC) end the connection",
    serve: async (conn) => {
      const pairs = Array.from({ length: 5 }, () => socketpair(AF_UNIX, SOCK_STREAM));
      try {
        await conn.sendWithFds(lines("ok|i1"), pairs.flat());
      } finally {
        for (const fd of pairs.flat()) new Socket(fd).close();
      }
    },
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: "error Cannot read from punchd: it passed more than 8 descriptors at once\n",
  },
  {
    name: "a reply with a bad ID is refused",
    serve: (conn) => conn.write(lines("progress|i 1|x")),
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: `error Cannot read punchd's reply "progress|i 1|x": bad ID\n`,
  },
  {
    name: "a reply with a control character is refused",
    serve: (conn) => conn.write(lines("progress|i1|a\x01b")),
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: `error Cannot read punchd's reply "progress|i1|a?b": not printable ASCII\n`,
  },
  {
    name: "an endpoint reply with a bad address is refused",
    args: ["endpoint", "e1", "tcp", "127.0.0.1", "4000"],
    serve: (conn) => conn.write(lines("endpoint|e1|300.1.1.1|4000|local")),
    request: "endpoint|e1|tcp|127.0.0.1|4000",
    code: 1,
    stdout: [],
    stderr:
      `error Cannot read punchd's reply "endpoint|e1|300.1.1.1|4000|local": bad endpoint fields\n`,
  },
  {
    name: "replies of unknown types and for other IDs are skipped; the error is surfaced",
    serve: (conn) =>
      conn.write(lines("hello|i1|future", "progress|other|x", "progress|i1|d1", "error|i1|boom")),
    request: INITIATE_LINE,
    code: 1,
    stdout: ["progress d1"],
    stderr: "error boom\n",
  },
  {
    name: "an endpoint reply with the NAT's behaviour is printed whole",
    args: ["endpoint", "e1", "udp", "::", "4000"],
    serve: (conn) => conn.write(lines("endpoint|e1|2001:db8::1|4000,4001|stun|eim,apdf")),
    request: "endpoint|e1|udp|::|4000",
    code: 0,
    stdout: ["endpoint 2001:db8::1 4000,4001 stun eim,apdf"],
    stderr: "",
  },
  {
    name: "punchd closing the connection in the middle of a reply is an error",
    serve: async (conn) => {
      await conn.write(encoder.encode("progress|i1|par"));
      conn.close();
    },
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: "error Cannot read from punchd: it closed the connection in the middle of a reply\n",
  },
  {
    name: "a silent punchd ends the wait after --timeout",
    args: ["--timeout", "300", ...INITIATE],
    serve: () => Promise.resolve(),
    request: INITIATE_LINE,
    code: 1,
    stdout: [],
    stderr: "error no reply from punchd within 300 ms\n",
  },
  {
    name: "a field the protocol cannot carry is refused before anything is sent",
    args: ["initiate", "i|1", "tcp-direct", "127.0.0.1", "4000", "127.0.0.1", "4001"],
    serve: () => Promise.resolve(),
    request: "",
    code: 1,
    stdout: [],
    stderr: "error Cannot send initiate: field 2 is not an ID (1-64 of A-Z a-z 0-9 _ . : @ + -)\n",
  },
  {
    name: "EXTRA with a space is refused before anything is sent",
    args: ["respond", "r1", "tcp-direct", "127.0.0.1", "4000", "127.0.0.1", "4001", "a b"],
    serve: () => Promise.resolve(),
    request: "",
    code: 1,
    stdout: [],
    stderr:
      "error Cannot send respond: field 8 is empty or not printable ASCII without space and |\n",
  },
];

for (const row of ROWS) {
  Deno.test({
    name: `C client against a fake punchd: ${row.name}`,
    ignore: skipUnless(HAVE_CC, row.name, `no C compiler (${CC})`),
  }, async () => {
    await withFake(row.serve, async (path, request) => {
      const client = await runExample(fakeArgs(path, row.args));
      const out = await client.finish();
      assertEquals([out.code, out.stdout], [row.code, row.stdout], out.stderr);
      if (typeof row.stderr === "string") assertEquals(out.stderr, row.stderr);
      else assertMatch(out.stderr, row.stderr);
      assertEquals(await request, row.request);
    });
  });
}

const FDS =
  "the C client keeps one socket per ok, closes extra descriptors, and sets close-on-exec";
Deno.test({ name: FDS, ignore: skipUnless(HAVE_CC, FDS, `no C compiler (${CC})`) }, async () => {
  const [mine, theirs] = socketpair(AF_UNIX, SOCK_STREAM).map((fd) => new Socket(fd)) as [
    Socket,
    Socket,
  ];
  const [extraMine, extraTheirs] = socketpair(AF_UNIX, SOCK_STREAM).map((fd) => new Socket(fd)) as [
    Socket,
    Socket,
  ];
  // punchd passes blocking sockets, and the example does blocking I/O on them.
  setNonBlocking(theirs.fd, false);
  try {
    await withFake(async (conn) => {
      // The descriptors travel with the first byte; the rest of the line follows in pieces.
      await conn.sendWithFds(encoder.encode("o"), [theirs.fd, extraTheirs.fd]);
      theirs.close();
      extraTheirs.close();
      await dribble(conn, encoder.encode("k|i1\n"), 1);
    }, async (path) => {
      const client = await runExample(fakeArgs(path, ["--send", "hello", ...INITIATE]));
      assertEquals(await client.line(), "connected unix unix");
      const buf = new Uint8Array(64);
      const n = await mine.read(buf, AbortSignal.timeout(10000));
      assertEquals(decoder.decode(buf.subarray(0, n)), "hello");
      // The example now waits for our end: it holds the control socket and one connection.
      assertEquals(socketsOf(client.child.pid), [true, true]);
      // The second descriptor was closed at once: its other end reads end of stream.
      assertEquals(await extraMine.read(buf, AbortSignal.timeout(10000)), 0);
      await mine.write(encoder.encode("back"));
      mine.closeWrite();
      assertEquals(await client.finish(), { code: 0, stdout: ["received back"], stderr: "" });
    });
  } finally {
    for (const s of [mine, theirs, extraMine, extraTheirs]) s.close();
  }
});

const PEER = "lines on the example's stdin reach punchd as peer requests of the attempt";
Deno.test({ name: PEER, ignore: skipUnless(HAVE_CC, PEER, `no C compiler (${CC})`) }, async () => {
  await withFake(async (conn) => {
    await conn.write(lines("progress|i1|offer"));
    const peer = await readRequest(conn, AbortSignal.timeout(10000));
    await conn.write(lines(`error|i1|saw ${peer.replaceAll("|", " ")}`));
  }, async (path, request) => {
    const client = await runExample(fakeArgs(path), "piped");
    assertEquals(await client.line(), "progress offer");
    const writer = client.child.stdin.getWriter();
    await writer.write(encoder.encode("answer:1\n"));
    await writer.close();
    assertEquals(await client.finish(), {
      code: 1,
      stdout: [],
      stderr: "error saw peer i1 answer:1\n",
    });
    assertEquals(await request, INITIATE_LINE);
  });
});

/** An application that takes SIGALRM every millisecond without SA_RESTART while it waits. */
const EINTR_APP = `#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "punchd.h"
static volatile sig_atomic_t ticks;
static void tick(int sig) { (void)sig; ticks++; }
int main(int argc, char **argv) {
  static punchd_reply reply;
  struct sigaction sa;
  struct itimerval timer;
  char err[256];
  int ok;
  punchd *p = punchd_open(argv[1], (uid_t)atol(argv[2]), err, sizeof err);
  if (argc != 3 || p == NULL) { printf("open failed: %s\\n", err); return 1; }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = tick; /* no SA_RESTART: blocking calls fail with EINTR */
  sigaction(SIGALRM, &sa, NULL);
  memset(&timer, 0, sizeof timer);
  timer.it_interval.tv_usec = 1000;
  timer.it_value.tv_usec = 1000;
  setitimer(ITIMER_REAL, &timer, NULL);
  ok = punchd_status(p, "s1") == 0 && punchd_recv(p, &reply, 10000) == 0;
  memset(&timer, 0, sizeof timer);
  setitimer(ITIMER_REAL, &timer, NULL);
  if (!ok) { printf("failed: %s\\n", punchd_error(p)); punchd_close(p); return 1; }
  printf("%s %s %zu\\n", reply.kind == PUNCHD_STATUS ? "status" : "other", reply.id,
         strlen(reply.fields[0]));
  printf("%s\\n", ticks > 10 ? "interrupted" : "not interrupted");
  punchd_close(p);
  return 0;
}
`;

const EINTR = "the C client resumes waits and reads that a signal interrupts (EINTR)";
Deno.test(
  { name: EINTR, ignore: skipUnless(HAVE_CC, EINTR, `no C compiler (${CC})`) },
  async () => {
    const { dir, flags } = await build();
    await Deno.writeTextFile(`${dir}/eintr.c`, EINTR_APP);
    await run([
      CC,
      ...flags,
      "-I",
      SOURCES,
      "-o",
      `${dir}/eintr`,
      `${dir}/eintr.c`,
      `${dir}/punchd.o`,
    ]);
    await withFake(
      // A 16 KiB reply in 60 pieces over about 150 ms: many signals arrive while the client waits.
      (conn) => dribble(conn, lines(`status|s1|${json(16384)}`), 280),
      async (path) => {
        const out = await new Deno.Command(`${dir}/eintr`, {
          args: [path, `${Deno.uid()}`],
          env: SANITIZER_ENV,
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(
          [out.code, decoder.decode(out.stdout)],
          [0, "status s1 16384\ninterrupted\n"],
          decoder.decode(out.stderr),
        );
      },
    );
  },
);

const UID = "the C client refuses a listener of another uid than --daemon-uid and sends nothing";
Deno.test({ name: UID, ignore: skipUnless(HAVE_CC, UID, `no C compiler (${CC})`) }, async () => {
  await withFake(() => Promise.resolve(), async (path, request) => {
    const other = Deno.uid() === 0 ? 12345 : 0;
    const client = await runExample([
      "--socket",
      path,
      "--daemon-uid",
      `${other}`,
      "--timeout",
      "10000",
      ...INITIATE,
    ]);
    const out = await client.finish();
    assertEquals([out.code, out.stdout], [1, []]);
    assert(
      out.stderr.endsWith(`runs as uid ${Deno.uid()}, not ${other}: not punchd\n`),
      out.stderr,
    );
    assertEquals(await request, "");
  });
});
