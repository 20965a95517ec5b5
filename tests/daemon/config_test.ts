import { assertEquals, assertThrows } from "../assert.ts";
import { parseCommandLine, UsageError } from "../../src/daemon/config.ts";

Deno.test("no flags run with the documented defaults", () => {
  assertEquals(parseCommandLine([]), {
    kind: "run",
    config: {
      socketPath: "/run/punchd/punchd.socket",
      logLevel: "info",
      attemptTimeoutMs: 10_000,
      maxClients: 1024,
      maxClientsPerUser: 64,
      maxAttemptsPerClient: 256,
      maxAttemptsPerUser: 512,
      startRate: 200,
      maxGuards: 16384,
      maxGuardsPerUser: 4096,
      workerIdleMs: 30_000,
      probes: [],
      tcpKeepalive: { idleSecs: 60, intervalSecs: 10, count: 6 },
      udpBirthday: false,
    },
  });
});

Deno.test("--nutss-ttl auto (the default) leaves the TTL to hop discovery", () => {
  const run = parseCommandLine(["--nutss-ttl", "auto"]);
  assertEquals(run.kind === "run" && "lowTtl" in run.config, false);
});

/** A file holding `text`, removed when the process exits (tests only read it). */
function secretFile(text: string): string {
  const path = Deno.makeTempFileSync({ prefix: "punchd-secret-" });
  Deno.writeTextFileSync(path, text);
  globalThis.addEventListener("unload", () => Deno.removeSync(path));
  return path;
}

Deno.test("--tcp-keepalive off hands TCP sockets over without keepalive", () => {
  const run = parseCommandLine(["--tcp-keepalive", "off"]);
  assertEquals(run.kind === "run" && "tcpKeepalive" in run.config, false);
});

Deno.test("--turn-secret-file reads a REST API shared secret", () => {
  const run = parseCommandLine([
    "--turn",
    "[fd00::1]:3478",
    "--turn-secret-file",
    secretFile("s3cret\n"),
  ]);
  assertEquals(run.kind === "run" ? run.config.turn : undefined, {
    server: { family: "inet6", address: "fd00::1", port: 3478 },
    secret: "s3cret",
  });
});

Deno.test("every flag is read", () => {
  const invocation = parseCommandLine([
    "--socket=/run/p.sock",
    "--log-level",
    "debug",
    "--attempt-timeout",
    "30",
    "--max-clients",
    "5",
    "--max-attempts",
    "7",
    "--max-clients-per-user",
    "4",
    "--max-attempts-per-user",
    "9",
    "--start-rate",
    "40",
    "--max-guards",
    "100",
    "--max-guards-per-user",
    "10",
    "--allow-ports",
    "20000-30000,7000",
    "--deny-ports=25000",
    "--worker-idle",
    "5",
    "--group",
    "root",
    "--probe",
    "172.16.0.1:3478",
    "--probe=[::1]:3479",
    "--stun",
    "172.16.0.9:3478",
    "--turn",
    "172.16.0.1:3478",
    "--turn-user",
    "alice",
    "--turn-password-file",
    secretFile("hunter2\nignored"),
    "--tcp-keepalive",
    "30,5,4",
    "--nutss-ttl",
    "3",
    "--udp-birthday",
  ]);
  assertEquals(invocation, {
    kind: "run",
    config: {
      socketPath: "/run/p.sock",
      logLevel: "debug",
      attemptTimeoutMs: 30_000,
      maxClients: 5,
      maxClientsPerUser: 4,
      maxAttemptsPerClient: 7,
      maxAttemptsPerUser: 9,
      startRate: 40,
      maxGuards: 100,
      maxGuardsPerUser: 10,
      workerIdleMs: 5000,
      allowPorts: [{ first: 20000, last: 30000 }, { first: 7000, last: 7000 }],
      denyPorts: [{ first: 25000, last: 25000 }],
      probes: [
        { family: "inet", address: "172.16.0.9", port: 3478 },
        { family: "inet", address: "172.16.0.1", port: 3478 },
        { family: "inet6", address: "::1", port: 3479 },
      ],
      turn: {
        server: { family: "inet", address: "172.16.0.1", port: 3478 },
        user: "alice",
        password: "hunter2",
      },
      tcpKeepalive: { idleSecs: 30, intervalSecs: 5, count: 4 },
      lowTtl: 3,
      udpBirthday: true,
      group: "root",
      gid: 0,
    },
  });
  assertEquals(parseCommandLine(["-h"]), { kind: "help" });
  assertEquals(parseCommandLine(["--version"]), { kind: "version" });
});

const BAD: [string[], RegExp][] = [
  [["--nope"], /Unknown option '--nope'/],
  [["extra"], /Unexpected argument 'extra'/],
  [["--socket"], /argument missing/],
  [["--socket", ""], /--socket: the path is empty/],
  [["--log-level", "verbose"], /--log-level: .*expected one of debug, info, warn, error/],
  [["--attempt-timeout", "0"], /out of range 1-600/],
  [["--attempt-timeout", "1e2"], /not a whole number/],
  [["--max-clients", "-1"], /.+/],
  [["--max-attempts", "70000"], /out of range 1-65536/],
  [["--start-rate", "0"], /--start-rate.*out of range 1-1000000/],
  [["--max-clients-per-user", "0"], /out of range 1-65536/],
  [["--allow-ports", "0x10"], /--allow-ports: Cannot parse port range "0x10"/],
  [["--deny-ports", "2000-1000"], /--deny-ports: Cannot use port range "2000-1000"/],
  [["--deny-ports", "1-70000"], /--deny-ports: Cannot use port range "1-70000"/],
  [["--group", "no-such-group-for-punchd"], /no group named/],
  [["--probe", "example.com:3478"], /--probe: Cannot parse IPv4 address "example.com"/],
  [["--probe", "10.0.0.1"], /--probe: .*expected IP:PORT/],
  [["--probe", "::1:3478"], /--probe: .*expected IP:PORT/],
  [["--probe", "10.0.0.1:0"], /--probe: .*out of range/],
  [["--nutss-ttl", "256"], /out of range 1-255/],
  [["--stun", "stun.example.org:3478"], /--stun: Cannot parse IPv4 address/],
  [["--turn-user", "alice"], /need --turn/],
  [["--turn", "10.0.0.1:3478"], /--turn needs --turn-user/],
  [["--turn", "10.0.0.1:3478", "--turn-password-file", "/dev/null"], /needs --turn-user/],
  [
    ["--turn", "10.0.0.1:3478", "--turn-user", "a", "--turn-password-file", "/nonexistent/p"],
    /--turn-password-file: cannot read/,
  ],
  [
    ["--turn", "10.0.0.1:3478", "--turn-user", "a b", "--turn-secret-file", "/dev/null"],
    /--turn-user: 1-128 printable/,
  ],
  [["--tcp-keepalive", "60"], /expected IDLE,INTERVAL,COUNT or off/],
  [["--tcp-keepalive", "60,0,3"], /out of range 1-32767/],
  [["--nutss-ttl", "Auto"], /not a whole number/],
];

for (const [args, message] of BAD) {
  Deno.test(`"${args.join(" ")}" is a usage error`, () => {
    assertThrows(
      () => parseCommandLine(args),
      (e: Error) => e instanceof UsageError && message.test(e.message),
    );
  });
}
