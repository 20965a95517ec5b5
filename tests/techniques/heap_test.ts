import { assert } from "../assert.ts";
import { collectGarbage } from "../../src/techniques/heap.ts";

Deno.test("collectGarbage returns a burst's garbage: the isolate's committed heap shrinks", () => {
  // About 40 MB of short-lived objects that outlive the young generation, as a burst's do.
  let keep: unknown[] = [];
  for (let i = 0; i < 400_000; i++) {
    keep.push({ n: i, text: `attempt ${i}`, list: [i, i + 1] });
    if (keep.length >= 200_000) keep = [];
  }
  keep = [];
  const before = Deno.memoryUsage().heapTotal;
  assert(collectGarbage(), "no garbage collector in this runtime");
  const after = Deno.memoryUsage().heapTotal;
  assert(after < before * 0.75, `heap ${before} bytes before, ${after} after`);
});

Deno.test("collectGarbage works inside a worker isolate (technique workers call it)", async () => {
  const heap = new URL("../../src/techniques/heap.ts", import.meta.url).href;
  const source = `import { collectGarbage } from "${heap}"; postMessage(collectGarbage());`;
  const worker = new Worker(`data:application/typescript,${encodeURIComponent(source)}`, {
    type: "module",
  });
  try {
    const ran = await new Promise<unknown>((resolve) => worker.onmessage = (e) => resolve(e.data));
    assert(ran === true, `collectGarbage in a worker returned ${ran}`);
  } finally {
    worker.terminate();
  }
});
