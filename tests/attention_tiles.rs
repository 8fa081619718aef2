//! The v3/v4 kernels at every explicit tile shape (feature `tuning`) against the float64 reference.

mod common;

use common::{cases, check_cases, Path};
use flashclip::ops::attention::Tiles;
use flashclip::testing::gpu_test;
use half::{bf16, f16};

#[test]
fn gpu_tile_shapes() {
    gpu_test("gpu_tile_shapes", |g, r| {
        for tiles in Tiles::ALL {
            check_cases::<f16>(g, r, Path::Tiles(tiles), cases(tiles.head_dims()));
            check_cases::<bf16>(g, r, Path::Tiles(tiles), cases(tiles.head_dims()));
        }
    });
}
