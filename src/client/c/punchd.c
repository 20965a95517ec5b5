/*
 * punchd.c: the C client for punchd's control socket (see punchd.h). Linux, C99 + POSIX,
 * libc only.
 *
 * Reading: bytes gather in a buffer of one longest reply; a line is handed out once its `\n`
 * has arrived. Descriptors arrive with recvmsg (MSG_CMSG_CLOEXEC) and queue in order; each
 * `ok` line takes the oldest. punchd sends every `ok` line in the same sendmsg as its socket,
 * so the socket has always arrived by the time the line is complete. Anything else that comes
 * with a message (more than one descriptor, descriptors that did not fit) is closed.
 */
#define _GNU_SOURCE /* SO_PEERCRED, struct ucred, MSG_CMSG_CLOEXEC */

#include "punchd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pwd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/** Received descriptors waiting for their `ok` line; more are closed on arrival. */
#define MAX_PENDING_FDS 8
/** Descriptors one recvmsg has room for; a message with more is a protocol error. */
#define MAX_FDS_PER_MESSAGE 8
/** Longest port list. */
#define MAX_PORTS 16

struct punchd {
  int fd;
  /** errno of the failure that made the connection unusable, 0 while usable. */
  int failed;
  size_t len;
  size_t nfds;
  int fds[MAX_PENDING_FDS];
  char err[256];
  /** Received bytes not yet handed out: at most one longest reply and its `\n`. */
  char buf[PUNCHD_MAX_REPLY + 1];
};

static void format_message(char *out, size_t outlen, const char *fmt, va_list args) {
  if (out == NULL || outlen == 0) return;
  vsnprintf(out, outlen, fmt, args);
}

/** Records a failure (fatal: the connection is unusable from now on) and sets errno. */
static int fail(punchd *p, int error, int fatal, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  format_message(p->err, sizeof p->err, fmt, args);
  va_end(args);
  if (fatal) p->failed = error;
  errno = error;
  return -1;
}

static void open_error(char *err, size_t errlen, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  format_message(err, errlen, fmt, args);
  va_end(args);
}

static void close_fd(int fd) {
  int saved = errno;
  /* Linux releases the descriptor even when close reports EINTR: never retry. */
  (void)close(fd);
  errno = saved;
}

/* The `punchd` service user's uid, or (uid_t)-1 when there is none. */
static uid_t service_uid(void) {
  struct passwd *pw = getpwnam("punchd");
  return pw == NULL ? (uid_t)-1 : pw->pw_uid;
}

static int uid_allowed(uid_t uid, uid_t daemon_uid) {
  if (daemon_uid != PUNCHD_ANY_DAEMON_UID) return uid == daemon_uid;
  return uid == 0 || (service_uid() != (uid_t)-1 && uid == service_uid());
}

/* The expected uids, for the error message (a static buffer: punchd_open's error path only). */
static const char *expected_uids(uid_t daemon_uid) {
  static char text[64];
  uid_t service = service_uid();
  if (daemon_uid != PUNCHD_ANY_DAEMON_UID) {
    snprintf(text, sizeof text, "%lu", (unsigned long)daemon_uid);
  } else if (service != (uid_t)-1 && service != 0) {
    snprintf(text, sizeof text, "0 or %lu", (unsigned long)service);
  } else {
    snprintf(text, sizeof text, "0");
  }
  return text;
}

punchd *punchd_open(const char *path, uid_t daemon_uid, char *err, size_t errlen) {
  struct sockaddr_un address;
  struct ucred cred;
  socklen_t credlen = sizeof cred;
  punchd *p;
  int fd, error, tries;

  if (err != NULL && errlen > 0) err[0] = '\0';
  if (path == NULL) path = PUNCHD_DEFAULT_SOCKET;
  memset(&address, 0, sizeof address);
  address.sun_family = AF_UNIX;
  if (path[0] == '\0' || strlen(path) >= sizeof address.sun_path) {
    open_error(err, errlen, "Cannot connect to punchd at %.120s: path is empty or longer than %zu bytes",
               path, sizeof address.sun_path - 1);
    errno = ENAMETOOLONG;
    return NULL;
  }
  memcpy(address.sun_path, path, strlen(path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = errno;
    open_error(err, errlen, "Cannot connect to punchd at %s: socket: %s", path, strerror(error));
    errno = error;
    return NULL;
  }
  for (tries = 0;; tries++) {
    if (connect(fd, (const struct sockaddr *)&address, sizeof address) == 0) break;
    /* Interrupted while waiting for room in the backlog: try again; EISCONN means it made it. */
    if (errno == EINTR) continue;
    if (errno == EISCONN && tries > 0) break;
    error = errno;
    open_error(err, errlen, "Cannot connect to punchd at %s: %s", path, strerror(error));
    close_fd(fd);
    errno = error;
    return NULL;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) != 0) {
    error = errno;
    open_error(err, errlen, "Cannot connect to punchd at %s: SO_PEERCRED: %s", path, strerror(error));
    close_fd(fd);
    errno = error;
    return NULL;
  }
  if (!uid_allowed(cred.uid, daemon_uid)) {
    open_error(err, errlen,
               "Cannot connect to punchd at %s: the process listening there (pid %ld) runs as uid "
               "%lu, not %s: not punchd",
               path, (long)cred.pid, (unsigned long)cred.uid, expected_uids(daemon_uid));
    close_fd(fd);
    errno = EPERM;
    return NULL;
  }
  p = malloc(sizeof *p);
  if (p == NULL) {
    open_error(err, errlen, "Cannot connect to punchd at %s: out of memory", path);
    close_fd(fd);
    errno = ENOMEM;
    return NULL;
  }
  memset(p, 0, sizeof *p);
  p->fd = fd;
  return p;
}

int punchd_fd(const punchd *p) { return p->fd; }

const char *punchd_error(const punchd *p) { return p->err; }

int punchd_pending(const punchd *p) {
  return p->failed == 0 && memchr(p->buf, '\n', p->len) != NULL;
}

void punchd_close(punchd *p) {
  size_t i;
  if (p == NULL) return;
  for (i = 0; i < p->nfds; i++) close_fd(p->fds[i]);
  close_fd(p->fd);
  free(p);
}

/* ---- Sending ---------------------------------------------------------------------------- */

static int send_all(punchd *p, const char *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(p->fd, data + off, len - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(p, errno, 1, "Cannot send to punchd: %s", strerror(errno));
    }
    off += (size_t)n;
  }
  return 0;
}

int punchd_send(punchd *p, const char *line) {
  char out[PUNCHD_MAX_MESSAGE + 1];
  size_t len = strlen(line);
  if (p->failed) {
    errno = p->failed;
    return -1;
  }
  if (len > 0 && line[len - 1] == '\n') len--;
  if (len == 0 || memchr(line, '\n', len) != NULL) {
    return fail(p, EINVAL, 0, "Cannot send to punchd: a request is one non-empty line");
  }
  if (len > PUNCHD_MAX_MESSAGE) {
    return fail(p, EMSGSIZE, 0, "Cannot send to punchd: request longer than %d bytes",
                PUNCHD_MAX_MESSAGE);
  }
  memcpy(out, line, len);
  out[len] = '\n';
  return send_all(p, out, len + 1);
}

/** An attempt ID: 1-64 of A-Z a-z 0-9 _ . : @ + -, and not "-". */
static int valid_id(const char *s) {
  size_t n = 0;
  if (strcmp(s, "-") == 0) return 0;
  for (; s[n] != '\0'; n++) {
    unsigned char c = (unsigned char)s[n];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          strchr("_.:@+-", c) != NULL))
      return 0;
  }
  return n >= 1 && n <= PUNCHD_MAX_ID;
}

/** An opaque field: non-empty printable ASCII without space or `|`. */
static int valid_data(const char *s) {
  if (*s == '\0') return 0;
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    if (c < 0x21 || c > 0x7e || c == '|') return 0;
  }
  return 1;
}

/** Sends `type|fields[0]|...` after checking the ID (fields[0]) and every field. */
static int send_request(punchd *p, const char *type, const char *const *fields, size_t count) {
  char line[PUNCHD_MAX_MESSAGE + 2];
  size_t len = strlen(type), i;
  if (p->failed) {
    errno = p->failed;
    return -1;
  }
  memcpy(line, type, len);
  for (i = 0; i < count; i++) {
    const char *f = fields[i] == NULL ? "" : fields[i];
    size_t flen = strlen(f);
    if (i == 0 ? !valid_id(f) : !valid_data(f)) {
      return fail(p, EINVAL, 0, "Cannot send %s: field %zu %s", type, i + 2,
                  i == 0 ? "is not an ID (1-64 of A-Z a-z 0-9 _ . : @ + -)"
                         : "is empty or not printable ASCII without space and |");
    }
    if (len + 1 + flen > PUNCHD_MAX_MESSAGE) {
      return fail(p, EMSGSIZE, 0, "Cannot send %s: request longer than %d bytes", type,
                  PUNCHD_MAX_MESSAGE);
    }
    line[len++] = '|';
    memcpy(line + len, f, flen);
    len += flen;
  }
  line[len++] = '\n';
  return send_all(p, line, len);
}

int punchd_initiate(punchd *p, const char *id, const char *technique, const char *src_ip,
                    const char *src_ports, const char *dst_ip, const char *dst_ports) {
  const char *f[] = {id, technique, src_ip, src_ports, dst_ip, dst_ports};
  return send_request(p, "initiate", f, 6);
}

int punchd_respond(punchd *p, const char *id, const char *technique, const char *src_ip,
                   const char *src_ports, const char *dst_ip, const char *dst_ports,
                   const char *extra) {
  const char *f[] = {id, technique, src_ip, src_ports, dst_ip, dst_ports, extra};
  return send_request(p, "respond", f, 7);
}

int punchd_peer(punchd *p, const char *id, const char *data) {
  const char *f[] = {id, data};
  return send_request(p, "peer", f, 2);
}

int punchd_cancel(punchd *p, const char *id) { return send_request(p, "cancel", &id, 1); }

int punchd_endpoint(punchd *p, const char *id, const char *protocol, const char *src_ip,
                    const char *src_ports) {
  const char *f[] = {id, protocol, src_ip, src_ports};
  return send_request(p, "endpoint", f, 4);
}

int punchd_status(punchd *p, const char *id) { return send_request(p, "status", &id, 1); }

int punchd_report(punchd *p, const char *id) { return send_request(p, "report", &id, 1); }

/* ---- Receiving -------------------------------------------------------------------------- */

/** Reads once (the socket is readable): appends bytes, queues descriptors. */
static int read_some(punchd *p) {
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(MAX_FDS_PER_MESSAGE * sizeof(int))];
  } control;
  struct iovec iov;
  struct msghdr msg;
  struct cmsghdr *c;
  ssize_t n;
  int truncated;

  for (;;) {
    memset(&msg, 0, sizeof msg);
    iov.iov_base = p->buf + p->len;
    iov.iov_len = sizeof p->buf - p->len;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    n = recvmsg(p->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return fail(p, errno, 1, "Cannot read from punchd: %s", strerror(errno));
  }
  truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    size_t count, i;
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0)) {
      continue;
    }
    count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      /* One socket per message; the rest (and all when some did not fit) is closed. */
      if (i == 0 && !truncated && p->nfds < MAX_PENDING_FDS) {
        p->fds[p->nfds++] = fd;
      } else {
        close_fd(fd);
      }
    }
  }
  if (truncated) {
    return fail(p, EPROTO, 1, "Cannot read from punchd: it passed more than %d descriptors at once",
                MAX_FDS_PER_MESSAGE);
  }
  if (n == 0) {
    if (p->len > 0) {
      return fail(p, ECONNRESET, 1, "Cannot read from punchd: it closed the connection in the "
                                    "middle of a reply");
    }
    return fail(p, ECONNRESET, 1, "Cannot read from punchd: it closed the connection");
  }
  p->len += (size_t)n;
  return 0;
}

/** True when `s` starts a status or report line (the only ones longer than 500 bytes). */
static int long_kind(const char *s, size_t len) {
  return (len >= 7 && (memcmp(s, "status|", 7) == 0 || memcmp(s, "report|", 7) == 0));
}

/** Longest line allowed for the line starting at `s`. */
static size_t line_limit(const char *s, size_t len) {
  return long_kind(s, len) ? PUNCHD_MAX_REPLY : PUNCHD_MAX_MESSAGE;
}

/** A decimal of 1-9 digits without leading zero. */
static int valid_ms(const char *s) {
  size_t n = strlen(s), i;
  if (n == 0 || n > 9 || (s[0] == '0' && n > 1)) return 0;
  for (i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

/** A comma separated list of 1-16 ports (1..65535). */
static int valid_ports(const char *s) {
  int count = 0;
  for (;;) {
    long value = 0;
    int digits = 0;
    for (; *s >= '0' && *s <= '9' && digits < 6; s++, digits++) value = value * 10 + (*s - '0');
    if (digits == 0 || value < 1 || value > 65535 || ++count > MAX_PORTS) return 0;
    if (*s == '\0') return 1;
    if (*s++ != ',') return 0;
  }
}

static int valid_ip(const char *s) {
  unsigned char addr[16];
  return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

/** MAPPING,FILTERING as RFC 5780 names them: eim|adm|apdm , eif|adf|apdf. */
static int valid_nat(const char *s) {
  static const char *const mappings[] = {"eim,", "adm,", "apdm,"};
  static const char *const filterings[] = {"eif", "adf", "apdf"};
  size_t i, j;
  for (i = 0; i < 3; i++) {
    size_t m = strlen(mappings[i]);
    if (strncmp(s, mappings[i], m) != 0) continue;
    for (j = 0; j < 3; j++)
      if (strcmp(s + m, filterings[j]) == 0) return 1;
  }
  return 0;
}

/**
 * Splits out->line (NUL terminated, printable ASCII) in place and checks it. Returns NULL for a
 * good reply or a reply type this version does not know (`*unknown` set), else the reason.
 */
static const char *split_reply(punchd_reply *out, int *unknown) {
  static const struct {
    const char *name;
    punchd_kind kind;
  } kinds[] = {{"progress", PUNCHD_PROGRESS}, {"ok", PUNCHD_OK},         {"endpoint", PUNCHD_ENDPOINT},
               {"error", PUNCHD_ERROR},       {"status", PUNCHD_STATUS}, {"report", PUNCHD_REPORT}};
  char *type = out->line, *cursor, *bar;
  size_t i;
  int kind = 0, n = 0;

  *unknown = 0;
  bar = strchr(type, '|');
  if (bar != NULL) *bar = '\0';
  for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    if (strcmp(type, kinds[i].name) == 0) kind = (int)kinds[i].kind;
  if (kind == 0) {
    *unknown = 1;
    return NULL;
  }
  out->kind = (punchd_kind)kind;
  if (bar == NULL) return "no ID";
  out->id = cursor = bar + 1;
  bar = strchr(cursor, '|');
  if (bar != NULL) *bar = '\0';
  if (!valid_id(out->id) && !(out->kind == PUNCHD_ERROR && strcmp(out->id, "-") == 0)) {
    return "bad ID";
  }
  if (out->kind == PUNCHD_STATUS || out->kind == PUNCHD_REPORT) {
    /* The JSON is the rest of the line, `|` and all; it is handed out unparsed. */
    size_t len;
    if (bar == NULL) return "no JSON";
    out->fields[0] = bar + 1;
    out->nfields = 1;
    len = strlen(out->fields[0]);
    if (len > PUNCHD_MAX_JSON) return "JSON longer than 16384 bytes";
    if (len < 2 || out->fields[0][0] != '{' || out->fields[0][len - 1] != '}') {
      return "JSON is not an object";
    }
    return NULL;
  }
  while (bar != NULL) {
    if (n == PUNCHD_MAX_FIELDS) return "too many fields";
    cursor = bar + 1;
    out->fields[n++] = cursor;
    bar = strchr(cursor, '|');
    if (bar != NULL) *bar = '\0';
  }
  out->nfields = n;
  switch (out->kind) {
  case PUNCHD_PROGRESS:
    if (n != 1 || !valid_data(out->fields[0])) return "bad progress DATA";
    return NULL;
  case PUNCHD_OK:
    if (n == 0) return NULL;
    if (n < 2 || !valid_data(out->fields[0]) || !valid_ms(out->fields[1])) return "bad ok fields";
    if (n == 3 && (strncmp(out->fields[2], "via=", 4) != 0 || !valid_data(out->fields[2] + 4))) {
      return "bad via";
    }
    if (n > 3) return "too many fields";
    return NULL;
  case PUNCHD_ENDPOINT:
    if (n < 3 || !valid_ip(out->fields[0]) || !valid_ports(out->fields[1]) ||
        !valid_data(out->fields[2])) {
      return "bad endpoint fields";
    }
    if (n == 4 && !valid_nat(out->fields[3])) return "bad NAT";
    return NULL;
  case PUNCHD_ERROR:
    if (n != 1 || out->fields[0][0] == '\0') return "bad REASON";
    return NULL;
  default:
    return "unknown reply"; /* not reached: status and report returned above */
  }
}

/** Takes the first `len` bytes of the buffer (and their `\n`) as a reply. */
static int take_line(punchd *p, size_t len, punchd_reply *out) {
  const char *reason = NULL;
  char shown[61];
  size_t i;
  int unknown = 0;

  if (len > line_limit(p->buf, len)) {
    return fail(p, EMSGSIZE, 1, "Cannot read punchd's reply: line longer than %zu bytes",
                line_limit(p->buf, len));
  }
  memcpy(out->line, p->buf, len);
  out->line[len] = '\0';
  memmove(p->buf, p->buf + len + 1, p->len - len - 1);
  p->len -= len + 1;
  /* The line as it came, for a message: at most 60 bytes, unprintable ones as '?'. */
  for (i = 0; i < len && i < sizeof shown - 1; i++) {
    unsigned char c = (unsigned char)out->line[i];
    shown[i] = c < 0x20 || c > 0x7e ? '?' : (char)c;
    if (c < 0x20 || c > 0x7e) reason = "not printable ASCII";
  }
  shown[i] = '\0';
  for (; i < len && reason == NULL; i++) {
    unsigned char c = (unsigned char)out->line[i];
    if (c < 0x20 || c > 0x7e) reason = "not printable ASCII";
  }
  if (reason == NULL) reason = split_reply(out, &unknown);
  if (unknown) return 1;
  if (reason != NULL) {
    return fail(p, EPROTO, 1, "Cannot read punchd's reply \"%s%s\": %s", shown,
                len >= sizeof shown ? "..." : "", reason);
  }
  if (out->kind == PUNCHD_OK) {
    struct stat st;
    size_t k;
    if (p->nfds == 0) {
      return fail(p, EPROTO, 1, "Cannot read punchd's reply: ok|%s came without a socket", out->id);
    }
    out->fd = p->fds[0];
    for (k = 1; k < p->nfds; k++) p->fds[k - 1] = p->fds[k];
    p->nfds--;
    if (fstat(out->fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
      close_fd(out->fd);
      out->fd = -1;
      return fail(p, EPROTO, 1, "Cannot read punchd's reply: ok|%s came with a descriptor that is "
                                "not a socket", out->id);
    }
  }
  return 0;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int punchd_recv(punchd *p, punchd_reply *out, int timeout_ms) {
  long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  out->kind = (punchd_kind)0;
  out->id = "";
  out->nfields = 0;
  out->fd = -1;
  out->line[0] = '\0';
  if (p->failed) {
    errno = p->failed;
    return -1;
  }
  for (;;) {
    char *nl = memchr(p->buf, '\n', p->len);
    struct pollfd pfd;
    int wait, ready;
    if (nl != NULL) {
      int r = take_line(p, (size_t)(nl - p->buf), out);
      if (r <= 0) return r;
      continue; /* a reply type this version does not know */
    }
    if (p->len > line_limit(p->buf, p->len)) {
      return fail(p, EMSGSIZE, 1, "Cannot read punchd's reply: line longer than %zu bytes",
                  line_limit(p->buf, p->len));
    }
    if (deadline < 0) {
      wait = -1;
    } else {
      long long left = deadline - now_ms();
      wait = left <= 0 ? 0 : (int)left;
    }
    pfd.fd = p->fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    ready = poll(&pfd, 1, wait);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return fail(p, errno, 1, "Cannot wait for punchd: %s", strerror(errno));
    }
    if (ready == 0) {
      return fail(p, ETIMEDOUT, 0, "No reply from punchd within %d ms", timeout_ms);
    }
    if (read_some(p) < 0) return -1;
  }
}
