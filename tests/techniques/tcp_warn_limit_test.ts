import { assertEquals } from "../assert.ts";
import { Logger, type LogRecord } from "../../src/log.ts";
import { PacketWarning } from "../../src/techniques/tcp_warn_limit.ts";

function recorder(): { log: Logger; lines: () => [string, Record<string, string>][] } {
  const records: LogRecord[] = [];
  return {
    log: new Logger("debug", (r) => records.push(r)),
    lines: () => records.map((r) => [r.message, { ...r.fields }]),
  };
}

Deno.test("a flood of one warning writes one line per interval, each with the count it suppressed", () => {
  const { log, lines } = recorder();
  let now = 0;
  const warning = new PacketWarning(log, "ignoring a SYN", { intervalMs: 1000, now: () => now });
  // 5000 packets over 2.5 s.
  for (let i = 0; i < 5000; i++) {
    now = i / 2;
    warning.note({ seq: i });
  }
  warning.flush();
  assertEquals(lines(), [
    ["ignoring a SYN", { seq: "0" }],
    ["ignoring a SYN", { seq: "2000", suppressed: "1999" }],
    ["ignoring a SYN", { seq: "4000", suppressed: "1999" }],
    ["ignoring a SYN", { suppressed: "999" }],
  ]);
});

Deno.test("a warning that never repeats is written once and flush adds nothing", () => {
  const { log, lines } = recorder();
  const warning = new PacketWarning(log, "odd packet");
  warning.note({ seq: 1 });
  warning.flush();
  assertEquals(lines(), [["odd packet", { seq: "1" }]]);
});
