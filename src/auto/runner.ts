/**
 * One `auto` attempt: the hellos, then the planned steps, each a sub-attempt
 * of one technique in its worker, until one connects.
 *
 * ```
 *  initiator                                   responder
 *  hello ─────────── auto1i (EXTRA) ─────────► hello, plan
 *  plan  ◄────────── auto1r ─────────────────
 *  raced steps at once, steps in turn after `staggerMs`
 *  s<K>;DATA ◄──────────────────────────────► s<K>;DATA   (the responder starts step K on its first s<K>)
 *  f<K>: step K ended here ─────────────────► the other side ends its step K
 *  first connected step K: w<K> ────────────► the responder keeps step K's socket
 * ```
 * Steps in turn run one after another on the initiator; the responder follows
 * (a later step's first message ends the earlier ones). The initiator decides
 * which connection wins; the responder waits for that decision only when
 * two of its steps could have connected at once. Every other step is
 * cancelled and has released everything before the winner reports.
 *
 * @module
 */

import type { Protocol, TechniqueName } from "../control/codec.ts";
import type { Logger } from "../log.ts";
import type { AttemptSpec } from "../techniques/protocol.ts";
import { describePlan, type Plan, type PlannedStep, planSteps } from "./plan.ts";
import {
  decodeHello,
  decodeStepMessage,
  encodeHello,
  encodeStepMessage,
  type Hello,
  isHello,
} from "./wire.ts";

/** What a step reports (the daemon's worker supervisor calls these). */
export interface StepEvents {
  progress(data: string): void;
  connected(fd: number, local: string, remote: string, via?: string): void;
  failed(reason: string): void;
}

/** Runs sub-attempts (the daemon's TechniqueWorkers, for one client uid). */
export interface StepHost {
  start(spec: AttemptSpec, events: StepEvents): number;
  peer(key: number, data: string): boolean;
  cancel(key: number, reason: string): void;
}

/** What the attempt reports to the daemon; exactly one of connected/failed, once. */
export interface AutoEvents {
  progress(data: string): void;
  connected(
    fd: number,
    local: string,
    remote: string,
    technique: TechniqueName,
    via?: string,
  ): void;
  failed(reason: string): void;
}

/** Everything one auto attempt needs. */
export interface AutoOptions {
  /** The request as a spec (technique and role are set per step). */
  base: Omit<AttemptSpec, "technique" | "extra">;
  protocol: Protocol;
  /** This side's hello. */
  self: Hello;
  /** The initiator's hello (respond only; the daemon decoded EXTRA). */
  peerHello?: Hello;
  host: StepHost;
  events: AutoEvents;
  log: Logger;
  closeFd(fd: number): void;
  /** Milliseconds between the raced steps and the first step in turn (default 50, RFC 8305's spirit). */
  staggerMs?: number;
  /** Extra milliseconds a responder's step lives past its budget (it starts a relay later). */
  followerSlackMs?: number;
}

/** `waiting`: a responder's step whose earlier steps are still releasing (they share the 4-tuple). */
type StepState = "idle" | "waiting" | "running" | "connected" | "ended";

interface StepRun {
  planned: PlannedStep;
  state: StepState;
  key?: number;
  fd?: number;
  local?: string;
  remote?: string;
  /** The TURN server of a relayed connection. */
  via?: string;
  reason?: string;
  /** Ended because of the peer or the plan (no `f<K>` is sent for it). */
  quiet?: boolean;
  /** The step was started (it appears in a failure's list). */
  ran?: boolean;
  /** When the step connected, in order (the initiator takes the earliest, LAN first). */
  order?: number;
  /** A waiting step's EXTRA and the peer data that arrived meanwhile. */
  queued?: { extra: string; data: string[] };
}

/**
 * Milliseconds the initiator holds a connection while a LAN step still runs: a LAN path that
 * is as fast (UDP's punches finish within a few ms of each other) is preferred.
 */
const LAN_GRACE_MS = 100;

/** At most this many characters of an error reply go to step reasons. */
const SUMMARY_CHARS = 380;

/** One `auto` attempt. */
export class AutoAttempt {
  readonly #o: AutoOptions;
  readonly #started = performance.now();
  #plan: Plan | null = null;
  /** The other side's hello, once known. */
  #peerHello: Hello | null = null;
  #steps: StepRun[] = [];
  #winner: number | null = null;
  /** Set when the attempt is over: the reason to report once every step has released. */
  #ending: { reason: string } | null = null;
  #reported = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #connects = 0;
  /** Set while the initiator holds a connection for a LAN step; true once the grace is over. */
  #lanGrace: ReturnType<typeof setTimeout> | true | undefined;
  #stagger: ReturnType<typeof setTimeout> | undefined;

  /** Builds the attempt; nothing happens before start(). */
  constructor(options: AutoOptions) {
    this.#o = options;
  }

  get #role() {
    return this.#o.base.role;
  }

  /** Sends this side's hello; a responder plans at once. */
  start(): void {
    const total = this.#o.base.timeoutMs;
    this.#timer = setTimeout(() => this.#end(`timed out after ${total} ms`), total);
    this.#o.events.progress(encodeHello(this.#o.self));
    if (this.#role === "respond") {
      const peer = this.#o.peerHello;
      if (peer === undefined) return this.#end("no initiator hello");
      this.#begin(peer, this.#o.self);
    }
  }

  /** Data from the peer's punchd (relayed by the application). False when the attempt is over. */
  peer(data: string): boolean {
    if (this.#reported) return false;
    if (this.#plan === null) {
      if (this.#role !== "initiate" || !isHello(data)) {
        this.#o.log.warn("auto: unexpected data before the responder's hello", {
          data: data.slice(0, 40),
        });
        return true;
      }
      let hello: Hello;
      try {
        hello = decodeHello(data);
      } catch (error) {
        this.#end(`the responder's hello: ${(error as Error).message}`);
        return true;
      }
      if (hello.role !== "respond" || hello.protocol !== this.#o.protocol) {
        this.#end(`the responder's hello does not answer an ${this.#o.protocol} auto attempt`);
        return true;
      }
      this.#begin(this.#o.self, hello);
      return true;
    }
    let message;
    try {
      message = decodeStepMessage(data);
    } catch {
      this.#o.log.warn("auto: ignoring unknown peer data", { data: data.slice(0, 40) });
      return true;
    }
    const step = this.#steps[message.step];
    if (step === undefined) {
      this.#o.log.warn("auto: peer data for a step not in the plan", { step: message.step });
      return true;
    }
    switch (message.type) {
      case "step":
        if (this.#role === "respond" && step.state === "idle") this.#follow(step, message.data);
        else if (step.state === "waiting") step.queued?.data.push(message.data);
        else if (step.state === "running" && step.key !== undefined) {
          this.#o.host.peer(step.key, message.data);
        }
        return true;
      case "ended":
        if (step.state === "idle" || step.state === "waiting") {
          this.#markEnded(step, "ended by the peer", true);
        } else if (step.state === "running") this.#cancelStep(step, "the peer's side ended");
        this.#check();
        return true;
      case "won":
        if (this.#role === "respond" && this.#winner === null) {
          this.#winner = message.step;
          this.#o.log.debug("auto: the initiator took a step", { step: message.step });
          this.#cancelAllBut(message.step, "another step won");
          this.#check();
        }
        return true;
    }
  }

  /** Cancels the attempt (client cancel, disconnect, shutdown). */
  cancel(reason: string): void {
    this.#end(`cancelled: ${reason}`);
  }

  #begin(initiator: Hello, responder: Hello): void {
    const plan = planSteps(initiator, responder, this.#o.base.timeoutMs);
    this.#plan = plan;
    this.#peerHello = this.#role === "initiate" ? responder : initiator;
    this.#steps = plan.steps.map((planned) => ({ planned, state: "idle" }));
    this.#o.log.info("auto plan", {
      plan: describePlan(plan),
      initiator: encodeHello(initiator),
      responder: encodeHello(responder),
    });
    if (plan.steps.length === 0) return this.#end("nothing to try");
    if (this.#role === "respond") return;
    const raced = this.#steps.filter((s) => s.planned.parallel);
    for (const step of raced) this.#lead(step);
    // A LAN connection gets a head start (it would make punching needless); a connection to a
    // public side runs on another 4-tuple and needs none.
    if (!raced.some((s) => s.planned.target === "lan")) this.#next();
    else this.#stagger = setTimeout(() => this.#next(), this.#o.staggerMs ?? 50);
  }

  /** Initiator: starts the next step in turn, if any. */
  #next(): void {
    if (this.#ending !== null || this.#winner !== null) return;
    // A connection held for a LAN step is about to win: start nothing new.
    if (this.#steps.some((s) => s.state === "connected")) return;
    if (this.#steps.some((s) => !s.planned.parallel && s.state === "running")) return;
    const step = this.#steps.find((s) => !s.planned.parallel && s.state === "idle");
    if (step === undefined) return this.#check();
    this.#lead(step);
  }

  #specFor(step: StepRun, extra?: string): AttemptSpec {
    const { planned } = step;
    const base = this.#o.base;
    const spec: AttemptSpec = {
      ...base,
      technique: planned.technique,
      timeoutMs: planned.budgetMs +
        (this.#role === "respond" ? this.#o.followerSlackMs ?? 1000 : 0),
    };
    if (planned.target === "lan" && planned.lan !== undefined) {
      spec.dstIp = this.#role === "initiate" ? planned.lan.responder : planned.lan.initiator;
      spec.dstPorts = [this.#peerHello?.port ?? 0];
      if (this.#o.self.locals.some((l) => l.ip === this.#localLan(planned))) {
        spec.srcIp = this.#localLan(planned);
      }
    }
    if (planned.birthday) spec.birthday = true;
    if (planned.publicSide !== undefined) {
      spec.directMode = planned.publicSide === this.#role ? "listen" : "ephemeral";
    }
    if (extra !== undefined) spec.extra = extra;
    return spec;
  }

  #localLan(planned: PlannedStep): string {
    return this.#role === "initiate" ? planned.lan?.initiator ?? "" : planned.lan?.responder ?? "";
  }

  /** Initiator: starts a step. */
  #lead(step: StepRun): void {
    this.#run(step, this.#specFor(step));
  }

  /** Responder: starts a step on the initiator's first message for it; earlier steps in turn end. */
  #follow(step: StepRun, extra: string): void {
    if (this.#ending !== null || this.#winner !== null) return;
    if (!step.planned.parallel) {
      for (const other of this.#earlier(step)) {
        if (other.state === "idle" || other.state === "waiting") {
          this.#markEnded(other, "skipped: the initiator moved on", true);
        }
        if (other.state === "running") this.#cancelStep(other, "the initiator moved on");
      }
      // Steps in turn use the same 4-tuple: start once the earlier ones have let go of it.
      if (this.#earlier(step).some((o) => o.state === "running" || o.state === "connected")) {
        step.state = "waiting";
        step.queued = { extra, data: [] };
        return;
      }
    }
    this.#run(step, this.#specFor(step, extra));
  }

  /** The steps in turn before `step`. */
  #earlier(step: StepRun): StepRun[] {
    return this.#steps.filter((o) => !o.planned.parallel && o.planned.index < step.planned.index);
  }

  /** Responder: starts a waiting step once its earlier steps have released. */
  #startWaiting(): void {
    for (const step of this.#steps) {
      if (step.state !== "waiting" || step.queued === undefined) continue;
      if (this.#earlier(step).some((o) => o.state === "running" || o.state === "connected")) {
        continue;
      }
      const { extra, data } = step.queued;
      delete step.queued;
      this.#run(step, this.#specFor(step, extra));
      for (const d of data) if (step.key !== undefined) this.#o.host.peer(step.key, d);
    }
  }

  #run(step: StepRun, spec: AttemptSpec): void {
    const k = step.planned.index;
    step.state = "running";
    step.ran = true;
    try {
      step.key = this.#o.host.start(spec, {
        progress: (data) => {
          if (this.#ending === null) {
            this.#o.events.progress(encodeStepMessage({ type: "step", step: k, data }));
          }
        },
        connected: (fd, local, remote, via) => this.#connected(step, fd, local, remote, via),
        failed: (reason) => this.#failed(step, reason),
      });
    } catch (error) {
      this.#failed(step, (error as Error).message);
    }
  }

  #connected(step: StepRun, fd: number, local: string, remote: string, via?: string): void {
    step.state = "connected";
    step.fd = fd;
    step.local = local;
    step.remote = remote;
    if (via !== undefined) step.via = via;
    step.order = this.#connects++;
    const k = step.planned.index;
    if (this.#ending !== null || (this.#winner !== null && this.#winner !== k)) {
      this.#drop(step, this.#ending !== null ? "attempt over" : "another step won");
      return this.#check();
    }
    if (this.#winner === null) {
      const rival = this.#steps.some((s) =>
        s !== step && (s.state === "running" || s.state === "connected")
      );
      if (this.#role === "initiate") {
        this.#choose();
      } else if (!rival) {
        this.#winner = k;
      }
      // A responder with rivals keeps the socket until the initiator says which one it took.
    }
    this.#check();
  }

  /**
   * Initiator: takes the earliest connection, a LAN one first; while a LAN step still runs,
   * a connection elsewhere waits up to LAN_GRACE_MS for it.
   */
  #choose(): void {
    if (this.#role !== "initiate" || this.#winner !== null || this.#ending !== null) return;
    const connected = this.#steps.filter((s) => s.state === "connected")
      .sort((a, b) => (a.order ?? 0) - (b.order ?? 0));
    if (connected.length === 0) return;
    const lan = connected.find((s) => s.planned.target === "lan");
    const lanRunning = this.#steps.some((s) => s.planned.target === "lan" && s.state === "running");
    if (lan === undefined && lanRunning && this.#lanGrace !== true) {
      this.#lanGrace ??= setTimeout(() => {
        this.#lanGrace = true;
        this.#choose();
        this.#check();
      }, LAN_GRACE_MS);
      return;
    }
    const win = lan ?? connected[0];
    if (win === undefined) return;
    if (this.#lanGrace !== true) clearTimeout(this.#lanGrace);
    const k = win.planned.index;
    this.#winner = k;
    this.#o.events.progress(encodeStepMessage({ type: "won", step: k }));
    this.#cancelAllBut(k, "another step won");
  }

  #failed(step: StepRun, reason: string): void {
    const wasQuiet = step.quiet === true || step.state === "ended";
    this.#markEnded(step, reason.replace(/^cancelled: /, ""), step.quiet === true);
    const k = step.planned.index;
    if (!wasQuiet && this.#ending === null && this.#winner === null) {
      this.#o.events.progress(encodeStepMessage({ type: "ended", step: k }));
    }
    if (this.#winner === k && this.#ending === null) {
      // #end reports once the other steps have released.
      return this.#end(`${step.planned.technique} failed after the initiator took it: ${reason}`);
    }
    // A connection held for a LAN step that has now failed is taken.
    this.#choose();
    if (this.#role === "initiate" && !step.planned.parallel) this.#next();
    if (this.#role === "respond" && this.#ending === null && this.#winner === null) {
      this.#startWaiting();
    }
    this.#check();
  }

  #markEnded(step: StepRun, reason: string, quiet: boolean): void {
    if (step.state === "connected" && step.fd !== undefined) this.#o.closeFd(step.fd);
    delete step.fd;
    step.state = "ended";
    step.reason ??= reason;
    if (quiet) step.quiet = true;
  }

  #drop(step: StepRun, reason: string): void {
    this.#markEnded(step, reason, true);
  }

  #cancelStep(step: StepRun, reason: string): void {
    step.quiet = true;
    step.reason ??= reason;
    if (step.key !== undefined) this.#o.host.cancel(step.key, reason);
  }

  #cancelAllBut(k: number, reason: string): void {
    for (const step of this.#steps) {
      if (step.planned.index === k) continue;
      if (step.state === "running") this.#cancelStep(step, reason);
      else if (step.state === "connected") this.#drop(step, reason);
      else if (step.state === "idle" || step.state === "waiting") {
        this.#markEnded(step, "not needed", true);
      }
    }
  }

  /** Ends the attempt: every running step is cancelled; the report waits for their release. */
  #end(reason: string): void {
    if (this.#ending !== null || this.#reported) return;
    this.#ending = { reason };
    clearTimeout(this.#stagger);
    if (this.#lanGrace !== true) clearTimeout(this.#lanGrace);
    for (const step of this.#steps) {
      if (step.state === "running") this.#cancelStep(step, reason);
      else if (step.state === "connected") this.#drop(step, reason);
      else if (step.state === "idle" || step.state === "waiting") {
        this.#markEnded(step, "not started", true);
      }
    }
    this.#check();
  }

  /** Reports when the attempt's outcome is decided and nothing else runs. */
  #check(): void {
    if (this.#reported) return;
    const busy = this.#steps.filter((s) => s.state === "running" || s.state === "connected");
    const waiting = this.#steps.some((s) => s.state === "waiting");
    if (this.#ending !== null) {
      if (busy.length > 0) return;
      return this.#report(null, this.#ending.reason);
    }
    if (this.#winner !== null) {
      const win = this.#steps[this.#winner];
      if (win?.state !== "connected" || busy.length > 1) return;
      return this.#report(win, "");
    }
    if (this.#plan === null || busy.length > 0 || waiting) return;
    if (this.#steps.every((s) => s.state === "ended")) this.#report(null, "every step failed");
    else if (this.#role === "initiate") this.#next();
  }

  #report(win: StepRun | null, reason: string): void {
    this.#reported = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#stagger);
    if (this.#lanGrace !== true) clearTimeout(this.#lanGrace);
    const ms = Math.round(performance.now() - this.#started);
    if (win !== null && win.fd !== undefined) {
      this.#o.log.info("auto: connected", {
        step: win.planned.index,
        technique: win.planned.technique,
        ms,
      });
      this.#o.events.connected(
        win.fd,
        win.local ?? "",
        win.remote ?? "",
        win.planned.technique,
        win.via,
      );
      return;
    }
    this.#o.events.failed(this.#summary(reason));
  }

  /** `auto: REASON; tried 0 tcp-direct@lan (why), ...; skipped ...`, within the reply limit. */
  #summary(reason: string): string {
    const tried = this.#steps.filter((s) => s.ran === true);
    const groups = new Map<string, string[]>();
    for (const s of this.#plan?.skipped ?? []) {
      groups.set(s.why, [...groups.get(s.why) ?? [], s.technique]);
    }
    const skip = [...groups].map(([why, names]) => `${names.join(", ")} (${why})`).join("; ");
    const head = `auto: ${reason}`;
    const parts = tried.map((s) => ({
      name: `${s.planned.technique}${s.planned.target === "lan" ? "@lan" : ""}`,
      why: s.reason ?? "",
    }));
    const clip = (text: string, n: number) =>
      text.length <= n ? text : `${text.slice(0, Math.max(0, n - 3))}...`;
    const names = parts.reduce((n, p) => n + p.name.length + 5, 0);
    // Skipped reasons get what is left after the tried steps' shortest useful form.
    const skipRoom = Math.max(60, SUMMARY_CHARS - head.length - names - parts.length * 40 - 20);
    const skipText = clip(skip, skipRoom);
    const room = SUMMARY_CHARS - head.length - names - (skipText === "" ? 0 : skipText.length + 10);
    const each = Math.max(12, Math.floor(room / Math.max(1, parts.length)));
    let out = head;
    if (parts.length > 0) {
      out += `; tried ${parts.map((p) => `${p.name} (${clip(p.why, each)})`).join(", ")}`;
    }
    if (skipText !== "") out += `; skipped ${skipText}`;
    return clip(out, SUMMARY_CHARS + 15);
  }
}
