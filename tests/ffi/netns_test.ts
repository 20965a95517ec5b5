import { assert, assertEquals, assertThrows } from "../assert.ts";
import { SyscallError } from "../../ffi/errno.ts";
import { inNetns } from "../../ffi/netns.ts";
import { withVoidNamespace } from "../helpers/void_ns.ts";
import { isRoot, skipUnless } from "../helpers/skip.ts";

const ROOT = skipUnless(isRoot(), "netns tests", "setns needs CAP_SYS_ADMIN");
const own = () => Deno.readLinkSync("/proc/thread-self/ns/net");

Deno.test({
  name: "inNetns runs its function in the named namespace and comes back, also when it throws",
  ignore: ROOT,
}, async () => {
  await withVoidNamespace("netns", (ns) => {
    const before = own();
    const inside = inNetns(ns, own);
    assert(inside !== before, "the function ran in the thread's own namespace");
    assertEquals(own(), before);
    assertThrows(
      () =>
        inNetns(ns, () => {
          throw new Error("inside");
        }),
      Error,
      "inside",
    );
    assertEquals(own(), before);
    return Promise.resolve();
  });
});

Deno.test(
  { name: "inNetns refuses a bad name and a namespace that does not exist", ignore: ROOT },
  () => {
    const before = own();
    assertThrows(() => inNetns("../x", own), TypeError);
    assertThrows(
      () => inNetns(`pdnone${Deno.pid}`, own),
      (e: Error) => e instanceof SyscallError && e.code === "ENOENT",
    );
    assertEquals(own(), before);
  },
);
