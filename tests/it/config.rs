//! Configuration as the binary sees it: the environment layer refuses typos but leaves the
//! test suite's own `GLEANER_TEST_*` variables alone.

use std::process::Command;

use crate::support::process::binary;

fn check_store(env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(binary());
    command
        .args(["check-store", "--data-dir"])
        .arg(dir.path())
        .env_remove("GLEANER_CONFIG")
        .current_dir(dir.path());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run gleaner check-store")
}

#[test]
fn test_suite_variables_are_not_configuration() {
    let output = check_store(&[("GLEANER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn misspelt_environment_keys_are_refused_by_name() {
    let output = check_store(&[("GLEANER_ENGINE__CONCURENCY", "4")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("concurency"), "{stderr}");
}
