/**
 * Endpoint discovery and port prediction against probe servers (the
 * rendezvous server's probe ports, see `src/rendezvous/`).
 *
 * For each local port, punchd connects (TCP) or sends a datagram (UDP) from
 * that port to every probe server, which answers `observed|IP|PORT`: the
 * public endpoint its NAT gave the flow. From the observations it predicts
 * the public port of the next flow from the same local port:
 *
 * | observations                          | prediction              | HOW              |
 * | ------------------------------------- | ----------------------- | ---------------- |
 * | every port equals the local port      | the local port          | `preserved`      |
 * | every port is the same other port     | that port               | `consistent`     |
 * | ports differ by a constant delta d    | last + d, last + 2d     | `delta+d`/`delta-d` |
 * | anything else                         | the last port observed  | `random`         |
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { canonicalIp, parsePort } from "../../ffi/ip.ts";

/** One answer of a probe server. */
export interface Observation {
  ip: string;
  port: number;
}

/** What punchd tells the application to publish. */
export interface Prediction {
  ip: string;
  ports: number[];
  how: string;
}

/** Parses `IP:PORT` or `[IPv6]:PORT` (IP literals only: punchd does no DNS). */
export function parseHostPort(text: string): InetAddress {
  const match = text.match(/^\[([^\]]+)\]:([0-9]+)$/) ?? text.match(/^([^:\[\]]+):([0-9]+)$/);
  if (match === null) {
    throw new SyntaxError(`Cannot parse "${text}": expected IP:PORT or [IPv6]:PORT`);
  }
  return inetAddress(canonicalIp(match[1] ?? ""), parsePort(match[2] ?? ""));
}

/** Parses a probe server's answer line `observed|IP|PORT`. */
export function parseObservation(line: string): Observation {
  const fields = line.trim().split("|");
  if (fields.length !== 3 || fields[0] !== "observed") {
    throw new SyntaxError(`Cannot parse probe answer "${line.slice(0, 80)}"`);
  }
  return { ip: canonicalIp(fields[1] ?? ""), port: parsePort(fields[2] ?? "") };
}

async function readAll(socket: Socket, signal: AbortSignal, limit = 256): Promise<string> {
  const buf = new Uint8Array(limit);
  let length = 0;
  for (;;) {
    const n = await socket.read(buf.subarray(length), signal);
    if (n === 0 || length + n >= limit) {
      return new TextDecoder().decode(buf.subarray(0, length + n));
    }
    length += n;
  }
}

/** Observes the public endpoint of a TCP flow from `local` to `probe`. */
export async function observeTcp(
  local: InetAddress,
  probe: InetAddress,
  signal: AbortSignal,
): Promise<Observation> {
  using socket = Socket.create(local.family, "stream", { reuseAddress: true, reusePort: true });
  socket.bind(local);
  await socket.connect(probe, signal);
  // The server answers at once and closes first (the TIME_WAIT state stays on its side).
  return parseObservation(await readAll(socket, signal));
}

/** Observes the public endpoint of UDP datagrams from `local` to `probe` (3 tries, 500 ms apart). */
export async function observeUdp(
  local: InetAddress,
  probe: InetAddress,
  signal: AbortSignal,
): Promise<Observation> {
  using socket = Socket.create(local.family, "datagram", { reuseAddress: true, reusePort: true });
  socket.bind(local);
  const buf = new Uint8Array(256);
  for (let attempt = 0; attempt < 3; attempt++) {
    await socket.sendTo(new TextEncoder().encode("observe"), probe, signal);
    const wait = AbortSignal.any([signal, AbortSignal.timeout(500)]);
    try {
      for (;;) {
        const { length, from } = await socket.receiveFrom(buf, wait);
        if (from.family !== "unix" && from.address === probe.address && from.port === probe.port) {
          return parseObservation(new TextDecoder().decode(buf.subarray(0, length)));
        }
      }
    } catch (error) {
      if (signal.aborted) throw error;
    }
  }
  throw new Error(`Cannot observe UDP endpoint: no answer from ${formatAddress(probe)}`);
}

/** Predicts the next public port of `localPort` from observations made in order. */
export function predict(localPort: number, observations: readonly Observation[]): Prediction {
  const first = observations[0];
  if (first === undefined) throw new RangeError("Cannot predict a port without observations");
  if (observations.some((o) => o.ip !== first.ip)) {
    throw new Error(
      `Cannot predict the endpoint: probes saw different addresses (${
        observations.map((o) => o.ip).join(", ")
      })`,
    );
  }
  const ports = observations.map((o) => o.port);
  const last = ports[ports.length - 1] ?? first.port;
  if (ports.every((p) => p === localPort)) {
    return { ip: first.ip, ports: [localPort], how: "preserved" };
  }
  if (ports.every((p) => p === first.port)) {
    return { ip: first.ip, ports: [first.port], how: "consistent" };
  }
  const deltas = ports.slice(1).map((p, i) => p - (ports[i] ?? p));
  const delta = deltas[0] ?? 0;
  if (deltas.length > 0 && delta !== 0 && deltas.every((d) => d === delta)) {
    const next = [last + delta, last + 2 * delta].filter((p) => p >= 1 && p <= 65535);
    if (next.length > 0) {
      return { ip: first.ip, ports: next, how: `delta${delta > 0 ? "+" : ""}${delta}` };
    }
  }
  return { ip: first.ip, ports: [last], how: "random" };
}

/** Order of how trustworthy a prediction is (worst wins when several ports are combined). */
const HOW_RANK = ["preserved", "consistent", "delta", "random"];

/** Combines per-port predictions into one reply: the same IP, all ports, the worst HOW. */
export function combine(predictions: readonly Prediction[]): Prediction {
  const first = predictions[0];
  if (first === undefined) throw new RangeError("Cannot combine no predictions");
  if (predictions.some((p) => p.ip !== first.ip)) {
    throw new Error("Cannot predict the endpoint: ports map to different addresses");
  }
  const rank = (how: string) => HOW_RANK.findIndex((h) => how.startsWith(h));
  const worst = predictions.reduce((a, b) => rank(b.how) > rank(a.how) ? b : a);
  return {
    ip: first.ip,
    ports: [...new Set(predictions.flatMap((p) => p.ports))].slice(0, 16),
    how: worst.how,
  };
}
