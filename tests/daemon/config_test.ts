import { assertEquals, assertThrows } from "../assert.ts";
import { parseCommandLine, UsageError } from "../../src/daemon/config.ts";

Deno.test("no flags run with the documented defaults", () => {
  assertEquals(parseCommandLine([]), {
    kind: "run",
    config: {
      socketPath: "/tmp/punchd.socket",
      logLevel: "info",
      attemptTimeoutMs: 10_000,
      maxClients: 1024,
      maxAttemptsPerClient: 256,
    },
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
    "--group",
    "root",
  ]);
  assertEquals(invocation, {
    kind: "run",
    config: {
      socketPath: "/run/p.sock",
      logLevel: "debug",
      attemptTimeoutMs: 30_000,
      maxClients: 5,
      maxAttemptsPerClient: 7,
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
  [["--group", "no-such-group-for-punchd"], /no group named/],
];

for (const [args, message] of BAD) {
  Deno.test(`"${args.join(" ")}" is a usage error`, () => {
    assertThrows(
      () => parseCommandLine(args),
      (e: Error) => e instanceof UsageError && message.test(e.message),
    );
  });
}
