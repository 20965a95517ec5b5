import { assertEquals, assertMatch, assertThrows } from "../assert.ts";
import { HELP, parseCommandLine, parseHostPorts, UsageError } from "../../src/ctl/command_line.ts";
import { DEFAULT_SOCKET_PATH } from "../../src/client/client.ts";
import { VERSION } from "../../src/daemon/config.ts";

const SESSION = ["--rendezvous", "172.16.0.1:7000", "--id", "alice"];

function usageError(args: string[], message: RegExp): void {
  assertThrows(() => parseCommandLine(args, 7), (error: unknown) => {
    assertEquals((error as Error).name, "UsageError");
    assertMatch((error as Error).message, message);
    return error instanceof UsageError;
  });
}

Deno.test("punchctl status takes the daemon's default socket, text output and a 10 s timeout", () => {
  assertEquals(parseCommandLine(["status"]), {
    kind: "status",
    common: { socket: DEFAULT_SOCKET_PATH, json: false, timeoutMs: 10_000, quiet: false },
  });
});

Deno.test("punchctl report waits 60 s by default; flags may come before the command", () => {
  assertEquals(parseCommandLine(["--json", "--socket", "/tmp/p.sock", "report"]), {
    kind: "report",
    common: { socket: "/tmp/p.sock", json: true, timeoutMs: 60_000, quiet: false },
  });
});

Deno.test("-h, --help and help print the help; -V and --version the version", () => {
  for (const args of [["-h"], ["--help"], ["help"], ["status", "--help"], ["connect", "-h"]]) {
    assertEquals(parseCommandLine(args), { kind: "help" }, args.join(" "));
  }
  assertEquals(parseCommandLine(["-V"]), { kind: "version" });
  assertEquals(parseCommandLine(["--version"]), { kind: "version" });
});

Deno.test("initiate parses --src and --dst as IP:PORTS, IPv6 in brackets, and defaults the ID and technique", () => {
  assertEquals(
    parseCommandLine(["initiate", "--src", "10.0.1.2:4000", "--dst", "[fd00::2]:5000,5001"], 7),
    {
      kind: "initiate",
      common: { socket: DEFAULT_SOCKET_PATH, json: false, timeoutMs: 30_000, quiet: false },
      id: "punchctl-7",
      technique: "auto",
      src: { ip: "10.0.1.2", ports: [4000] },
      dst: { ip: "fd00::2", ports: [5000, 5001] },
    },
  );
});

Deno.test("respond needs --extra and carries it", () => {
  const args = ["respond", "--src", "10.0.2.2:5000", "--dst", "172.16.1.2:4000"];
  usageError(args, /^respond needs --extra$/);
  const parsed = parseCommandLine([...args, "--extra", "x=1", "--technique", "tcp-syni"]);
  assertEquals(parsed.kind === "respond" ? [parsed.extra, parsed.technique] : null, [
    "x=1",
    "tcp-syni",
  ]);
});

Deno.test("connect takes the session flags and one PEER; local IP and port are left to be found", () => {
  assertEquals(parseCommandLine(["connect", ...SESSION, "--timeout", "5", "-q", "bob"]), {
    kind: "connect",
    common: { socket: DEFAULT_SOCKET_PATH, json: false, timeoutMs: 5_000, quiet: true },
    session: {
      rendezvous: { family: "inet", address: "172.16.0.1", port: 7000 },
      id: "alice",
      technique: "auto",
    },
    peer: "bob",
  });
});

Deno.test("listen takes --local-ip, --port, --technique and --credential-file", () => {
  assertEquals(
    parseCommandLine([
      "listen",
      ...SESSION,
      "--local-ip",
      "10.0.2.2",
      "--port",
      "5000",
      "--technique",
      "auto-udp",
      "--credential-file",
      "/etc/punchd/alice.token",
    ]),
    {
      kind: "listen",
      common: { socket: DEFAULT_SOCKET_PATH, json: false, timeoutMs: 30_000, quiet: false },
      session: {
        rendezvous: { family: "inet", address: "172.16.0.1", port: 7000 },
        id: "alice",
        technique: "auto-udp",
        credentialFile: "/etc/punchd/alice.token",
        localIp: "10.0.2.2",
        port: 5000,
      },
    },
  );
});

Deno.test("bad command lines are UsageErrors with one line that names the problem", () => {
  const cases: [string[], RegExp][] = [
    [[], /^a command is needed: status, report, initiate, respond, connect, listen$/],
    [["stats"], /^unknown command "stats"/],
    [["status", "--bogus"], /Unknown option '--bogus'/],
    [["status", "--port", "4"], /^status takes no --port$/],
    [["report", "--quiet"], /^report takes no --quiet$/],
    [["status", "extra"], /^status takes no argument "extra"$/],
    [["status", "--timeout", "0"], /^--timeout: 0 is out of range 1-3600$/],
    [["status", "--timeout", "1e2"], /^--timeout: "1e2" is not a whole number$/],
    [["status", "--socket", ""], /^--socket: the path is empty$/],
    [["connect", ...SESSION], /^connect needs exactly one PEER/],
    [["connect", ...SESSION, "bob", "carol"], /^connect needs exactly one PEER/],
    [["connect", "--id", "alice", "bob"], /^connect needs --rendezvous$/],
    [["connect", "--rendezvous", "1.2.3.4:7000", "bob"], /^connect needs --id$/],
    [["connect", "--rendezvous", "example.org:7000", "--id", "a", "b"], /^--rendezvous: /],
    [["connect", ...SESSION, "bad peer"], /^bad PEER "bad peer"/],
    [["listen", ...SESSION, "--id", "a|b"], /^--id: a peer ID is 1-128/],
    [["listen", ...SESSION, "--port", "0"], /^--port: 0 is out of range 1-65535$/],
    [["listen", ...SESSION, "--local-ip", "10.0.0"], /^--local-ip: /],
    [["listen", ...SESSION, "--technique", "tcp-foo"], /^--technique: unknown technique/],
    [["initiate", "--dst", "1.2.3.4:5"], /^initiate needs --src$/],
    [["initiate", "--src", "1.2.3.4", "--dst", "1.2.3.4:5"], /^--src: expected IP:PORTS/],
    [["initiate", "--src", "1.2.3.4:5", "--dst", "1.2.3.4:5", "--id", "a b"], /^--id: an attempt/],
  ];
  for (const [args, message] of cases) usageError(args, message);
});

Deno.test("parseHostPorts refuses ports out of range and empty entries", () => {
  assertThrows(() => parseHostPorts("1.2.3.4:70000", "dst"), UsageError);
  assertThrows(() => parseHostPorts("1.2.3.4:5,,6", "dst"), UsageError);
  assertThrows(() => parseHostPorts("fd00::1:5", "dst"), UsageError);
});

Deno.test("the help names every command and flag the parser knows, and the version", () => {
  assertMatch(HELP, new RegExp(`^punchctl ${VERSION.replaceAll(".", "\\.")}: `));
  for (
    const word of [
      "status",
      "report",
      "initiate",
      "respond",
      "connect",
      "listen",
      "--socket PATH",
      "--json",
      "--timeout SECS",
      "-q, --quiet",
      "-h, --help",
      "-V, --version",
      "--src IP:PORTS",
      "--dst IP:PORTS",
      "--technique T",
      "--id ID",
      "--extra DATA",
      "--rendezvous IP:PORT",
      "--credential-file PATH",
      "--local-ip IP",
      "--port N",
      "Exit codes: 0 success, 1 failure, 2 bad command line.",
    ]
  ) {
    assertMatch(HELP, new RegExp(word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")), word);
  }
  for (const line of HELP.split("\n")) {
    assertEquals(line.length <= 80, true, `longer than 80 columns: ${line}`);
  }
});
