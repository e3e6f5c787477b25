//! Schemathesis (tests/schemathesis, installed by its setup.sh) fuzzes `/openapi.json`
//! of a running server whose account is linked to the simulator, with every check on
//! (its default; tests/schemathesis/schemathesis.toml says where and why one is off):
//! the document must tell the truth (no server error, every status, content type,
//! header and body as documented, invalid input refused, 405 with `Allow`).
//!
//! `CIGATE_SCHEMATHESIS_EXAMPLES` sets the examples per operation (default 50, which
//! keeps the run to a few minutes on two cores), `CIGATE_SCHEMATHESIS_SEED` the seed
//! (default 1, so a failure reproduces).

mod common;

use std::path::PathBuf;

use cigate_buddy_sim::SimConfig;
use common::{Backend, Harness};

fn tool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemathesis")
}

/// The venv's `schemathesis`, or `None` (after saying why) when it is not installed
/// here. Under CI a missing tool is a failure: `.ci/run` installs it.
fn schemathesis() -> Option<PathBuf> {
    let bin = tool_dir().join(".venv/bin/schemathesis");
    if bin.exists() {
        return Some(bin);
    }
    let why = format!(
        "Schemathesis is not installed ({} missing): run tests/schemathesis/setup.sh",
        bin.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_survives_schemathesis() {
    let Some(bin) = schemathesis() else { return };
    let config = SimConfig {
        // Thousands of generated calls; the rate governor need not pace them.
        rate_limit: "100000000/3600".parse().unwrap(),
        ..SimConfig::default()
    };
    let h = Harness::start_with(Backend::Sqlite, config).await.unwrap();
    let account = h.link().await;
    let examples = std::env::var("CIGATE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "50".into());
    let seed = std::env::var("CIGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let work = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(&bin)
        .arg("--config-file")
        .arg(tool_dir().join("schemathesis.toml"))
        .arg("run")
        .arg(h.url("/openapi.json"))
        .args(["--max-examples", &examples])
        .args(["--seed", &seed])
        .args(["--workers", "2"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .args(["--no-color"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", h.api_token))
        .env("CIGATE_ACCOUNT_ID", &account)
        .current_dir(work.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("No operations"),
        "schemathesis tested nothing:\n{stdout}"
    );
}
