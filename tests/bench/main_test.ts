import { assertEquals, assertThrows } from "../assert.ts";
import {
  cpuModel,
  DEFAULT_JSON,
  type MachineInfo,
  parseBenchArgs,
  renderReport,
  reportJson,
  runSections,
  SECTIONS,
} from "./main.ts";
import type { Section } from "./section.ts";

Deno.test("args: a full run by default, three trials with --quick unless --trials says", () => {
  assertEquals(parseBenchArgs([]), {
    trials: 50,
    quick: false,
    only: [...SECTIONS],
    json: DEFAULT_JSON,
  });
  assertEquals(parseBenchArgs(["--quick"]).trials, 3);
  assertEquals(parseBenchArgs(["--quick", "--trials", "7"]).trials, 7);
  assertEquals(parseBenchArgs(["--json", "/tmp/x.json"]).json, "/tmp/x.json");
});

Deno.test("args: --only keeps the sections' own order", () => {
  assertEquals(parseBenchArgs(["--only", "startup,connect"]).only, ["connect", "startup"]);
});

Deno.test("args: unknown sections, bad trial counts and stray flags are refused", () => {
  assertThrows(() => parseBenchArgs(["--only", "connect,speed"]), {
    name: "SyntaxError",
    message: /unknown section "speed"/,
  });
  for (const bad of ["0", "-1", "1e2", "0x10", " 5", "abc"]) {
    assertThrows(() => parseBenchArgs([`--trials=${bad}`]), RangeError, bad);
  }
  assertThrows(() => parseBenchArgs(["--fast"]));
});

Deno.test("cpu model: read from /proc/cpuinfo's text", () => {
  assertEquals(
    cpuModel(
      "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n",
    ),
    "Intel(R) Xeon(R) CPU @ 2.20GHz",
  );
  assertEquals(cpuModel("processor : 0\n"), "unknown");
});

const machine: MachineInfo = {
  kernel: "6.1.0",
  cpu: "Test CPU",
  cores: 2,
  deno: "2.9.6",
  date: "2026-12-06T00:00:00.000Z",
};

Deno.test("run: a missing section is not built, a throwing one failed, the others run", async () => {
  const ok: Section = (context) =>
    Promise.resolve({ name: "connect", json: { trials: context.trials }, table: ["T", "row"] });
  const failing: Section = () => Promise.reject(new Error("lab did not come up"));
  const logged: string[] = [];
  const options = parseBenchArgs(["--quick", "--only", "connect,startup,load"]);
  const outcomes = await runSections(
    options,
    (l) => logged.push(l),
    (name) => Promise.resolve(name === "connect" ? ok : name === "startup" ? failing : null),
  );
  assertEquals(outcomes.map((o) => [o.name, o.status]), [
    ["connect", "ok"],
    ["startup", "failed"],
    ["load", "not built"],
  ]);
  const report = renderReport(machine, options, outcomes);
  assertEquals(
    report[1],
    "machine: Linux 6.1.0, Test CPU, 2 cores; deno 2.9.6; 2026-12-06T00:00:00.000Z",
  );
  assertEquals(report.includes("row"), true);
  assertEquals(
    report.some((l) => l.startsWith("startup: FAILED") && l.includes("lab did not come up")),
    true,
  );
  assertEquals(report.includes("load: not built"), true);
  const json = reportJson(machine, options, outcomes) as {
    sections: Record<string, { status: string; result?: unknown }>;
  };
  assertEquals(json.sections.connect?.result, { trials: 3 });
  assertEquals(json.sections.startup?.status, "failed");
  assertEquals(json.sections.load, { status: "not built" });
});
