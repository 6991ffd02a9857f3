#define _GNU_SOURCE
#include "CSystem.h"

#include <fcntl.h>

#include <errno.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <sys/prctl.h>

// MARK: - Futex

uint32_t cohort_atomic_load(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
void cohort_atomic_store(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
uint32_t cohort_atomic_fetch_add(uint32_t *p, uint32_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
uint64_t cohort_atomic_load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
void cohort_atomic_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
int cohort_atomic_compare_exchange64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

void cohort_futex_wait(uint32_t *p, uint32_t expected) {
    syscall(SYS_futex, p, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

void cohort_futex_wake_all(uint32_t *p) {
    syscall(SYS_futex, p, FUTEX_WAKE_PRIVATE, 0x7FFFFFFF, NULL, NULL, 0);
}

int cohort_futex_wait_shared(uint32_t *p, uint32_t expected, int64_t timeoutNanoseconds) {
    struct timespec ts, *tp = NULL;
    if (timeoutNanoseconds >= 0) {
        ts.tv_sec = timeoutNanoseconds / 1000000000;
        ts.tv_nsec = timeoutNanoseconds % 1000000000;
        tp = &ts;
    }
    long rc = syscall(SYS_futex, p, FUTEX_WAIT, expected, tp, NULL, 0);
    return (rc == -1 && errno == ETIMEDOUT) ? 1 : 0;
}

void cohort_futex_wake_shared(uint32_t *p) {
    syscall(SYS_futex, p, FUTEX_WAKE, 0x7FFFFFFF, NULL, NULL, 0);
}

uint64_t cohort_atomic_fetch_add64(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

void cohort_cpu_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

int cohort_set_parent_death_signal(int signal) { return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0); }

int cohort_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
