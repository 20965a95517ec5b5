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
 * The session itself (registration, publication, the messages through the
 * rendezvous server) is `src/ctl/session.ts`, shared with `punchctl
 * connect`/`listen`; joining stdin/stdout to a TCP connection is
 * `src/ctl/stdio.ts`. On stderr it prints which technique connected and how long it took.
 *
 * Exit codes: 0 connected (and the message exchange, if any, completed),
 * 1 failed, 2 bad command line.
 *
 * @module
 */

import { integerFlag, parseArgs } from "../cli.ts";
import { canonicalIp } from "../../ffi/ip.ts";
import type { Socket } from "../../ffi/socket.ts";
import { parseChoice, type TechniqueChoice } from "../control/codec.ts";
import { parseHostPort } from "../discovery/endpoint.ts";
import { describeEvent, Session, type SessionEvent } from "../ctl/session.ts";
import { isPunchDatagram, joinStream, stdoutWritable } from "../ctl/stdio.ts";

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
 * The UDP counterpart of {@linkcode exchange}. With a message: send it every
 * 200 ms (at most 25 times) until the peer's message arrives, then twice more,
 * and print what arrived; punch datagrams that arrive late are skipped.
 * Without: each stdin chunk is a datagram, each datagram goes to stdout.
 */
async function exchangeDatagrams(socket: Socket, message: string | undefined): Promise<void> {
  const decoder = new TextDecoder();
  if (message === undefined) {
    const outgoing = (async () => {
      for await (const chunk of Deno.stdin.readable) await socket.write(new Uint8Array(chunk));
    })();
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await socket.read(buf);
      if (!isPunchDatagram(buf.subarray(0, n))) Deno.stdout.writeSync(buf.subarray(0, n));
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
        if (!isPunchDatagram(buf.subarray(0, n))) {
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
  if (message !== undefined) {
    const { readable, writable } = socket.streams();
    const writer = writable.getWriter();
    await writer.write(encoder.encode(message));
    await writer.close();
    const received = await new Response(readable).text();
    Deno.stdout.writeSync(encoder.encode(received + "\n"));
    return;
  }
  await joinStream(socket, Deno.stdin.readable, stdoutWritable());
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
  const show = (event: SessionEvent) => {
    if (event.kind !== "progress" && event.kind !== "peer") say(describeEvent(event));
  };
  let session: Session | undefined;
  try {
    session = await Session.open({
      punchdSocket: o.punchd,
      rendezvous: parseHostPort(o.rendezvous),
      id: o.id,
      ...(o.credential === undefined ? {} : { credential: o.credential }),
      localIp: o.localIp,
      port: o.port,
      technique: o.technique,
      onEvent: show,
    }, signal);
    const { socket, protocol } = o.connect !== undefined
      ? await session.connect(o.connect)
      : await session.accept(signal);
    using _socket = socket;
    if (protocol === "udp") await exchangeDatagrams(socket, o.message);
    else await exchange(socket, o.message);
    return 0;
  } catch (error) {
    say(`failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await session?.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
