/**
 * The daemon as a service: `status` counters, Prometheus metrics, sd_notify,
 * journald priorities, the configuration file.
 */

import { assert, assertEquals, assertMatch } from "../assert.ts";
import { Socket } from "../../ffi/socket.ts";
import { PunchdClient, PunchdError } from "../../src/client/client.ts";
import {
  freePort,
  punchDirect,
  spawnPunchd,
  startDaemon,
  waitForSocket,
} from "../helpers/daemon.ts";
import { answer, renderMetrics } from "../../src/daemon/metrics.ts";
import { AttemptCounters, failureClass, percentiles } from "../../src/control/status.ts";
import { formatJournalRecord, stderrIsJournal } from "../../src/log.ts";
import { notifyAddress } from "../../src/daemon/notify.ts";
import {
  effectiveCapabilities,
  hasCapability,
  techniqueAvailability,
} from "../../src/daemon/capabilities.ts";
import { TECHNIQUE_REGISTRY } from "../../src/techniques/registry.ts";
import { parseCommandLine, UsageError } from "../../src/daemon/config.ts";
import { assertThrows } from "../assert.ts";

const decoder = new TextDecoder();

/** One tcp-direct connection on loopback through `a` and `b`; closes both ends. */
async function punch(a: PunchdClient, b: PunchdClient, id: string): Promise<void> {
  const [sa, sb] = await punchDirect(a, b, id, id);
  sa.close();
  sb.close();
}

async function scrape(port: number, path = "/metrics"): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

Deno.test("status counts attempts, successes, failures by class and cancels, with time-to-connect percentiles", async () => {
  const metricsPort = freePort();
  await using daemon = await startDaemon([
    "--metrics",
    `127.0.0.1:${metricsPort}`,
    "--attempt-timeout",
    "2",
  ]);
  const a = await PunchdClient.connect(daemon.socketPath, { daemonUid: Deno.uid() ?? 0 });
  const b = await PunchdClient.connect(daemon.socketPath, { daemonUid: Deno.uid() ?? 0 });
  try {
    const before = await a.status();
    assertEquals(before.techniques["tcp-direct"]?.attempts, 0);
    assertEquals(before.clients, 2);
    assertEquals(before.pid, daemon.pid);
    assertEquals(before.available["tcp-direct"], true);
    for (let i = 0; i < 3; i++) await punch(a, b, `ok${i}`);
    // A refused connection: nobody listens on the peer's port, the peer's kernel answers RST.
    const refused = a.initiate({
      id: "refused",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.1",
      dstPorts: [freePort()],
    });
    await refused.socket.then(() => assert(false, "connected to nobody"), (e) => e);
    // A cancelled one.
    const cancelled = a.initiate({
      id: "cancelled",
      technique: "tcp-direct",
      srcIp: "127.0.0.1",
      srcPorts: [freePort()],
      dstIp: "127.0.0.2",
      dstPorts: [freePort()],
    });
    await cancelled.progress[Symbol.asyncIterator]().next();
    await cancelled.cancel();
    const error = await cancelled.socket.then(() => null, (e) => e);
    assert(error instanceof PunchdError);
    const after = await b.status();
    const direct = after.techniques["tcp-direct"];
    assert(direct !== undefined);
    // 3 connections on both sides, the refused and the cancelled attempt.
    assertEquals(direct.attempts, 8);
    assertEquals(direct.ok, 6);
    assertEquals(direct.cancelled, 1);
    const failed = Object.values(direct.failed).reduce((x, y) => x + y, 0);
    assertEquals(failed, 1, JSON.stringify(direct.failed));
    assert(direct.connectMs !== null && direct.connectMs.p50 <= direct.connectMs.max);
    assertEquals(after.attempts, 0);
    assert(after.uptimeSecs >= before.uptimeSecs);

    const { status, body } = await scrape(metricsPort);
    assertEquals(status, 200);
    assertMatch(body, /^punchd_attempts_total\{technique="tcp-direct"\} 8$/m);
    assertMatch(body, /^punchd_attempts_succeeded_total\{technique="tcp-direct"\} 6$/m);
    assertMatch(body, /^punchd_attempts_cancelled_total\{technique="tcp-direct"\} 1$/m);
    assertMatch(body, /^punchd_clients 2$/m);
    assertMatch(body, /^punchd_connect_seconds\{technique="tcp-direct",quantile="0.5"\} /m);
    assertEquals((await scrape(metricsPort, "/")).status, 404);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("metrics: the exposition is well formed and a bad request gets 400", () => {
  const counters = new AttemptCounters();
  counters.declare(["udp"]);
  counters.started("udp");
  counters.succeeded("udp", 12);
  counters.started("udp");
  counters.failed("udp", "timed out after 10000 ms");
  const text = renderMetrics({
    version: "1.2.3",
    pid: 1,
    uptimeSecs: 2,
    clients: 0,
    attempts: 0,
    guards: 3,
    techniques: counters.snapshot(),
    available: { udp: true, "tcp-syni": "needs CAP_NET_RAW" },
  });
  for (const line of text.trimEnd().split("\n")) {
    assertMatch(
      line,
      /^(# (HELP|TYPE) [a-z_]+ .+|[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+)$/,
    );
  }
  assertMatch(text, /^punchd_attempts_failed_total\{technique="udp",reason="timeout"\} 1$/m);
  assertMatch(text, /^punchd_technique_available\{technique="tcp-syni"\} 0$/m);
  assertMatch(text, /^punchd_connect_seconds\{technique="udp",quantile="0.99"\} 0.012$/m);
  assertMatch(
    decoder.decode(answer("POST /metrics HTTP/1.1\r\n\r\n", () => {
      throw new Error("not called");
    })),
    /^HTTP\/1.1 400 /,
  );
});

Deno.test("failure reasons fall into classes, percentiles use nearest rank", () => {
  assertEquals(failureClass("tcp-direct: timed out after 10000 ms"), "timeout");
  assertEquals(failureClass("connect: ECONNREFUSED (111)"), "refused");
  assertEquals(failureClass("connect: EHOSTUNREACH (113)"), "unreachable");
  assertEquals(failureClass("too many active attempts"), "resources");
  assertEquals(failureClass("the peer gave up"), "peer");
  assertEquals(failureClass("something odd"), "other");
  assertEquals(percentiles([5, 1, 4, 2, 3]), { p50: 3, p90: 5, p99: 5, max: 5 });
  assertEquals(percentiles([]), null);
});

/** A datagram socket bound where NOTIFY_SOCKET will point. */
function notifyListener(address: { path: string; abstract?: boolean }): Socket {
  const socket = Socket.create("unix", "datagram");
  socket.bind({ family: "unix", ...address });
  return socket;
}

async function nextNotification(socket: Socket): Promise<string> {
  const buf = new Uint8Array(1024);
  // read, not receiveFrom: an unbound sender has no address to decode.
  const length = await socket.read(buf, AbortSignal.timeout(20_000));
  return decoder.decode(buf.subarray(0, length));
}

for (const abstract of [false, true]) {
  Deno.test(`sd_notify: READY=1 once the socket serves, STOPPING=1 on SIGTERM (${abstract ? "abstract" : "path"} NOTIFY_SOCKET)`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "punchd-notify-" });
    const name = abstract ? `punchd-test-notify-${crypto.randomUUID()}` : `${dir}/notify`;
    using listener = notifyListener({ path: name, abstract });
    const socketPath = `${dir}/punchd.socket`;
    const { child, output } = spawnPunchd(["--socket", socketPath], [], {
      NOTIFY_SOCKET: abstract ? `@${name}` : name,
    });
    try {
      const ready = await nextNotification(listener);
      assertMatch(ready, /^READY=1$/m);
      assertMatch(ready, new RegExp(`^MAINPID=${child.pid}$`, "m"));
      // Ready means ready: a client connects at once.
      const client = await PunchdClient.connect(socketPath, { daemonUid: Deno.uid() ?? 0 });
      await client.close();
      child.kill("SIGTERM");
      assertEquals(await nextNotification(listener), "STOPPING=1");
      assertEquals((await child.status).code, 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await child.status;
      await output;
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("NOTIFY_SOCKET values: a path, @abstract, anything else ignored", () => {
  assertEquals(notifyAddress("/run/systemd/notify"), {
    family: "unix",
    path: "/run/systemd/notify",
  });
  assertEquals(notifyAddress("@x"), { family: "unix", path: "x", abstract: true });
  assertEquals(notifyAddress("relative"), null);
  assertEquals(notifyAddress(undefined), null);
});

Deno.test("journald: priority prefixes when stderr is the journal stream, the plain format otherwise", async () => {
  assertEquals(
    formatJournalRecord({ time: "t", level: "error", message: "boom", fields: { a: "b c" } }),
    '<3>boom a="b c"',
  );
  assert(stderrIsJournal("8:1234", () => "socket:[1234]"));
  assert(!stderrIsJournal("8:1234", () => "socket:[999]"));
  assert(!stderrIsJournal(undefined, () => "socket:[1234]"));
  assert(!stderrIsJournal("garbage", () => "socket:[1234]"));
  // The real thing: a daemon whose JOURNAL_STREAM names its stderr, and one whose does not.
  for (const matching of [true, false]) {
    const dir = await Deno.makeTempDir({ prefix: "punchd-journal-" });
    const inode = "$(stat -L -c %i /proc/self/fd/2)";
    const journal = matching ? `JOURNAL_STREAM=0:${inode}` : "JOURNAL_STREAM=0:1";
    const { child, output } = spawnPunchd(["--socket", `${dir}/s`, "--group", "0"], [
      "sh",
      "-c",
      `export ${journal}; exec "$@"`,
      "sh",
    ]);
    try {
      await waitForSocket(`${dir}/s`);
      child.kill("SIGTERM");
      await child.status;
      const text = await output;
      if (matching) {
        assertMatch(text, /^<6>punchd started /m);
        assert(!/^\d{4}-\d\d-\d\dT/m.test(text), text);
      } else {
        assertMatch(text, /^\d{4}-\d\d-\d\dT\S+ INFO {2}punchd started /m);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("capabilities: techniques that need the firewall need CAP_NET_ADMIN and CAP_NET_RAW", () => {
  assert(hasCapability(effectiveCapabilities("CapEff:\t0000000000003000\n"), 12));
  assert(!hasCapability(effectiveCapabilities("CapEff:\t0000000000001000\n"), 13));
  const none = techniqueAvailability(TECHNIQUE_REGISTRY, { firewallError: null, capabilities: 0n });
  assertEquals(none.get("tcp-syni"), "needs CAP_NET_ADMIN and CAP_NET_RAW");
  assertEquals(none.has("tcp-direct"), false);
  assertEquals(none.has("udp"), false);
  const admin = techniqueAvailability(TECHNIQUE_REGISTRY, {
    firewallError: null,
    capabilities: 1n << 12n,
  });
  assertEquals(admin.get("tcp-nutss"), "needs CAP_NET_RAW");
  const both = techniqueAvailability(TECHNIQUE_REGISTRY, {
    firewallError: "nft: not found",
    capabilities: 3n << 12n,
  });
  assertEquals(both.get("tcp-prime"), "punchd's nftables table: nft: not found");
});

Deno.test("config file: settings under flag names, the command line wins, a bad file is one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "punchd-config-" });
  try {
    const file = `${dir}/punchd.toml`;
    await Deno.writeTextFile(
      file,
      [
        "# punchd",
        'socket = "/tmp/x.socket"',
        "max-clients = 99",
        'stun = ["192.0.2.1:3478", "[2001:db8::1]:3478"]',
        "udp-birthday = true",
        'tcp-keepalive = "off"',
      ].join("\n"),
    );
    const run = (args: string[]) => {
      const invocation = parseCommandLine(args);
      assert(invocation.kind === "run");
      return invocation.config;
    };
    const fromFile = run(["--config", file]);
    assertEquals(fromFile.socketPath, "/tmp/x.socket");
    assertEquals(fromFile.maxClients, 99);
    assertEquals(fromFile.probes.length, 2);
    assertEquals(fromFile.udpBirthday, true);
    assertEquals(fromFile.tcpKeepalive, undefined);
    const overridden = run(["--config", file, "--max-clients", "7", "--stun", "192.0.2.9:3478"]);
    assertEquals(overridden.maxClients, 7);
    assertEquals(overridden.probes.map((p) => p.address), [
      "192.0.2.9",
    ]);
    for (
      const [content, pattern] of [
        ["nonsense = 1", /punchd\.toml: unknown setting "nonsense"/],
        ["max-clients = 0", /punchd\.toml: max-clients: /],
        ["udp-birthday = 1", /udp-birthday: expected true or false/],
        ["socket = [", /punchd\.toml:\d+: /],
        ["[table]\nx = 1", /unknown setting "table"/],
      ] as const
    ) {
      await Deno.writeTextFile(file, content);
      let error: Error | undefined;
      try {
        parseCommandLine(["--config", file]);
      } catch (e) {
        error = e as Error;
      }
      assert(error instanceof UsageError, content);
      assertMatch(error.message, pattern);
      assert(!error.message.includes("\n"), error.message);
    }
    assertThrows(() => parseCommandLine(["--config", `${dir}/missing.toml`]), UsageError);
    // The daemon: exit code 2, one line on stderr.
    await Deno.writeTextFile(file, "max-clients = -5");
    const { child, output } = spawnPunchd(["--config", file, "--socket", `${dir}/s`]);
    assertEquals((await child.status).code, 2);
    const text = (await output).trim();
    assertEquals(text.split("\n").length, 1, text);
    assertMatch(text, /punchd\.toml: max-clients/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
