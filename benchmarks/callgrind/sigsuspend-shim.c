// LD_PRELOAD for running the proxy under valgrind 3.19 (benchmarks/callgrind/run.sh).
// valgrind's rt_sigsuspend wrapper writes into the signal mask it is given (to keep its own
// signal out of it); libdispatch parks the main thread of every async Swift program with a mask
// in read-only memory, and valgrind dies of its own SIGSEGV there. Handing the kernel a writable
// copy changes nothing else.
#define _GNU_SOURCE
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

int sigsuspend(const sigset_t *mask) {
    sigset_t copy = *mask;
    return (int)syscall(SYS_rt_sigsuspend, &copy, sizeof(unsigned long));
}
