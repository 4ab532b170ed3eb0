//! Verifies one impersonation token the way an app backend would, against a running
//! support-access (e.g. `cargo run -p local-api`):
//!
//! ```sh
//! cargo run -p support-access-verify --features fetch --example verify_token -- \
//!     http://127.0.0.1:3000 "$TOKEN"
//! # With the live consent check: an identity token in the introspect group.
//! INTROSPECT_BEARER=$(cargo run -q -p local-api -- dev-token --sub rs-1 --groups introspect) \
//!   cargo run -p support-access-verify --features fetch --example verify_token -- \
//!     http://127.0.0.1:3000 "$TOKEN"
//! ```
//!
//! Prints the verified claims as JSON, or why the token was refused (exit status 1).

use support_access_verify::Expected;
use support_access_verify::remote::{Introspector, RemoteError, RemoteVerifier};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: verify_token BASE_URL TOKEN   (env INTROSPECT_BEARER enables the live check)");
        std::process::exit(2);
    };
    // The issuer is the service's base URL (local-api's, or the stack's TokenIssuer); set
    // SUPPORT_ACCESS_ISSUER for a deployment still on the old bare name `support-access`.
    let issuer = std::env::var("SUPPORT_ACCESS_ISSUER").unwrap_or_else(|_| base.clone());
    let audience = std::env::var("SUPPORT_ACCESS_AUDIENCE").unwrap_or_else(|_| "support-access-app".into());

    let mut verifier = RemoteVerifier::new(format!("{base}/.well-known/jwks.json"), Expected::new(issuer, audience));
    if let Ok(bearer) = std::env::var("INTROSPECT_BEARER") {
        verifier = verifier.with_introspection(Introspector::new(format!("{base}/introspect"), bearer));
    }
    match verifier.verify(&token).await {
        Ok(claims) => {
            println!("{}", serde_json::to_string_pretty(&claims).expect("claims serialize"));
            // The backend now enforces the scope for its own request, e.g.:
            let method = http::Method::POST;
            println!("may {method}: {}", claims.scope.allows(&method));
        }
        Err(RemoteError::Rejected(why)) => {
            eprintln!("refused: {why} ({})", why.code());
            std::process::exit(1);
        }
        Err(RemoteError::Unavailable(why)) => {
            eprintln!("could not verify: {why}");
            std::process::exit(1);
        }
    }
}
