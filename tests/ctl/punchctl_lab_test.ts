/**
 * punchctl end to end: `listen` and `connect` on two lab hosts behind NATs
 * punch through a rendezvous server and two punchd daemons and carry data
 * both ways through their stdin/stdout; the Node example does the same
 * through punchctl; `status --json` and `report --json` against the lab's
 * daemons.
 *
 * @module
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { Lab } from "../lab/lab.ts";
import { startServices } from "../lab/services.ts";
import { hasCommand, isRoot, skipUnless } from "../helpers/skip.ts";
import { VERSION } from "../../src/daemon/config.ts";
import type { DaemonStatus, NatReport } from "../../src/control/status.ts";

const CTL_MAIN = new URL("../../src/ctl/main.ts", import.meta.url).pathname;
const NODE_EXAMPLE = new URL("../../src/examples/node_punchctl.mjs", import.meta.url).pathname;
const PUNCHCTL = [Deno.execPath(), "run", "--allow-ffi", "--allow-read", CTL_MAIN];
const encoder = new TextEncoder();

/** A process in a lab namespace with stdout and stderr collected apart. */
interface Running {
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stdout(): string;
  stderr(): string;
  /** The exit code; SIGKILLed (and reported as such) after `ms`. */
  exit(ms: number): Promise<number>;
  kill(): Promise<void>;
}

function start(lab: Lab, ns: string, command: string[]): Running {
  const child = lab.spawn(ns, command, { stdin: "piped" });
  const text = { stdout: "", stderr: "" };
  const drain = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
    const d = new TextDecoder();
    for await (const chunk of stream) text[key] += d.decode(chunk, { stream: true });
  };
  const drained = Promise.all([drain(child.stdout, "stdout"), drain(child.stderr, "stderr")]);
  let killed = false;
  const kill = async () => {
    try {
      child.kill("SIGKILL");
      killed = true;
    } catch {
      // Already exited.
    }
    await child.status;
    await drained;
  };
  return {
    stdin: child.stdin.getWriter(),
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    exit: async (ms) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((r) => timer = setTimeout(r, ms));
      const status = await Promise.race([child.status, late.then(() => null)]);
      clearTimeout(timer);
      if (status === null) {
        await kill();
        throw new Error(
          `${command.join(" ")} did not exit within ${ms} ms${killed ? " (killed)" : ""}\n` +
            `stderr:\n${text.stderr}`,
        );
      }
      await drained;
      return status.code;
    },
    kill,
  };
}

async function waitFor(run: Running, pattern: RegExp, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(run.stderr())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out waiting for ${pattern}; stderr so far:\n${run.stderr()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs punchctl in `ns` to its end with stdin closed; returns its exit code and stdout. */
async function punchctl(
  lab: Lab,
  ns: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const run = start(lab, ns, [...PUNCHCTL, ...args]);
  await run.stdin.close();
  const code = await run.exit(90_000);
  return { code, stdout: run.stdout(), stderr: run.stderr() };
}

const LAB_TEST =
  "punchctl listen and connect behind two NATs carry data both ways through stdin/stdout and exit 0";
Deno.test({
  name: LAB_TEST,
  ignore: skipUnless(isRoot(), LAB_TEST, "network namespaces and nftables need root"),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  await using services = await startServices(lab);
  const common = ["--rendezvous", services.rendezvousAddress, "--timeout", "30"];
  const bob = start(lab, lab.hostB.ns, [
    ...PUNCHCTL,
    "listen",
    "--socket",
    services.b.socketPath,
    ...common,
    "--id",
    "bob",
  ]);
  let alice: Running | undefined;
  try {
    // Bob's input ends before any connection: his half-close reaches alice first, and alice
    // must still send all of hers (a one-way transfer stays whole).
    await bob.stdin.write(encoder.encode("hello from bob\n"));
    await bob.stdin.close();
    await waitFor(bob, /waiting for a peer/);
    // Alice gives no --local-ip and --port: punchctl finds the route's address and a free port.
    alice = start(lab, lab.hostA.ns, [
      ...PUNCHCTL,
      "connect",
      "--socket",
      services.a.socketPath,
      ...common,
      "--id",
      "alice",
      "bob",
    ]);
    await waitFor(alice, /connected to bob/);
    const lines = Array.from(
      { length: 5000 },
      (_, i) => `line ${i} from alice ${"x".repeat(40)}\n`,
    ).join("");
    await alice.stdin.write(encoder.encode(lines));
    await alice.stdin.close();
    const [codeA, codeB] = await Promise.all([alice.exit(60_000), bob.exit(60_000)]);
    assertEquals([codeA, codeB], [0, 0], `alice:\n${alice.stderr()}\nbob:\n${bob.stderr()}`);
    assertEquals(alice.stdout(), "hello from bob\n");
    assertEquals(bob.stdout().length, lines.length);
    assert(bob.stdout() === lines, "bob received alice's lines intact");
    assertMatch(
      alice.stderr(),
      /^punchctl: registered as alice, published 172\.16\.1\.2 \d+ \(preserved\)$/m,
    );
    assertMatch(
      alice.stderr(),
      /^punchctl: connected to bob with tcp-nutss in \d+ ms: local 10\.0\.1\.2:\d+, remote 172\.16\.2\.2:\d+$/m,
    );
    assertMatch(bob.stderr(), /^punchctl: connected to alice with tcp-nutss in \d+ ms/m);
    // The daemons counted it: punchctl status --json against host A's punchd.
    const status = await punchctl(lab, lab.hostA.ns, [
      "status",
      "--json",
      "--socket",
      services.a.socketPath,
    ]);
    assertEquals(status.code, 0, status.stderr);
    const parsed = JSON.parse(status.stdout) as DaemonStatus;
    assertEquals(parsed.version, VERSION);
    assertEquals(parsed.pid, services.a.pid);
    assertEquals([parsed.techniques.auto?.attempts, parsed.techniques.auto?.ok], [1, 1]);
    assertEquals(status.stdout.trimEnd().includes("\n"), false, "one line of JSON");
  } finally {
    await alice?.kill();
    await bob.kill();
  }
});

const UDP_TEST =
  "punchctl listen and connect with --technique udp carry datagrams both ways and exit 0 when stdin ends";
Deno.test({
  name: UDP_TEST,
  ignore: skipUnless(isRoot(), UDP_TEST, "network namespaces and nftables need root"),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  await using services = await startServices(lab);
  const common = ["--rendezvous", services.rendezvousAddress, "--technique", "udp"];
  const bob = start(lab, lab.hostB.ns, [
    ...PUNCHCTL,
    "listen",
    "--socket",
    services.b.socketPath,
    ...common,
    "--id",
    "bob",
  ]);
  let alice: Running | undefined;
  try {
    await waitFor(bob, /waiting for a peer/);
    alice = start(lab, lab.hostA.ns, [
      ...PUNCHCTL,
      "connect",
      "--socket",
      services.a.socketPath,
      ...common,
      "--id",
      "alice",
      "bob",
    ]);
    await Promise.all([waitFor(alice, /connected to bob with udp/), waitFor(bob, /connected/)]);
    // A datagram may be lost: send each side's once per 200 ms until the other printed it.
    const a = alice;
    for (let i = 0; i < 50 && !(a.stdout() !== "" && bob.stdout() !== ""); i++) {
      if (bob.stdout() === "") await a.stdin.write(encoder.encode("datagram from alice"));
      if (a.stdout() === "") await bob.stdin.write(encoder.encode("datagram from bob"));
      await new Promise((r) => setTimeout(r, 200));
    }
    await Promise.all([a.stdin.close(), bob.stdin.close()]);
    const codes = await Promise.all([a.exit(30_000), bob.exit(30_000)]);
    assertEquals(codes, [0, 0], `alice:\n${a.stderr()}\nbob:\n${bob.stderr()}`);
    assertMatch(a.stdout(), /^(datagram from bob)+$/);
    assertMatch(bob.stdout(), /^(datagram from alice)+$/);
  } finally {
    await alice?.kill();
    await bob.kill();
  }
});

/** Complete lines of `text` from character `from` on, and where the next unread line starts. */
function newLines(text: string, from: number): [string[], number] {
  const end = text.lastIndexOf("\n") + 1;
  if (end <= from) return [[], from];
  return [text.slice(from, end).split("\n").slice(0, -1), end];
}

const BY_HAND_TEST =
  "punchctl initiate and respond by hand punch tcp-syni when each one's stdout feeds the other's stdin";
Deno.test({
  name: BY_HAND_TEST,
  ignore: skipUnless(isRoot(), BY_HAND_TEST, "network namespaces and nftables need root"),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  await using services = await startServices(lab);
  const attempt = ["--technique", "tcp-syni", "--timeout", "30"];
  const a = start(lab, lab.hostA.ns, [
    ...PUNCHCTL,
    "initiate",
    "--socket",
    services.a.socketPath,
    "--src",
    "10.0.1.2:4000",
    "--dst",
    "172.16.2.2:5000",
    ...attempt,
  ]);
  let b: Running | undefined;
  try {
    for (let i = 0; i < 400 && !/^progress \S/m.test(a.stdout()); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const first = /^progress (\S.*)$/m.exec(a.stdout());
    assert(first !== null, `no progress from initiate:\n${a.stdout()}\n${a.stderr()}`);
    b = start(lab, lab.hostB.ns, [
      ...PUNCHCTL,
      "respond",
      "--socket",
      services.b.socketPath,
      "--src",
      "10.0.2.2:5000",
      "--dst",
      "172.16.1.2:4000",
      "--extra",
      first[1] ?? "",
      ...attempt,
    ]);
    const responder = b;
    // Each side's later lines go to the other's stdin, as a person would paste them.
    let fromA = a.stdout().indexOf("\n", first.index) + 1;
    let fromB = 0;
    let finished = false;
    const codes = Promise.all([a.exit(60_000), responder.exit(60_000)]).finally(() =>
      finished = true
    );
    while (!finished) {
      const [linesA, nextA] = newLines(a.stdout(), fromA);
      const [linesB, nextB] = newLines(responder.stdout(), fromB);
      [fromA, fromB] = [nextA, nextB];
      for (const line of linesA) {
        await responder.stdin.write(encoder.encode(line + "\n")).catch(() => {});
      }
      for (const line of linesB) await a.stdin.write(encoder.encode(line + "\n")).catch(() => {});
      await new Promise((r) => setTimeout(r, 20));
    }
    assertEquals(
      await codes,
      [0, 0],
      `A:\n${a.stdout()}${a.stderr()}\nB:\n${responder.stdout()}${responder.stderr()}`,
    );
    assertMatch(
      a.stdout(),
      /^connected with tcp-syni in \d+ ms: local 10\.0\.1\.2:4000, remote 172\.16\.2\.2:5000$/m,
    );
    assertMatch(
      responder.stdout(),
      /^connected with tcp-syni in \d+ ms: local 10\.0\.2\.2:5000, remote 172\.16\.1\.2:4000$/m,
    );
    // tcp-syni needs a round back: the responder's progress reached the initiator through stdin.
    assertMatch(a.stdout(), /^peer \S/m);
    // What one side sent shows on the other as the peer's data.
    for (const [sender, receiver] of [[a, responder], [responder, a]] as const) {
      const sent = [...sender.stdout().matchAll(/^progress (\S.*)$/gm)].map((m) => m[1]);
      const got = [...receiver.stdout().matchAll(/^peer (\S.*)$/gm)].map((m) => m[1]);
      assertEquals(got, sender === a ? sent.slice(1) : sent);
    }
    // Not a terminal: no status line on stderr.
    assertEquals([a.stderr(), responder.stderr()], ["", ""]);
  } finally {
    await b?.kill();
    await a.kill();
  }
});

const STATUS_TEXT_TEST =
  "punchctl status prints the daemon's status for people, and report --json the lab NAT's behaviour";
Deno.test({
  name: STATUS_TEXT_TEST,
  ignore: skipUnless(isRoot(), STATUS_TEXT_TEST, "network namespaces and nftables need root"),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "symmetric" });
  await using services = await startServices(lab);
  const text = await punchctl(lab, lab.hostA.ns, ["status", "--socket", services.a.socketPath]);
  assertEquals(text.code, 0, text.stderr);
  assertMatch(
    text.stdout,
    new RegExp(`^punchd ${VERSION.replaceAll(".", "\\.")}, pid ${services.a.pid}, up `),
  );
  assertMatch(text.stdout, /^technique\s+attempts\s+ok\s+failed/m);
  assertMatch(text.stdout, /^tcp-direct\s+0\s+0\s+0\s+0\s+-\s+-\s+-\s+-$/m);
  for (
    const [host, socket, mapping] of [
      [lab.hostA, services.a.socketPath, "preserving"],
      [lab.hostB, services.b.socketPath, "random"],
    ] as const
  ) {
    const report = await punchctl(lab, host.ns, ["report", "--json", "--socket", socket]);
    assertEquals(report.code, 0, report.stderr);
    const parsed = JSON.parse(report.stdout) as NatReport;
    assertEquals(parsed.ipv4.public, host === lab.hostA ? "172.16.1.2" : "172.16.2.2");
    assertEquals(parsed.ipv4.mapping, mapping, report.stdout);
  }
});

const SSH_TEST =
  "ssh reaches its peer through punchctl connect as ProxyCommand (%h is the peer ID)";
const hasSsh = hasCommand("ssh", ["-V"]);
Deno.test({
  name: SSH_TEST,
  ignore: skipUnless(
    isRoot() && hasSsh,
    SSH_TEST,
    isRoot() ? "ssh is not installed" : "network namespaces and nftables need root",
  ),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  await using services = await startServices(lab);
  // bob stands in for sshd: it sends an SSH identification line and reads the client's.
  const bob = start(lab, lab.hostB.ns, [
    ...PUNCHCTL,
    "listen",
    "--socket",
    services.b.socketPath,
    "--rendezvous",
    services.rendezvousAddress,
    "--id",
    "bob",
  ]);
  let ssh: Running | undefined;
  try {
    await bob.stdin.write(encoder.encode("SSH-2.0-punchd_lab_test\r\n"));
    await waitFor(bob, /waiting for a peer/);
    const proxy = [
      ...PUNCHCTL,
      "connect",
      "--socket",
      services.a.socketPath,
      "--rendezvous",
      services.rendezvousAddress,
      "--id",
      "alice",
      "%h",
    ].join(" ");
    ssh = start(lab, lab.hostA.ns, [
      "ssh",
      "-F",
      "/dev/null",
      "-v",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      `ProxyCommand=${proxy}`,
      "bob",
      "true",
    ]);
    await ssh.stdin.close();
    for (let i = 0; i < 600 && !/^SSH-2\.0-/.test(bob.stdout()); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    // Each side got the other's identification through the punched connection.
    assertMatch(bob.stdout(), /^SSH-2\.0-OpenSSH/, `ssh:\n${ssh.stderr()}\nbob:\n${bob.stderr()}`);
    await bob.stdin.close();
    await ssh.exit(30_000);
    assertMatch(ssh.stderr(), /remote software version punchd_lab_test/);
    assertMatch(ssh.stderr(), /punchctl: connected to bob with tcp-nutss/);
  } finally {
    await ssh?.kill();
    await bob.kill();
  }
});

const NODE_TEST =
  "the Node example talks to a punchctl listen peer through punchctl connect as a child process";
const hasNode = hasCommand("node");
Deno.test({
  name: NODE_TEST,
  ignore: skipUnless(
    isRoot() && hasNode,
    NODE_TEST,
    isRoot() ? "node is not installed" : "network namespaces and nftables need root",
  ),
}, async () => {
  await using lab = await Lab.create({ natA: "preserving", natB: "preserving" });
  await using services = await startServices(lab);
  const bob = start(lab, lab.hostB.ns, [
    ...PUNCHCTL,
    "listen",
    "--socket",
    services.b.socketPath,
    "--rendezvous",
    services.rendezvousAddress,
    "--id",
    "bob",
  ]);
  let node: Running | undefined;
  try {
    await bob.stdin.write(encoder.encode("hello from punchctl"));
    await bob.stdin.close();
    await waitFor(bob, /waiting for a peer/);
    node = start(lab, lab.hostA.ns, [
      "env",
      `PUNCHCTL=${PUNCHCTL.join(" ")}`,
      "node",
      NODE_EXAMPLE,
      "--message",
      "hello from node",
      "connect",
      "--socket",
      services.a.socketPath,
      "--rendezvous",
      services.rendezvousAddress,
      "--id",
      "alice",
      "bob",
    ]);
    await node.stdin.close();
    const [codeNode, codeBob] = await Promise.all([node.exit(60_000), bob.exit(60_000)]);
    assertEquals([codeNode, codeBob], [0, 0], `node:\n${node.stderr()}\nbob:\n${bob.stderr()}`);
    assertEquals(node.stdout(), "hello from punchctl\n");
    assertEquals(bob.stdout(), "hello from node");
    assertMatch(node.stderr(), /punchctl: connected to bob with tcp-nutss/);
    assertMatch(node.stderr(), /node_punchctl: punchctl exited with 0, received 19 characters/);
  } finally {
    await node?.kill();
    await bob.kill();
  }
});
