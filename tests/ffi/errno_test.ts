/**
 * errno is captured as the failing call returns. The Deno runtime makes
 * system calls of its own on the JS thread (here a stat of a missing file,
 * which leaves ENOENT in the thread's errno) between any two libc calls of
 * ours; a read of errno after such work must still give the failing call's
 * error. Reading the thread's errno afresh (the old way) gives ENOENT here,
 * as it did, rarely, in the lab: `Cannot connect: ENOENT`.
 */

import { assertEquals } from "../assert.ts";
import { errno, libc } from "../../ffi/libc.ts";
import { EBADF, ENOENT } from "../../ffi/errno.ts";
import { Socket } from "../../ffi/socket.ts";
import { SyscallError } from "../../ffi/errno.ts";

function clobberErrno(): void {
  try {
    Deno.statSync(`/nonexistent-${crypto.randomUUID()}`);
  } catch {
    // ENOENT, set on this thread by the runtime.
  }
}

Deno.test("errno is the failing call's even when the runtime's own syscalls ran since", () => {
  assertEquals(libc().close(-1), -1);
  clobberErrno();
  assertEquals(errno(), EBADF);
  // And a later successful call does not change what the failing one said until it fails.
  assertEquals(libc().shutdown(-1, 1), -1);
  clobberErrno();
  assertEquals(errno(), EBADF);
});

Deno.test("the runtime really does clobber the thread's errno (what the capture guards against)", () => {
  const location = libc().__errno_location();
  assertEquals(libc().close(-1), -1);
  clobberErrno();
  // Read afresh, the thread's errno now holds the runtime's error, not close's.
  assertEquals(new Deno.UnsafePointerView(location!).getInt32(), ENOENT);
});

Deno.test("a connect refused on loopback names ECONNREFUSED, never a stale errno, 200 times", async () => {
  for (let i = 0; i < 200; i++) {
    using socket = Socket.create("inet", "stream");
    clobberErrno();
    const error = await socket.connect({ family: "inet", address: "127.0.0.1", port: 9 }).then(
      () => null,
      (e) => e,
    );
    clobberErrno();
    assertEquals(error instanceof SyscallError ? error.code : String(error), "ECONNREFUSED");
  }
});
