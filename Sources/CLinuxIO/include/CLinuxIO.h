#ifndef C_LINUX_IO_H
#define C_LINUX_IO_H
// epoll and eventfd for SluiceIO. Glibc's Swift module has neither header, and struct
// epoll_event is packed on x86-64, so readiness comes back as two plain arrays.
#include <stdint.h>

extern const uint32_t CLinuxIOEpollIn;
extern const uint32_t CLinuxIOEpollOut;
extern const uint32_t CLinuxIOEpollRdHup;
extern const uint32_t CLinuxIOEpollHup;
extern const uint32_t CLinuxIOEpollErr;
extern const uint32_t CLinuxIOEpollEdge;

/// An epoll instance (close-on-exec); -1 and errno on failure.
int c_linux_epoll_create(void);
/// A non-blocking, close-on-exec eventfd counting from 0; -1 and errno on failure.
int c_linux_eventfd(void);
/// A connection waiting on the listening socket `fd`, non-blocking and close-on-exec; -1 and
/// errno (EAGAIN when none waits). The peer's address lands in `address` (a sockaddr_storage
/// of `*length` bytes, which is updated) unless it is NULL.
int c_linux_accept(int fd, void *address, uint32_t *length);
int c_linux_epoll_add(int epfd, int fd, uint32_t events);
int c_linux_epoll_modify(int epfd, int fd, uint32_t events);
int c_linux_epoll_delete(int epfd, int fd);
/// Waits like epoll_wait for at most `max` (≤ 64) events: the i-th ready descriptor and its
/// events land in fds[i] and events[i]. Returns their number, or -1 and errno.
int c_linux_epoll_wait(int epfd, int *fds, uint32_t *events, int max, int timeout_ms);
/// Names the calling thread (15 bytes at most are kept), as `top -H` and perf show it.
void c_linux_set_thread_name(const char *name);

#endif
