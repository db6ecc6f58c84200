#!/usr/bin/env bash
# Generates the FFI bindings of ibpoll-pmd-verbs from rdma-core's headers
# (Debian: libibverbs-dev, libibumad-dev) with bindgen (Debian: bindgen 0.60.1).
#
#   pmd/verbs/bindgen/gen.sh [OUT_DIR]      (default: pmd/verbs/src/sys)
#
# Only what the driver uses is allowlisted; the types those items name come along.
# Functions are loaded at run time (`--dynamic-loading`): libibverbs.so.1 and
# libibumad.so.3 are dlopen()ed, never linked, so the workspace builds without
# rdma-core. The static-inline data-path calls of verbs.h (ibv_post_send, ibv_poll_cq,
# ...) are not symbols: the driver calls the context's ops table as they do.
# The test `bindings_match_headers` runs this script into a temporary directory and
# compares; regenerate with it after a header or bindgen change.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/../src/sys}"
BINDGEN="${BINDGEN:-bindgen}"
mkdir -p "$OUT"

common=(
    --no-rustfmt-bindings
    --no-doc-comments
    --no-layout-tests
    --no-prepend-enum-name
    --default-enum-style consts
    --size_t-is-usize
    --with-derive-default
    --use-core
    --ctypes-prefix ::core::ffi
    --dynamic-link-require-all
)

verbs_fns=(
    ibv_get_device_list ibv_free_device_list ibv_get_device_name ibv_get_device_guid
    ibv_open_device ibv_close_device ibv_query_device ibv_query_port ibv_query_gid
    ibv_query_pkey ibv_get_async_event ibv_ack_async_event ibv_alloc_pd ibv_dealloc_pd
    ibv_reg_mr ibv_dereg_mr ibv_create_cq ibv_destroy_cq ibv_create_qp ibv_destroy_qp
    ibv_modify_qp ibv_query_qp ibv_create_ah ibv_destroy_ah ibv_attach_mcast
    ibv_detach_mcast ibv_wc_status_str ibv_event_type_str
)
verbs_types=(
    verbs_context ibv_device_attr_ex ibv_port_attr ibv_qp_init_attr_ex ibv_qp_attr
    ibv_ah_attr ibv_send_wr ibv_recv_wr ibv_sge ibv_wc ibv_async_event ibv_gid
    ibv_qp_type ibv_qp_state ibv_qp_attr_mask ibv_wr_opcode ibv_send_flags
    ibv_wc_status ibv_wc_opcode ibv_wc_flags ibv_event_type ibv_port_state
    ibv_access_flags ibv_qp_create_flags ibv_qp_init_attr_mask ibv_device_cap_flags
    ibv_mtu
)
args=("${common[@]}" --dynamic-loading IbvLib)
for f in "${verbs_fns[@]}"; do args+=(--allowlist-function "$f"); done
for t in "${verbs_types[@]}"; do args+=(--allowlist-type "$t"); done
args+=(--allowlist-var 'IBV_LINK_LAYER_.*')
"$BINDGEN" "${args[@]}" "$HERE/verbs.h" -o "$OUT/verbs.rs"

umad_fns=(
    umad_init umad_done umad_get_port umad_release_port umad_open_port umad_close_port
    umad_get_mad umad_size umad_status umad_set_addr umad_set_pkey umad_send umad_recv
    umad_get_fd umad_register umad_unregister
)
args=("${common[@]}" --dynamic-loading UmadLib)
for f in "${umad_fns[@]}"; do args+=(--allowlist-function "$f"); done
for t in ib_user_mad ib_mad_addr umad_port; do args+=(--allowlist-type "$t"); done
args+=(--allowlist-var 'UMAD_.*')
"$BINDGEN" "${args[@]}" "$HERE/umad.h" -o "$OUT/umad.rs"

for f in "$OUT/verbs.rs" "$OUT/umad.rs"; do
    rustfmt --edition 2021 "$f"
done
