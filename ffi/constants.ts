/**
 * Linux constants for the calls in `libc.ts`, with their C names.
 *
 * @module
 */

// Address families and socket types.
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;

// Protocol levels.
export const SOL_SOCKET = 1;
export const IPPROTO_IP = 0;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const IPPROTO_RAW = 255;

// SOL_SOCKET options.
export const SO_KEEPALIVE = 9;
export const SO_TYPE = 3;
export const SO_REUSEADDR = 2;
export const SO_ERROR = 4;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_REUSEPORT = 15;
export const SO_PEERCRED = 17;
export const SCM_RIGHTS = 1;

// IP and TCP options.
export const IP_TTL = 2;
export const IP_HDRINCL = 3;
export const IPV6_UNICAST_HOPS = 16;
export const IPV6_V6ONLY = 26;
export const TCP_NODELAY = 1;
export const TCP_KEEPIDLE = 4;
export const TCP_KEEPINTVL = 5;
export const TCP_KEEPCNT = 6;

// send/recv flags.
export const MSG_PEEK = 0x2;
export const MSG_CTRUNC = 0x8;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;

// shutdown(2).
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

// fcntl(2).
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;
export const O_NONBLOCK = 0o4000;

// poll(2) and epoll(7) event bits (the same values).
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLRDHUP = 0x2000;
export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
export const EPOLLRDHUP = 0x2000;
export const EPOLLONESHOT = 1 << 30;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLL_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

// Packet sockets, BPF and TCP repair (tcp-syni).
export const AF_PACKET = 17;
export const ETH_P_ALL = 0x0003;
export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const SO_ATTACH_FILTER = 26;
export const SO_LOCK_FILTER = 44;
export const PACKET_OUTGOING = 4;
export const TCP_REPAIR = 19;
export const TCP_REPAIR_QUEUE = 20;
export const TCP_QUEUE_SEQ = 21;
export const TCP_REPAIR_OPTIONS = 22;
export const TCP_TIMESTAMP = 24;
export const TCP_REPAIR_WINDOW = 29;
export const TCP_RECV_QUEUE = 1;
export const TCP_SEND_QUEUE = 2;
export const IPV6_HDRINCL = 36;

// TCP_MAXSEG, TCP_INFO (struct tcp_info) and its tcpi_options bits.
export const TCP_MAXSEG = 2;
export const TCP_INFO = 11;
export const TCPI_OPT_TIMESTAMPS = 1;
export const TCPI_OPT_SACK = 2;
export const TCPI_OPT_WSCALE = 4;

// setns(2) (network namespaces of the lab).
export const CLONE_NEWNET = 0x40000000;
