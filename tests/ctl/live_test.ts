import { assert, assertEquals } from "../assert.ts";
import { eventLine, LiveDisplay, type LiveEvent, peerDataOf } from "../../src/ctl/live.ts";

const decoder = new TextDecoder();

function sink() {
  let text = "";
  return {
    writeSync: (bytes: Uint8Array) => {
      text += decoder.decode(bytes);
      return bytes.length;
    },
    text: () => text,
  };
}

const EVENTS: LiveEvent[] = [
  { event: "progress", data: "seq=1;ttl=2" },
  { event: "peer", data: "ack=9" },
  {
    event: "connected",
    technique: "tcp-nutss",
    ms: 52,
    local: "10.0.1.2:4000",
    remote: "172.16.2.2:5000",
  },
];

Deno.test("eventLine prints each exchange and outcome as one line the peer's punchctl can read back", () => {
  assertEquals(EVENTS.map(eventLine), [
    "progress seq=1;ttl=2",
    "peer ack=9",
    "connected with tcp-nutss in 52 ms: local 10.0.1.2:4000, remote 172.16.2.2:5000",
  ]);
  assertEquals(
    eventLine({
      event: "connected",
      technique: "relay",
      ms: 900,
      local: "10.0.1.2:4000",
      remote: "172.16.2.2:5000",
      via: "172.16.0.1:3478",
    }),
    "connected with relay in 900 ms: local 10.0.1.2:4000, remote 172.16.2.2:5000 via 172.16.0.1:3478",
  );
  assertEquals(eventLine({ event: "failed", reason: "timed out" }), "failed: timed out");
});

Deno.test("without a terminal the display prints plain lines and no status line", () => {
  const out = sink();
  const err = sink();
  const display = new LiveDisplay({
    out,
    err,
    json: false,
    statusLine: false,
    label: "initiate a1",
  });
  for (const e of EVENTS) display.print(e);
  display.close();
  assertEquals(
    out.text(),
    "progress seq=1;ttl=2\npeer ack=9\nconnected with tcp-nutss in 52 ms: local 10.0.1.2:4000, remote 172.16.2.2:5000\n",
  );
  assertEquals(err.text(), "");
});

Deno.test("--json prints one JSON object per event", () => {
  const out = sink();
  const display = new LiveDisplay({
    out,
    err: sink(),
    json: true,
    statusLine: false,
    label: "initiate a1",
  });
  for (const e of EVENTS) display.print(e);
  display.close();
  assertEquals(out.text().trimEnd().split("\n").map((line) => JSON.parse(line)), EVENTS);
});

Deno.test("on a terminal the status line counts exchanges, is cleared before each line and at the end", () => {
  const out = sink();
  const err = sink();
  let now = 1000;
  const display = new LiveDisplay({
    out,
    err,
    json: false,
    statusLine: true,
    label: "initiate a1 auto",
    now: () => now,
    redrawMs: 0,
  });
  assertEquals(
    display.statusText(),
    "initiate a1 auto: 0 progress sent, 0 peer data received, 0.0 s",
  );
  now = 2500;
  display.print(EVENTS[0]!);
  display.print(EVENTS[1]!);
  assertEquals(
    display.statusText(),
    "initiate a1 auto: 1 progress sent, 1 peer data received, 1.5 s",
  );
  display.close();
  const clear = "\r\x1b[K";
  assertEquals(
    err.text(),
    `${clear}initiate a1 auto: 0 progress sent, 0 peer data received, 0.0 s${clear}` +
      `${clear}initiate a1 auto: 1 progress sent, 0 peer data received, 1.5 s${clear}` +
      `${clear}initiate a1 auto: 1 progress sent, 1 peer data received, 1.5 s${clear}`,
  );
  assert(!out.text().includes("\x1b"), "stdout carries no terminal control");
});

Deno.test("peerDataOf takes the peer's progress lines (text or JSON) and typed data, and skips its other lines", () => {
  assertEquals(peerDataOf("progress seq=1;ttl=2\n"), "seq=1;ttl=2");
  assertEquals(peerDataOf('{"event":"progress","data":"seq=1"}'), "seq=1");
  assertEquals(peerDataOf("  seq=7  "), "seq=7");
  for (
    const line of [
      "",
      "   ",
      "peer ack=9",
      "connected with tcp-nutss in 52 ms: local 10.0.1.2:4000, remote 172.16.2.2:5000",
      "failed: timed out",
      '{"event":"peer","data":"ack=9"}',
      '{"event":"connected","technique":"udp"}',
      "{not json",
    ]
  ) {
    assertEquals(peerDataOf(line), null, line);
  }
  // Every line punchctl prints reads back to its data or to nothing.
  for (const e of EVENTS) {
    assertEquals(peerDataOf(eventLine(e)), e.event === "progress" ? e.data : null);
    assertEquals(peerDataOf(JSON.stringify(e)), e.event === "progress" ? e.data : null);
  }
});
