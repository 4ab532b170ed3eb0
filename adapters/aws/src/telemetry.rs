//! The one log line of every request a Lambda function serves, in AWS Lambda Powertools'
//! conventions: a JSON object with Powertools' logger keys (`level`, `message`, `timestamp`,
//! `service`, `cold_start`, `function_name`, `function_request_id`, `xray_trace_id`, ...), the
//! request's [`Summary`], and, in the same object, a CloudWatch Embedded Metric Format
//! directive (`_aws`) that turns its `latency_ms` and `requests` into metrics by service,
//! route and decision. One serialization and one write per request: the authorizer's hot path
//! pays nothing more. Never a token: the summary carries none.
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
    let line = Line {
        level: if summary.decision == shared::http::Decision::Failed { "ERROR" } else { "INFO" },
        message: "request",
        timestamp: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        service: &settings.service,
        cold_start,
        function_name: context.map(|c| c.env_config.function_name.as_str()),
        function_memory_size: context.map(|c| c.env_config.memory),
        function_arn: context.map(|c| c.invoked_function_arn.as_str()),
        function_request_id: context.map(|c| c.request_id.as_str()),
        xray_trace_id: context.and_then(|c| c.xray_trace_id.as_deref()),
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
