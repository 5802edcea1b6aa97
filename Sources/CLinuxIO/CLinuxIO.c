#define _GNU_SOURCE
#include "CLinuxIO.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <sys/socket.h>

const uint32_t CLinuxIOEpollIn = EPOLLIN;
const uint32_t CLinuxIOEpollOut = EPOLLOUT;
const uint32_t CLinuxIOEpollRdHup = EPOLLRDHUP;
const uint32_t CLinuxIOEpollHup = EPOLLHUP;
const uint32_t CLinuxIOEpollErr = EPOLLERR;
const uint32_t CLinuxIOEpollEdge = EPOLLET;

int c_linux_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int c_linux_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int c_linux_accept(int fd, void *address, uint32_t *length) {
    return accept4(fd, (struct sockaddr *)address, (socklen_t *)length, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

static int control(int epfd, int op, int fd, uint32_t events) {
    struct epoll_event ev = { .events = events, .data = { .fd = fd } };
    return epoll_ctl(epfd, op, fd, &ev);
}

int c_linux_epoll_add(int epfd, int fd, uint32_t events) { return control(epfd, EPOLL_CTL_ADD, fd, events); }
int c_linux_epoll_modify(int epfd, int fd, uint32_t events) { return control(epfd, EPOLL_CTL_MOD, fd, events); }
int c_linux_epoll_delete(int epfd, int fd) { return control(epfd, EPOLL_CTL_DEL, fd, 0); }

int c_linux_epoll_wait(int epfd, int *fds, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event ready[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, ready, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        fds[i] = ready[i].data.fd;
        events[i] = ready[i].events;
    }
    return n;
}

void c_linux_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }
