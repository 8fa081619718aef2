//! Compiles kernels/*.cu with nvcc into a static library and generates the FFI from kernels/include/flashclip.h.
//!
//! nvcc is found through NVCC, CUDA_HOME / CUDA_PATH, PATH, then the project-local toolchain that
//! `scripts/setup.sh` installs into .toolchain/. Targets come from FLASHCLIP_CUDA_ARCHS (comma-separated, e.g.
//! "sm_90a,sm_80,compute_90": sm_* embeds machine code, compute_* embeds PTX for newer GPUs).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCHS: &str = "sm_90a,sm_80,compute_90";
const LOCAL_CUDA: &str = ".toolchain/py/nvidia/cu13";

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "FLASHCLIP_CUDA_ARCHS",
        "LIBCLANG_PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let nvcc = find_nvcc(&root).unwrap_or_else(|| {
        fail(
            "nvcc (the CUDA compiler) was not found.\n\
             Run ./scripts/setup.sh to install CUDA 13.0's nvcc from PyPI into .toolchain/, or point NVCC or \
             CUDA_HOME at a CUDA 13.0 toolkit.",
        )
    });
    let cuda_home = nvcc
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    compile_kernels(&root, &nvcc);
    link_cudart(&cuda_home);
    generate_bindings(&root);
}

/// The `tuning` feature builds the tile-sweep entry points (fc_attention_v3_tiles, fc_attention_v4_tiles).
fn tuning() -> bool {
    env::var_os("CARGO_FEATURE_TUNING").is_some()
}

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: flashclip build: {msg}\n");
    std::process::exit(1);
}

fn find_nvcc(root: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file().then(|| p.to_path_buf());
    if let Some(p) = env::var_os("NVCC") {
        return is_file(Path::new(&p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            if let Some(p) = is_file(&Path::new(&home).join("bin/nvcc")) {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        if let Some(p) = env::split_paths(&path).find_map(|dir| is_file(&dir.join("nvcc"))) {
            return Some(p);
        }
    }
    is_file(&root.join(LOCAL_CUDA).join("bin/nvcc"))
}

fn gencode_flags() -> Vec<String> {
    let archs = env::var("FLASHCLIP_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let flags: Vec<String> = archs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|arch| {
            if let Some(sm) = arch.strip_prefix("sm_") {
                format!("-gencode=arch=compute_{sm},code=sm_{sm}")
            } else if let Some(cc) = arch.strip_prefix("compute_") {
                format!("-gencode=arch=compute_{cc},code=compute_{cc}")
            } else {
                fail(&format!(
                    "FLASHCLIP_CUDA_ARCHS entry {arch:?} is neither sm_XX nor compute_XX"
                ))
            }
        })
        .collect();
    if flags.is_empty() {
        fail("FLASHCLIP_CUDA_ARCHS names no target");
    }
    flags
}

fn compile_kernels(root: &Path, nvcc: &Path) {
    let kernels = root.join("kernels");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", kernels.display())))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    sources.sort();

    // cc's CUDA mode takes nvcc from NVCC; kernels are always optimized without device debug info (-G makes them
    // orders of magnitude slower), whatever the cargo profile.
    env::set_var("NVCC", nvcc);
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .cudart("static")
        .debug(false)
        .opt_level(3)
        .include(kernels.join("include"))
        .flag("-std=c++17")
        .flag("--expt-relaxed-constexpr")
        .flag("-Xptxas=-warn-spills")
        .warnings(false);
    if tuning() {
        build.define("FLASHCLIP_TUNING", None);
    }
    for flag in gencode_flags() {
        build.flag(&flag);
    }
    // One library per .cu file, compiled in parallel: cc builds several CUDA files of one library as relocatable
    // device code (--device-c), where calls into the math library's slow paths become ABI calls that spill
    // registers (v2 at sm_80) and make ptxas serialize wgmma. The kernels share no device code across files, so
    // whole-file compilation loses nothing.
    std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .map(|src| {
                let mut one = build.clone();
                one.file(src);
                let stem = src
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                scope.spawn(move || (stem.clone(), one.try_compile(&format!("flashclip_{stem}"))))
            })
            .collect();
        for job in jobs {
            match job.join() {
                Ok((_, Ok(()))) => {}
                Ok((stem, Err(e))) => {
                    fail(&format!("nvcc failed to compile kernels/{stem}.cu:\n{e}"))
                }
                Err(_) => fail("a kernel compilation thread panicked"),
            }
        }
    });
}

fn link_cudart(cuda_home: &Path) {
    for dir in ["lib64", "lib", "lib/x64", "targets/x86_64-linux/lib"] {
        let lib = cuda_home.join(dir);
        if lib.join("libcudart_static.a").is_file() {
            println!("cargo:rustc-link-search=native={}", lib.display());
            return;
        }
    }
    fail(&format!(
        "libcudart_static.a was not found under {}; install nvidia-cuda-runtime==13.0.96 (./scripts/setup.sh does)",
        cuda_home.display()
    ));
}

/// Directories where a libclang shared library usually lives, for a clear error before bindgen's own.
fn find_libclang(root: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("LIBCLANG_PATH")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(out) = Command::new("llvm-config").arg("--libdir").output() {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("lib")))
            .filter(|p| p.to_string_lossy().contains("llvm-"))
            .collect();
        llvm.sort();
        dirs.extend(llvm.into_iter().rev());
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/lib"].map(PathBuf::from));
    // PyPI's libclang wheel, which scripts/setup.sh installs when it cannot use the system's package manager.
    dirs.push(root.join(".toolchain/py/clang/native"));
    dirs.into_iter().find(|d| {
        std::fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libclang")))
        })
    })
}

fn generate_bindings(root: &Path) {
    let Some(libclang) = find_libclang(root) else {
        fail(
            "libclang (needed by bindgen) was not found. Run ./scripts/setup.sh, or install it (Debian/Ubuntu: \
             apt-get install libclang-dev) or set LIBCLANG_PATH to the folder holding libclang.so.",
        )
    };
    if env::var_os("LIBCLANG_PATH").is_none() {
        // bindgen loads libclang from LIBCLANG_PATH; point it at what was found.
        env::set_var("LIBCLANG_PATH", &libclang);
    }
    let header = root.join("kernels/include/flashclip.h");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_function("fc_.*")
        .allowlist_type("fc_.*")
        .rustified_enum("fc_.*")
        .clang_args(tuning().then_some("-DFLASHCLIP_TUNING"))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on {}: {e}", header.display())));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", out.display())));
}
