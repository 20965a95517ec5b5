/**
 * libnftables, the library the `nft` command is a thin front end to, called
 * in-process: one batch of nft commands costs a netlink transaction (well
 * under a millisecond for a few set elements) instead of spawning `nft`
 * (14-17 ms per batch, measured on the lab machines), which is what kept
 * firewall guards on the success path of every TCP attempt.
 *
 * The library is optional: where `libnftables.so.1` cannot be opened,
 * {@linkcode Nftables.open} returns null and callers spawn `nft` instead.
 * A context is not thread-safe, so each instance runs one batch at a time
 * (callers queue); a large batch runs on Deno's blocking thread pool
 * (`nonblocking`), a small one on the caller's thread
 * ({@linkcode SMALL_BATCH_BYTES}), and its output and errors are captured
 * in the library's buffers, never printed to the daemon's own stdout and
 * stderr.
 *
 * @module
 */

/** libnftables' symbol table, with each C prototype beside its entry. */
const NFT_SYMBOLS = {
  /** struct nft_ctx *nft_ctx_new(uint32_t flags); */
  nft_ctx_new: { parameters: ["u32"], result: "pointer" },
  /** void nft_ctx_free(struct nft_ctx *ctx); */
  nft_ctx_free: { parameters: ["pointer"], result: "void" },
  /** int nft_ctx_buffer_output(struct nft_ctx *ctx); */
  nft_ctx_buffer_output: { parameters: ["pointer"], result: "i32" },
  /** int nft_ctx_buffer_error(struct nft_ctx *ctx); */
  nft_ctx_buffer_error: { parameters: ["pointer"], result: "i32" },
  /** const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx); */
  nft_ctx_get_output_buffer: { parameters: ["pointer"], result: "pointer" },
  /** const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx); */
  nft_ctx_get_error_buffer: { parameters: ["pointer"], result: "pointer" },
  /** int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf); */
  nft_run_cmd_from_buffer: {
    parameters: ["pointer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  /** The same function, called on the calling thread (small batches: see SMALL_BATCH_BYTES). */
  nft_run_cmd_from_buffer_here: {
    name: "nft_run_cmd_from_buffer",
    parameters: ["pointer", "buffer"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * Scripts up to this size (a few set elements: one attempt's guards) run on the calling thread:
 * the netlink transaction takes 0.2-0.3 ms, less than handing it to the blocking pool and waking
 * the event loop again (0.8-1.5 ms on a busy two-core machine). Larger batches (a burst of
 * attempts) go to the pool, so the event loop is never held for long.
 */
export const SMALL_BATCH_BYTES = 2048;

/** NFT_CTX_DEFAULT: a context with no flags. */
const NFT_CTX_DEFAULT = 0;

/** The library's file name (Debian's libnftables1). */
export const LIBNFTABLES = "libnftables.so.1";

/** What one batch did: `code` 0 on success, like `nft`'s exit status. */
export interface NftablesResult {
  code: number;
  stdout: string;
  stderr: string;
}

type Symbols = Deno.DynamicLibrary<typeof NFT_SYMBOLS>["symbols"];

/** One libnftables context, running one batch at a time. */
export class Nftables {
  readonly #library: Deno.DynamicLibrary<typeof NFT_SYMBOLS>;
  readonly #symbols: Symbols;
  #context: Deno.PointerValue;
  #busy: Promise<unknown> = Promise.resolve();

  private constructor(
    library: Deno.DynamicLibrary<typeof NFT_SYMBOLS>,
    context: Deno.PointerObject,
  ) {
    this.#library = library;
    this.#symbols = library.symbols;
    this.#context = context;
  }

  /**
   * Opens the library and a context with buffered output and errors; null
   * when the library is missing or cannot make a context.
   */
  static open(path: string = LIBNFTABLES): Nftables | null {
    let library: Deno.DynamicLibrary<typeof NFT_SYMBOLS>;
    try {
      library = Deno.dlopen(path, NFT_SYMBOLS);
    } catch {
      return null;
    }
    const context = library.symbols.nft_ctx_new(NFT_CTX_DEFAULT);
    if (context === null) {
      library.close();
      return null;
    }
    if (
      library.symbols.nft_ctx_buffer_output(context) !== 0 ||
      library.symbols.nft_ctx_buffer_error(context) !== 0
    ) {
      library.symbols.nft_ctx_free(context);
      library.close();
      return null;
    }
    return new Nftables(library, context);
  }

  /**
   * Runs `script` (what `nft -f -` would read) as one transaction; resolves
   * with its status and what it printed. Batches run one after another.
   */
  run(script: string): Promise<NftablesResult> {
    const next = this.#busy.then(() => this.#runNow(script));
    this.#busy = next.catch(() => {});
    return next;
  }

  async #runNow(script: string): Promise<NftablesResult> {
    const context = this.#context;
    if (context === null) throw new Error("Cannot run nftables: the context is closed");
    const text = new TextEncoder().encode(script + "\0");
    const code = text.byteLength <= SMALL_BATCH_BYTES
      ? this.#symbols.nft_run_cmd_from_buffer_here(context, text)
      : await this.#symbols.nft_run_cmd_from_buffer(context, text);
    return {
      code: code === 0 ? 0 : 1,
      stdout: this.#take(this.#symbols.nft_ctx_get_output_buffer(context)),
      stderr: this.#take(this.#symbols.nft_ctx_get_error_buffer(context)),
    };
  }

  #take(pointer: Deno.PointerValue): string {
    // Reading a buffer also rewinds it for the next batch.
    return pointer === null ? "" : Deno.UnsafePointerView.getCString(pointer).slice(0, 65536);
  }

  /** Frees the context once running batches end (idempotent). */
  async close(): Promise<void> {
    await this.#busy;
    const context = this.#context;
    if (context === null) return;
    this.#context = null;
    this.#symbols.nft_ctx_free(context);
    this.#library.close();
  }
}
