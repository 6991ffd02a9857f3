#define _GNU_SOURCE
#include "CPlatform.h"

#include <fcntl.h>
#include <sched.h>
#include <dirent.h>
#include <stdlib.h>
#include <signal.h>
#include <pthread.h>
#include <string.h>

#include <errno.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

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
    // Bounded: a wake-up lost to some race costs a few milliseconds, never a hang.
    struct timespec ts = {0, 5000000};
    syscall(SYS_futex, p, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
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

int cohort_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cohort_allowed_cpus(int *ids, int capacity) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    int n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) ids[n++] = cpu;
    }
    return n;
}

int cohort_set_affinity(const int *ids, int count) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int i = 0; i < count; i++) {
        if (ids[i] >= 0 && ids[i] < CPU_SETSIZE) CPU_SET(ids[i], &set);
    }
    // sched_setaffinity applies to one thread: pin every thread that exists now (threads
    // started later inherit the mask of the thread that starts them).
    int rc = sched_setaffinity(0, sizeof(set), &set);
    DIR *dir = opendir("/proc/self/task");
    if (dir == NULL) return rc;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        if (sched_setaffinity((pid_t)atoi(entry->d_name), sizeof(set), &set) != 0) rc = -1;
    }
    closedir(dir);
    return rc;
}

#define COHORT_ORPHAN_NAMES 80
static char orphan_paths[COHORT_ORPHAN_NAMES][96];

static void orphan_cleanup(int signal) {
    for (int i = 0; i < COHORT_ORPHAN_NAMES; i++) {
        if (orphan_paths[i][0]) unlink(orphan_paths[i]);
    }
    // Die of the signal (the handler blocks it until it returns, so it lands right after).
    struct sigaction fallback;
    memset(&fallback, 0, sizeof(fallback));
    fallback.sa_handler = SIG_DFL;
    sigemptyset(&fallback.sa_mask);
    sigaction(signal, &fallback, NULL);
    raise(signal);
}

void cohort_install_orphan_cleanup(const char *const *names, int count) {
    for (int i = 0; i < COHORT_ORPHAN_NAMES; i++) {
        orphan_paths[i][0] = 0;
        // shm_open names live under /dev/shm on Linux; unlink is async-signal-safe, shm_unlink is not listed.
        if (i < count && names[i] && names[i][0] && strlen(names[i]) + 9 < sizeof(orphan_paths[i])) {
            strcpy(orphan_paths[i], "/dev/shm");
            strcat(orphan_paths[i], names[i]);
        }
    }
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = orphan_cleanup;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
}

static int signal_pipe_write = -1, signal_pipe_read = -1;

static void forward_signal(int signal) {
    int saved = errno;
    unsigned char byte = (unsigned char)signal;
    (void)write(signal_pipe_write, &byte, 1);
    errno = saved;
}

int cohort_forward_signals(const int *signals, int count) {
    if (signal_pipe_write < 0) {
        int fds[2];
        // A full pipe (signals faster than they are read) drops a byte rather than block the handler.
        if (pipe2(fds, O_CLOEXEC) != 0 || fcntl(fds[1], F_SETFL, O_NONBLOCK) != 0) return -1;
        signal_pipe_read = fds[0];
        signal_pipe_write = fds[1];
    }
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = forward_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) {
        sigaction(signals[i], &action, NULL);
        sigaddset(&set, signals[i]);
    }
    // This thread takes them too (threads started from the runtime's pools may block them all).
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return signal_pipe_read;
}
