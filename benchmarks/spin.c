// The host's speed right now, in two fixed pieces of work: a loop on one core (ms), and TCP
// round trips over loopback (µs each), which is where a proxy on this machine spends most of its
// time (system time is two thirds of it). benchmarks/run.sh runs this before every load run: the
// host's speed swings by several times within minutes (other tenants), mostly in the kernel's
// part, and runs only compare when they ran at the same speed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double since(struct timespec a) {
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
}

int main(void) {
    struct timespec a;
    clock_gettime(CLOCK_MONOTONIC, &a);
    volatile unsigned long sum = 0;
    for (unsigned long i = 0; i < 100000000UL; i++) sum += i;
    double cpu = since(a);

    // One connection to ourselves; each side's 16 bytes fit its socket buffer, so one thread can
    // play both ends with blocking calls.
    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, len) || listen(listener, 1) || getsockname(listener, (struct sockaddr *)&addr, &len)) return 1;
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&addr, len)) return 1;
    int server = accept(listener, NULL, NULL);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[16] = {0};
    enum { trips = 20000 };
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < trips; i++) {
        if (write(client, buf, sizeof buf) != sizeof buf || read(server, buf, sizeof buf) != sizeof buf) return 1;
        if (write(server, buf, sizeof buf) != sizeof buf || read(client, buf, sizeof buf) != sizeof buf) return 1;
    }
    printf("%.1f %.2f\n", cpu, since(a) * 1e3 / trips);
    return 0;
}
