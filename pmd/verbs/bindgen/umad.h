/* bindgen input for src/sys/umad.rs: rdma-core's own libibumad header. */
#include <infiniband/umad.h>
