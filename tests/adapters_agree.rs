//! The axum and actix-web adapters give identical answers (status, headers that matter,
//! JSON bodies, with ids, instants and timings masked) for the whole admin-API
//! conformance suite, on SQLite.

use token_cleanup::actix::ActixIntegration;
use token_cleanup::admin::suite::{fresh_sqlite_store, run_admin_api_suite};
use token_cleanup::axum::AxumIntegration;

#[test]
fn axum_and_actix_answer_the_suite_identically() {
    let axum = tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run_admin_api_suite::<AxumIntegration, _, _, _>(
            fresh_sqlite_store,
        ));
    let actix =
        actix_web::rt::System::new().block_on(run_admin_api_suite::<ActixIntegration, _, _, _>(
            fresh_sqlite_store,
        ));
    assert_eq!(axum.len(), actix.len());
    let exchanges: usize = axum
        .iter()
        .map(|c| c["exchanges"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(exchanges > 150, "the suite made {exchanges} exchanges");
    for (a, b) in axum.iter().zip(&actix) {
        let case = &a["case"];
        let (ea, eb) = (
            a["exchanges"].as_array().unwrap(),
            b["exchanges"].as_array().unwrap(),
        );
        assert_eq!(ea.len(), eb.len(), "{case}: exchange count");
        for (x, y) in ea.iter().zip(eb) {
            assert_eq!(x, y, "{case}: axum and actix differ");
        }
    }
}
