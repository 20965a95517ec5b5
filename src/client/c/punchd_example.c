/*
 * punchd_example: the C client library at work, like src/examples/punchd_client.py.
 *
 * Usage:
 *   punchd_example [OPTIONS] initiate ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS
 *   punchd_example [OPTIONS] respond ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS EXTRA
 *   punchd_example [OPTIONS] endpoint ID PROTOCOL SRC_IP SRC_PORTS
 *   punchd_example [OPTIONS] status|report [ID]
 * Options:
 *   --socket PATH     punchd's control socket (default /run/punchd/punchd.socket)
 *   --daemon-uid UID  the uid punchd must run as (default: 0 or the punchd service user)
 *   --send TEXT       once connected: write TEXT, shut down the write side, read until the end
 *   --timeout MS      give up when punchd says nothing for MS milliseconds (default: wait)
 *
 * Output, one line each on stdout: "progress DATA" for every progress reply (forward DATA to
 * the peer: it is the peer's EXTRA, or give it to the peer's punchd_example on its stdin),
 * "technique NAME MS [via=IP:PORT]" when punchd chose among several, then "connected LOCAL
 * REMOTE" once punchd passes the socket, and with --send "received TEXT". endpoint prints
 * "endpoint IP PORTS HOW [NAT]", status and report "status JSON" and "report JSON". Each line
 * on stdin during an attempt is sent as the peer's later data (`peer|ID|LINE`). Errors go to
 * stderr as "error REASON" and the exit code is 1 (2 for a bad command line).
 */
#define _POSIX_C_SOURCE 200809L

#include "punchd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_RECEIVED (1024 * 1024)

static int usage(void) {
  fprintf(stderr,
          "usage: punchd_example [--socket PATH] [--daemon-uid UID] [--send TEXT] [--timeout MS]\n"
          "         initiate ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS\n"
          "       | respond ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS EXTRA\n"
          "       | endpoint ID PROTOCOL SRC_IP SRC_PORTS\n"
          "       | status [ID] | report [ID]\n");
  return 2;
}

/** A socket address as IP:PORT ([IP]:PORT for IPv6), or "unix". */
static void describe(const struct sockaddr_storage *ss, char *out, size_t outlen) {
  char ip[INET6_ADDRSTRLEN];
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
    snprintf(out, outlen, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
    snprintf(out, outlen, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  } else {
    snprintf(out, outlen, "unix");
  }
}

/** Writes `text`, shuts down the write side, reads to the end and prints it. */
static int exchange(int fd, const char *text) {
  size_t len = strlen(text), off = 0, size = 0;
  char *received = NULL;
  while (off < len) {
    ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fprintf(stderr, "error cannot send to the peer: %s\n", strerror(errno));
      return 1;
    }
    off += (size_t)n;
  }
  if (shutdown(fd, SHUT_WR) != 0) {
    fprintf(stderr, "error cannot shut down the write side: %s\n", strerror(errno));
    return 1;
  }
  received = malloc(MAX_RECEIVED + 1);
  if (received == NULL) {
    fprintf(stderr, "error out of memory\n");
    return 1;
  }
  for (;;) {
    ssize_t n;
    if (size == MAX_RECEIVED) {
      fprintf(stderr, "error the peer sent more than %d bytes\n", MAX_RECEIVED);
      free(received);
      return 1;
    }
    n = recv(fd, received + size, MAX_RECEIVED - size, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      fprintf(stderr, "error cannot read from the peer: %s\n", strerror(errno));
      free(received);
      return 1;
    }
    if (n == 0) break;
    size += (size_t)n;
  }
  received[size] = '\0';
  printf("received %s\n", received);
  fflush(stdout);
  free(received);
  return 0;
}

/** Prints the connected socket's addresses and, with --send, talks over it. Closes it. */
static int connected(int fd, const char *send_text) {
  struct sockaddr_storage local, remote;
  socklen_t llen = sizeof local, rlen = sizeof remote;
  char l[INET6_ADDRSTRLEN + 10], r[INET6_ADDRSTRLEN + 10];
  int code = 0;
  memset(&local, 0, sizeof local);
  memset(&remote, 0, sizeof remote);
  if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0 ||
      getpeername(fd, (struct sockaddr *)&remote, &rlen) != 0) {
    fprintf(stderr, "error the socket is not connected: %s\n", strerror(errno));
    close(fd);
    return 1;
  }
  describe(&local, l, sizeof l);
  describe(&remote, r, sizeof r);
  printf("connected %s %s\n", l, r);
  fflush(stdout);
  if (send_text != NULL) code = exchange(fd, send_text);
  close(fd);
  return code;
}

/** Sends a line read from stdin as `peer|ID|LINE`; returns -1 on failure, 0 at end of input. */
static int forward_stdin(punchd *p, const char *id, char *pending, size_t *used, size_t cap) {
  ssize_t n = read(STDIN_FILENO, pending + *used, cap - *used);
  char *nl;
  if (n < 0) return errno == EINTR ? 1 : 0;
  if (n == 0) return 0;
  *used += (size_t)n;
  while ((nl = memchr(pending, '\n', *used)) != NULL) {
    size_t len = (size_t)(nl - pending);
    *nl = '\0';
    if (len > 0 && punchd_peer(p, id, pending) != 0) return -1;
    memmove(pending, nl + 1, *used - len - 1);
    *used -= len + 1;
  }
  if (*used == cap) *used = 0; /* an over-long line: dropped */
  return 1;
}

int main(int argc, char **argv) {
  static punchd_reply reply;
  const char *path = PUNCHD_DEFAULT_SOCKET, *send_text = NULL, *command, *id;
  char err[512], pending[PUNCHD_MAX_MESSAGE + 1];
  size_t used = 0;
  long uid = -1, timeout = -1; /* uid -1: root or the punchd service user */
  int i = 1, nargs, sent, stdin_open = 1, code = 1;
  punchd *p;

  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
    char *end = NULL;
    if (i + 1 >= argc) return usage();
    if (strcmp(argv[i], "--socket") == 0) {
      path = argv[i + 1];
    } else if (strcmp(argv[i], "--send") == 0) {
      send_text = argv[i + 1];
    } else if (strcmp(argv[i], "--daemon-uid") == 0) {
      uid = strtol(argv[i + 1], &end, 10);
      if (*argv[i + 1] == '\0' || *end != '\0' || uid < 0) return usage();
    } else if (strcmp(argv[i], "--timeout") == 0) {
      timeout = strtol(argv[i + 1], &end, 10);
      if (*argv[i + 1] == '\0' || *end != '\0' || timeout < 0 || timeout > 86400000) return usage();
    } else {
      return usage();
    }
  }
  if (i >= argc) return usage();
  command = argv[i];
  nargs = argc - i - 1;
  id = nargs > 0 ? argv[i + 1] : command;
  if (!((strcmp(command, "initiate") == 0 && nargs == 6) ||
        (strcmp(command, "respond") == 0 && nargs == 7) ||
        (strcmp(command, "endpoint") == 0 && nargs == 4) ||
        ((strcmp(command, "status") == 0 || strcmp(command, "report") == 0) && nargs <= 1))) {
    return usage();
  }

  p = punchd_open(path, uid < 0 ? PUNCHD_ANY_DAEMON_UID : (uid_t)uid, err, sizeof err);
  if (p == NULL) {
    fprintf(stderr, "error %s\n", err);
    return 1;
  }
  if (strcmp(command, "initiate") == 0) {
    sent = punchd_initiate(p, id, argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5], argv[i + 6]);
  } else if (strcmp(command, "respond") == 0) {
    sent = punchd_respond(p, id, argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5], argv[i + 6],
                          argv[i + 7]);
  } else if (strcmp(command, "endpoint") == 0) {
    sent = punchd_endpoint(p, id, argv[i + 2], argv[i + 3], argv[i + 4]);
  } else if (strcmp(command, "status") == 0) {
    sent = punchd_status(p, id);
    stdin_open = 0;
  } else {
    sent = punchd_report(p, id);
    stdin_open = 0;
  }
  if (sent != 0) {
    fprintf(stderr, "error %s\n", punchd_error(p));
    punchd_close(p);
    return 1;
  }
  if (strcmp(command, "endpoint") == 0) stdin_open = 0;

  for (;;) {
    struct pollfd fds[2];
    int ready;
    fds[0].fd = punchd_fd(p);
    fds[0].events = POLLIN;
    fds[1].fd = STDIN_FILENO;
    fds[1].events = POLLIN;
    fds[0].revents = fds[1].revents = 0;
    ready = poll(fds, stdin_open ? 2 : 1, (int)timeout);
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) {
      fprintf(stderr, "error no reply from punchd within %ld ms\n", timeout);
      break;
    }
    if (stdin_open && fds[1].revents != 0) {
      int r = forward_stdin(p, id, pending, &used, sizeof pending - 1);
      if (r < 0) {
        fprintf(stderr, "error %s\n", punchd_error(p));
        break;
      }
      if (r == 0) stdin_open = 0;
    }
    if (fds[0].revents == 0) continue;
    /* Everything that has arrived, one reply at a time: a read may bring several. */
    do {
      int done = 1;
      if (punchd_recv(p, &reply, 0) != 0) {
        if (errno == ETIMEDOUT) break; /* only part of a line so far */
        fprintf(stderr, "error %s\n", punchd_error(p));
        goto out;
      }
      if (strcmp(reply.id, id) != 0 && strcmp(reply.id, "-") != 0) {
        if (reply.fd >= 0) close(reply.fd);
        done = 0;
      } else if (reply.kind == PUNCHD_PROGRESS) {
        printf("progress %s\n", reply.fields[0]);
        fflush(stdout);
        done = 0;
      } else if (reply.kind == PUNCHD_OK) {
        if (reply.nfields >= 2) {
          printf("technique %s %s%s%s\n", reply.fields[0], reply.fields[1],
                 reply.nfields == 3 ? " " : "", reply.nfields == 3 ? reply.fields[2] : "");
        }
        code = connected(reply.fd, send_text);
      } else if (reply.kind == PUNCHD_ENDPOINT) {
        printf("endpoint %s %s %s%s%s\n", reply.fields[0], reply.fields[1], reply.fields[2],
               reply.nfields == 4 ? " " : "", reply.nfields == 4 ? reply.fields[3] : "");
        code = 0;
      } else if (reply.kind == PUNCHD_STATUS || reply.kind == PUNCHD_REPORT) {
        printf("%s %s\n", reply.kind == PUNCHD_STATUS ? "status" : "report", reply.fields[0]);
        code = 0;
      } else {
        fprintf(stderr, "error %s\n", reply.fields[0]);
      }
      if (done) goto out;
    } while (punchd_pending(p));
  }
out:
  punchd_close(p);
  return code;
}
