/**
 * Attacks on the daemon by a member of its group, a user outside it and a
 * second daemon, each written as the attack (see README, "Attacks").
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../assert.ts";
import { PunchdClient } from "../../src/client/client.ts";
import { instanceLockPath } from "../../src/daemon/daemon.ts";
import { Socket } from "../../ffi/socket.ts";
import { freePort, rawConnect, readLines, spawnPunchd, startDaemon } from "../helpers/daemon.ts";
import {
  canRunMembers,
  finishMember,
  lineReader,
  MEMBER_UID,
  memberRequest,
  OTHER_MEMBER_UID,
  PYTHON,
  spawnImpostor,
  spawnMember,
  startMemberDaemon,
} from "../helpers/member.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";
import { processAlive } from "../lab/lab.ts";
import { guardCount, VOID_LOCAL, VOID_PEER, withVoidNamespace } from "../helpers/void_ns.ts";

/** A reply line with tcp-direct's random token replaced by "TOKEN". */
const untoken = (line: string) => line.replace(/\|direct2:[0-9a-f]{32}$/, "|direct2:TOKEN");

const MEMBERS = skipUnless(
  canRunMembers(),
  "attacks by a group member",
  "needs root, setpriv and python3",
);

Deno.test({
  name: "a member holding its share of connections and flooding connect-and-close neither " +
    "stops the daemon nor locks out other users",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon([
    "--max-clients",
    "8",
    "--max-clients-per-user",
    "4",
  ]);
  const member = spawnMember(MEMBER_UID, [daemon.socketPath, "crowd", "6", "300"]);
  const next = lineReader(member);
  try {
    // Only 4 of its 6 connections are served; the others are refused at once.
    assertEquals(await next(), "held 4");
    assertEquals(await next(), "flooded");
    assertEquals(await next(), "extra error|-|too many clients for this user");
    // Root, and another member, are still served while the member holds its four.
    const root = await rawConnect(daemon.socketPath);
    try {
      await root.write(new TextEncoder().encode("cancel|nope\n"));
      assertEquals(await readLines(root, 1), ["error|nope|no active attempt with this ID"]);
    } finally {
      root.close();
    }
    assertEquals(await memberRequest(daemon.socketPath, ["cancel|x"], OTHER_MEMBER_UID), [
      "error|x|no active attempt with this ID",
    ]);
    assert(processAlive(daemon.pid), "the daemon died");
  } finally {
    await finishMember(member);
  }
  assertEquals(await daemon.stop(), 0);
  assert(!daemon.logs().includes("unhandled"), daemon.logs());
});

Deno.test({
  name: "connect-and-close at the global cap: the refusal's EPIPE is not a crash",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon(["--max-clients", "2"]);
  const held = [await rawConnect(daemon.socketPath), await rawConnect(daemon.socketPath)];
  try {
    for (let round = 0; round < 3; round++) {
      const member = spawnMember(MEMBER_UID, [daemon.socketPath, "crowd", "0", "300"]);
      const next = lineReader(member);
      assertEquals(await next(), "held 0");
      assertEquals(await next(), "flooded");
      assertEquals(await next(), "extra error|-|too many clients");
      await finishMember(member);
    }
    assert(processAlive(daemon.pid), "the daemon died");
    held.pop()?.close();
    // A slot freed: the next client is served.
    await new Promise((r) => setTimeout(r, 100));
    assertEquals(await memberRequest(daemon.socketPath, ["cancel|y"]), [
      "error|y|no active attempt with this ID",
    ]);
  } finally {
    for (const s of held) s.close();
  }
});

Deno.test({
  name: "a member cannot have punchd bind a privileged port, in an attempt or an endpoint check",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon();
  const dst = freePort();
  const replies = await memberRequest(daemon.socketPath, [
    `initiate|p1|tcp-direct|127.0.0.1|22|127.0.0.1|${dst}`,
    "endpoint|p2|udp|127.0.0.1|53",
  ]);
  assertEquals(replies, [
    "error|p1|SRC_PORT 22 is privileged (below 1024): only root may use it",
    "error|p2|SRC_PORT 53 is privileged (below 1024): only root may use it",
  ]);
  // Root may (it could bind the port itself).
  const root = await PunchdClient.connect(daemon.socketPath);
  try {
    const attempt = root.initiate({
      id: "r1",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [1000 + (Deno.pid % 20)],
      dstIp: "127.0.0.1",
      dstPorts: [dst],
    });
    const first = await attempt.progress[Symbol.asyncIterator]().next();
    assertMatch(first.value ?? "", /^direct2:[0-9a-f]{32}$/);
    await attempt.cancel();
    await assertRejects(() => attempt.socket, /cancelled: by client/);
  } finally {
    await root.close();
  }
});

Deno.test({
  name: "a member cannot join a root service's SO_REUSEPORT group through an attempt",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon();
  // A root service listening with SO_REUSEPORT, as the victim did.
  const service = Socket.create("inet", "stream", { reuseAddress: true, reusePort: true });
  try {
    service.bind({ family: "inet", address: "127.0.0.1", port: 0 });
    service.listen(8);
    const local = service.localAddress();
    const port = local.family === "unix" ? 0 : local.port;
    const replies = await memberRequest(daemon.socketPath, [
      `initiate|s1|tcp-direct|127.0.0.1|${port}|127.0.0.1|${freePort()}`,
      `initiate|s2|tcp-nutss|0.0.0.0|${port}|127.0.0.1|${freePort()}`,
    ]);
    assertEquals(replies, [
      `error|s1|SRC_PORT ${port} is in use by another tcp socket`,
      `error|s2|SRC_PORT ${port} is in use by another tcp socket`,
    ]);
  } finally {
    service.close();
  }
});

Deno.test({
  name: "a second member cannot take the port of the first member's running attempt",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon(["--attempt-timeout", "5"]);
  const port = freePort();
  const dst = freePort();
  const first = spawnMember(MEMBER_UID, [
    daemon.socketPath,
    "request",
    `initiate|m1|tcp-direct|127.0.0.1|${port}|127.0.0.1|${dst}`,
  ]);
  const next = lineReader(first);
  try {
    assertEquals(untoken(await next()), "progress|m1|direct2:TOKEN");
    for (const uid of [OTHER_MEMBER_UID, MEMBER_UID]) {
      assertEquals(
        await memberRequest(daemon.socketPath, [
          `initiate|m2|tcp-direct|127.0.0.1|${port}|127.0.0.1|${dst}`,
        ], uid),
        [`error|m2|SRC_PORT ${port} is in use by another attempt`],
      );
    }
  } finally {
    await finishMember(first);
  }
});

Deno.test({
  name: "--deny-ports and --allow-ports bind members, not root",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon([
    "--allow-ports",
    "20000-40000",
    "--deny-ports",
    "30000-30010",
  ]);
  assertEquals(
    await memberRequest(daemon.socketPath, [
      `endpoint|a|tcp|127.0.0.1|30005`,
      `endpoint|b|tcp|127.0.0.1|45000`,
    ]),
    [
      "error|a|SRC_PORT 30005 is not allowed by punchd's configuration",
      "error|b|SRC_PORT 45000 is not allowed by punchd's configuration",
    ],
  );
  const root = await PunchdClient.connect(daemon.socketPath);
  try {
    const endpoint = await root.endpoint("c", "tcp", "127.0.0.1", [30005]);
    assertEquals(endpoint.ports, [30005]);
  } finally {
    await root.close();
  }
});

Deno.test({
  name: "the clients refuse a socket whose listener is not root: an impostor gets no request",
  ignore: MEMBERS,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-impostor-" });
  await Deno.chmod(dir, 0o777);
  const path = `${dir}/punchd.socket`;
  // The impostor: a user outside the group listening where clients look.
  const { child: impostor, next } = spawnImpostor(path);
  try {
    assertEquals(await next(), "up");
    await assertRejects(
      () => PunchdClient.connect(path),
      /Cannot connect to punchd at .*: the process listening there \(pid \d+\) runs as uid 65534, not 0: not punchd/,
    );
    const python = await new Deno.Command("python3", {
      args: [
        new URL("../../src/examples/punchd_client.py", import.meta.url).pathname,
        "--socket",
        path,
        "initiate",
        "i1",
        "tcp-direct",
        "127.0.0.1",
        "40000",
        "127.0.0.1",
        "40001",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(python.code, 1);
    assertMatch(new TextDecoder().decode(python.stderr), /runs as uid 65534, not 0: not punchd/);
    // What reached the impostor: nothing but the connection (the clients close without writing).
    assertEquals(await next(), "b''");
  } finally {
    await finishMember(impostor);
    await Deno.remove(dir, { recursive: true });
  }
});

const ROOT = skipUnless(isRoot(), "socket directory checks", "needs root (chown)");

Deno.test({
  name: "punchd refuses a socket directory that others can write to, or a symlinked one",
  ignore: ROOT,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-squat-" });
  try {
    await Deno.mkdir(`${dir}/open`, { mode: 0o777 });
    await Deno.chmod(`${dir}/open`, 0o777);
    await Deno.mkdir(`${dir}/private`, { mode: 0o700 });
    await Deno.symlink(`${dir}/private`, `${dir}/link`);
    await Deno.mkdir(`${dir}/theirs`, { mode: 0o700 });
    await Deno.chown(`${dir}/theirs`, 65534, 65534);
    const cases: [string, RegExp][] = [
      ["open", /open is writable by others than its owner/],
      ["link", /link is not a directory \(symlinks are not followed\)/],
      ["theirs", /theirs is owned by uid 65534, not root/],
    ];
    for (const [sub, message] of cases) {
      const { child, output } = spawnPunchd(["--socket", `${dir}/${sub}/punchd.socket`]);
      assertEquals((await child.status).code, 1, sub);
      assertMatch(await output, message);
    }
    assertEquals([...Deno.readDirSync(`${dir}/open`)], [], "nothing was created");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a missing socket directory is created 0750 root:GROUP and the socket is 0660",
  ignore: ROOT,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-rundir-" });
  try {
    await using daemon = await startDaemon(["--group", "65534"], `${dir}/run/punchd.socket`);
    const run = await Deno.lstat(`${dir}/run`);
    assertEquals((run.mode ?? 0) & 0o7777, 0o750);
    assertEquals([run.uid, run.gid], [0, 65534]);
    const socket = await Deno.lstat(daemon.socketPath);
    assertEquals((socket.mode ?? 0) & 0o777, 0o660);
    assertEquals([socket.uid, socket.gid], [0, 65534]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a second punchd in the same network namespace refuses to start and leaves the first alone",
  ignore: ROOT,
}, async () => {
  await using first = await startDaemon();
  const dir = await Deno.makeTempDir({ prefix: "punchd-second-" });
  try {
    const { child, output } = spawnPunchd(["--socket", `${dir}/punchd.socket`]);
    assertEquals((await child.status).code, 1);
    assertMatch(await output, /another punchd runs in this network namespace/);
    const table = await new Deno.Command("nft", { args: ["list", "table", "inet", "punchd"] })
      .output();
    assert(table.success, "the first daemon's table is gone");
    const client = await PunchdClient.connect(first.socketPath);
    await client.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a request followed by a half-close still gets its reply", async () => {
  await using daemon = await startDaemon();
  const socket = await rawConnect(daemon.socketPath);
  try {
    const dst = freePort();
    await socket.write(
      new TextEncoder().encode(
        `initiate|h1|tcp-direct|127.0.0.1|${freePort()}|127.0.0.1|${dst}\ncancel|nope\n`,
      ),
    );
    socket.closeWrite();
    // The two replies come from different places (worker, daemon): any order.
    assertEquals((await readLines(socket, 2)).map(untoken).sort(), [
      "error|nope|no active attempt with this ID",
      "progress|h1|direct2:TOKEN",
    ]);
  } finally {
    socket.close();
  }
});

Deno.test("a 500-byte request ended by CRLF is a 500-byte request", async () => {
  await using daemon = await startDaemon();
  const socket = await rawConnect(daemon.socketPath);
  try {
    const line = `peer|p1|${"d".repeat(492)}`;
    assertEquals(line.length, 500);
    await socket.write(new TextEncoder().encode(`${line}\r\n${line}d\r\n`));
    assertEquals(await readLines(socket, 2), [
      "error|p1|no active attempt with this ID",
      "error|-|message longer than 500 bytes",
    ]);
  } finally {
    socket.close();
  }
});

Deno.test({
  name: "the guards of a daemon killed with SIGKILL expire by themselves",
  ignore: ROOT,
}, async () => {
  await withVoidNamespace("kill", async (ns) => {
    let guards = 0;
    const daemon = await startDaemon(["--attempt-timeout", "1"], undefined, [
      "ip",
      "netns",
      "exec",
      ns,
    ]);
    const client = await PunchdClient.connect(daemon.socketPath);
    try {
      const attempt = client.initiate({
        id: "k1",
        technique: "tcp-nutss",
        srcIp: VOID_LOCAL,
        srcPorts: [21000],
        dstIp: VOID_PEER,
        dstPorts: [41000],
      });
      const ended = attempt.socket.catch(() => {});
      await attempt.progress[Symbol.asyncIterator]().next();
      guards = await guardCount(ns);
      Deno.kill(daemon.pid, "SIGKILL");
      await ended;
    } finally {
      await client.close().catch(() => {});
      await daemon.stop();
    }
    // Nobody removes them now: their timeout does (attempt 1 s + grace 2 s + 1 s).
    assert(guards > 0, "the attempt had no guard");
    assertEquals(await guardCount(ns), guards);
    let left = guards;
    for (let i = 0; i < 60 && left > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = await guardCount(ns);
    }
    assertEquals(left, 0, "the dead daemon's guards are still there after 6 s");
    // The killed daemon's (unlocked) instance lock file stays; this namespace is going away.
    const link = await new Deno.Command("ip", {
      args: ["netns", "exec", ns, "readlink", "/proc/self/ns/net"],
    }).output();
    const inode = new TextDecoder().decode(link.stdout).match(/\[(\d+)\]/)?.[1];
    await Deno.remove(`/run/punchd-net-${inode}.lock`);
  });
});

Deno.test({
  name: "one member's attempts are capped across its connections, root's are not",
  ignore: MEMBERS,
}, async () => {
  await using daemon = await startMemberDaemon(["--max-attempts-per-user", "2"]);
  const line = (id: string) =>
    `initiate|${id}|tcp-direct|127.0.0.1|${freePort()}|127.0.0.1|${freePort()}`;
  const first = spawnMember(MEMBER_UID, [daemon.socketPath, "request", line("u1"), line("u2")]);
  const next = lineReader(first);
  try {
    assertEquals([untoken(await next()), untoken(await next())], [
      "progress|u1|direct2:TOKEN",
      "progress|u2|direct2:TOKEN",
    ]);
    // Another connection of the same user: over its share.
    assertEquals(await memberRequest(daemon.socketPath, [line("u3")]), [
      "error|u3|too many active attempts for this user (at most 2)",
    ]);
    // Another user, and root, still start theirs.
    assertEquals(
      (await memberRequest(daemon.socketPath, [line("o1")], OTHER_MEMBER_UID)).map(untoken),
      [
        "progress|o1|direct2:TOKEN",
      ],
    );
  } finally {
    await finishMember(first);
  }
  // Its attempts ended with its connection: the share is free again.
  await new Promise((r) => setTimeout(r, 200));
  assertEquals((await memberRequest(daemon.socketPath, [line("u4")])).map(untoken), [
    "progress|u4|direct2:TOKEN",
  ]);
});

Deno.test({
  name: "no user can take the instance lock before punchd does",
  ignore: MEMBERS,
}, async () => {
  // The lock lives in /run, where only root creates files: a user who could lock it first would
  // keep punchd from starting in this network namespace.
  const path = instanceLockPath();
  const out = await new Deno.Command("setpriv", {
    args: [
      `--reuid=${MEMBER_UID}`,
      `--regid=${MEMBER_UID}`,
      "--clear-groups",
      PYTHON,
      "-c",
      "import fcntl,sys\ntry:\n f=open(sys.argv[1],'a')\n fcntl.flock(f,fcntl.LOCK_EX|fcntl.LOCK_NB)\n" +
      " print('locked')\nexcept OSError as e:\n print(type(e).__name__)",
      path,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(new TextDecoder().decode(out.stdout).trim(), "PermissionError");
  await using daemon = await startDaemon();
  assert(processAlive(daemon.pid));
});
