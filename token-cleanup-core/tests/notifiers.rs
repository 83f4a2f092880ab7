//! Notifiers against real peers on loopback: an SMTP server that receives the actual
//! message, an HTTP server standing in for SendGrid that checks the exact request, a
//! webhook receiver that verifies the signature, and peers that are down or failing.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::Logs;
use common::smtp_sink::{SmtpSink, parse_mail};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use token_cleanup_core::notifiers::{
    HtmlRenderer, SIGNATURE_HEADER, SendGridNotifier, SmtpNotifier, TIMESTAMP_HEADER,
    WebhookNotifier,
};
use token_cleanup_core::sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use token_cleanup_core::test_util::TestStore;
use token_cleanup_core::{
    BoxError, CleanupRequest, FanOutNotifier, Notification, Notifier, ReportPeriod, RetryPolicy,
    SqliteStore, Thresholds, TokenCleanupService, TokenStore, TokenTable, token_types,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

/// A host table that, like real ones, keeps the token hash next to the columns cleanup
/// uses. The hashes are what must never leave the database.
async fn store_with_secrets(n: i64) -> (Arc<SqliteStore>, Vec<String>) {
    let pool: SqlitePool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    token_cleanup_core::sqlx::query(
        "CREATE TABLE verification_tokens (id INTEGER PRIMARY KEY, token_type TEXT NOT NULL, \
         token_hash TEXT NOT NULL, expires_at TEXT NOT NULL, used_at TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = Arc::new(SqliteStore::new(pool.clone(), TokenTable::default()));
    store.migrate().await.unwrap();
    let mut secrets = Vec::new();
    for id in 1..=n {
        let secret = format!("tokhash-{}", uuid::Uuid::now_v7().simple());
        token_cleanup_core::sqlx::query(
            "INSERT INTO verification_tokens (id, token_type, token_hash, expires_at) \
             VALUES (?, 'password_reset', ?, '2020-01-01T00:00:00+00:00')",
        )
        .bind(id)
        .bind(&secret)
        .execute(&pool)
        .await
        .unwrap();
        secrets.push(secret);
    }
    (store, secrets)
}

fn service(store: Arc<SqliteStore>, notifier: Arc<dyn Notifier>) -> TokenCleanupService {
    let mut thresholds = Thresholds::default();
    thresholds.tokens_cleaned_above = 0; // every run that removed something
    TokenCleanupService::builder(store)
        .notifier(notifier)
        .thresholds(thresholds)
        .retry(RetryPolicy::none())
        .build()
        .unwrap()
}

fn assert_no_secret(secrets: &[String], what: &str, text: &str) {
    for s in secrets {
        assert!(!text.contains(s.as_str()), "{what} contains a token hash");
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn smtp_server_receives_text_and_html_for_the_recipients() {
    let sink = SmtpSink::start().await;
    let smtp = SmtpNotifier::builder(sink.url())
        .from("Token cleanup <cleanup@example.com>")
        .to("ops@example.com")
        .to("oncall@example.com")
        .build()
        .unwrap();
    let (store, secrets) = store_with_secrets(3).await;
    let service = service(store, Arc::new(smtp));

    let report = service
        .cleanup_expired_tokens(CleanupRequest::new([token_types::PASSWORD_RESET]))
        .await
        .unwrap();
    assert_eq!(report.total_cleaned, 3);

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let received = &messages[0];
    assert_eq!(received.mail_from, "cleanup@example.com");
    assert_eq!(received.rcpt_to, ["ops@example.com", "oncall@example.com"]);
    let mail = parse_mail(&received.data);
    let expected = Notification::CleanupCompleted(report.clone());
    assert_eq!(mail.header("Subject"), Some(expected.subject().as_str()));
    assert_eq!(
        mail.header("To"),
        Some("ops@example.com, oncall@example.com")
    );
    let text = mail.text.as_deref().expect("a text part");
    assert_eq!(text.trim_end(), expected.render_text().trim_end());
    assert!(text.contains("Tokens removed: 3"));
    let html = mail.html.as_deref().expect("an HTML part");
    assert_eq!(html.trim_end(), expected.render_html().trim_end());
    assert_no_secret(&secrets, "the e-mail", &received.data);
}

#[derive(Debug)]
struct BrokenTemplate;

impl HtmlRenderer for BrokenTemplate {
    fn render_html(&self, _: &Notification) -> Result<String, BoxError> {
        Err("template `report.html` not found".into())
    }
}

#[tokio::test]
async fn a_failing_html_renderer_sends_text_only_and_warns() {
    let (logs, _guard) = Logs::capture();
    let sink = SmtpSink::start().await;
    let smtp = SmtpNotifier::builder(sink.url())
        .from("cleanup@example.com")
        .to("ops@example.com")
        .html_renderer(Arc::new(BrokenTemplate))
        .build()
        .unwrap();
    let (store, _) = store_with_secrets(1).await;
    let service = service(store, Arc::new(smtp));

    let report = service
        .generate_and_send_report(ReportPeriod::Weekly)
        .await
        .unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let mail = parse_mail(&messages[0].data);
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(mail.html, None);
    assert_eq!(
        mail.text.unwrap().trim_end(),
        report.render_text().trim_end()
    );
    let warnings = logs.warnings_with("rendering the HTML body failed");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(warnings[0].contains("report.html"));
}

#[tokio::test]
async fn sendgrid_gets_the_exact_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("authorization", "Bearer SG.test-key"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let base_url = server.uri();
    let sendgrid = SendGridNotifier::from_lookup(|name| match name {
        "SENDGRID_API_KEY" => Some("SG.test-key".to_owned()),
        "FROM_EMAIL" => Some("cleanup@example.com".to_owned()),
        "NOTIFY_EMAIL_TO" => Some("ops@example.com,oncall@example.com".to_owned()),
        "SENDGRID_BASE_URL" => Some(base_url.clone()),
        _ => None,
    })
    .unwrap();
    let (store, secrets) = store_with_secrets(2).await;
    let service = service(store, Arc::new(sendgrid));

    let report = service
        .generate_and_send_report(ReportPeriod::Weekly)
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = requests[0].body_json().unwrap();
    let n = Notification::ReportReady(report);
    assert_eq!(
        body,
        json!({
            "personalizations": [{"to": [{"email": "ops@example.com"}, {"email": "oncall@example.com"}]}],
            "from": {"email": "cleanup@example.com"},
            "subject": n.subject(),
            "content": [
                {"type": "text/plain", "value": n.render_text()},
                {"type": "text/html", "value": n.render_html()},
            ],
        })
    );
    assert_no_secret(
        &secrets,
        "the SendGrid request",
        &String::from_utf8_lossy(&requests[0].body),
    );
}

/// Accepts a delivery only when its signature checks out (computed here, independently
/// of the notifier's code).
struct ValidSignature(&'static [u8]);

impl Match for ValidSignature {
    fn matches(&self, request: &Request) -> bool {
        let get = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(timestamp), Some(signature)) = (get(TIMESTAMP_HEADER), get(SIGNATURE_HEADER))
        else {
            return false;
        };
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.0).unwrap();
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&request.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        expected == signature
    }
}

#[tokio::test]
async fn webhook_receiver_verifies_the_signature() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/cleanup"))
        .and(header("content-type", "application/json"))
        .and(header("x-token-cleanup-event", "cleanup_completed"))
        .and(ValidSignature(b"whsec-test"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let url = format!("{}/hooks/cleanup", server.uri());
    let webhook = WebhookNotifier::builder(&url, "whsec-test")
        .retries(0)
        .build()
        .unwrap();
    let (store, secrets) = store_with_secrets(2).await;

    let report = service(store.clone(), Arc::new(webhook))
        .cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: Value = requests[0].body_json().unwrap();
    assert_eq!(body["event"], "cleanup_completed");
    assert_eq!(body["data"]["kind"], "cleanup_completed");
    assert_eq!(body["data"]["total_cleaned"], 2);
    assert_eq!(body["data"]["run_id"], report.run_id.to_string());
    assert_eq!(
        requests[0]
            .headers
            .get("x-token-cleanup-delivery")
            .unwrap()
            .to_str()
            .unwrap(),
        body["id"].as_str().unwrap()
    );
    assert_no_secret(
        &secrets,
        "the webhook",
        &String::from_utf8_lossy(&requests[0].body),
    );

    // The receiver does check: a delivery signed with another secret is turned away
    // (wiremock answers 404 when no mock matches), and that is not retried.
    let forged = WebhookNotifier::builder(&url, "not-the-secret")
        .retries(3)
        .build()
        .unwrap();
    let n = Notification::CleanupCompleted(report);
    let err = forged.notify(&n).await.unwrap_err();
    assert!(format!("{:?}", err).contains("404"), "{err:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn peers_that_are_down_or_failing_never_fail_the_cleanup() {
    let (logs, _guard) = Logs::capture();
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal error"))
        .mount(&failing)
        .await;
    let webhook = WebhookNotifier::builder(format!("{}/hook", failing.uri()), "s")
        .retries(2)
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let sendgrid = SendGridNotifier::builder("SG.key", "cleanup@example.com")
        .to("ops@example.com")
        .base_url(format!("http://127.0.0.1:{}", closed_port()))
        .retries(1)
        .backoff(Duration::from_millis(10))
        .build()
        .unwrap();
    let smtp = SmtpNotifier::builder(format!("smtp://127.0.0.1:{}", closed_port()))
        .from("cleanup@example.com")
        .to("ops@example.com")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let fan_out = FanOutNotifier::new()
        .with(Arc::new(webhook))
        .with(Arc::new(sendgrid))
        .with(Arc::new(smtp));
    let (store, _) = store_with_secrets(4).await;

    let report = service(store.clone(), Arc::new(fan_out))
        .cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .expect("the cleanup succeeds whatever the notifiers do");

    assert_eq!(report.total_cleaned, 4);
    assert!(store.token_ids().await.unwrap().is_empty());
    // 1 attempt + 2 retries on the 500.
    assert_eq!(failing.received_requests().await.unwrap().len(), 3);
    for name in ["webhook", "sendgrid", "smtp"] {
        assert_eq!(
            logs.warnings_with(&format!("notifier=\"{name}")).len()
                + logs.warnings_with(&format!("notifier={name}")).len(),
            1,
            "one WARN for {name}:\n{}",
            logs.text()
        );
    }
    assert_eq!(
        logs.warnings_with("notification failed; the cleanup itself is unaffected")
            .len(),
        1
    );
}

#[tokio::test]
async fn no_token_value_reaches_any_peer_whatever_the_message() {
    let sink = SmtpSink::start().await;
    let sendgrid_server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&sendgrid_server)
        .await;
    let hook_server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(ValidSignature(b"whsec"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook_server)
        .await;
    let fan_out = FanOutNotifier::new()
        .with(Arc::new(
            SmtpNotifier::builder(sink.url())
                .from("c@example.com")
                .to("o@example.com")
                .build()
                .unwrap(),
        ))
        .with(Arc::new(
            SendGridNotifier::builder("SG.k", "c@example.com")
                .to("o@example.com")
                .base_url(sendgrid_server.uri())
                .build()
                .unwrap(),
        ))
        .with(Arc::new(
            WebhookNotifier::builder(hook_server.uri(), "whsec")
                .build()
                .unwrap(),
        ));
    let (store, secrets) = store_with_secrets(6).await;
    let service = service(store.clone(), Arc::new(fan_out));

    // A failed run (the database refuses one delete), a successful one, a report and a
    // health alert: every kind of message.
    store.fail_deleting(1).await.unwrap();
    let failed = service
        .cleanup_expired_tokens(CleanupRequest::all_types().batch_size(2))
        .await;
    assert!(failed.is_err());
    store.clear_failures().await.unwrap();
    service
        .cleanup_expired_tokens(CleanupRequest::all_types())
        .await
        .unwrap();
    service
        .generate_and_send_report(ReportPeriod::Daily)
        .await
        .unwrap();
    // Half the runs failed: the health check is unhealthy and sends an alert itself.
    assert!(!service.health_check().await.reasons.is_empty());

    let mails = sink.messages();
    let sendgrid = sendgrid_server.received_requests().await.unwrap();
    let hooks = hook_server.received_requests().await.unwrap();
    assert_eq!((mails.len(), sendgrid.len(), hooks.len()), (4, 4, 4));
    let kinds: Vec<Value> = hooks
        .iter()
        .map(|r| r.body_json::<Value>().unwrap()["event"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "cleanup_failed",
            "cleanup_completed",
            "report_ready",
            "health_alert"
        ]
    );
    for mail in &mails {
        assert_no_secret(&secrets, "an e-mail", &mail.data);
    }
    for request in sendgrid.iter().chain(&hooks) {
        assert_no_secret(
            &secrets,
            "an HTTP delivery",
            &String::from_utf8_lossy(&request.body),
        );
    }
}
