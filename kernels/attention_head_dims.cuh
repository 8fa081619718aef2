/* The head dims of the tensor-core attention kernels, as a compile-time check. */
#ifndef FLASHCLIP_ATTENTION_HEAD_DIMS_CUH
#define FLASHCLIP_ATTENTION_HEAD_DIMS_CUH

#include "flashclip_head_dims.h"

namespace flashclip::attention {

/* Head dims the tensor-core kernels are built for (FC_FLASH_HEAD_DIMS; the launchers' switches reject any other). */
constexpr bool supports_head_dim(int head_dim) {
#define FC_IS_HEAD_DIM(D) head_dim == (D) ||
    return FC_FLASH_HEAD_DIMS(FC_IS_HEAD_DIM) false;
#undef FC_IS_HEAD_DIM
}

}  // namespace flashclip::attention

#endif
