//! `ringrpc bench --compare cluster-turns` end to end, briefly: both settings
//! take turns on the embedded server and every pair is reported.

use std::process::Command;

#[test]
fn cluster_turns_reports_every_pair_and_no_failed_call() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrpc"))
        .args(["bench", "--compare", "cluster-turns", "--in-flight", "16"])
        .args(["--rounds", "4", "--duration", "0.05", "--warmup", "0.05"])
        .output()
        .expect("run ringrpc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("median of 4 pairs"), "{stdout}");
    assert!(stdout.contains("; 0 failed calls"), "{stdout}");
}
