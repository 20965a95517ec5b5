/*
 * punchd.h: a small C client for punchd's control socket (C99 + POSIX, Linux, libc only).
 *
 * The protocol (src/control/codec.ts): one line per message, fields separated by `|`.
 * An application connects to the unix socket, sends requests
 *
 *   initiate|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS
 *   respond|ID|TECHNIQUE|SRC_IP|SRC_PORTS|DST_IP|DST_PORTS|EXTRA
 *   peer|ID|DATA    cancel|ID    endpoint|ID|PROTOCOL|SRC_IP|SRC_PORTS
 *   status|ID       report|ID
 *
 * and reads replies: `progress|ID|DATA` (forward DATA to the peer), `ok|ID[|TECHNIQUE|MS[|via=IP:PORT]]`
 * with the connected socket passed as SCM_RIGHTS, `endpoint|ID|IP|PORTS|HOW[|NAT]`,
 * `status|ID|JSON`, `report|ID|JSON` and `error|ID|REASON`.
 *
 *   char err[256];
 *   punchd *p = punchd_open(PUNCHD_DEFAULT_SOCKET, 0, err, sizeof err);
 *   if (p == NULL) { fprintf(stderr, "%s\n", err); return 1; }
 *   punchd_initiate(p, "a1", "tcp-direct", "192.0.2.1", "4000", "198.51.100.7", "5000");
 *   static punchd_reply r;  // large (holds a 16 KiB line): not on a small stack
 *   while (punchd_recv(p, &r, -1) == 0) {
 *     if (r.kind == PUNCHD_PROGRESS) send_to_peer(r.fields[0]);
 *     else if (r.kind == PUNCHD_OK) { use_socket(r.fd); break; }
 *     else if (r.kind == PUNCHD_ERROR) { fprintf(stderr, "%s\n", r.fields[0]); break; }
 *   }
 *   punchd_close(p);
 *
 * One handle is for one thread at a time. Functions that can fail return 0 or -1 with errno
 * set and a one-line message in punchd_error(). A request refused before it is sent (EINVAL,
 * EMSGSIZE) and a wait that timed out (ETIMEDOUT) leave the connection usable; any other
 * failure makes it unusable. Nothing is logged and no signal is raised (sends use
 * MSG_NOSIGNAL); calls interrupted by a signal (EINTR) are resumed.
 *
 * Build: `make c-client` (build/c/libpunchd.a), then `cc -I src/client/c app.c -L build/c -lpunchd`.
 */
#ifndef PUNCHD_H
#define PUNCHD_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The daemon's default control socket. */
#define PUNCHD_DEFAULT_SOCKET "/run/punchd/punchd.socket"
/** Longest message in bytes without its `\n`, except status and report replies. */
#define PUNCHD_MAX_MESSAGE 500
/** Longest JSON field of a status or report reply. */
#define PUNCHD_MAX_JSON 16384
/** Longest attempt ID. */
#define PUNCHD_MAX_ID 64
/** Longest reply line without its `\n`: `report|` + ID + `|` + JSON. */
#define PUNCHD_MAX_REPLY (7 + PUNCHD_MAX_ID + 1 + PUNCHD_MAX_JSON)
/** Most fields after the ID in a reply (endpoint with NAT: IP, PORTS, HOW, NAT). */
#define PUNCHD_MAX_FIELDS 4

/** A connection to punchd (opaque). */
typedef struct punchd punchd;

/** What a reply is. */
typedef enum punchd_kind {
  PUNCHD_PROGRESS = 1, /**< fields: DATA (give it to the peer: its EXTRA or a `peer` request) */
  PUNCHD_OK,           /**< fields: none, or TECHNIQUE, MS and maybe `via=IP:PORT`; fd: the socket */
  PUNCHD_ENDPOINT,     /**< fields: IP, PORTS, HOW and maybe NAT (`eim,apdf`) */
  PUNCHD_ERROR,        /**< fields: REASON; id is "-" when the request had no usable ID */
  PUNCHD_STATUS,       /**< fields: JSON (one line, printable ASCII, may contain `|`) */
  PUNCHD_REPORT        /**< fields: JSON */
} punchd_kind;

/**
 * One reply. The strings point into `line` and live as long as this struct. It is large
 * (about 16.5 KiB): make it static or allocate it when stack space is tight.
 */
typedef struct punchd_reply {
  punchd_kind kind;
  const char *id;
  /** Number of fields after the ID. */
  int nfields;
  const char *fields[PUNCHD_MAX_FIELDS];
  /**
   * For PUNCHD_OK: the connected socket (blocking, close-on-exec set); the caller owns it and
   * closes it. -1 for every other kind.
   */
  int fd;
  /** Storage for id and fields (the reply line, split in place). */
  char line[PUNCHD_MAX_REPLY + 1];
} punchd_reply;

/** `daemon_uid` for punchd_open: root, or the packaged service's `punchd` user (only root can
 * create that account). */
#define PUNCHD_ANY_DAEMON_UID ((uid_t)-1)

/**
 * Connects to punchd at `path` (NULL: PUNCHD_DEFAULT_SOCKET) and checks by SO_PEERCRED that
 * the process listening there runs as `daemon_uid` (0 when punchd runs as root, the uid of
 * its service user, or PUNCHD_ANY_DAEMON_UID for either), so that an impostor on the path gets
 * no request of ours. Returns NULL on
 * failure with errno set (EPERM for a listener of another uid) and the reason in `err` (when
 * not NULL): "Cannot connect to punchd at PATH: ...".
 */
punchd *punchd_open(const char *path, uid_t daemon_uid, char *err, size_t errlen);

/**
 * Sends one request line (with or without its trailing `\n`; at most PUNCHD_MAX_MESSAGE
 * bytes, no other `\n`). The whole line is written, across partial writes and EINTR.
 */
int punchd_send(punchd *p, const char *line);

/* The requests, each sent as one line. Fields must be non-empty printable ASCII without `|`;
 * ports are comma separated ("4000,4001"); TECHNIQUE is a technique name, `auto`, `auto-udp`
 * or a comma separated list. punchd validates the rest and answers `error|ID|REASON`. */
int punchd_initiate(punchd *p, const char *id, const char *technique, const char *src_ip,
                    const char *src_ports, const char *dst_ip, const char *dst_ports);
int punchd_respond(punchd *p, const char *id, const char *technique, const char *src_ip,
                   const char *src_ports, const char *dst_ip, const char *dst_ports,
                   const char *extra);
int punchd_peer(punchd *p, const char *id, const char *data);
int punchd_cancel(punchd *p, const char *id);
int punchd_endpoint(punchd *p, const char *id, const char *protocol, const char *src_ip,
                    const char *src_ports);
int punchd_status(punchd *p, const char *id);
int punchd_report(punchd *p, const char *id);

/**
 * Waits at most `timeout_ms` (-1: without limit, 0: only what has arrived) for the next reply
 * and fills `out`. Returns 0, or -1 with errno: ETIMEDOUT when nothing came in time (the
 * connection stays usable); ECONNRESET when punchd closed the connection; EMSGSIZE for an
 * over-long line and EPROTO for a malformed reply or an `ok` without a socket. After any
 * error but ETIMEDOUT the connection is unusable and every later call fails the same way.
 * Replies of a type this version does not know are skipped.
 */
int punchd_recv(punchd *p, punchd_reply *out, int timeout_ms);

/**
 * The control socket, for an event loop's poll(): when it is readable, call punchd_recv (with
 * timeout 0) and then again while punchd_pending says more replies have arrived.
 */
int punchd_fd(const punchd *p);

/** 1 when a whole reply has been read and waits for punchd_recv, else 0. */
int punchd_pending(const punchd *p);

/** The last failure's message ("" when none). */
const char *punchd_error(const punchd *p);

/**
 * Closes the connection (punchd cancels this client's attempts) and every received fd not yet
 * handed out. NULL is allowed.
 */
void punchd_close(punchd *p);

#ifdef __cplusplus
}
#endif

#endif /* PUNCHD_H */
