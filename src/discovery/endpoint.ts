/**
 * Endpoint discovery and port prediction against STUN servers (`--stun`, or
 * a punchd rendezvous server's probe ports, `--probe`, which speak STUN).
 *
 * From each local port in turn, punchd sends a STUN Binding request over
 * TCP (a fresh connection) or UDP to every server, whose response carries
 * the public endpoint its NAT gave the flow (XOR-MAPPED-ADDRESS). While that makes fewer than
 * {@linkcode EVIDENCE} observations, it adds flows from a fresh local port
 * (kernel-chosen) to the probe servers. Each flow is a new mapping at the
 * NAT; all of them, in the order they were made, are the evidence for every
 * port. A pattern is claimed only when at least three observations agree:
 *
 * | observations (at least 3 agree)                     | prediction          | HOW                 |
 * | --------------------------------------------------- | ------------------- | ------------------- |
 * | every flow kept its local port                      | the local port      | `preserved`         |
 * | each local port kept one public port to every probe | that port           | `consistent`        |
 * | successive mappings differ by a constant delta d    | last + d, last + 2d | `delta+d`/`delta-d` |
 * | anything else                                       | the last port seen  | `random`            |
 *
 * Two observations never show a step (any two different ports differ by
 * some d). A step is claimed only when the local port itself got a new port
 * per probe (endpoint-dependent mapping), so one probe server can show
 * `preserved` but neither `consistent` nor `delta`.
 *
 * @module
 */

import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress, inetAddress } from "../../ffi/structs.ts";
import { canonicalIp, parsePort } from "../../ffi/ip.ts";
import { bindingTcp, bindingUdp } from "./stun_client.ts";

/** One answer of a probe server. */
export interface Observation {
  ip: string;
  port: number;
}

/** An observation and the local port of the flow it was made for. */
export interface Mapping extends Observation {
  /** The flow's local (private) port. */
  localPort: number;
}

/** What punchd tells the application to publish. */
export interface Prediction {
  ip: string;
  ports: number[];
  how: string;
}

/** How many observations must agree before a pattern is claimed. */
export const EVIDENCE = 3;

/** Parses `IP:PORT` or `[IPv6]:PORT` (IP literals only: punchd does no DNS). */
export function parseHostPort(text: string): InetAddress {
  const match = text.match(/^\[([^\]]+)\]:([0-9]+)$/) ?? text.match(/^([^:\[\]]+):([0-9]+)$/);
  if (match === null) {
    throw new SyntaxError(`Cannot parse "${text}": expected IP:PORT or [IPv6]:PORT`);
  }
  return inetAddress(canonicalIp(match[1] ?? ""), parsePort(match[2] ?? ""));
}

/**
 * A socket bound to `local`. A fresh port (0) must be one nobody uses: it
 * joins no SO_REUSEPORT group, and a UDP one gets no SO_REUSEADDR either (UDP
 * port selection would share a port with other SO_REUSEADDR sockets; TCP's
 * ignores the flag, which lets the next flow rebind the port while this
 * connection finishes closing).
 */
function bound(local: InetAddress, type: "stream" | "datagram"): Socket {
  const fresh = local.port === 0;
  const socket = Socket.create(local.family, type, {
    reuseAddress: !fresh || type === "stream",
    reusePort: !fresh,
  });
  try {
    socket.bind(local);
  } catch (error) {
    socket.close();
    throw error;
  }
  return socket;
}

function localPortOf(socket: Socket): number {
  const address = socket.localAddress();
  return address.family === "unix" ? 0 : address.port;
}

/** Observes the public endpoint of a TCP flow from `local` (port 0: a fresh one) to `probe`. */
export async function observeTcp(
  local: InetAddress,
  probe: InetAddress,
  signal: AbortSignal,
): Promise<Mapping> {
  using socket = bound(local, "stream");
  await socket.connect(probe, signal);
  const { mapped } = await bindingTcp(socket, probe, signal);
  return { ip: mapped.address, port: mapped.port, localPort: localPortOf(socket) };
}

/**
 * Observes the public endpoint of UDP datagrams from `local` (port 0: a
 * fresh one) to `probe` (3 tries, 500 ms, 1 s and 2 s apart).
 */
export async function observeUdp(
  local: InetAddress,
  probe: InetAddress,
  signal: AbortSignal,
): Promise<Mapping> {
  using socket = bound(local, "datagram");
  const result = await bindingUdp(socket, probe, signal);
  if (result === null) {
    throw new Error(`Cannot observe UDP endpoint: no answer from ${formatAddress(probe)}`);
  }
  return { ip: result.mapped.address, port: result.mapped.port, localPort: localPortOf(socket) };
}

/** Observes one flow: `observeTcp` or `observeUdp`. */
export type Observe = (
  local: InetAddress,
  probe: InetAddress,
  signal: AbortSignal,
) => Promise<Mapping>;

/**
 * Observes the flows that {@linkcode predict} needs, in order: from each of
 * `ports` (on `ip`) to each probe, then, while fewer than
 * {@linkcode EVIDENCE} observations are held, from a fresh local port to
 * each probe (the same fresh port for all of them). One sequence for all
 * ports: the flows of one port are evidence for the others too. At most
 * `ports.length * probes.length` flows, or 3 or 4 when that is less than 3
 * (one probe: 3 flows; two probes and one port: 4), one after another.
 */
export async function observeAll(
  observe: Observe,
  ip: string,
  ports: readonly number[],
  probes: readonly InetAddress[],
  signal: AbortSignal,
): Promise<Mapping[]> {
  if (probes.length === 0) throw new RangeError("Cannot observe an endpoint without probe servers");
  if (ports.length === 0) throw new RangeError("Cannot observe an endpoint without local ports");
  const mappings: Mapping[] = [];
  // In order, one after another: the order is what reveals a port delta.
  for (const port of ports) {
    for (const probe of probes) mappings.push(await observe(inetAddress(ip, port), probe, signal));
  }
  while (mappings.length < EVIDENCE) {
    let fresh = inetAddress(ip, 0);
    for (const probe of probes) {
      const mapping = await observe(fresh, probe, signal);
      fresh = inetAddress(ip, mapping.localPort);
      mappings.push(mapping);
    }
  }
  return mappings;
}

/**
 * Predicts the next public port of `localPort` from the mappings observed in
 * order (see the module's table); only a pattern that at least
 * {@linkcode EVIDENCE} observations agree with is claimed.
 */
export function predict(localPort: number, mappings: readonly Mapping[]): Prediction {
  const first = mappings[0];
  if (first === undefined) throw new RangeError("Cannot predict a port without observations");
  if (mappings.some((m) => m.ip !== first.ip)) {
    throw new Error(
      `Cannot predict the endpoint: probes saw different addresses (${
        mappings.map((m) => m.ip).join(", ")
      })`,
    );
  }
  const own = mappings.filter((m) => m.localPort === localPort).map((m) => m.port);
  const lastOwn = own[own.length - 1];
  if (lastOwn === undefined) {
    throw new RangeError(`Cannot predict port ${localPort}: no observation of a flow from it`);
  }
  const ip = first.ip;
  const enough = mappings.length >= EVIDENCE;
  if (enough && mappings.every((m) => m.port === m.localPort)) {
    return { ip, ports: [localPort], how: "preserved" };
  }
  // Endpoint-independent mapping: each local port kept one public port towards every probe.
  const groups = new Map<number, number[]>();
  for (const m of mappings) groups.set(m.localPort, [...(groups.get(m.localPort) ?? []), m.port]);
  const uniform = [...groups.values()].every((g) => g.every((p) => p === g[0]));
  const agreeing = [...groups.values()].filter((g) => g.length >= 2)
    .reduce((n, g) => n + g.length, 0);
  if (own.length >= 2 && uniform && agreeing >= EVIDENCE) {
    return { ip, ports: [lastOwn], how: "consistent" };
  }
  // Sequential allocation: every new mapping got the last one's port plus the same step. Only
  // when the local port itself got a new port per probe: an endpoint-independent NAT that
  // allocates sequentially keeps the local port's mapping for the peer too (one probe server
  // cannot tell the two apart).
  const ports = mappings.map((m) => m.port);
  const steps = ports.slice(1).map((p, i) => p - (ports[i] ?? p));
  const step = steps[0] ?? 0;
  const last = ports[ports.length - 1] ?? lastOwn;
  if (enough && own.length >= 2 && step !== 0 && steps.every((d) => d === step)) {
    const next = [last + step, last + 2 * step].filter((p) => p >= 1 && p <= 65535);
    if (next.length > 0) return { ip, ports: next, how: `delta${step > 0 ? "+" : ""}${step}` };
  }
  return { ip, ports: [lastOwn], how: "random" };
}

/**
 * The endpoint to publish for `srcPorts`: observes them
 * ({@linkcode observeAll}), predicts each port from all observations, and
 * combines the predictions.
 */
export async function discoverEndpoint(
  protocol: "tcp" | "udp",
  srcIp: string,
  srcPorts: readonly number[],
  probes: readonly InetAddress[],
  signal: AbortSignal,
): Promise<Prediction> {
  const observe = protocol === "tcp" ? observeTcp : observeUdp;
  const mappings = await observeAll(observe, srcIp, srcPorts, probes, signal);
  return combine(srcPorts.map((port) => predict(port, mappings)));
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
