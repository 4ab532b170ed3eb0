//! `aws-proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:MOTO [--model aws|none]
//! [--latency-scale F]`: the test proxy ([`e2e::aws_proxy`]) as a process, so `scripts/test`
//! can put DynamoDB's and KMS's behaviour under load between every AWS test and moto, as it
//! starts moto. It runs until it is killed.

use e2e::aws_proxy::AwsProxy;
use e2e::aws_proxy::model::Model;

fn usage() -> ! {
    eprintln!(
        "usage: aws-proxy --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT [--model aws|none] [--latency-scale F]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let (mut listen, mut upstream, mut model, mut scale) = (None, None, Model::AWS, 1.0);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--upstream" => upstream = Some(value),
            "--model" => {
                model = match value.as_str() {
                    "aws" => Model::AWS,
                    "none" => Model::NONE,
                    _ => usage(),
                }
            }
            "--latency-scale" => scale = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else { usage() };
    if !listen.starts_with("127.") {
        eprintln!("aws-proxy listens on loopback only, not {listen}");
        std::process::exit(2);
    }
    model.latency = model.latency.scaled(scale);
    let address = listen.parse().map_err(|e: std::net::AddrParseError| std::io::Error::other(e));
    let listener = address.and_then(AwsProxy::listener).unwrap_or_else(|e| {
        eprintln!("aws-proxy: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    let proxy = AwsProxy::serve(listener, &upstream, model);
    eprintln!("aws-proxy on {} in front of {upstream}: {model:?}", proxy.endpoint);
    std::future::pending::<()>().await;
}
