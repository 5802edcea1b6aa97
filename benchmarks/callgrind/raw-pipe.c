// A blind TCP pipe straight on epoll, for benchmarks/callgrind/run.sh (`PROXY=raw-pipe`): what
// forwarding a request and its response costs in user space when nothing stands between the
// proxy and the system calls. Beside `sluice bench-pipe` (the same pipe on NIOPosix channels) it
// separates the socket layer's cost from the kernel interface's.
//
//   raw-pipe LISTEN_PORT BACKEND_PORT [WORKERS]     (127.0.0.1 both; WORKERS processes, 1 by
//                                                   default, each with its own SO_REUSEPORT
//                                                   listener, ended with the first)
//
// Like NIO: level-triggered epoll, one read per readiness event (MSG_DONTWAIT), each read written
// at once to the partner socket. Writes are blocking sends, which never wait with the small
// loopback messages of the benchmark; a measurement tool, not a proxy.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536

static int partner[MAX_FDS];
static char buffer[65536];

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void watch(int ep, int fd) {
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

static void close_pair(int fd) {
    int p = partner[fd];
    close(fd);
    if (p >= 0) close(p);
    partner[fd] = -1;
    if (p >= 0) partner[p] = -1;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: raw-pipe LISTEN_PORT BACKEND_PORT [WORKERS]\n");
        return 2;
    }
    // The other workers are children that die with the first: a benchmark ends it by its PID.
    for (int w = argc == 4 ? atoi(argv[3]) : 1; w > 1; w--) {
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            break;
        }
    }
    struct sockaddr_in listen_at = loopback(atoi(argv[1])), backend = loopback(atoi(argv[2]));
    int one = 1;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(ls, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&listen_at, sizeof listen_at) != 0 || listen(ls, 4096) != 0) {
        perror("raw-pipe: listen");
        return 1;
    }
    for (int i = 0; i < MAX_FDS; i++) partner[i] = -1;
    int ep = epoll_create1(0);
    watch(ep, ls);
    printf("raw-pipe listening on 127.0.0.1:%s\n", argv[1]);
    fflush(stdout);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == ls) {
                // Connections are set up during the warm-up load, outside what is counted.
                int c = accept(ls, NULL, NULL);
                if (c < 0 || c >= MAX_FDS) { if (c >= 0) close(c); continue; }
                int u = socket(AF_INET, SOCK_STREAM, 0);
                if (u < 0 || u >= MAX_FDS || connect(u, (struct sockaddr *)&backend, sizeof backend) != 0) {
                    close(c);
                    if (u >= 0) close(u);
                    continue;
                }
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                partner[c] = u;
                partner[u] = c;
                watch(ep, c);
                watch(ep, u);
                continue;
            }
            if (partner[fd] < 0) continue;  // closed earlier in this batch
            ssize_t got = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got <= 0 || send(partner[fd], buffer, (size_t)got, MSG_NOSIGNAL) != got) close_pair(fd);
        }
    }
}
