/**
 * A one-way delay line for the bench's long fat path (this kernel has no
 * `sch_netem`): creates TUN device `--tun NAME` in the namespace it runs in,
 * holds every packet routed into it for `--delay-ms` and writes it back
 * unchanged, in order. Whatever routing sends into the device comes out
 * `--delay-ms` later as if it had arrived on it. Prints "delay line ready"
 * once the device exists; runs until killed (SIGTERM).
 *
 * At most `--limit-mb` megabytes wait at once (default 256): beyond that
 * packets are dropped, as a router's full queue would.
 *
 * ```
 * ip netns exec NS deno run --allow-ffi --allow-read tests/bench/syni_delay_line.ts --tun dly0 --delay-ms 50
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Tun } from "../../ffi/tun.ts";

/** Runs the delay line on `tun` until the process ends. */
export function runDelayLine(tun: Tun, delayMs: number, limitBytes: number): never {
  const queue: { due: number; packet: Uint8Array<ArrayBuffer> }[] = [];
  let head = 0;
  let queued = 0;
  const buf = new Uint8Array(70_000);
  for (;;) {
    const now = performance.now();
    while (head < queue.length && (queue[head]?.due ?? Infinity) <= now) {
      const { packet } = queue[head] as { packet: Uint8Array<ArrayBuffer> };
      queue[head++] = undefined as never;
      queued -= packet.byteLength;
      tun.write(packet);
    }
    if (head > 4096 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    const next = queue[head];
    tun.waitReadable(next === undefined ? 1000 : next.due - performance.now());
    const arrived = performance.now();
    for (let n = tun.read(buf); n !== null; n = tun.read(buf)) {
      if (queued + n > limitBytes) continue;
      queue.push({ due: arrived + delayMs, packet: buf.slice(0, n) });
      queued += n;
    }
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      tun: { type: "string", default: "dly0" },
      "delay-ms": { type: "string", default: "50" },
      "limit-mb": { type: "string", default: "256" },
    },
  });
  const delayMs = Number(values["delay-ms"]);
  const limitMb = Number(values["limit-mb"]);
  if (!/^\d{1,5}$/.test(values["delay-ms"]) || !/^\d{1,5}$/.test(values["limit-mb"])) {
    throw new RangeError("--delay-ms and --limit-mb take whole numbers");
  }
  const tun = Tun.create(values.tun);
  Deno.stdout.writeSync(new TextEncoder().encode("delay line ready\n"));
  runDelayLine(tun, delayMs, limitMb * 1e6);
}
