/* bindgen input for src/sys/verbs.rs: rdma-core's own libibverbs header. */
#include <infiniband/verbs.h>
