#ifndef C_EPOLL_H
#define C_EPOLL_H
// epoll and eventfd for LoopFloor: Glibc's Swift module has neither header. epoll_event is packed
// on x86-64, so readiness comes back as two plain arrays.
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

static const uint32_t CEpollIn = EPOLLIN;
static const uint32_t CEpollOut = EPOLLOUT;
static const uint32_t CEpollRdHup = EPOLLRDHUP;
static const uint32_t CEpollHup = EPOLLHUP;
static const uint32_t CEpollErr = EPOLLERR;
static const uint32_t CEpollEdge = EPOLLET;

static inline int c_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
/// A connection from the listening socket `fd`, non-blocking; -1 when none is waiting.
static inline int c_accept(int fd) { return accept4(fd, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC); }
static inline int c_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

static inline int c_epoll_add(int epfd, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data = { .fd = fd } };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static inline int c_epoll_del(int epfd, int fd) {
    struct epoll_event ev = { 0 };
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
}

/// Waits like epoll_wait; the i-th ready descriptor and its events land in fds[i] and events[i].
static inline int c_epoll_wait(int epfd, int *fds, uint32_t *events, int max, int timeout) {
    struct epoll_event ready[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, ready, max, timeout);
    for (int i = 0; i < n; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return n;
}
#endif
