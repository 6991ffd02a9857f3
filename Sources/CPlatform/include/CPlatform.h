// Atomics and futexes on raw 32- and 64-bit words, for the thread pool (private futexes)
// and the shared-memory rings (process-shared futexes). Swift's Atomic types cannot give a
// futex the address of their word, so these few lines live in C.
#ifndef COHORT_CSYSTEM_H
#define COHORT_CSYSTEM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Sequentially consistent, so that "publish, then check for sleepers" on one side and
// "announce sleeping, then re-check" on the other never both miss.
uint32_t cohort_atomic_load(const uint32_t *p);
void cohort_atomic_store(uint32_t *p, uint32_t v);
/// Returns the value before the add.
uint32_t cohort_atomic_fetch_add(uint32_t *p, uint32_t v);
uint64_t cohort_atomic_load64(const uint64_t *p);
void cohort_atomic_store64(uint64_t *p, uint64_t v);
/// Replaces *p with `desired` if it equals `expected`; returns 1 on success.
int cohort_atomic_compare_exchange64(uint64_t *p, uint64_t expected, uint64_t desired);
/// Sleeps while *p == expected, at most 5 ms (callers re-check their condition).
void cohort_futex_wait(uint32_t *p, uint32_t expected);
/// Wakes every waiter on p.
void cohort_futex_wake_all(uint32_t *p);
/// Process-shared futex wait (for words in shared memory): sleeps while *p == expected,
/// at most `timeoutNanoseconds` (negative: no limit). Returns 0 when woken or the value
/// differed, 1 on timeout.
int cohort_futex_wait_shared(uint32_t *p, uint32_t expected, int64_t timeoutNanoseconds);
/// Wakes every waiter on a word in shared memory.
void cohort_futex_wake_shared(uint32_t *p);
/// 64-bit atomic fetch-add (sequentially consistent); returns the value before.
uint64_t cohort_atomic_fetch_add64(uint64_t *p, uint64_t v);

/// pipe2(fds, O_CLOEXEC) (a GNU extension Swift's Glibc module does not expose).
int cohort_pipe_cloexec(int fds[2]);

/// Writes up to `capacity` ids of the CPUs this process may run on; returns how many.
int cohort_allowed_cpus(int *ids, int capacity);
/// Restricts every thread of this process to the given CPUs; returns 0 on success.
int cohort_set_affinity(const int *ids, int count);

/// Installs a SIGTERM handler that removes up to 80 shared-memory names, then dies of
/// SIGTERM as if unhandled (async-signal-safe: unlink, sigaction and raise only), so
/// whoever watches the process sees "killed by SIGTERM", not a clean exit.
void cohort_install_orphan_cleanup(const char *const *names, int count);

/// Handles `signals` by writing each one's number, as a byte, to a pipe (the self-pipe
/// trick: nothing but write(2) in the handler); returns the pipe's read end (the same one on
/// every call: later calls add signals), or -1 when there is no pipe.
int cohort_forward_signals(const int *signals, int count);

/// A CPU pause hint for short spins.
void cohort_cpu_relax(void);

// MARK: - Open MPI, loaded at run time (MPI.c)

/// dlopens Open MPI's `library` (e.g. libmpi.so.40); 0, or -1 with the reason in `error`.
int cohort_mpi_load(const char *library, char *error, int capacity);
/// MPI_Init_thread (serialized) unless already initialized; this process's rank and the
/// world's size. 0, or an MPI error code with its text in `error`.
int cohort_mpi_init(int *rank, int *size, char *error, int capacity);
/// MPI_Bcast of `bytes` bytes from `root` over MPI_COMM_WORLD.
int cohort_mpi_bcast(void *buffer, int bytes, int root, char *error, int capacity);
/// MPI_Allgather of `bytes` bytes from every rank into `receive` (size × bytes).
int cohort_mpi_allgather(const void *send, int bytes, void *receive, char *error, int capacity);
/// MPI_Get_processor_name; 0 on success.
int cohort_mpi_processor_name(char *name, int capacity);
/// MPI_Finalize if initialized and not yet finalized.
void cohort_mpi_finalize(void);
/// MPI_Comm_split of MPI_COMM_WORLD (collective over every rank): the new communicator and
/// this process's rank and size in it.
int cohort_mpi_comm_split(int color, int key, void **communicator, int *rank, int *size, char *error, int capacity);
/// Non-blocking float sums in place and gathers on `communicator`; finish with cohort_mpi_test.
int cohort_mpi_iallreduce_sum(float *buffer, int count, void *communicator, void **request, char *error, int capacity);
int cohort_mpi_iallgather(const float *input, int count, float *output, void *communicator, void **request, char *error,
                          int capacity);
/// MPI_Test: `done` becomes 1 once the request finished.
int cohort_mpi_test(void **request, int *done, char *error, int capacity);

#ifdef __cplusplus
}
#endif
#endif
