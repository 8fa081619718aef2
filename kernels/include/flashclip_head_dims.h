/* The head dims the tensor-core attention kernels (v2, v3, v4) are instantiated for. The one list: the dispatch
 * switches expand it, and build.rs turns it into the Rust constant FLASH_HEAD_DIMS. */
#ifndef FLASHCLIP_HEAD_DIMS_H
#define FLASHCLIP_HEAD_DIMS_H

#define FC_FLASH_HEAD_DIMS(X) X(64) X(72) X(80) X(96) X(104) X(112) X(128)

#endif
