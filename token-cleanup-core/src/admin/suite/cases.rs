//! The cases. Each takes a fresh, migrated, empty store, panics on a violation and returns
//! its normalized transcript.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};

use super::{
    AdminHttpIntegration, FixedScheduler, Harness, MAX_BODY, PREFIX, RATE, SuiteOptions,
    TestRequest, admin_token, every_endpoint, mint, mint_with, none_token,
};
use crate::store::Token;
use crate::test_util::TestStore;
use crate::token_types::{ALL, EMAIL_VERIFICATION, INVITE, MAGIC_LINK, PASSWORD_RESET};

/// Expired tokens per type in [`seed`].
pub const EXPIRED_PER_TYPE: i64 = 6;
/// Unexpired tokens per type in [`seed`].
pub const ACTIVE_PER_TYPE: i64 = 4;

/// For each well-known type: [`EXPIRED_PER_TYPE`] tokens that expired 1..=6 hours ago and
/// [`ACTIVE_PER_TYPE`] that expire in 1..=4 days.
pub async fn seed<S: TestStore>(store: &S) -> Vec<Token> {
    let now = Utc::now();
    let mut tokens = Vec::new();
    let mut id = 0;
    for ty in ALL {
        for k in 1..=EXPIRED_PER_TYPE {
            id += 1;
            tokens.push(Token::new(id, ty, now - TimeDelta::hours(k)));
        }
        for k in 1..=ACTIVE_PER_TYPE {
            id += 1;
            tokens.push(Token::new(id, ty, now + TimeDelta::days(k)));
        }
    }
    store.insert_tokens(&tokens).await.expect("seed tokens");
    tokens
}

async fn ids<S: TestStore>(store: &S) -> BTreeSet<i64> {
    store
        .token_ids()
        .await
        .expect("list ids")
        .into_iter()
        .collect()
}

fn error(code: &str, message: &str) -> Value {
    json!({"error": code, "message": message})
}

fn cleanup(body: Value, token: &str) -> TestRequest {
    TestRequest::post("/expired-tokens")
        .json(&body)
        .bearer(token)
}

/// `GET /statistics` answers the counts; `days` outside 1..=365 or not a number is `422`.
pub async fn statistics_answer_and_validate_days<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let tokens = seed(&**h.store().inner()).await;
    let token = admin_token("stats-admin");

    let r = h.send(TestRequest::get("/statistics").bearer(&token)).await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body["days"], 30);
    assert_eq!(body["totals"]["total"], tokens.len());
    assert_eq!(body["totals"]["expired"], 4 * EXPIRED_PER_TYPE);
    assert_eq!(body["totals"]["active"], 4 * ACTIVE_PER_TYPE);
    assert_eq!(body["token_types"].as_array().map(Vec::len), Some(4));
    assert!(body["recommendation"]["suggested_batch_size"].is_u64());

    let r = h
        .send(TestRequest::get("/statistics?days=7").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["days"], 7);

    for days in [0, 1000] {
        let r = h
            .send(TestRequest::get(&format!("/statistics?days={days}")).bearer(&token))
            .await;
        assert_eq!(r.status, 422);
        let message = format!("invalid days: {days} is out of range (1..=365)");
        assert_eq!(r.json(), error("invalid_argument", &message));
    }
    for bad in ["abc", "-1", "1.5"] {
        let r = h
            .send(TestRequest::get(&format!("/statistics?days={bad}")).bearer(&token))
            .await;
        assert_eq!(r.status, 422, "days={bad}");
        assert_eq!(r.json()["error"], "invalid_argument");
    }
    h.into_transcript()
}

/// No token, a garbage, expired, `alg: none` or foreign token is `401` on every
/// endpoint; a valid token without the admin role is `403`; nothing is started.
pub async fn credentials_are_checked_on_every_endpoint<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let now = Utc::now().timestamp();
    let expired = mint(json!({"sub": "old", "role": "admin", "exp": now - 3600}));
    let foreign = mint_with(
        json!({"sub": "mallory", "role": "admin", "exp": now + 600}),
        b"some-other-secret-0123456789abcdef!",
    );
    let user = mint(json!({"sub": "user-1", "roles": ["user"], "exp": now + 600}));
    let required = error(
        "unauthenticated",
        "authentication required: a bearer token is required",
    );
    let invalid = error(
        "unauthenticated",
        "authentication required: the token is not valid",
    );
    let expired_body = error(
        "unauthenticated",
        "authentication required: the token has expired",
    );
    let forbidden = error("forbidden", "an admin role is required");

    for (endpoint, method, path) in every_endpoint() {
        let request = || {
            let r = TestRequest {
                method,
                ..TestRequest::get(&path)
            };
            if endpoint.is_mutating() {
                r.json(&json!({"token_types": [INVITE]}))
            } else {
                r
            }
        };
        let cases = [
            (request(), 401, &required),
            (
                request().header("authorization", "Basic YWRtaW46YWRtaW4="),
                401,
                &required,
            ),
            (request().bearer("garbage"), 401, &invalid),
            (request().bearer("a.b.c"), 401, &invalid),
            (request().bearer(&expired), 401, &expired_body),
            (request().bearer(&none_token("root")), 401, &invalid),
            (request().bearer(&foreign), 401, &invalid),
            (request().bearer(&user), 403, &forbidden),
        ];
        for (req, status, body) in cases {
            let what = format!("{method} {path}");
            let r = h.send(req).await;
            assert_eq!(r.status, status, "{what}");
            assert_eq!(&r.json(), body, "{what}");
            if status == 401 {
                assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
            }
        }
    }
    let runs = h
        .store()
        .inner()
        .runs(&crate::RunQuery::default())
        .await
        .expect("list runs");
    assert!(
        runs.is_empty(),
        "a refused request started something: {runs:?}"
    );
    h.into_transcript()
}

/// A real cleanup through `POST /expired-tokens`: `202` with the task id and status URL,
/// then the task succeeds; the expired rows of the requested types are gone from the
/// database and every other row remains. A dry run deletes nothing.
pub async fn cleanup_runs_in_the_background_and_rows_are_gone<
    I: AdminHttpIntegration,
    S: TestStore,
>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let tokens = seed(&**h.store().inner()).await;
    let alice = admin_token("alice@example.com");

    let r = h
        .send(cleanup(
            json!({"token_types": [PASSWORD_RESET, MAGIC_LINK], "batch_size": 4, "dry_run": false}),
            &alice,
        ))
        .await;
    assert_eq!(r.status, 202);
    let accepted = r.json();
    let task_id = accepted["task_id"].as_str().expect("task id").to_owned();
    assert!(uuid::Uuid::try_parse(&task_id).is_ok(), "{task_id}");
    assert_eq!(accepted["kind"], "cleanup");
    assert_eq!(accepted["status"], "queued");
    let status_url = format!("{PREFIX}/task-status/{task_id}");
    assert_eq!(accepted["status_url"], status_url);
    assert_eq!(r.header("location"), Some(status_url.as_str()));

    let done = h.wait_for_task(&status_url, &alice).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["task_id"], task_id.as_str());
    assert_eq!(done["kind"], "cleanup");
    assert_eq!(done["trigger"], "manual");
    assert_eq!(done["requested_by"], "alice@example.com");
    assert_eq!(done["token_types"], json!([MAGIC_LINK, PASSWORD_RESET]));
    assert_eq!(done["batch_size"], 4);
    assert_eq!(done["progress"]["total_cleaned"], 2 * EXPIRED_PER_TYPE);
    let result = &done["result"];
    assert_eq!(result["total_cleaned"], 2 * EXPIRED_PER_TYPE);
    assert_eq!(result["by_type"][PASSWORD_RESET], EXPIRED_PER_TYPE);
    assert_eq!(result["by_type"][MAGIC_LINK], EXPIRED_PER_TYPE);
    let batches = h.store().deleted();
    assert_eq!(result["batches"], batches.len());
    assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
    if h.store().inner().fills_batches() {
        assert_eq!(result["batches"], 4, "batches of 4 and 2 per type");
    } else {
        assert!(batches.len() >= 4, "{batches:?}");
    }
    assert_eq!(result["dry_run"], false);
    assert!(done["error"].is_null());

    let now = Utc::now();
    let want: BTreeSet<i64> = tokens
        .iter()
        .filter(|t| {
            !(t.expires_at < now && (t.token_type == PASSWORD_RESET || t.token_type == MAGIC_LINK))
        })
        .map(|t| t.id)
        .collect();
    assert_eq!(
        ids(&**h.store().inner()).await,
        want,
        "exactly the expired rows of the two types are gone"
    );

    // A dry run over every type counts the rest and deletes nothing.
    let bob = admin_token("bob");
    let r = h.send(cleanup(json!({"dry_run": true}), &bob)).await;
    assert_eq!(r.status, 202);
    let url = r.json()["status_url"]
        .as_str()
        .expect("status URL")
        .to_owned();
    let done = h.wait_for_task(&url, &bob).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["dry_run"], true);
    assert_eq!(done["result"]["total_cleaned"], 2 * EXPIRED_PER_TYPE);
    assert_eq!(
        done["result"]["by_type"][EMAIL_VERIFICATION],
        EXPIRED_PER_TYPE
    );
    assert_eq!(done["result"]["by_type"][INVITE], EXPIRED_PER_TYPE);
    assert_eq!(
        ids(&**h.store().inner()).await,
        want,
        "a dry run deletes nothing"
    );
    h.into_transcript()
}

/// Bad parameters are `422` with the engine's code, broken JSON `400`, a body above the
/// limit `413`; none of them records a run or touches a row.
pub async fn invalid_cleanup_requests_are_refused<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    seed(&**h.store().inner()).await;
    let before = ids(&**h.store().inner()).await;
    // One admin per request, so the rate limit never decides.
    let mut n = 0;
    let mut token = || {
        n += 1;
        admin_token(&format!("validator-{n}"))
    };

    let exact = [
        (
            json!({"batch_size": 0}),
            error(
                "invalid_batch_size",
                "batch size 0 is out of range (1..=50000)",
            ),
        ),
        (
            json!({"batch_size": 100000}),
            error(
                "invalid_batch_size",
                "batch size 100000 is out of range (1..=50000)",
            ),
        ),
        (
            json!({"token_types": ["session"]}),
            error("unknown_token_type", "unknown token type `session`"),
        ),
        (
            json!({"token_types": [INVITE, "session"]}),
            error("unknown_token_type", "unknown token type `session`"),
        ),
        (
            json!({"token_types": []}),
            error("no_token_types", "at least one token type is required"),
        ),
        (
            json!({"token_types": [INVITE], "max_rows": 0}),
            error("invalid_argument", "invalid max_rows: must be at least 1"),
        ),
    ];
    for (body, want) in exact {
        let r = h.send(cleanup(body.clone(), &token())).await;
        assert_eq!(r.status, 422, "{body}");
        assert_eq!(r.json(), want, "{body}");
    }
    for body in [
        json!({"batch_sise": 10}),
        json!({"batch_size": "ten"}),
        json!({"batch_size": -1}),
        json!({"batch_size": 5_000_000_000u64}),
        json!({"token_types": "invite"}),
        json!([1, 2]),
    ] {
        let r = h.send(cleanup(body.clone(), &token())).await;
        assert_eq!(r.status, 422, "{body}");
        let got = r.json();
        assert_eq!(got["error"], "invalid_body", "{body}");
        let message = got["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("request body does not match the expected shape: "),
            "{message}"
        );
    }
    for raw in [
        &b"{\"token_types\": ["[..],
        b"not json",
        b"{\"batch_size\": 10,}",
    ] {
        let r = h
            .send(
                TestRequest::post("/expired-tokens")
                    .raw(raw)
                    .header("content-type", "application/json")
                    .bearer(&token()),
            )
            .await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        let got = r.json();
        assert_eq!(got["error"], "malformed_json");
        let message = got["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("request body is not valid JSON: "),
            "{message}"
        );
    }
    let too_large = error(
        "payload_too_large",
        &format!("request body is larger than {MAX_BODY} bytes"),
    );
    let mut big = br#"{"token_types": ["invite"]}"#.to_vec();
    big.resize(MAX_BODY + 1, b' ');
    for path in ["/expired-tokens", "/generate-report", "/health-check"] {
        let r = h
            .send(
                TestRequest::post(path)
                    .raw(big.clone())
                    .header("content-type", "application/json")
                    .bearer(&token()),
            )
            .await;
        assert_eq!(r.status, 413, "{path}");
        assert_eq!(r.json(), too_large, "{path}");
    }
    // Exactly at the limit is fine.
    let mut fits = br#"{"token_types": ["invite"], "dry_run": true}"#.to_vec();
    fits.resize(MAX_BODY, b' ');
    let r = h
        .send(
            TestRequest::post("/expired-tokens")
                .raw(fits)
                .bearer(&token()),
        )
        .await;
    assert_eq!(r.status, 202);
    let url = r.json()["status_url"]
        .as_str()
        .expect("status URL")
        .to_owned();
    let admin = token();
    assert_eq!(h.wait_for_task(&url, &admin).await["status"], "succeeded");

    let runs = h
        .store()
        .inner()
        .runs(&crate::RunQuery::default())
        .await
        .expect("list runs");
    assert_eq!(runs.len(), 1, "only the valid request recorded a run");
    assert_eq!(
        ids(&**h.store().inner()).await,
        before,
        "no row was touched"
    );
    h.into_transcript()
}

/// While a run is held between two batches, its status shows `running` with the counts so
/// far; a run over an overlapping type is `409`, one over other types starts.
pub async fn progress_is_visible_and_overlapping_runs_conflict<
    I: AdminHttpIntegration,
    S: TestStore,
>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    seed(&**h.store().inner()).await;
    let carol = admin_token("carol");
    h.store().hold_after(1);

    let r = h
        .send(cleanup(
            json!({"token_types": [PASSWORD_RESET], "batch_size": 2}),
            &carol,
        ))
        .await;
    assert_eq!(r.status, 202);
    let first = r.json();
    let first_id = first["task_id"].as_str().expect("task id").to_owned();
    let first_url = first["status_url"].as_str().expect("status URL").to_owned();
    h.store().wait_until_held().await;

    let relative = first_url
        .strip_prefix(PREFIX)
        .expect("below the prefix")
        .to_owned();
    let r = h.send(TestRequest::get(&relative).bearer(&carol)).await;
    assert_eq!(r.status, 200);
    let running = r.json();
    assert_eq!(running["status"], "running", "{running}");
    // One batch of at most 2 committed before the gate (exactly 2 where batches fill).
    let committed = h.store().deleted();
    assert_eq!(committed.len(), 1, "{committed:?}");
    assert!((1..=2).contains(&committed[0]), "{committed:?}");
    if h.store().inner().fills_batches() {
        assert_eq!(committed[0], 2);
    }
    assert_eq!(running["progress"]["total_cleaned"], committed[0]);
    assert_eq!(running["progress"]["batches"], 1);
    assert!(running["result"].is_null());

    let dave = admin_token("dave");
    let r = h
        .send(cleanup(
            json!({"token_types": [INVITE, PASSWORD_RESET]}),
            &dave,
        ))
        .await;
    assert_eq!(r.status, 409);
    let message =
        format!("a cleanup of [\"{PASSWORD_RESET}\"] is already running (run {first_id})");
    assert_eq!(r.json(), error("already_running", &message));

    let erin = admin_token("erin");
    let r = h
        .send(cleanup(json!({"token_types": [INVITE]}), &erin))
        .await;
    assert_eq!(r.status, 202, "no overlap, so it starts");
    let second_url = r.json()["status_url"]
        .as_str()
        .expect("status URL")
        .to_owned();

    h.store().release();
    let first = h.wait_for_task(&first_url, &carol).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["result"]["total_cleaned"], EXPIRED_PER_TYPE);
    let second = h.wait_for_task(&second_url, &erin).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(second["result"]["total_cleaned"], EXPIRED_PER_TYPE);

    // Once it finished, the same types can run again.
    let r = h
        .send(cleanup(json!({"token_types": [PASSWORD_RESET]}), &dave))
        .await;
    assert_eq!(r.status, 202);
    let url = r.json()["status_url"]
        .as_str()
        .expect("status URL")
        .to_owned();
    let again = h.wait_for_task(&url, &dave).await;
    assert_eq!(again["result"]["total_cleaned"], 0);
    h.into_transcript()
}

/// An unknown task id and a string that is no task id at all are both `404`.
pub async fn unknown_and_malformed_task_ids_are_404<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let token = admin_token("finder");
    let not_found = error("not_found", "no such task");
    for id in [
        uuid::Uuid::now_v7().to_string(),
        "00000000-0000-0000-0000-000000000000".to_owned(),
        "not-a-uuid".to_owned(),
        "12345".to_owned(),
        "%27%20OR%201%3D1".to_owned(),
    ] {
        let r = h
            .send(TestRequest::get(&format!("/task-status/{id}")).bearer(&token))
            .await;
        assert_eq!(r.status, 404, "{id}");
        assert_eq!(r.json(), not_found, "{id}");
    }
    h.into_transcript()
}

/// `POST /generate-report` starts a report task (`202`); its status carries the report
/// once done. Unknown `report_type` or a bad `send` is `422`.
pub async fn reports_run_in_the_background<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    seed(&**h.store().inner()).await;
    let cleaner = admin_token("cleaner");
    let r = h
        .send(cleanup(json!({"token_types": [INVITE]}), &cleaner))
        .await;
    let url = r.json()["status_url"]
        .as_str()
        .expect("status URL")
        .to_owned();
    h.wait_for_task(&url, &cleaner).await;

    let frank = admin_token("frank");
    for (query, period) in [
        ("?report_type=daily", "daily"),
        ("", "weekly"),
        ("?report_type=monthly&send=true", "monthly"),
    ] {
        let r = h
            .send(TestRequest::post(&format!("/generate-report{query}")).bearer(&frank))
            .await;
        assert_eq!(r.status, 202, "{query}");
        let accepted = r.json();
        assert_eq!(accepted["kind"], "report");
        assert_eq!(accepted["status"], "queued");
        let url = accepted["status_url"]
            .as_str()
            .expect("status URL")
            .to_owned();
        assert_eq!(r.header("location"), Some(url.as_str()));
        let done = h.wait_for_task(&url, &frank).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["kind"], "report");
        assert_eq!(done["report_type"], period);
        assert_eq!(done["requested_by"], "frank");
        assert!(done["progress"].is_null());
        let report = &done["result"];
        assert_eq!(report["period"], period);
        assert_eq!(
            report["runs"]["runs"], 1,
            "the cleanup, not the report tasks"
        );
        assert_eq!(report["runs"]["tokens_cleaned"], EXPIRED_PER_TYPE);
    }

    let gina = admin_token("gina");
    let r = h
        .send(TestRequest::post("/generate-report?report_type=yearly").bearer(&gina))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json(),
        error(
            "invalid_argument",
            "invalid report_type: `yearly` is not one of daily, weekly, monthly"
        )
    );
    let r = h
        .send(TestRequest::post("/generate-report?report_type=daily&send=maybe").bearer(&gina))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "invalid_argument");
    h.into_transcript()
}

/// `POST /health-check` is `200` while the database answers and `503` with the report
/// when it does not.
pub async fn health_check_answers_200_or_503<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    seed(&**h.store().inner()).await;
    let token = admin_token("health");
    let r = h
        .send(TestRequest::post("/health-check").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    let body = r.json();
    assert!(
        matches!(body["status"].as_str(), Some("healthy" | "degraded")),
        "{body}"
    );
    assert_eq!(body["database"]["reachable"], true);
    assert_eq!(body["expired_backlog"], 4 * EXPIRED_PER_TYPE);

    h.store().set_down(true);
    let r = h
        .send(TestRequest::post("/health-check").bearer(&token))
        .await;
    h.store().set_down(false);
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["error"], "unhealthy");
    assert_eq!(body["health"]["status"], "unhealthy");
    assert_eq!(body["health"]["database"]["reachable"], false);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("database unreachable"), "{message}");

    let r = h
        .send(TestRequest::post("/health-check").bearer(&token))
        .await;
    assert_eq!(r.status, 200, "healthy again");
    h.into_transcript()
}

/// `GET /scheduled-tasks` lists the scheduler's jobs (none, without a scheduler).
pub async fn scheduled_tasks_are_listed<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let token = admin_token("scheduler-admin");
    let with = Harness::<I, S>::new(store.clone(), SuiteOptions::default()).await;
    let r = with
        .send(TestRequest::get("/scheduled-tasks").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    let want = json!({"scheduler_configured": true, "jobs": FixedScheduler::job_list()});
    assert_eq!(r.json(), want);
    let mut transcript = with.into_transcript();

    let options = SuiteOptions {
        scheduler: false,
        ..SuiteOptions::default()
    };
    let without = Harness::<I, S>::new(store, options).await;
    let r = without
        .send(TestRequest::get("/scheduled-tasks").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"scheduler_configured": false, "jobs": []}));
    transcript.extend(without.into_transcript());
    transcript
}

/// `GET /runs` lists recent runs and tasks, newest first; `limit` is 1..=100.
pub async fn recent_runs_are_listed<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    seed(&**h.store().inner()).await;
    let token = admin_token("lister");
    let mut ids = Vec::new();
    for ty in [INVITE, MAGIC_LINK] {
        let r = h
            .send(cleanup(
                json!({"token_types": [ty], "dry_run": true}),
                &token,
            ))
            .await;
        let accepted = r.json();
        ids.push(accepted["task_id"].as_str().expect("task id").to_owned());
        let url = accepted["status_url"]
            .as_str()
            .expect("status URL")
            .to_owned();
        h.wait_for_task(&url, &token).await;
    }
    let r = h.send(TestRequest::get("/runs").bearer(&token)).await;
    assert_eq!(r.status, 200);
    let runs = r.json()["runs"].as_array().cloned().unwrap_or_default();
    let listed: Vec<&str> = runs.iter().filter_map(|r| r["task_id"].as_str()).collect();
    assert_eq!(listed, [ids[1].as_str(), ids[0].as_str()], "newest first");
    assert!(runs.iter().all(|r| r["requested_by"] == "lister"));

    let r = h
        .send(TestRequest::get("/runs?limit=1").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["runs"].as_array().map(Vec::len), Some(1));
    for limit in [0, 101] {
        let r = h
            .send(TestRequest::get(&format!("/runs?limit={limit}")).bearer(&token))
            .await;
        assert_eq!(r.status, 422);
        let message = format!("invalid limit: {limit} is out of range (1..=100)");
        assert_eq!(r.json(), error("invalid_argument", &message));
    }
    h.into_transcript()
}

/// Mutating requests share one allowance per admin: past it, `429` with `Retry-After`;
/// other admins and read-only endpoints are unaffected.
pub async fn mutating_requests_are_rate_limited_per_admin<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let henry = admin_token("henry");
    for _ in 0..RATE {
        let r = h
            .send(TestRequest::post("/generate-report?report_type=daily").bearer(&henry))
            .await;
        assert_eq!(r.status, 202);
    }
    let limited = error(
        "rate_limited",
        "too many requests from this admin; retry after the time in `Retry-After`",
    );
    for request in [
        TestRequest::post("/generate-report?report_type=daily").bearer(&henry),
        cleanup(json!({"token_types": [INVITE]}), &henry),
        // A fresh token for the same admin changes nothing.
        TestRequest::post("/generate-report").bearer(&admin_token("henry")),
    ] {
        let r = h.send(request).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.json(), limited);
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in whole seconds");
        assert!(retry >= 1);
    }
    let ivy = admin_token("ivy");
    let r = h
        .send(TestRequest::post("/generate-report?report_type=daily").bearer(&ivy))
        .await;
    assert_eq!(r.status, 202, "another admin has their own allowance");
    for _ in 0..2 * RATE {
        let r = h.send(TestRequest::get("/statistics").bearer(&henry)).await;
        assert_eq!(r.status, 200, "reads are not limited");
        let r = h
            .send(TestRequest::post("/health-check").bearer(&henry))
            .await;
        assert_eq!(r.status, 200, "the health check is not limited");
    }
    h.into_transcript()
}

/// `GET /openapi.json` serves the document with the mount point as server; admins only
/// unless made public.
pub async fn openapi_document_is_served<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store.clone(), SuiteOptions::default()).await;
    let token = admin_token("reader");
    let r = h
        .send(TestRequest::get("/openapi.json").bearer(&token))
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["servers"][0]["url"], PREFIX);
    for (endpoint, method, _) in every_endpoint() {
        let op = &doc["paths"][endpoint.path()][method.to_ascii_lowercase()];
        assert_eq!(op["operationId"], endpoint.name());
    }
    let r = h.send(TestRequest::get("/openapi.json")).await;
    assert_eq!(r.status, 401);
    let mut transcript = h.into_transcript();

    let options = SuiteOptions {
        public_openapi: true,
        ..SuiteOptions::default()
    };
    let public = Harness::<I, S>::new(store, options).await;
    let r = public.send(TestRequest::get("/openapi.json")).await;
    assert_eq!(r.status, 200, "public document");
    assert_eq!(r.json()["servers"][0]["url"], PREFIX);
    let r = public.send(TestRequest::get("/statistics")).await;
    assert_eq!(r.status, 401, "only the document is public");
    transcript.extend(public.into_transcript());
    transcript
}

/// Below the mount point, a known path with another method is `405` with `Allow`, an
/// unknown path `404`, both JSON.
pub async fn unmatched_routes_answer_json<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let token = admin_token("wanderer");
    for (request, allow) in [
        (TestRequest::get("/expired-tokens"), "POST"),
        (TestRequest::post("/statistics"), "GET"),
        (TestRequest::post("/task-status/abc"), "GET"),
    ] {
        let what = format!("{} {}", request.method, request.uri);
        let r = h.send(request.bearer(&token)).await;
        assert_eq!(r.status, 405, "{what}");
        assert_eq!(r.header("allow"), Some(allow), "{what}");
        let message = format!("this endpoint only answers {allow}");
        assert_eq!(r.json(), error("method_not_allowed", &message), "{what}");
    }
    for path in ["/nope", "/statistics/", "/task-status/a/b", "/task-status"] {
        let r = h.send(TestRequest::get(path).bearer(&token)).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json(), error("not_found", "no such endpoint"), "{path}");
    }
    h.into_transcript()
}

/// A failing database answers `500` with a generic message; the driver's text stays in
/// the log.
pub async fn internal_errors_are_generic<I: AdminHttpIntegration, S: TestStore>(
    store: Arc<S>,
) -> Vec<Value> {
    let h = Harness::<I, S>::new(store, SuiteOptions::default()).await;
    let token = admin_token("unlucky");
    h.store().set_down(true);
    let r = h.send(TestRequest::get("/statistics").bearer(&token)).await;
    h.store().set_down(false);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json(),
        error(
            "internal_error",
            "internal error; the details are in the server log"
        )
    );
    let r = h.send(TestRequest::get("/statistics").bearer(&token)).await;
    assert_eq!(r.status, 200, "recovers with the database");
    h.into_transcript()
}
