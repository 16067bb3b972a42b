//! `tenantgate token create|list|revoke` on the real binary against a running `tenantgate dev`:
//! a created token works, is listed without its secret, and answers 401 once revoked; a token
//! restricted with `--tenant` reaches only that tenant.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{binary, DevProcess};

fn tenantgate(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tenantgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn status_with(dev: &DevProcess, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/tenants", dev.admin()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_created_listed_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = DevProcess::start(binary(), dir.path(), &[]);
    let config = dir.path().join("tenantgate.toml");
    let config = config.to_str().unwrap();

    let token = tenantgate(&[
        "token", "create", "--config", config, "--scope", "read", "--name", "ci", "--ttl", "3600",
    ]);
    let token = token.trim();
    assert!(
        token.starts_with("tga_") && !token.contains('\n'),
        "{token:?}"
    );
    assert_eq!(status_with(&dev, token).await, 200);

    let listed = tenantgate(&["token", "list", "--config", config]);
    assert!(!listed.contains(token), "the secret is never listed");
    let ci: Value = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["name"] == "ci")
        .expect("the new token is listed");
    assert_eq!(ci["scope"], "read");
    assert!(ci["expires_at"].is_string() && ci["revoked_at"].is_null());

    let id = ci["id"].as_str().unwrap();
    let revoked: Value =
        serde_json::from_str(&tenantgate(&["token", "revoke", "--config", config, id])).unwrap();
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(status_with(&dev, token).await, 401);

    // A bad id is refused by the CLI with a message, not a panic.
    let out = Command::new(binary())
        .args(["token", "revoke", "--config", config, "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));

    // A token restricted to the demo's tenant acme: it sees acme, not globex (403
    // `outside_scope`), and is listed with its restriction. An unknown slug is refused by name.
    let acme_only = tenantgate(&[
        "token", "create", "--config", config, "--scope", "write", "--name", "acme-ops",
        "--tenant", "acme",
    ]);
    let acme_only = acme_only.trim();
    let get = |path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", dev.admin()))
            .bearer_auth(acme_only)
            .send()
    };
    assert_eq!(get("/v1/tenants/acme").await.unwrap().status(), 200);
    let other = get("/v1/tenants/globex").await.unwrap();
    assert_eq!(other.status(), 403);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "outside_scope");
    let listed = tenantgate(&["token", "list", "--config", config]);
    let entry: Value = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["name"] == "acme-ops")
        .expect("the restricted token is listed");
    assert_eq!(
        entry["tenants"].as_array().map(Vec::len),
        Some(1),
        "{entry}"
    );
    let out = Command::new(binary())
        .args([
            "token", "create", "--config", config, "--scope", "read", "--tenant", "no-such",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such"));

    assert!(dev.stop("TERM", Duration::from_secs(5)).success());
}
