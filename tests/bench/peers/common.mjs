// deno-lint-ignore-file explicit-module-boundary-types -- plain JavaScript run by Node: no annotations
// What every bench peer program shares: JSON lines with the orchestrator
// (tests/bench/peers.ts) on stdin and stdout, the data check, and a hard
// lifetime so that no peer outlives its trial even if the orchestrator dies.
//
// Orchestrator -> peer: {"type":"go","peer":{...}}, {"type":"signal","data":...}
// Peer -> orchestrator: {"type":"stage","name"}, {"type":"ready",...}, {"type":"signal","data":...},
//   {"type":"result","ok":true,"remote":{"host","port"},"ms":N,"detail":{...}}
//   or {"type":"result","ok":false,"reason":"...","detail":{...}}
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";

/** Writes one message to the orchestrator. */
export function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

const queued = [];
const waiting = [];
const handlers = new Map();

createInterface({ input: process.stdin }).on("line", (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return;
  }
  const handler = handlers.get(message.type);
  if (handler !== undefined) return handler(message);
  const index = waiting.findIndex((w) => w.type === message.type);
  if (index >= 0) waiting.splice(index, 1)[0].resolve(message);
  else queued.push(message);
}).on("close", () => process.exit(0));

/** Tells the orchestrator how far set-up got (its "not ready" reasons name the last stage). */
export function stage(name) {
  send({ type: "stage", name });
}

/** The next message of `type` from the orchestrator. */
export function next(type) {
  const index = queued.findIndex((m) => m.type === type);
  if (index >= 0) return Promise.resolve(queued.splice(index, 1)[0]);
  return new Promise((resolve) => waiting.push({ type, resolve }));
}

/** Calls `fn` for every message of `type` (queued ones first). */
export function on(type, fn) {
  handlers.set(type, fn);
  for (let i = 0; i < queued.length;) {
    if (queued[i].type === type) fn(queued.splice(i, 1)[0]);
    else i++;
  }
}

/** The program's arguments: role and JSON configuration. */
export function args() {
  const [role, config = "{}"] = process.argv.slice(2);
  return { role, config: JSON.parse(config) };
}

/** Exits after `ms` whatever happens (the orchestrator kills earlier). */
export function lifetime(ms) {
  setTimeout(() => process.exit(3), ms).unref();
}

/** Milliseconds since `t0`. */
export function since(t0) {
  return Math.round((performance.now() - t0) * 1000) / 1000;
}

export { performance };

/** The message each side sends over the direct path. */
export function tag(role) {
  return `punchd-bench ${role}`;
}

/**
 * One trial's outcome on this side: ok once this side has sent its tag and
 * received the other side's over the direct path, whose remote address it
 * reports. Reports once.
 */
export class Outcome {
  #done = false;
  #sent = false;
  #received = false;
  #remote = null;
  constructor(t0, detail = () => ({}), giveUpMs = 0, why = () => "") {
    this.t0 = t0;
    this.detail = detail;
    // Fails by itself shortly before the orchestrator stops waiting, so a failure carries
    // this side's state (ICE state, connections...) rather than silence.
    if (giveUpMs > 0) {
      setTimeout(() => {
        let state = "";
        try {
          state = why();
        } catch {
          // Only a hint.
        }
        this.fail(
          `no direct path in ${giveUpMs / 1000} s${
            state === "" ? "" : ` (${state})`
          }`,
        );
      }, giveUpMs).unref();
    }
  }
  sent() {
    this.#sent = true;
    this.#check();
  }
  received(text, remote) {
    if (this.#done) return;
    if (!text.startsWith("punchd-bench ")) {
      return this.fail(`unexpected data ${JSON.stringify(text)}`);
    }
    this.#received = true;
    this.#remote = remote;
    this.#check();
  }
  fail(reason) {
    if (this.#done) return;
    this.#done = true;
    send({
      type: "result",
      ok: false,
      reason: String(reason),
      ms: since(this.t0),
      detail: this.#detail(),
    });
  }
  #detail() {
    try {
      return this.detail();
    } catch (error) {
      return { detailError: String(error) };
    }
  }
  #check() {
    if (this.#done || !this.#sent || !this.#received) return;
    this.#done = true;
    send({
      type: "result",
      ok: true,
      remote: this.#remote,
      ms: since(this.t0),
      detail: this.#detail(),
    });
  }
}
