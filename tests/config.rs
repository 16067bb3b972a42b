//! `tenantgate check-config` and start-up validation, through the real binary.

mod support;

use std::process::Command;

/// `check-config --require-secrets` on `text`: success and stderr.
fn check(text: &str, env: &[(&str, &str)]) -> (bool, String) {
    let (ok, _, stderr) = check_with(text, env, &["--require-secrets"]);
    (ok, stderr)
}

/// `check-config` with `flags` on `text`: success, stdout and stderr.
fn check_with(text: &str, env: &[(&str, &str)], flags: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(support::binary())
        .arg("check-config")
        .args(flags)
        .arg(&path)
        .env_remove("TENANTGATE__SECURITY__SIGNING_KEYS")
        .env_remove("TENANTGATE__SECURITY__CREDENTIAL_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.success(), stdout, stderr)
}

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

#[test]
fn bad_configs_fail_naming_the_key() {
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "[edge]\nlisten = \"nowhere\"\n".into(),
            vec![],
            "edge.listen",
        ),
        (
            "[edge]\nlisen = \"127.0.0.1:1\"\n".into(),
            vec![],
            "edge.lisen",
        ),
        ("[nope]\nx = 1\n".into(), vec![], "nope"),
        ("[edge]\nthreads = 100000\n".into(), vec![], "edge.threads"),
        (
            "[catalog]\npoll_interval_ms = 0\n".into(),
            vec![],
            "catalog.poll_interval_ms",
        ),
        (
            "[app]\nconnection_budget = 0\n".into(),
            vec![],
            "app.connection_budget",
        ),
        (
            "mode = \"production\"\n".into(),
            vec![],
            "security.signing_keys",
        ),
        (
            format!("mode = \"production\"\n[security]\nsigning_keys = {{ k = \"{KEY}\" }}\n"),
            vec![],
            "security.credential_key",
        ),
        (
            "".into(),
            vec![("TENANTGATE__ADMIN__LISTEN", "x:y")],
            "admin.listen",
        ),
        (
            "".into(),
            vec![("TENANTGATE__EDGE__DEFAULT_RPS", "0")],
            "edge.default_rps",
        ),
        ("[edge\n".into(), vec![], "t.toml"),
    ];
    for (text, env, key) in cases {
        let (ok, stderr) = check(&text, &env);
        assert!(!ok, "accepted {text:?} {env:?}");
        assert!(
            stderr.contains(key),
            "{text:?}: message does not name {key}: {stderr}"
        );
    }
}

#[test]
fn shipped_configs_pass() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (ok, stderr) = check(
        &std::fs::read_to_string(format!("{root}/config/dev.toml")).unwrap(),
        &[],
    );
    assert!(ok, "{stderr}");
    let production =
        std::fs::read_to_string(format!("{root}/config/production.example.toml")).unwrap();
    // As the README runs it: valid, naming each secret it expects from the environment.
    let (ok, stdout, stderr) = check_with(&production, &[], &[]);
    assert!(ok, "{stderr}");
    for (key, var) in [
        (
            "security.signing_keys",
            "TENANTGATE__SECURITY__SIGNING_KEYS",
        ),
        (
            "security.credential_key",
            "TENANTGATE__SECURITY__CREDENTIAL_KEY",
        ),
        ("edge.redis_url", "TENANTGATE__EDGE__REDIS_URL"),
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(key) && l.contains(var)),
            "{key} not named: {stdout}"
        );
    }
    // With --require-secrets and no secrets it must refuse, naming a missing key...
    let (ok, stderr) = check(&production, &[]);
    assert!(
        !ok && (stderr.contains("security.signing_keys") || stderr.contains("edge.redis_url")),
        "{stderr}"
    );
    // ...and with them in the environment, as it documents, it passes.
    let keys = format!("{{ k2026a = \"{KEY}\" }}");
    let (ok, stderr) = check(
        &production,
        &[
            ("TENANTGATE__SECURITY__SIGNING_KEYS", &keys),
            ("TENANTGATE__SECURITY__CREDENTIAL_KEY", KEY),
            (
                "TENANTGATE__EDGE__REDIS_URL",
                "redis://:pw@redis.internal:6379/0",
            ),
        ],
    );
    assert!(ok, "{stderr}");
    // A secret given in the environment is not reported as missing.
    let (ok, stdout, stderr) = check_with(
        &production,
        &[("TENANTGATE__SECURITY__CREDENTIAL_KEY", KEY)],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("security.signing_keys"), "{stdout}");
    assert!(!stdout.contains("security.credential_key"), "{stdout}");
}

#[test]
fn deferred_secrets_still_check_everything_else() {
    let (ok, _, stderr) = check_with(
        "mode = \"production\"\n[edge]\nlisten = \"nowhere\"\n",
        &[],
        &[],
    );
    assert!(!ok && stderr.contains("edge.listen"), "{stderr}");
    // A secret given but malformed is an error even when secrets may be deferred.
    let (ok, _, stderr) = check_with(
        "mode = \"production\"\n",
        &[("TENANTGATE__SECURITY__CREDENTIAL_KEY", "short")],
        &[],
    );
    assert!(
        !ok && stderr.contains("security.credential_key"),
        "{stderr}"
    );
}

#[test]
fn a_component_with_bad_config_exits_before_binding() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!("[admin]\nlisten = \"127.0.0.1:{port}\"\njob_lease_secs = 0\n"),
    )
    .unwrap();
    let out = Command::new(support::binary())
        .args(["admin", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.job_lease_secs"));
    // Nothing was left listening, and the address is still free.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}
