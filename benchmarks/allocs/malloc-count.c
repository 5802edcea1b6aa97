// LD_PRELOAD counter of heap allocations, for benchmarks/allocs/run.sh: every call of malloc,
// calloc, realloc and the aligned variants is counted (relaxed atomics) and forwarded to glibc.
// Also counted: the Swift runtime's reference counting (swift_retain, swift_release and their
// bridge-object and _n forms) as called from the binary through the PLT, which is how NIO and
// Sluice reach it; calls inside libswiftCore itself are not seen. Each is an atomic operation
// on the object's header, so the count per request is a repeatable measure of ARC traffic where
// callgrind cannot run.
// A thread writes the running totals to $MALLOC_COUNT_FILE ten times a second.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static unsigned long allocations, frees, retains, releases;

static inline void count(unsigned long *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }

void *malloc(size_t n) { count(&allocations); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(&allocations); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(&allocations); return __libc_realloc(p, n); }
void free(void *p) { if (p) count(&frees); __libc_free(p); }
void *memalign(size_t a, size_t n) { count(&allocations); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(&allocations); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count(&allocations);
    void *p = __libc_memalign(a, n);
    if (!p) return 12;
    *out = p;
    return 0;
}

// MARK: Swift reference counting

typedef void *(*retain_fn)(void *);
typedef void (*release_fn)(void *);
typedef void *(*retain_n_fn)(void *, uint32_t);
typedef void (*release_n_fn)(void *, uint32_t);

// Resolved on first use (libswiftCore is loaded after this library's constructor may run); two
// threads racing here store the same value.
#define NEXT(type, name) \
    static type real; \
    if (!real) real = (type)dlsym(RTLD_NEXT, name)

void *swift_retain(void *o) { NEXT(retain_fn, "swift_retain"); if (o) count(&retains); return real(o); }
void swift_release(void *o) { NEXT(release_fn, "swift_release"); if (o) count(&releases); real(o); }
void *swift_retain_n(void *o, uint32_t n) { NEXT(retain_n_fn, "swift_retain_n"); if (o) __atomic_fetch_add(&retains, n, __ATOMIC_RELAXED); return real(o, n); }
void swift_release_n(void *o, uint32_t n) { NEXT(release_n_fn, "swift_release_n"); if (o) __atomic_fetch_add(&releases, n, __ATOMIC_RELAXED); real(o, n); }
void *swift_bridgeObjectRetain(void *o) { NEXT(retain_fn, "swift_bridgeObjectRetain"); if (o) count(&retains); return real(o); }
void swift_bridgeObjectRelease(void *o) { NEXT(release_fn, "swift_bridgeObjectRelease"); if (o) count(&releases); real(o); }

static void *reporter(void *arg) {
    const char *path = arg;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (;;) {
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%lu %lu %lu %lu\n", __atomic_load_n(&allocations, __ATOMIC_RELAXED), __atomic_load_n(&frees, __ATOMIC_RELAXED),
                    __atomic_load_n(&retains, __ATOMIC_RELAXED), __atomic_load_n(&releases, __ATOMIC_RELAXED));
            fclose(f);
            rename(tmp, path);
        }
        usleep(100000);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    if (!path) return;
    pthread_t t;
    pthread_create(&t, NULL, reporter, (void *)path);
    pthread_detach(t);
}
