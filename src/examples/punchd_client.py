#!/usr/bin/env python3
"""A punchd client in plain Python (standard library only).

It shows that any language can use punchd: send one request line over the
unix socket, print the progress data to forward to the peer, and receive the
connected socket with SCM_RIGHTS (socket.recvmsg with MSG_CMSG_CLOEXEC, so
it has close-on-exec set).

Usage:
  punchd_client.py [--socket PATH] [--send TEXT] initiate ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS
  punchd_client.py [--socket PATH] [--send TEXT] respond ID TECHNIQUE SRC_IP SRC_PORTS DST_IP DST_PORTS EXTRA

Output, one line each on stdout: "progress DATA" for every progress reply
(forward DATA to the peer; it is the peer's EXTRA), then "connected LOCAL
REMOTE" once punchd passes the socket. With --send, the text is written to
the peer, the write side is shut down, everything the peer sends until end
of stream is read and printed as "received TEXT". Errors go to stderr as
"error REASON" and the exit code is 1 (2 for a bad command line).
"""

import argparse
import array
import pwd
import socket
import struct
import sys

MAX_LINE = 1024
DEFAULT_SOCKET = "/run/punchd/punchd.socket"


class PunchdError(Exception):
    """punchd answered error|ID|REASON."""


def default_daemon_uids():
    """Root, and the `punchd` system user the packaged service runs as, when it exists."""
    try:
        service = pwd.getpwnam("punchd").pw_uid
    except KeyError:
        return [0]
    return [0] if service == 0 else [0, service]


class PunchdClient:
    """One connection to punchd's control socket."""

    def __init__(self, path=DEFAULT_SOCKET, daemon_uid=None):
        """Connects, and checks by SO_PEERCRED that the listener runs as daemon_uid (default:
        root, or the packaged service's `punchd` user, which only root can create)."""
        allowed = [daemon_uid] if daemon_uid is not None else default_daemon_uids()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
            cred = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", cred)
            if uid not in allowed:
                raise PunchdError(
                    f"the process listening at {path} (pid {pid}) runs as uid {uid}, "
                    f"not {' or '.join(str(a) for a in allowed)}: not punchd"
                )
        except BaseException:
            self.sock.close()
            raise
        self.buffer = b""
        self.fds = []

    def send(self, *fields):
        line = "|".join(str(f) for f in fields) + "\n"
        self.sock.sendall(line.encode("ascii"))

    def read_reply(self):
        """Returns the next reply's fields; fds passed with it queue in self.fds."""
        while b"\n" not in self.buffer:
            # MSG_CMSG_CLOEXEC: the fds arrive with close-on-exec set, so a program this
            # process runs later does not inherit the connection. (socket.recv_fds would drop
            # the flag: it ignores its flags argument, CPython gh-107898.)
            fds = array.array("i")
            data, ancdata, _flags, _addr = self.sock.recvmsg(
                4096, socket.CMSG_SPACE(16 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            self.fds.extend(fds)
            if not data:
                raise PunchdError("punchd closed the connection")
            self.buffer += data
            if len(self.buffer) > MAX_LINE and b"\n" not in self.buffer:
                raise PunchdError("reply line too long")
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("ascii").split("|")

    def run(self, request, on_progress):
        """Sends request (a list of fields) and waits for ok/error; returns the connected socket."""
        attempt_id = request[1]
        self.send(*request)
        while True:
            reply = self.read_reply()
            kind, reply_id = reply[0], reply[1] if len(reply) > 1 else "-"
            if reply_id not in (attempt_id, "-"):
                continue
            if kind == "progress":
                on_progress(reply[2])
            elif kind == "ok":
                if not self.fds:
                    raise PunchdError("ok without a socket")
                # The fd arrived with the first byte of this line; fds queue in order of their ok lines.
                return socket.socket(fileno=self.fds.pop(0))
            elif kind == "error":
                raise PunchdError(reply[2] if len(reply) > 2 else "unknown error")

    def close(self):
        for fd in self.fds:
            socket.close(fd)
        self.fds = []
        self.sock.close()


def main(argv):
    parser = argparse.ArgumentParser(description="punchd example client")
    parser.add_argument("--socket", default=DEFAULT_SOCKET)
    parser.add_argument(
        "--daemon-uid", type=int, default=None,
        help="uid punchd must run as (default: 0, or the punchd service user)",
    )
    parser.add_argument("--send", help="text to send to the peer over the punched connection")
    parser.add_argument("request", nargs="+", help="initiate|respond and its fields")
    args = parser.parse_args(argv)
    kind = args.request[0]
    expected = {"initiate": 7, "respond": 8}.get(kind)
    if expected is None or len(args.request) != expected:
        parser.error("expected initiate with 6 fields or respond with 7 fields")
    try:
        client = PunchdClient(args.socket, args.daemon_uid)
    except (OSError, PunchdError) as error:
        print(f"error cannot connect to punchd at {args.socket}: {error}", file=sys.stderr)
        return 1
    try:
        def progress(data):
            print(f"progress {data}", flush=True)

        conn = client.run(args.request, progress)
        with conn:
            local, remote = conn.getsockname(), conn.getpeername()
            print(f"connected {local[0]}:{local[1]} {remote[0]}:{remote[1]}", flush=True)
            if args.send is not None:
                conn.sendall(args.send.encode("utf-8"))
                conn.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                print(f"received {received.decode('utf-8', 'replace')}", flush=True)
        return 0
    except (PunchdError, OSError) as error:
        print(f"error {error}", file=sys.stderr)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
