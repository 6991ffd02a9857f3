// Open MPI, loaded when a run asks for it (`--launcher mpi`): the build needs no MPI
// headers or libraries, and one binary runs with or without Open MPI installed.
//
// Open MPI's handles are addresses of its predefined objects (`MPI_COMM_WORLD` is
// `&ompi_mpi_comm_world`), so they come from dlsym like the functions. MPICH's are
// integers: a second table would add it.
#define _GNU_SOURCE
#include "CPlatform.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

typedef void *mpi_handle;

static struct {
    int loaded;
    int (*init_thread)(int *, char ***, int, int *);
    int (*initialized)(int *);
    int (*finalized)(int *);
    int (*finalize)(void);
    int (*comm_rank)(mpi_handle, int *);
    int (*comm_size)(mpi_handle, int *);
    int (*bcast)(void *, int, mpi_handle, int, mpi_handle);
    int (*allgather)(const void *, int, mpi_handle, void *, int, mpi_handle, mpi_handle);
    int (*processor_name)(char *, int *);
    int (*error_string)(int, char *, int *);
    int (*comm_split)(mpi_handle, int, int, mpi_handle *);
    int (*iallreduce)(const void *, void *, int, mpi_handle, mpi_handle, mpi_handle, mpi_handle *);
    int (*iallgather)(const void *, int, mpi_handle, void *, int, mpi_handle, mpi_handle, mpi_handle *);
    int (*test)(mpi_handle *, int *, void *);
    mpi_handle world;
    mpi_handle byte;
    mpi_handle float32;
    mpi_handle sum;
} mpi;

int cohort_mpi_load(const char *library, char *error, int capacity) {
    if (mpi.loaded) return 0;
    // RTLD_GLOBAL: Open MPI's own plugins resolve libmpi's symbols through the global scope.
    void *lib = dlopen(library, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(error, capacity, "%s", dlerror());
        return -1;
    }
#define SYMBOL(field, name)                                                                 \
    do {                                                                                    \
        *(void **)&mpi.field = dlsym(lib, name);                                            \
        if (!mpi.field) {                                                                   \
            snprintf(error, capacity, "%s has no symbol %s (not Open MPI?)", library, name); \
            return -1;                                                                      \
        }                                                                                   \
    } while (0)
    SYMBOL(init_thread, "MPI_Init_thread");
    SYMBOL(initialized, "MPI_Initialized");
    SYMBOL(finalized, "MPI_Finalized");
    SYMBOL(finalize, "MPI_Finalize");
    SYMBOL(comm_rank, "MPI_Comm_rank");
    SYMBOL(comm_size, "MPI_Comm_size");
    SYMBOL(bcast, "MPI_Bcast");
    SYMBOL(allgather, "MPI_Allgather");
    SYMBOL(processor_name, "MPI_Get_processor_name");
    SYMBOL(error_string, "MPI_Error_string");
    SYMBOL(comm_split, "MPI_Comm_split");
    SYMBOL(iallreduce, "MPI_Iallreduce");
    SYMBOL(iallgather, "MPI_Iallgather");
    SYMBOL(test, "MPI_Test");
    SYMBOL(world, "ompi_mpi_comm_world");
    SYMBOL(byte, "ompi_mpi_byte");
    SYMBOL(float32, "ompi_mpi_float");
    SYMBOL(sum, "ompi_mpi_op_sum");
#undef SYMBOL
    mpi.loaded = 1;
    return 0;
}

static int describe(int rc, char *error, int capacity) {
    if (rc == 0 || !error) return rc;
    char text[512];
    int length = 0;
    if (mpi.error_string && mpi.error_string(rc, text, &length) == 0) {
        snprintf(error, capacity, "%.*s", length, text);
    } else {
        snprintf(error, capacity, "MPI error %d", rc);
    }
    return rc;
}

int cohort_mpi_init(int *rank, int *size, char *error, int capacity) {
    int done = 0;
    mpi.initialized(&done);
    if (!done) {
        // Serialized: calls come from one thread at a time, not always the same one.
        int provided = 0;
        int rc = mpi.init_thread(NULL, NULL, 2 /* MPI_THREAD_SERIALIZED */, &provided);
        if (rc != 0) return describe(rc, error, capacity);
    }
    int rc = mpi.comm_rank(mpi.world, rank);
    if (rc == 0) rc = mpi.comm_size(mpi.world, size);
    return describe(rc, error, capacity);
}

int cohort_mpi_bcast(void *buffer, int bytes, int root, char *error, int capacity) {
    return describe(mpi.bcast(buffer, bytes, mpi.byte, root, mpi.world), error, capacity);
}

int cohort_mpi_allgather(const void *send, int bytes, void *receive, char *error, int capacity) {
    return describe(mpi.allgather(send, bytes, mpi.byte, receive, bytes, mpi.byte, mpi.world), error, capacity);
}

/// Whether MPI is loaded and initialized in this process (and not finalized).
static int ready(char *error, int capacity) {
    int initialized = 0, finalized = 0;
    if (mpi.loaded) {
        mpi.initialized(&initialized);
        mpi.finalized(&finalized);
    }
    if (mpi.loaded && initialized && !finalized) return 0;
    snprintf(error, capacity, "MPI is not running in this process (it was not started by mpirun with --launcher mpi)");
    return -1;
}

int cohort_mpi_comm_split(int color, int key, void **communicator, int *rank, int *size, char *error, int capacity) {
    if (ready(error, capacity) != 0) return -1;
    mpi_handle comm = NULL;
    int rc = mpi.comm_split(mpi.world, color, key, &comm);
    if (rc == 0) rc = mpi.comm_rank(comm, rank);
    if (rc == 0) rc = mpi.comm_size(comm, size);
    *communicator = comm;
    return describe(rc, error, capacity);
}

// Open MPI's MPI_IN_PLACE is ((void *) 1); MPI_STATUS_IGNORE is NULL.
int cohort_mpi_iallreduce_sum(float *buffer, int count, void *communicator, void **request, char *error, int capacity) {
    return describe(mpi.iallreduce((void *)1, buffer, count, mpi.float32, mpi.sum, communicator, request), error, capacity);
}

int cohort_mpi_iallgather(const float *input, int count, float *output, void *communicator, void **request, char *error,
                          int capacity) {
    return describe(mpi.iallgather(input, count, mpi.float32, output, count, mpi.float32, communicator, request), error,
                    capacity);
}

int cohort_mpi_test(void **request, int *done, char *error, int capacity) {
    return describe(mpi.test(request, done, NULL), error, capacity);
}

int cohort_mpi_processor_name(char *name, int capacity) {
    char buffer[256 + 1];  // MPI_MAX_PROCESSOR_NAME in Open MPI
    int length = 0;
    if (mpi.processor_name(buffer, &length) != 0) return -1;
    snprintf(name, capacity, "%.*s", length, buffer);
    return 0;
}

void cohort_mpi_finalize(void) {
    if (!mpi.loaded) return;
    int initialized = 0, finalized = 0;
    mpi.initialized(&initialized);
    mpi.finalized(&finalized);
    if (initialized && !finalized) mpi.finalize();
}

