use std::time::Duration;

use crate::helpers::*;

fn concrete(path: &str) -> String {
    // Any value works for path parameters: auth must reject before the handler looks at it.
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("00000000-0000-0000-0000-000000000001");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

#[tokio::test]
async fn every_route_but_health_docs_and_sign_in_requires_a_key() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let url = app.url(&concrete(path));
            let response = app
                .client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            // The console's sign-in takes the key in its body: without one it is a bad body.
            let sign_in = method == reqwest::Method::POST && path == "/api/v1/session";
            if path.starts_with("/health") || sign_in {
                assert_ne!(response.status(), 401, "{method} {path} must be open");
                continue;
            }
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer",
                "{method} {path}"
            );
            assert_problem(response, 401, "missing_api_key").await;
            let response = app
                .client
                .request(method.clone(), &url)
                .bearer_auth("co_wrong")
                .send()
                .await
                .unwrap();
            assert_problem(response, 401, "invalid_api_key").await;
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the walk must cover the API ({checked} operations)"
    );
    // The document lists exactly the routes the router serves under /api/v1.
    let (_, api) = cloud_optimizer::http::api_v1().split_for_parts();
    for path in api.paths.paths.keys() {
        assert!(
            paths.contains_key(&format!("/api/v1{path}")),
            "{path} missing from /openapi.json"
        );
    }
    assert_eq!(app.get("/docs").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn malformed_authorization_header_is_rejected() {
    let app = spawn_app().await;
    let response = app
        .get("/api/v1/keys/self")
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_problem(response, 401, "invalid_authorization_header").await;
}

#[tokio::test]
async fn admin_creates_lists_and_revokes_keys() {
    let app = spawn_app().await;
    let (id, key) = app.create_key("ci bot", "user").await;
    assert!(key.starts_with("co_") && key.len() > 40);

    let me: serde_json::Value = app
        .get_as("/api/v1/keys/self", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], id.as_str(), "ids are `id`, as in /keys");
    assert_eq!(me["scope"], "user");

    let list: serde_json::Value = app.admin_json("/api/v1/keys").await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(
        listed.get("key").is_none(),
        "the key itself is never listed"
    );
    assert!(listed.get("key_hash").is_none());
    assert_eq!(listed["prefix"], &key[..10]);

    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(stored, key.as_bytes(), "only a hash is stored");
    assert_eq!(stored.len(), 32);

    let revoke = app
        .client
        .delete(app.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let response = app.get_as("/api/v1/keys/self", &key).send().await.unwrap();
    assert_problem(response, 401, "api_key_revoked").await;
}

#[tokio::test]
async fn user_scope_cannot_manage_keys() {
    let app = spawn_app().await;
    let (_, key) = app.create_key("reader", "user").await;
    let response = app
        .post_as("/api/v1/keys", &key)
        .json(&serde_json::json!({"name": "x", "scope": "admin"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "insufficient_scope").await;
    let response = app.get_as("/api/v1/keys", &key).send().await.unwrap();
    assert_problem(response, 403, "insufficient_scope").await;
}

#[tokio::test]
async fn bad_key_requests_get_clear_errors() {
    let app = spawn_app().await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "  ", "scope": "user"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_name").await;
    let response = app
        .post_as("/api/v1/keys", &app.admin_key)
        .json(&serde_json::json!({"name": "x", "scope": "root"}))
        .send()
        .await
        .unwrap();
    assert_problem(response, 422, "invalid_body").await;
    let response = app
        .client
        .delete(app.url("/api/v1/keys/not-a-uuid"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 400, "invalid_id").await;
    let response = app
        .client
        .delete(app.url("/api/v1/keys/00000000-0000-0000-0000-000000000009"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
}

#[tokio::test]
async fn revocation_takes_effect_at_once_on_every_replica() {
    let a = spawn_app().await;
    let b = spawn_replica(&a).await;
    let (id, key) = a.create_key("shared", "user").await;
    // Warm both replicas' caches.
    assert_eq!(
        a.get_as("/api/v1/keys/self", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        b.get_as("/api/v1/keys/self", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let revoke = a
        .client
        .delete(a.url(&format!("/api/v1/keys/{id}")))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    // The NOTIFY travels asynchronously; it must land within moments, not a cache TTL.
    let revoked_on_b = eventually(Duration::from_secs(2), || async {
        b.get_as("/api/v1/keys/self", &key)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(revoked_on_b, "replica b still accepts a revoked key");
}

#[tokio::test]
async fn last_used_at_is_recorded() {
    let app = spawn_app().await;
    let (id, key) = app.create_key("used", "user").await;
    assert_eq!(
        app.get_as("/api/v1/keys/self", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let recorded = eventually(Duration::from_secs(10), || async {
        let used: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        used.is_some()
    })
    .await;
    assert!(recorded);
}

#[tokio::test]
async fn cli_creates_lists_and_revokes_keys_that_the_server_accepts() {
    let app = spawn_app().await;
    let mut env = base_env(&app.db_name);
    env.remove("BOOTSTRAP_ADMIN_API_KEY");
    let run = |args: &[&str]| run_binary(&env, args);
    let created = run(&["keys", "create", "--name", "from-cli", "--scope", "admin"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(key.starts_with("co_"), "stdout is the key alone: {key:?}");
    let me: serde_json::Value = app
        .get_as("/api/v1/keys/self", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["scope"], "admin");
    let id = me["id"].as_str().unwrap().to_string();

    let listed = run(&["keys", "list"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains(&id) && listing.contains("from-cli"));
    assert!(!listing.contains(&key), "list never prints keys");

    let bad_scope = run(&["keys", "create", "--name", "x", "--scope", "root"]);
    assert_eq!(bad_scope.status.code(), Some(2));

    assert!(run(&["keys", "revoke", &id]).status.success());
    // Another process revoked it: the server learns it from the NOTIFY, within moments.
    let revoked = eventually(Duration::from_secs(2), || async {
        app.get_as("/api/v1/keys/self", &key)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(revoked, "a key revoked by the CLI is refused");
}
