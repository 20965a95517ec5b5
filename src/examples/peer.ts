/**
 * An example peer: registers at the rendezvous server, publishes the
 * endpoint punchd predicts for it, then initiates (`--connect PEER`) or
 * waits for and answers an attempt through punchd, and pipes stdin/stdout
 * over the punched socket like netcat (or, with `--message`, sends one
 * message, half-closes and prints what the peer sent).
 *
 * ```
 * deno run --allow-ffi --allow-read src/examples/peer.ts --punchd /run/punchd/punchd.socket \
 *   --rendezvous 172.16.0.1:7000 --id alice --local-ip 10.0.1.2 --port 4000 [--connect bob]
 * ```
 *
 * `--credential-file PATH` registers with the credential in that file: the
 * ID's token when the rendezvous server runs with `--secret-file`
 * (`rendezvous --secret-file F --print-token ID` prints it), or any 16-128
 * characters of `A-Z a-z 0-9 _ -` to bind the ID to them otherwise.
 *
 * Through the rendezvous server the initiator sends its peer
 * `punch|ATTEMPT|TECHNIQUE|IP|PORTS|DATA` for punchd's first progress reply;
 * the responder answers with `respond` (DST = IP/PORTS, EXTRA = DATA). Later
 * progress of either side travels as `peer|ATTEMPT|DATA` and is handed to
 * punchd with `peer`.
 * On stderr it prints which technique connected and how long it took.
 *
 * Exit codes: 0 connected (and the message exchange, if any, completed),
 * 1 failed, 2 bad command line.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { type Attempt, PunchdClient } from "../client/client.ts";
import { canonicalIp } from "../../ffi/ip.ts";
import type { Socket } from "../../ffi/socket.ts";
import { formatAddress } from "../../ffi/structs.ts";
import { parseChoice, type TechniqueChoice } from "../control/codec.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { RendezvousClient } from "../rendezvous/client.ts";
import { PUNCH_MAGIC } from "../techniques/udp.ts";

const encoder = new TextEncoder();

/** One line to stderr (this program's status output). */
function say(text: string): void {
  Deno.stderr.writeSync(encoder.encode(`peer: ${text}\n`));
}

interface Options {
  punchd: string;
  rendezvous: string;
  id: string;
  localIp: string;
  port: number;
  connect?: string;
  credential?: string;
  technique: TechniqueChoice;
  message?: string;
  timeoutMs: number;
}

function parse(args: string[]): Options {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      punchd: { type: "string" },
      rendezvous: { type: "string" },
      id: { type: "string" },
      "local-ip": { type: "string" },
      port: { type: "string" },
      connect: { type: "string" },
      "credential-file": { type: "string" },
      technique: { type: "string" },
      message: { type: "string" },
      timeout: { type: "string" },
    },
  });
  for (const required of ["rendezvous", "id", "local-ip", "port"] as const) {
    if (values[required] === undefined) throw new SyntaxError(`--${required} is required`);
  }
  const technique = (values.technique ?? "auto") as TechniqueChoice;
  try {
    parseChoice(technique);
  } catch (error) {
    throw new RangeError(`--technique: ${(error as Error).message}`);
  }
  const options: Options = {
    punchd: values.punchd ?? "/run/punchd/punchd.socket",
    rendezvous: values.rendezvous ?? "",
    id: values.id ?? "",
    localIp: canonicalIp(values["local-ip"] ?? ""),
    port: integerFlag(values.port ?? "", "port", 1, 65535),
    technique,
    timeoutMs: integerFlag(values.timeout ?? "30", "timeout", 1, 3600) * 1000,
  };
  if (values.connect !== undefined) options.connect = values.connect;
  const credentialFile = values["credential-file"];
  if (credentialFile !== undefined) {
    options.credential = Deno.readTextFileSync(credentialFile).trim();
  }
  if (values.message !== undefined) options.message = values.message;
  return options;
}

/**
 * Relays an attempt's later rounds: punchd's progress goes to the peer as
 * `peer|ATTEMPT|DATA`, and the peer's `peer|ATTEMPT|DATA` goes to punchd,
 * until the attempt ends (techniques such as tcp-syni need a round back).
 */
async function relay(
  attempt: Attempt,
  progress: AsyncIterator<string>,
  rendezvous: RendezvousClient,
  peer: string,
  attemptId: string,
): Promise<Socket> {
  const done = new AbortController();
  const outgoing = (async () => {
    for (let next = await progress.next(); !next.done; next = await progress.next()) {
      await rendezvous.notify(peer, `peer|${attemptId}|${next.value}`);
    }
  })();
  const incoming = (async () => {
    for (;;) {
      const note = await rendezvous.nextNotification(done.signal);
      const [kind, id, data] = note.payload.split("|");
      if (note.from === peer && kind === "peer" && id === attemptId && data !== undefined) {
        await attempt.peer(data);
      }
    }
  })().catch(() => {});
  try {
    return await attempt.socket;
  } finally {
    done.abort();
    await Promise.allSettled([outgoing, incoming]);
  }
}

async function initiate(
  o: Options,
  punchd: PunchdClient,
  rendezvous: RendezvousClient,
  me: { ip: string; ports: number[] },
) {
  const peer = o.connect ?? "";
  const target = await rendezvous.query(peer, protocolOf(o.technique));
  say(`${peer} published ${target.ip} ${target.ports.join(",")}; initiating ${o.technique}`);
  const attemptId = `${o.id}-${Date.now().toString(36)}`;
  const attempt = punchd.initiate({
    id: attemptId,
    technique: o.technique,
    srcIp: o.localIp,
    srcPorts: [o.port],
    dstIp: target.ip,
    dstPorts: target.ports,
  });
  const progress = attempt.progress[Symbol.asyncIterator]();
  const first = await progress.next();
  if (!first.done) {
    await rendezvous.notify(
      peer,
      `punch|${attemptId}|${o.technique}|${me.ip}|${me.ports.join(",")}|${first.value}`,
    );
  }
  const socket = await relay(attempt, progress, rendezvous, peer, attemptId);
  return { socket, peer, technique: (await attempt.winner)?.technique ?? o.technique };
}

async function respond(
  o: Options,
  punchd: PunchdClient,
  rendezvous: RendezvousClient,
  signal: AbortSignal,
) {
  say("waiting for a peer");
  for (;;) {
    const note = await rendezvous.nextNotification(signal);
    const [kind, attemptId, technique, ip, ports, data] = note.payload.split("|");
    let name: TechniqueChoice | undefined;
    try {
      if (technique !== undefined) {
        parseChoice(technique);
        name = technique as TechniqueChoice;
      }
    } catch {
      name = undefined;
    }
    if (
      kind !== "punch" || attemptId === undefined || name === undefined || ip === undefined ||
      ports === undefined || data === undefined
    ) {
      say(`ignoring a notification from ${note.from}: ${note.payload.slice(0, 60)}`);
      continue;
    }
    say(`${note.from} initiates ${name} from ${ip} ${ports}`);
    const attempt = punchd.respond({
      id: `${note.from}-${attemptId}`.slice(0, 64).replace(/[^A-Za-z0-9_.:@+-]/g, "_"),
      technique: name,
      srcIp: o.localIp,
      srcPorts: [o.port],
      dstIp: ip,
      dstPorts: ports.split(",").map(Number),
      extra: data,
    });
    const socket = await relay(
      attempt,
      attempt.progress[Symbol.asyncIterator](),
      rendezvous,
      note.from,
      attemptId,
    );
    return { socket, peer: note.from, technique: (await attempt.winner)?.technique ?? name };
  }
}

/** The transport a technique punches. */
function protocolOf(technique: TechniqueChoice): "tcp" | "udp" {
  const choice = parseChoice(technique);
  return choice.kind === "auto"
    ? choice.protocol
    : choice.technique.startsWith("udp")
    ? "udp"
    : "tcp";
}

/**
 * The UDP counterpart of {@linkcode exchange}. With a message: send it every
 * 200 ms (at most 25 times) until the peer's message arrives, then twice more,
 * and print what arrived; punch datagrams that arrive late are skipped.
 * Without: each stdin chunk is a datagram, each datagram goes to stdout.
 */
async function exchangeDatagrams(socket: Socket, message: string | undefined): Promise<void> {
  const decoder = new TextDecoder();
  const isPunch = (bytes: Uint8Array) => decoder.decode(bytes.subarray(0, 4)) === PUNCH_MAGIC;
  if (message === undefined) {
    const outgoing = (async () => {
      for await (const chunk of Deno.stdin.readable) await socket.write(new Uint8Array(chunk));
    })();
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await socket.read(buf);
      if (!isPunch(buf.subarray(0, n))) Deno.stdout.writeSync(buf.subarray(0, n));
      if (n === 0) break;
    }
    await outgoing;
    return;
  }
  const mine = encoder.encode(message);
  const buf = new Uint8Array(65536);
  let received: string | null = null;
  for (let i = 0; i < 25 && received === null; i++) {
    try {
      // A refused send (ICMP port unreachable) is reported on the next call; it is not fatal here.
      await socket.write(mine);
      for (;;) {
        const n = await socket.read(buf, AbortSignal.timeout(200));
        if (!isPunch(buf.subarray(0, n))) {
          received = decoder.decode(buf.subarray(0, n));
          break;
        }
      }
    } catch {
      // Nothing yet: send again.
    }
  }
  if (received === null) throw new Error("no datagram from the peer after 25 tries");
  for (let i = 0; i < 2; i++) await socket.write(mine).catch(() => {});
  Deno.stdout.writeSync(encoder.encode(received + "\n"));
}

async function exchange(socket: Socket, message: string | undefined): Promise<void> {
  const { readable, writable } = socket.streams();
  if (message !== undefined) {
    const writer = writable.getWriter();
    await writer.write(encoder.encode(message));
    await writer.close();
    const received = await new Response(readable).text();
    Deno.stdout.writeSync(encoder.encode(received + "\n"));
    return;
  }
  await Promise.all([
    Deno.stdin.readable.pipeTo(writable),
    readable.pipeTo(Deno.stdout.writable, { preventClose: true }),
  ]);
}

/** Runs the peer; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let o: Options;
  try {
    o = parse(args);
  } catch (error) {
    say(`${(error as Error).message.split("\n")[0]}`);
    return 2;
  }
  const signal = AbortSignal.timeout(o.timeoutMs);
  let punchd: PunchdClient | undefined;
  let rendezvous: RendezvousClient | undefined;
  try {
    rendezvous = await RendezvousClient.connect(parseHostPort(o.rendezvous), signal);
    await rendezvous.register(o.id, o.credential);
    punchd = await PunchdClient.connect(o.punchd);
    const protocol = protocolOf(o.technique);
    const me = await punchd.endpoint(`${o.id}-endpoint`.slice(0, 64), protocol, o.localIp, [
      o.port,
    ]);
    await rendezvous.publish(protocol, me.ip, me.ports);
    say(`registered as ${o.id}, published ${me.ip} ${me.ports.join(",")} (${me.source})`);
    const started = performance.now();
    const { socket, peer, technique } = o.connect !== undefined
      ? await initiate(o, punchd, rendezvous, me)
      : await respond(o, punchd, rendezvous, signal);
    const ms = Math.round(performance.now() - started);
    using _socket = socket;
    say(
      `connected to ${peer} with ${technique} in ${ms} ms: local ${
        formatAddress(socket.localAddress())
      }, remote ${formatAddress(socket.peerAddress())}`,
    );
    if (protocolOf(technique) === "udp") await exchangeDatagrams(socket, o.message);
    else await exchange(socket, o.message);
    return 0;
  } catch (error) {
    say(`failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await punchd?.close();
    await rendezvous?.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
