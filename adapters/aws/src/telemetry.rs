//! The one log line of every request a Lambda function serves, in AWS Lambda Powertools'
//! conventions: a JSON object with Powertools' logger keys (`level`, `message`, `timestamp`,
//! `service`, `cold_start`, `function_request_id`; `function_name`, `function_memory_size` and
//! `function_arn` on the process's first line only, `xray_trace_id` only when X-Ray samples the
//! request), the request's [`Summary`], and, in the same object, a CloudWatch Embedded Metric
//! Format directive (`_aws`) that turns its `latency_ms` and `requests` into metrics by
//! service, route and decision. One serialization and one write per request: the authorizer's
//! hot path pays nothing more. Never a token: the summary carries none. CloudWatch Logs bills
//! every byte, and the authorizer writes a line for every request of the app's API: what a
//! field costs is counted in `the_authorizers_line_is_counted_...` below.
//!
//! Settings, as Powertools reads them: `POWERTOOLS_SERVICE_NAME` (default `support-access`)
//! and `POWERTOOLS_METRICS_NAMESPACE` (default `SupportAccess`).

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lambda_http::lambda_runtime::Context;
use serde::Serialize;
use shared::http::Summary;

/// The metric dimensions: each a string member of the same object.
const DIMENSIONS: [&str; 3] = ["service", "route", "decision"];

static COLD: AtomicBool = AtomicBool::new(true);

/// Whether this is the process's first request (Powertools' `cold_start`); true only once.
pub fn cold_start() -> bool {
    COLD.swap(false, Ordering::Relaxed)
}

struct Settings {
    service: String,
    namespace: String,
}

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings {
        service: std::env::var("POWERTOOLS_SERVICE_NAME").unwrap_or_else(|_| "support-access".to_owned()),
        namespace: std::env::var("POWERTOOLS_METRICS_NAMESPACE").unwrap_or_else(|_| "SupportAccess".to_owned()),
    })
}

#[derive(Serialize)]
struct Line<'a> {
    level: &'static str,
    message: &'static str,
    timestamp: String,
    service: &'a str,
    cold_start: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_memory_size: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xray_trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    route: &'a str,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a str>,
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    latency_ms: f64,
    requests: u32,
    #[serde(rename = "_aws")]
    aws: Emf<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Emf<'a> {
    timestamp: i64,
    cloud_watch_metrics: [Directive<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    namespace: &'a str,
    dimensions: [&'static [&'static str]; 1],
    metrics: [Metric; 2],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metric {
    name: &'static str,
    unit: &'static str,
}

/// The request's line (without its newline), at `now`.
pub fn request_line(
    summary: &Summary,
    context: Option<&Context>,
    latency: Duration,
    cold_start: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let settings = settings();
    let process = context.filter(|_| cold_start);
    let line = Line {
        level: if summary.decision == shared::http::Decision::Failed { "ERROR" } else { "INFO" },
        message: "request",
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        service: &settings.service,
        cold_start,
        // Constant for the process, and each process has a log stream of its own in its
        // function's own group: on its first line only, where they cost once per instance
        // instead of a quarter of every line (BENCHMARKS.md, "The authorizer's log bytes").
        function_name: process.map(|c| c.env_config.function_name.as_str()),
        function_memory_size: process.map(|c| c.env_config.memory),
        function_arn: process.map(|c| c.invoked_function_arn.as_str()),
        function_request_id: context.map(|c| c.request_id.as_str()),
        // Lambda passes a trace header on every invocation; X-Ray holds a trace only for a
        // sampled one (`Tracing=Active`), so an unsampled id leads nowhere.
        xray_trace_id: context.and_then(|c| c.xray_trace_id.as_deref()).filter(|id| sampled(id)),
        correlation_id: summary.correlation_id.as_deref(),
        route: &summary.route,
        role: &summary.role,
        user: summary.user.as_deref(),
        agent: summary.agent.as_deref(),
        decision: summary.decision.as_str(),
        status: summary.status,
        // Microsecond precision is plenty, and keeps the number short.
        latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
        requests: 1,
        aws: Emf {
            timestamp: now.timestamp_millis(),
            cloud_watch_metrics: [Directive {
                namespace: &settings.namespace,
                dimensions: [&DIMENSIONS],
                metrics: [
                    Metric { name: "latency_ms", unit: "Milliseconds" },
                    Metric { name: "requests", unit: "Count" },
                ],
            }],
        },
    };
    serde_json::to_string(&line).expect("a request line always serializes")
}

/// Whether an X-Ray trace header (`Root=...;Parent=...;Sampled=1`) says the request is sampled.
fn sampled(header: &str) -> bool {
    header.split(';').any(|field| field.trim() == "Sampled=1")
}

/// Writes the request's line to stdout (CloudWatch Logs, where EMF is read) in one write.
pub fn log_request(summary: &Summary, context: Option<&Context>, latency: Duration, cold_start: bool) {
    let mut line = request_line(summary, context, latency, cold_start, chrono::Utc::now());
    line.push('\n');
    // A log line that cannot be written must not fail the request it describes.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// The line of one checkpoint run (see `shared::app::CheckpointRun`), at `now`: a log line
/// and, in the same object, an EMF directive that makes the metrics the checkpoint alarm
/// watches, by `FunctionName`: `UnsealedAgeSeconds` (how long the oldest moved head left
/// unsealed has waited, 0 when none is left: a run that cannot keep up shows here),
/// `UnsealedHeads` (moved heads left for the next run; at least this many when
/// `unsealed_more`), `CheckpointAgeSeconds` (since the newest checkpoint was signed),
/// `SealedHeads` and `Checkpoints` (made by this run). A run that failed writes no line: the
/// alarm treats a missing value as breaching.
pub fn checkpoint_line(
    run: &shared::app::CheckpointRun,
    function_name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let settings = settings();
    let age = |at: Option<i64>| at.map_or(0, |at| (now.timestamp() - at).max(0));
    let metric = |name: &str, unit: &str| serde_json::json!({"Name": name, "Unit": unit});
    serde_json::json!({
        "level": if run.left > 0 { "WARN" } else { "INFO" },
        "message": "checkpoint run",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "service": settings.service,
        "FunctionName": function_name,
        "checkpoints": run.made.iter().map(|c| c.claims.seq).collect::<Vec<_>>(),
        "Checkpoints": run.made.len(),
        "SealedHeads": run.sealed,
        "UnsealedHeads": run.left,
        "unsealed_more": run.more_left,
        "UnsealedAgeSeconds": age(run.oldest_left),
        "CheckpointAgeSeconds": age(run.latest_iat),
        "_aws": {
            "Timestamp": now.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    metric("UnsealedAgeSeconds", "Seconds"),
                    metric("UnsealedHeads", "Count"),
                    metric("CheckpointAgeSeconds", "Seconds"),
                    metric("SealedHeads", "Count"),
                    metric("Checkpoints", "Count"),
                ],
            }],
        },
    })
    .to_string()
}

/// Writes the checkpoint run's line to stdout in one write (see [`checkpoint_line`]).
pub fn log_checkpoint_run(run: &shared::app::CheckpointRun, function_name: &str) {
    let mut line = checkpoint_line(run, function_name, chrono::Utc::now());
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::Value;
    use shared::http::Decision;

    use super::*;

    fn summary(decision: Decision) -> Summary {
        Summary {
            route: Cow::Borrowed("POST /tokens"),
            role: "support".into(),
            user: None,
            agent: Some("agent-7".into()),
            decision,
            status: Some(201),
            correlation_id: Some("apigw-1".into()),
        }
    }

    fn context() -> Context {
        let mut context = Context::default();
        context.request_id = "req-1".into();
        context.xray_trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
        context.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:mint".into();
        context
    }

    fn line(summary: &Summary) -> Value {
        let now = chrono::DateTime::from_timestamp_millis(1_795_600_800_123).unwrap();
        let text = request_line(summary, Some(&context()), Duration::from_micros(12_345), true, now);
        assert!(!text.contains('\n'), "one line: {text}");
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_line_has_powertools_keys_and_the_summary() {
        let v = line(&summary(Decision::Allowed));
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["timestamp"], "2026-11-25T10:00:00.123Z");
        assert_eq!(v["service"], "support-access");
        assert_eq!(v["cold_start"], true);
        assert_eq!(v["function_request_id"], "req-1");
        assert_eq!(v["xray_trace_id"], "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
        assert_eq!(v["function_arn"], "arn:aws:lambda:us-east-1:123456789012:function:mint");
        assert_eq!(v["correlation_id"], "apigw-1");
        assert_eq!(
            (&v["route"], &v["role"], &v["agent"]),
            (&"POST /tokens".into(), &"support".into(), &"agent-7".into())
        );
        assert!(v.get("user").is_none(), "absent, not null: {v}");
        assert_eq!((&v["decision"], &v["status"], &v["latency_ms"]), (&"allowed".into(), &201.into(), &12.345.into()));
        assert_eq!(line(&summary(Decision::Failed))["level"], "ERROR");
    }

    #[test]
    fn the_process_fields_are_on_the_cold_starts_line_only_and_the_trace_id_only_when_sampled() {
        let now = chrono::DateTime::from_timestamp_millis(1_795_600_800_123).unwrap();
        let summary = summary(Decision::Allowed);
        let mut context = context();
        let keys = |context: &Context, cold| {
            let text = request_line(&summary, Some(context), Duration::from_micros(1), cold, now);
            let v: Value = serde_json::from_str(&text).unwrap();
            ["function_name", "function_memory_size", "function_arn", "xray_trace_id"].map(|k| v.get(k).is_some())
        };
        assert_eq!(keys(&context, true), [true; 4], "sampled, cold");
        assert_eq!(keys(&context, false), [false, false, false, true], "sampled, warm");
        context.xray_trace_id =
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0".into());
        assert_eq!(keys(&context, true), [true, true, true, false], "unsampled, cold");
        assert_eq!(keys(&context, false), [false; 4], "unsampled, warm");
    }

    /// The Embedded Metric Format's rules (CloudWatch's specification): `_aws` holds a
    /// millisecond `Timestamp` and `CloudWatchMetrics`, an array of directives each with a
    /// `Namespace`, `Dimensions` (an array of dimension sets, each an array of at most 30
    /// names) and `Metrics` (each a `Name` and an optional `Unit` from the list CloudWatch
    /// takes); every dimension names a string member of the root object and every metric a
    /// number member (its value).
    #[test]
    fn the_line_is_an_emf_document() {
        let v = line(&summary(Decision::Refused));
        let aws = &v["_aws"];
        assert_eq!(aws["Timestamp"], 1_795_600_800_123_i64);
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        let directive = &directives[0];
        assert_eq!(directive["Namespace"], "SupportAccess");
        let sets = directive["Dimensions"].as_array().unwrap();
        assert!(!sets.is_empty());
        for set in sets {
            let set = set.as_array().unwrap();
            assert!(!set.is_empty() && set.len() <= 30);
            for name in set {
                let name = name.as_str().unwrap();
                assert!(v[name].is_string(), "dimension {name} is a string member: {v}");
            }
        }
        assert_eq!(sets[0], serde_json::json!(["service", "route", "decision"]));
        assert_eq!(v["decision"], "refused");
        let units = ["Milliseconds", "Count"];
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "metric {name} is a number member: {v}");
            assert!(units.contains(&metric["Unit"].as_str().unwrap()), "{metric}");
        }
        assert_eq!(v["requests"], 1);
    }

    /// The authorizer's line as it writes it to stdout (for CloudWatch Logs), with the lengths a
    /// deployed stack gives its fields: the function name SAM makes (`<stack>-<logical
    /// id>-<12 characters>`), its ARN, a UUID request id, X-Ray's trace header (Lambda passes
    /// one on every invocation, `Sampled=0` unless `Tracing=Active` samples it), API Gateway's
    /// 16-character request id, identity-provider subjects as UUIDs, and the summaries
    /// `shared::http::decide` makes for (a) a use of an impersonation token (user and acting
    /// agent), (b) a user's own identity token (the user alone) and (c) a forged token
    /// (refused, no one named). CloudWatch Logs bills what it ingests, so these bytes (and
    /// the newline) are the log's share of a use's cost (BENCHMARKS.md, "The authorizer's
    /// log bytes, counted and trimmed"): printed by
    /// `cargo test -p adapter-aws --lib authorizers_line -- --nocapture`.
    #[test]
    fn the_authorizers_line_is_counted_for_a_use_a_users_own_request_and_a_forged_token() {
        let name = "support-access-prod-AuthorizerFunction-Xk3JbT9qLm2P";
        let mut context = Context::default();
        context.request_id = "8f5b2c1e-3d4a-4b6c-9e7f-0a1b2c3d4e5f".into();
        context.invoked_function_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{name}");
        context.env_config = std::sync::Arc::new(lambda_http::lambda_runtime::Config {
            function_name: name.into(),
            memory: 256,
            version: "$LATEST".into(),
            log_stream: "2026/12/04/[$LATEST]0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
            log_group: format!("/aws/lambda/{name}"),
        });
        let (user, agent) = ("0b6f3a52-7c1d-4e8a-9f2b-5d4c3b2a1f0e", "c4e2a7d9-1b3f-4a6c-8e5d-2f7a9b1c3d5e");
        let authorizer = |decision, user: Option<&str>, agent: Option<&str>, role: &str| Summary {
            route: Cow::Borrowed("authorizer"),
            role: role.into(),
            user: user.map(str::to_owned),
            agent: agent.map(str::to_owned),
            decision,
            status: None,
            correlation_id: Some("Kd7wPg0uoAMEVhQ=".into()),
        };
        let cases = [
            ("(a) a use", authorizer(Decision::Allowed, Some(user), Some(agent), "support"), 41_234, 650),
            ("(b) a user's own request", authorizer(Decision::Allowed, Some(user), None, "user"), 812, 600),
            ("(c) a forged token", authorizer(Decision::Refused, None, None, "anonymous"), 23_456, 560),
        ];
        let now = chrono::DateTime::from_timestamp_millis(1_796_362_200_123).unwrap();
        let trace =
            |sampled| format!("Root=1-6751a2b3-5f3c9b7e1d2a4c6e8f0a1b2c;Parent=3e1f0a9b8c7d6e5f;Sampled={sampled}");
        let mut bytes = |summary: &Summary, micros, sampled, cold| {
            context.xray_trace_id = Some(trace(sampled));
            let line = request_line(summary, Some(&context), Duration::from_micros(micros), cold, now);
            (line.len() + 1, line)
        };
        println!("bytes a line, newline included: warm (Tracing off) / warm, sampled / cold start");
        for (what, summary, micros, bound) in cases {
            let (warm, line) = bytes(&summary, micros, 0, false);
            let (sampled, _) = bytes(&summary, micros, 1, false);
            let (cold, _) = bytes(&summary, micros, 0, true);
            println!("{what}: {warm} / {sampled} / {cold}\n  {line}");
            // A warm line is what nearly every request writes: it must not grow back.
            assert!(warm <= bound, "{what}: {warm} bytes, over {bound}: {line}");
            assert!(sampled - warm > 80 && cold - warm > 200, "{what}: {warm} / {sampled} / {cold}");
        }
    }

    #[test]
    fn a_checkpoint_run_is_one_line_of_emf_metrics_by_function() {
        let now = chrono::DateTime::from_timestamp(1_795_600_800, 0).unwrap();
        let run = shared::app::CheckpointRun {
            made: Vec::new(),
            sealed: 2048,
            left: 10,
            more_left: true,
            oldest_left: Some(1_795_600_800 - 700),
            latest_iat: Some(1_795_600_800 - 5),
        };
        let text = checkpoint_line(&run, "checkpoint-fn", now);
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["level"], "WARN", "heads left over");
        assert_eq!(v["UnsealedAgeSeconds"], 700);
        assert_eq!(v["CheckpointAgeSeconds"], 5);
        assert_eq!(v["UnsealedHeads"], 10);
        assert_eq!(v["SealedHeads"], 2048);
        assert_eq!(v["FunctionName"], "checkpoint-fn");
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "SupportAccess");
        assert_eq!(directive["Dimensions"], serde_json::json!([["FunctionName"]]));
        // Every metric named is a number in the same object, as EMF requires.
        for m in directive["Metrics"].as_array().unwrap() {
            assert!(v[m["Name"].as_str().unwrap()].is_number(), "{m}");
        }
        let quiet = shared::app::CheckpointRun::default();
        let v: Value = serde_json::from_str(&checkpoint_line(&quiet, "f", now)).unwrap();
        assert_eq!((v["level"].as_str(), v["UnsealedAgeSeconds"].as_i64()), (Some("INFO"), Some(0)));
    }
}
