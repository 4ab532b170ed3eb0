//! The large export of `scripts/bench-verify`, and its baseline (BENCHMARKS.md, "Verifying a
//! large export").
//!
//! `verify_throughput generate DIR EVENTS` writes DIR/export.jsonl (EVENTS events: a tenth in
//! one stream, the rest over 1,000 streams, interleaved; 10 checkpoints after them, signed
//! by a fresh key) and DIR/checkpoint-keys.json.
//!
//! `verify_throughput hash FILE` is the baseline, "hashing the same events alone": it reads
//! FILE line by line as `support-access verify` does (a 64 KiB `BufReader`, one reused
//! buffer), parses each line into a `serde_json::Value` and, for every event (every line
//! whose `type` is neither `checkpoint` nor `receipt`), computes `support_access_verify::chain::event_hash`;
//! nothing else (no comparison, no chain, no checkpoint). Prints the events hashed.

use std::hint::black_box;
use std::io::{BufRead, BufReader, BufWriter};

use serde_json::Value;
use support_access_verify::chain::event_hash;

#[path = "../tests/support/large_export.rs"]
mod large_export;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["generate", dir, events] => generate(dir, events.parse().expect("EVENTS is a number")),
        ["hash", file] => hash(file),
        _ => {
            eprintln!("usage: verify_throughput generate DIR EVENTS | hash FILE");
            std::process::exit(2);
        }
    }
}

fn generate(dir: &str, events: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let shape = large_export::Shape::of(events);
    let mut out = BufWriter::new(std::fs::File::create(format!("{dir}/export.jsonl")).unwrap());
    let jwks = large_export::write_export(shape, &mut out).unwrap();
    std::fs::write(format!("{dir}/checkpoint-keys.json"), serde_json::to_string(&jwks).unwrap()).unwrap();
    eprintln!("{shape:?}: {} events", shape.events());
}

fn hash(file: &str) {
    let mut input = BufReader::with_capacity(1 << 16, std::fs::File::open(file).unwrap());
    let (mut line, mut hashed) = (Vec::new(), 0u64);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).unwrap() == 0 {
            break;
        }
        let value: Value = serde_json::from_str(std::str::from_utf8(&line).unwrap()).unwrap();
        if !matches!(value.get("type").and_then(Value::as_str), Some("checkpoint" | "receipt")) {
            black_box(event_hash(&value));
            hashed += 1;
        }
    }
    println!("{hashed}");
}
