/**
 * `punchctl`, punchd's command for people: `status` and `report` (text on a
 * terminal, JSON with `--json`), `initiate`/`respond` by hand with a live
 * display, and `connect`/`listen`, which punch a connection through a punchd
 * rendezvous server and join it to stdin/stdout so that any program can use
 * punchd (`ssh -o ProxyCommand='punchctl connect --rendezvous R:7000 --id me %h'`,
 * or a Node program through a child process). `punchctl --help` says it all.
 *
 * ```
 * deno run --allow-ffi --allow-read src/ctl/main.ts status
 * ```
 *
 * Permissions: `--allow-ffi` (sockets, fd passing and SO_PEERCRED through
 * libc) and `--allow-read` (its own modules, `--credential-file`); it reads
 * no environment variable, so `--allow-env` is not needed (and harmless).
 *
 * @module
 */

import { type Attempt, PunchdClient } from "../client/client.ts";
import { keepUdpAlive } from "../client/keepalive.ts";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { VERSION } from "../daemon/config.ts";
import {
  type Common,
  EXIT,
  HELP,
  type Invocation,
  parseCommandLine,
  type SessionFlags,
  UsageError,
} from "./command_line.ts";
import { formatReport, formatStatus } from "./format.ts";
import { LiveDisplay, peerDataOf } from "./live.ts";
import { describeEvent, protocolOf, type Punched, Session, type SessionEvent } from "./session.ts";
import { joinDatagrams, joinStream, stdoutWritable } from "./stdio.ts";

const encoder = new TextEncoder();

function print(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  stream.writeSync(encoder.encode(text + "\n"));
}

/** One diagnostic line on stderr. */
function warn(text: string): void {
  print(Deno.stderr, `punchctl: ${text}`);
}

function message(error: unknown): string {
  return (error as Error).message?.split("\n")[0] ?? String(error);
}

/** `promise`, or a timeout error after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Cannot ${what}: no answer within ${ms / 1000} s`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function info(kind: "status" | "report", common: Common): Promise<number> {
  const punchd = await PunchdClient.connect(common.socket);
  try {
    if (kind === "status") {
      const status = await within(punchd.status(), common.timeoutMs, "get punchd's status");
      print(Deno.stdout, common.json ? JSON.stringify(status) : formatStatus(status));
    } else {
      const report = await within(punchd.report(), common.timeoutMs, "get punchd's NAT report");
      print(Deno.stdout, common.json ? JSON.stringify(report) : formatReport(report));
    }
    return EXIT.OK;
  } finally {
    await punchd.close();
  }
}

/** The peer's data in each stdin line (see {@linkcode peerDataOf}). */
async function* stdinPeerData(): AsyncGenerator<string> {
  let pending = "";
  const take = (line: string) => peerDataOf(line);
  for await (const text of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const data = take(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      if (data !== null) yield data;
    }
  }
  const last = take(pending);
  if (last !== null) yield last;
}

async function byHand(invocation: Extract<Invocation, { kind: "initiate" | "respond" }>) {
  const { common, src, dst } = invocation;
  const punchd = await PunchdClient.connect(common.socket);
  const display = new LiveDisplay({
    out: Deno.stdout,
    err: Deno.stderr,
    json: common.json,
    statusLine: Deno.stderr.isTerminal(),
    label: `${invocation.kind} ${invocation.id} ${invocation.technique} ${src.ip}:${
      src.ports.join(",")
    } -> ${dst.ip}:${dst.ports.join(",")}`,
  });
  const started = performance.now();
  const params = {
    id: invocation.id,
    technique: invocation.technique,
    srcIp: src.ip,
    srcPorts: src.ports,
    dstIp: dst.ip,
    dstPorts: dst.ports,
  };
  let attempt: Attempt | undefined;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    attempt?.cancel().catch(() => {});
  }, common.timeoutMs);
  try {
    attempt = invocation.kind === "respond"
      ? punchd.respond({ ...params, extra: invocation.extra ?? "" })
      : punchd.initiate(params);
    const running = attempt;
    const progress = (async () => {
      for await (const data of running.progress) display.print({ event: "progress", data });
    })();
    // Reads stdin until it ends or the process exits (a pending read keeps nothing else waiting).
    (async () => {
      for await (const data of stdinPeerData()) {
        display.print({ event: "peer", data });
        await running.peer(data);
      }
    })().catch((error) => warn(`cannot pass the peer's data: ${message(error)}`));
    try {
      using socket = await running.socket;
      await progress;
      const winner = await running.winner;
      display.print({
        event: "connected",
        technique: winner?.technique ?? invocation.technique,
        ms: winner?.ms ?? Math.round(performance.now() - started),
        local: formatAddress(socket.localAddress()),
        remote: formatAddress(socket.peerAddress()),
        ...(winner?.via === undefined ? {} : { via: winner.via }),
      });
      return EXIT.OK;
    } catch (error) {
      await progress.catch(() => {});
      display.print({
        event: "failed",
        reason: timedOut
          ? `no connection within ${common.timeoutMs / 1000} s (--timeout): cancelled`
          : message(error),
      });
      return EXIT.FAILURE;
    }
  } finally {
    clearTimeout(timer);
    display.close();
    await punchd.close();
  }
}

/** The local address the route to `to` leaves from. */
async function routeSource(to: InetAddress): Promise<string> {
  using probe = Socket.create(to.family, "datagram");
  try {
    await probe.connect(to);
  } catch (error) {
    throw new Error(
      `Cannot find the local address toward ${formatAddress(to)}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const local = probe.localAddress();
  if (local.family === "unix") throw new Error("Cannot find the local address: not an IP socket");
  return local.address;
}

/** A port free at this moment on `ip` for `protocol` (punchd binds it shortly after). */
function freePort(ip: string, protocol: "tcp" | "udp"): number {
  const address = inetAddress(ip, 0);
  using probe = Socket.create(address.family, protocol === "tcp" ? "stream" : "datagram");
  try {
    probe.bind(address);
  } catch (error) {
    throw new Error(`Cannot find a free ${protocol} port on ${ip}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const local = probe.localAddress();
  return local.family === "unix" ? 0 : local.port;
}

async function punch(
  kind: "connect" | "listen",
  common: Common,
  flags: SessionFlags,
  peer: string | undefined,
): Promise<number> {
  const report = (event: SessionEvent) => {
    if (common.quiet || event.kind === "progress" || event.kind === "peer") return;
    if (common.json) {
      print(Deno.stderr, JSON.stringify({ event: event.kind, ...event, kind: undefined }));
    } else warn(describeEvent(event));
  };
  let punched: Punched;
  {
    // connect: --timeout bounds everything up to the connection; listen: up to waiting (and each
    // attempt, from the peer's request, through attemptTimeoutMs).
    const limit = new AbortController();
    const timer = setTimeout(
      () => limit.abort(new Error(`no connection within ${common.timeoutMs / 1000} s (--timeout)`)),
      common.timeoutMs,
    );
    try {
      const localIp = flags.localIp ?? await routeSource(flags.rendezvous);
      const protocol = protocolOf(flags.technique);
      const credential = flags.credentialFile === undefined
        ? undefined
        : (await Deno.readTextFile(flags.credentialFile)).trim();
      await using session = await Session.open({
        punchdSocket: common.socket,
        rendezvous: flags.rendezvous,
        id: flags.id,
        ...(credential === undefined ? {} : { credential }),
        localIp,
        port: flags.port ?? freePort(localIp, protocol),
        technique: flags.technique,
        attemptTimeoutMs: common.timeoutMs,
        onEvent: report,
      }, limit.signal);
      if (kind === "listen") clearTimeout(timer);
      punched = kind === "connect"
        ? await session.connect(peer ?? "", limit.signal)
        : await session.accept();
    } finally {
      clearTimeout(timer);
    }
  }
  // The rendezvous registration and the punchd connection are closed: only the socket remains.
  using socket = punched.socket;
  if (punched.protocol === "udp") {
    using _keepalive = keepUdpAlive(socket);
    await joinDatagrams(socket, Deno.stdin.readable, Deno.stdout.writable);
    return EXIT.OK;
  }
  const result = await joinStream(socket, Deno.stdin.readable, stdoutWritable());
  if (result.peerGone) {
    warn("the peer closed the connection before all of stdin was sent");
    return EXIT.FAILURE;
  }
  return EXIT.OK;
}

/** Runs punchctl; returns the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    warn(`${error.message} (see --help)`);
    return EXIT.USAGE;
  }
  try {
    switch (invocation.kind) {
      case "help":
        print(Deno.stdout, HELP);
        return EXIT.OK;
      case "version":
        print(Deno.stdout, `punchctl ${VERSION}`);
        return EXIT.OK;
      case "status":
      case "report":
        return await info(invocation.kind, invocation.common);
      case "initiate":
      case "respond":
        return await byHand(invocation);
      case "connect":
        return await punch("connect", invocation.common, invocation.session, invocation.peer);
      case "listen":
        return await punch("listen", invocation.common, invocation.session, undefined);
    }
  } catch (error) {
    warn(`failed: ${message(error)}`);
    return EXIT.FAILURE;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
