//! The OpenAPI document against a third-party fuzzer: schemathesis (pinned in
//! tests/schemathesis/requirements.txt, installed by `scripts/ensure-deps.sh --test`) reads
//! only the document of a running `tenantgate dev` and checks, with a fixed seed and every check
//! it has, that the API accepts what the document allows, refuses what it forbids, answers only
//! documented statuses with documented bodies, and, in its stateful phase, follows the
//! document's links (tenant created → read, patched, deleted; job → retried). Any finding
//! fails the test, with schemathesis's report.
//!
//! The fuzzer creates shards with URLs and app upstreams it invents: `dev` runs in a network
//! namespace of its own where only loopback exists, so none of those hosts is ever reached.
//!
//! The app's tenant API is fuzzed the same way through the edge, at a tenant's host, with a
//! tenant user token minted by the admin API.
//!
//! CI runs a short form; the long form is
//! `TENANTGATE_FUZZ_EXAMPLES=100 cargo test --test openapi_fuzz -- --nocapture`.

use std::path::PathBuf;
use std::process::Command;

use tenantgate_testkit::process::DevProcess;

/// Fixed, so that a run is reproducible (`st replay` needs the same generated cases).
const SEED: &str = "20261129";
/// Examples per operation and phase in CI; `TENANTGATE_FUZZ_EXAMPLES` overrides it.
const CI_EXAMPLES: &str = "15";

/// The venv's program `name` (`schemathesis`, `python`).
fn venv(name: &str) -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is set");
    let bin = PathBuf::from(home)
        .join(".cache/tenantgate/schemathesis/bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/ensure-deps.sh --test",
        bin.display()
    );
    bin
}

/// Run schemathesis on the document at `document` against `base`, with `headers`, inside the
/// dev process's network namespace; panics with its report on any finding.
fn fuzz(dev: &DevProcess, work: &std::path::Path, document: &str, base: &str, headers: &[String]) {
    let examples =
        std::env::var("TENANTGATE_FUZZ_EXAMPLES").unwrap_or_else(|_| CI_EXAMPLES.to_string());
    let mut command: Command = dev.in_netns(venv("schemathesis"));
    command
        .args(["run", document, "--url", base])
        .args([
            "--checks",
            "all",
            "--seed",
            SEED,
            "--max-examples",
            &examples,
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--generation-database", "none", "--no-color"]);
    for h in headers {
        command.args(["-H", h]);
    }
    let hooks = tenantgate_testkit::repository_root().join("tests/schemathesis");
    // schemathesis finds its settings file in the working directory.
    std::fs::copy(
        hooks.join("schemathesis.toml"),
        work.join("schemathesis.toml"),
    )
    .expect("copy schemathesis.toml");
    let out = command
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", hooks)
        .current_dir(work)
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "schemathesis found differences between {document} and the API (report above)"
    );
    // A run that tested nothing would pass too.
    assert!(
        report.contains("Tested:") && !report.contains("Tested: 0"),
        "schemathesis tested no operation (report above)"
    );
}

#[test]
fn admin_api_matches_its_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_isolated(env!("CARGO_BIN_EXE_tenantgate"), dir.path(), &[]);
    let admin = dev.admin();
    fuzz(
        &dev,
        dir.path(),
        &format!("{admin}/openapi.json"),
        &admin,
        &[format!("Authorization: Bearer {}", dev.admin_token)],
    );
}

/// `method path` with the JSON `body` on the admin API of `dev`, from inside its network
/// namespace (with the venv's Python, which schemathesis brings): the answer's body. Panics on
/// an error status.
fn admin_request(dev: &DevProcess, method: &str, path: &str, body: &str) -> String {
    let script = "import sys, requests\n\
r = requests.request(sys.argv[1], sys.argv[2], data=sys.argv[3],\n\
    headers={'Authorization': 'Bearer ' + sys.argv[4], 'Content-Type': 'application/json'})\n\
r.raise_for_status()\n\
print(r.text)\n";
    let url = format!("{}{path}", dev.admin());
    let out = dev
        .in_netns(venv("python"))
        .args(["-c", script, method, &url, body, &dev.admin_token])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{method} {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A user token of tenant `slug` with role `owner`, minted through the admin API.
fn mint_user_token(dev: &DevProcess, slug: &str) -> String {
    let body = format!(r#"{{"email": "fuzz@{slug}.test", "role": "owner"}}"#);
    let minted = admin_request(dev, "POST", &format!("/v1/tenants/{slug}/tokens"), &body);
    let minted: serde_json::Value = serde_json::from_str(&minted).expect("a minted token");
    minted["token"].as_str().expect("token").to_string()
}

#[test]
fn tenant_api_matches_its_openapi_document_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start_isolated(env!("CARGO_BIN_EXE_tenantgate"), dir.path(), &[]);
    let token = mint_user_token(&dev, "acme");
    // The fuzzer sends hundreds of requests a second; the tenant's rate limit is not what is
    // tested here, and its 429s would stand in for the answers that are.
    admin_request(
        &dev,
        "PATCH",
        "/v1/tenants/acme",
        r#"{"rate_limit": {"rps": 100000, "burst": 100000}}"#,
    );
    assert!(token.starts_with("tgu_"), "{token}");
    let edge = dev.edge();
    fuzz(
        &dev,
        dir.path(),
        &format!("{edge}/api/openapi.json"),
        &edge,
        &[
            "Host: acme.localhost".to_string(),
            format!("Authorization: Bearer {token}"),
        ],
    );
}
