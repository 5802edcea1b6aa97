// LD_PRELOAD counter of heap allocations, for benchmarks/allocs/run.sh: every call of malloc,
// calloc, realloc and the aligned variants is counted (relaxed atomics) and forwarded to glibc.
// A thread writes the running totals to $MALLOC_COUNT_FILE ten times a second.
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static unsigned long allocations, frees;

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

static void *reporter(void *arg) {
    const char *path = arg;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (;;) {
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%lu %lu\n", __atomic_load_n(&allocations, __ATOMIC_RELAXED), __atomic_load_n(&frees, __ATOMIC_RELAXED));
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
