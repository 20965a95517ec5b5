/**
 * A TURN client for TCP allocations (RFC 8656 with RFC 6062), over a TCP
 * control connection to the server: Allocate with REQUESTED-TRANSPORT TCP,
 * CreatePermission, ConnectionAttempt indications, ConnectionBind on a
 * fresh data connection, Refresh. Long-term credentials (RFC 8489 §9.2),
 * static or from the TURN REST API shared secret that coturn supports.
 * User names and passwords, keys and nonces are never logged or put into
 * error messages.
 *
 * ```
 *  control:  Allocate ──► 401 (REALM, NONCE) ──► Allocate + MESSAGE-INTEGRITY ──► relayed address
 *            CreatePermission(peer IP) ──► ok
 *            ◄── ConnectionAttempt (CONNECTION-ID, XOR-PEER-ADDRESS)   the peer connected to it
 *  data:     connect ──► ConnectionBind(CONNECTION-ID) ──► ok: from here a byte stream to the peer
 *  control:  Refresh (before LIFETIME ends) ... Refresh LIFETIME 0, close: the allocation and
 *            every data connection of it end (RFC 6062 §4.5)
 * ```
 *
 * A 438 (stale nonce) answer is retried once with the new nonce; a 401
 * after credentials were sent means they are wrong.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import { Socket } from "../../ffi/socket.ts";
import { formatAddress, type InetAddress } from "../../ffi/structs.ts";
import {
  ATTR,
  attribute,
  decode,
  decodeErrorCode,
  decodeText,
  decodeUint32,
  decodeXorAddress,
  encode,
  encodeRequestedTransport,
  encodeText,
  encodeUint32,
  encodeXorAddress,
  frameLength,
  HEADER_BYTES,
  longTermKey,
  METHOD,
  newTransactionId,
  type StunAttribute,
  type StunMessage,
  verifyIntegrity,
} from "../stun/message.ts";

/** Credentials for a TURN server: static, or a REST API shared secret. */
export interface TurnCredentials {
  user?: string;
  password?: string;
  secret?: string;
}

/** A TURN error answer or a broken exchange, with the STUN error code (0: none). */
export class TurnError extends Error {
  /** The STUN error code, or 0. */
  readonly code: number;
  /** Builds the error. */
  constructor(code: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TurnError";
    this.code = code;
  }
}

/** What a Refresh needs after the worker hands the control connection to the daemon. */
export interface TurnSession {
  server: string;
  username: string;
  realm: string;
  nonce: string;
  /** The long-term key, hex. */
  key: string;
  /** Seconds the allocation lives without a Refresh. */
  lifetime: number;
}

/** The biggest STUN message accepted from the server. */
const MAX_MESSAGE = 4096;

/** The user name and password to use with `credentials` (REST API names expire in 24 h). */
export function credentialsFor(
  credentials: TurnCredentials,
  now = Date.now(),
): { username: string; password: string } {
  if (credentials.secret !== undefined) {
    const username = `${Math.floor(now / 1000) + 86400}:${credentials.user ?? "punchd"}`;
    const password = createHmac("sha1", credentials.secret).update(username).digest("base64");
    return { username, password };
  }
  if (credentials.user === undefined || credentials.password === undefined) {
    throw new TypeError("Cannot use the TURN server: no credentials");
  }
  return { username: credentials.user, password: credentials.password };
}

/**
 * Reads whole STUN messages from a stream, never past the end of one: what
 * follows a ConnectionBind answer is the peer's data, not ours to read.
 */
export async function readMessage(
  socket: Socket,
  signal: AbortSignal,
): Promise<{ message: StunMessage; raw: Uint8Array }> {
  const header = new Uint8Array(HEADER_BYTES);
  await readFully(socket, header, signal);
  let total: number | null;
  try {
    total = frameLength(header);
  } catch (error) {
    throw new TurnError(0, "Cannot read from the TURN server: not STUN", { cause: error });
  }
  if (total === null || total > MAX_MESSAGE) {
    throw new TurnError(0, "Cannot read from the TURN server: message too long");
  }
  const raw = new Uint8Array(total);
  raw.set(header);
  await readFully(socket, raw.subarray(HEADER_BYTES), signal);
  try {
    return { message: decode(raw).message, raw };
  } catch (error) {
    throw new TurnError(0, `Cannot read from the TURN server: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

async function readFully(socket: Socket, buf: Uint8Array, signal: AbortSignal): Promise<void> {
  for (let have = 0; have < buf.length;) {
    const part = new Uint8Array(buf.length - have);
    const n = await socket.read(part, signal);
    if (n === 0) throw new TurnError(0, "The TURN server closed the connection");
    buf.set(part.subarray(0, n), have);
    have += n;
  }
}

function errorOf(message: StunMessage): { code: number; reason: string } {
  const value = attribute(message, ATTR.ERROR_CODE);
  if (value === undefined) return { code: 0, reason: "no ERROR-CODE" };
  try {
    return decodeErrorCode(value);
  } catch {
    return { code: 0, reason: "bad ERROR-CODE" };
  }
}

const METHOD_NAMES: Record<number, string> = {
  [METHOD.allocate]: "Allocate",
  [METHOD.refresh]: "Refresh",
  [METHOD.createPermission]: "CreatePermission",
  [METHOD.connectionBind]: "ConnectionBind",
  [METHOD.connect]: "Connect",
};

/** One authenticated exchange state: realm, nonce and key of the server's challenge. */
class Auth {
  constructor(
    readonly username: string,
    readonly realm: string,
    public nonce: string,
    readonly key: Uint8Array,
  ) {}

  attributes(): StunAttribute[] {
    return [
      { type: ATTR.USERNAME, value: encodeText(this.username) },
      { type: ATTR.REALM, value: encodeText(this.realm) },
      { type: ATTR.NONCE, value: encodeText(this.nonce) },
    ];
  }
}

/**
 * Sends a request on `socket` and reads until its answer, handing
 * indications to `indication`. With `auth`, the request is authenticated
 * and a 438 is retried once with the new nonce (kept in `auth`). Resolves
 * with the success response; throws TurnError on an error response.
 */
async function exchange(
  socket: Socket,
  method: number,
  attributes: StunAttribute[] | ((transactionId: Uint8Array) => StunAttribute[]),
  auth: Auth | null,
  signal: AbortSignal,
  indication: (message: StunMessage) => void = () => {},
): Promise<StunMessage> {
  const name = METHOD_NAMES[method] ?? `method ${method}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    const transactionId = newTransactionId();
    // XOR attributes (XOR-PEER-ADDRESS) depend on the transaction ID: built per try.
    const own = typeof attributes === "function" ? attributes(transactionId) : attributes;
    const request: StunMessage = {
      method,
      class: "request",
      transactionId,
      attributes: auth === null ? own : [...own, ...auth.attributes()],
    };
    const bytes = encode(request, auth === null ? {} : { integrityKey: auth.key });
    await socket.write(new Uint8Array(bytes), signal);
    for (;;) {
      const { message, raw } = await readMessage(socket, signal);
      if (message.class === "indication") {
        indication(message);
        continue;
      }
      if (message.transactionId.some((b, i) => b !== transactionId[i])) continue;
      if (message.class === "success") {
        if (
          auth !== null && attribute(message, ATTR.MESSAGE_INTEGRITY) !== undefined &&
          !verifyIntegrity(raw, auth.key)
        ) {
          throw new TurnError(0, `TURN ${name}: the answer's MESSAGE-INTEGRITY is wrong`);
        }
        return message;
      }
      const error = errorOf(message);
      const nonce = attribute(message, ATTR.NONCE);
      if (error.code === 438 && auth !== null && nonce !== undefined && attempt === 0) {
        auth.nonce = decodeText(nonce);
        break; // Again, with the fresh nonce.
      }
      const err = new TurnError(error.code, `TURN ${name} refused: ${error.code} ${error.reason}`);
      (err as TurnError & { answer?: StunMessage }).answer = message;
      throw err;
    }
  }
  throw new TurnError(438, `TURN ${name} refused: the nonce went stale twice`);
}

/** A TCP allocation and its control connection. */
export class TurnControl {
  readonly server: InetAddress;
  /** The relayed transport address peers connect to. */
  readonly relayed: InetAddress;
  /** Where the server saw this client (XOR-MAPPED-ADDRESS), when it said. */
  readonly mapped?: InetAddress;
  /** Seconds the allocation lives without a Refresh. */
  lifetime: number;
  readonly #socket: Socket;
  readonly #auth: Auth;
  readonly #attempts: { id: number; peer: InetAddress }[] = [];

  private constructor(
    socket: Socket,
    server: InetAddress,
    auth: Auth,
    relayed: InetAddress,
    lifetime: number,
    mapped?: InetAddress,
  ) {
    this.#socket = socket;
    this.server = server;
    this.#auth = auth;
    this.relayed = relayed;
    this.lifetime = lifetime;
    if (mapped !== undefined) this.mapped = mapped;
  }

  /**
   * Connects to `server` (from `local` when given) and allocates a TCP
   * relay. Throws TurnError (wrong credentials: code 401; quota: 486, 508)
   * or a socket error; closes what it opened on failure.
   */
  static async allocate(
    server: InetAddress,
    credentials: TurnCredentials,
    signal: AbortSignal,
  ): Promise<TurnControl> {
    const { username, password } = credentialsFor(credentials);
    const socket = Socket.create(server.family, "stream");
    try {
      await socket.connect(server, signal);
      const transport = [{
        type: ATTR.REQUESTED_TRANSPORT,
        value: encodeRequestedTransport(6),
      }];
      let challenge: StunMessage;
      try {
        await exchange(socket, METHOD.allocate, transport, null, signal);
        throw new TurnError(0, "TURN Allocate: the server asked for no credentials");
      } catch (error) {
        const answer = (error as { answer?: StunMessage }).answer;
        if (!(error instanceof TurnError) || error.code !== 401 || answer === undefined) {
          throw error;
        }
        challenge = answer;
      }
      const realm = attribute(challenge, ATTR.REALM);
      const nonce = attribute(challenge, ATTR.NONCE);
      if (realm === undefined || nonce === undefined) {
        throw new TurnError(401, "TURN Allocate: the server's challenge has no REALM or NONCE");
      }
      const realmText = decodeText(realm);
      const auth = new Auth(
        username,
        realmText,
        decodeText(nonce),
        longTermKey(username, realmText, password),
      );
      let answer: StunMessage;
      try {
        answer = await exchange(socket, METHOD.allocate, transport, auth, signal);
      } catch (error) {
        if (error instanceof TurnError && error.code === 401) {
          throw new TurnError(401, "TURN Allocate refused: wrong credentials (401)");
        }
        throw error;
      }
      const relayed = attribute(answer, ATTR.XOR_RELAYED_ADDRESS);
      if (relayed === undefined) {
        throw new TurnError(0, "TURN Allocate: the answer has no XOR-RELAYED-ADDRESS");
      }
      const lifetime = attribute(answer, ATTR.LIFETIME);
      const mapped = attribute(answer, ATTR.XOR_MAPPED_ADDRESS);
      return new TurnControl(
        socket,
        server,
        auth,
        decodeXorAddress(relayed, answer.transactionId),
        lifetime === undefined ? 600 : decodeUint32(lifetime),
        mapped === undefined ? undefined : decodeXorAddress(mapped, answer.transactionId),
      );
    } catch (error) {
      socket.close();
      throw error;
    }
  }

  /** Takes over a control connection a worker handed over (see {@linkcode session}). */
  static resume(
    fd: number,
    server: InetAddress,
    relayed: InetAddress,
    session: TurnSession,
  ): TurnControl {
    const key = new Uint8Array(session.key.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
    return new TurnControl(
      new Socket(fd),
      server,
      new Auth(session.username, session.realm, session.nonce, key),
      relayed,
      session.lifetime,
    );
  }

  /** What {@linkcode resume} needs. */
  session(): TurnSession {
    return {
      server: formatAddress(this.server),
      username: this.#auth.username,
      realm: this.#auth.realm,
      nonce: this.#auth.nonce,
      key: [...this.#auth.key].map((b) => b.toString(16).padStart(2, "0")).join(""),
      lifetime: this.lifetime,
    };
  }

  /** The control connection's fd. */
  get fd(): number {
    return this.#socket.fd;
  }

  /** Lets peers from `ip` (any port) connect to the relayed address. */
  async createPermission(ip: string, signal: AbortSignal): Promise<void> {
    const peer = { family: this.relayed.family, address: ip, port: 0 } as InetAddress;
    await this.#request(METHOD.createPermission, (id) => [{
      type: ATTR.XOR_PEER_ADDRESS,
      value: encodeXorAddress(peer, id),
    }], signal);
  }

  /** Refreshes the allocation for `lifetime` seconds (0: releases it). */
  async refresh(lifetime: number, signal: AbortSignal): Promise<void> {
    const answer = await this.#request(METHOD.refresh, () => [{
      type: ATTR.LIFETIME,
      value: encodeUint32(lifetime),
    }], signal);
    const granted = attribute(answer, ATTR.LIFETIME);
    if (granted !== undefined) this.lifetime = decodeUint32(granted);
  }

  /**
   * The next ConnectionAttempt: a peer connected to the relayed address.
   * Reads the control connection until one arrives.
   */
  async connectionAttempt(signal: AbortSignal): Promise<{ id: number; peer: InetAddress }> {
    for (;;) {
      const queued = this.#attempts.shift();
      if (queued !== undefined) return queued;
      const { message } = await readMessage(this.#socket, signal);
      this.#indication(message);
    }
  }

  /**
   * Opens a data connection (from `local`, when given) and binds it to the
   * peer connection `id`; resolves with the socket, now a byte stream to
   * the peer. Closes it on failure.
   */
  async connectionBind(
    id: number,
    signal: AbortSignal,
    local?: InetAddress,
  ): Promise<Socket> {
    const data = Socket.create(this.server.family, "stream", { reuseAddress: true });
    try {
      if (local !== undefined) data.bind(local);
      await data.connect(this.server, signal);
      const attributes = [{ type: ATTR.CONNECTION_ID, value: encodeUint32(id) }];
      await exchange(data, METHOD.connectionBind, attributes, this.#auth, signal);
      return data;
    } catch (error) {
      data.close();
      throw error;
    }
  }

  /** Closes the control connection (the server then ends the allocation). Idempotent. */
  close(): void {
    this.#socket.close();
  }

  /** Closes. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Gives up the control connection's fd (another owner closes it). */
  detach(): number {
    return this.#socket.detach();
  }

  #indication(message: StunMessage): void {
    if (message.class !== "indication" || message.method !== METHOD.connectionAttempt) return;
    const id = attribute(message, ATTR.CONNECTION_ID);
    const peer = attribute(message, ATTR.XOR_PEER_ADDRESS);
    if (id === undefined || peer === undefined) return;
    try {
      this.#attempts.push({
        id: decodeUint32(id),
        peer: decodeXorAddress(peer, message.transactionId),
      });
    } catch {
      // A broken indication: ignored (the attempt's deadline bounds the wait).
    }
  }

  #request(
    method: number,
    attributes: (transactionId: Uint8Array) => StunAttribute[],
    signal: AbortSignal,
  ): Promise<StunMessage> {
    return exchange(
      this.#socket,
      method,
      attributes,
      this.#auth,
      signal,
      (m) => this.#indication(m),
    );
  }
}
