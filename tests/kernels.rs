//! The CUDA kernels' shared device code, checked on the CPU: `src/model/kernels/philox.cuh`
//! compiled with the host C compiler gives the same bits, 16-bit draws and dropout masks as the CPU twin.

use std::path::Path;
use std::process::Command;

use noiseda::model::norm::Dropout;
use noiseda::model::philox;

/// (seed, stream, element) triples: block edges, 64-bit seeds and element indices past 2³².
const CASES: &[(u64, u32, u64)] = &[
    (0, 0, 0),
    (0, 0, 3),
    (0, 0, 4),
    (9, 2, 12_345),
    (0xdead_beef_cafe_f00d, 7, 1 << 33),
    (u64::MAX, u32::MAX, u64::MAX),
];

#[test]
fn philox_header_gives_the_cpu_twins_bits_and_masks() {
    let Some(cc) = ["cc", "gcc", "clang"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
    else {
        eprintln!("skipped: no host C compiler (cc, gcc, clang) to compile philox.cuh with");
        return;
    };
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/kernels/philox.cuh");
    let tmp = tempfile::tempdir().unwrap();
    let mut program = String::from("#include <stdio.h>\n#include <inttypes.h>\n");
    program += &format!("#include \"{}\"\nint main(void) {{\n", header.display());
    for &(seed, stream, e) in CASES {
        program += &format!(
            "  printf(\"%\" PRIu32 \" %\" PRIu32 \"\\n\", noiseda_philox_bits({seed}ull, {stream}u, {e}ull), \
             noiseda_philox_half({seed}ull, {stream}u, {e}ull));\n"
        );
    }
    // A dropout mask of p = 0.3 over 37 elements of stream 5, as the kernels compute it.
    let d = Dropout { p: 0.3, seed: 42 };
    let keep = (1.0 / (1.0 - d.p)) as f32;
    program += &format!(
        "  for (uint64_t e = 0; e < 37; ++e) printf(\"%.9g\\n\", \
         noiseda_dropout_multiplier(42ull, 5u, e, {}u, {keep:.9}f));\n",
        d.threshold()
    );
    program += "  return 0;\n}\n";
    let src = tmp.path().join("philox_check.c");
    let exe = tmp.path().join("philox_check");
    std::fs::write(&src, program).unwrap();
    let built = Command::new(cc)
        .args(["-std=c99", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), CASES.len() + 37);
    for (line, &(seed, stream, e)) in lines.iter().zip(CASES) {
        let (word, half) = line.split_once(' ').unwrap();
        assert_eq!(
            (word.parse::<u32>().unwrap(), half.parse::<u16>().unwrap()),
            (philox::bits(seed, stream, e), philox::half(seed, stream, e)),
            "seed {seed} stream {stream} element {e}"
        );
    }
    let mask = d.mask(5, 37);
    for (line, m) in lines[CASES.len()..].iter().zip(&mask) {
        assert_eq!(line.parse::<f32>().unwrap(), *m);
    }
    assert!(mask.contains(&0.0) && mask.contains(&keep));
}
