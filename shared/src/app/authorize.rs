//! Whether an impersonation token works right now, for every entry point: the local demo
//! route, the Lambda authorizer ([`authorize`]), `POST /introspect` ([`introspect`]) and a
//! resource server's report of a use ([`report_use`], which is `authorize`). All run the same
//! checks (the verifier crate's, then the live consent); they differ only in what a token's
//! use means and so in what they audit.

use http::Method;
use serde::Serialize;

use super::Services;
use crate::domain::{
    Actor, AgentId, AuditEvent, AuditEventType, Consent, ConsentId, Jti, Role, Scope, Timestamp, UserId,
};
use crate::ports::{Deadline, StoreError};
use crate::token::{self, ImpersonationClaims, Rejection};

/// Who is acting, once a token passed every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authorized {
    pub user_id: UserId,
    pub acting_agent: AgentId,
    pub scope: Scope,
    pub consent_id: ConsentId,
    pub jti: Jti,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The token must not work; the reason is on the audit log, not for the caller.
    #[error("token refused: {0}")]
    Rejected(Rejection),
    /// The check or its audit write could not complete; refuse and let the caller retry.
    #[error(transparent)]
    Unavailable(StoreError),
}

/// A refusal, with the claims when the signature verified (so the event may name the user).
type Refusal = (Rejection, Option<ImpersonationClaims>);

/// The checks every entry point shares: the stateless ones, then the live ones: the
/// operators' controls (no emergency stop; the acting agent's tokens not revoked since this
/// one was issued) and the user's consent (exists, is unexpired, and is the token's `cid`).
/// Returns the consent read, which a use is then recorded against.
///
/// The controls and the consent are read at once, so the controls add no latency of their
/// own (on AWS they are also cached for at most `CONTROLS_CACHE_TTL`). Either read failing
/// refuses the use as unavailable: a stop that cannot be read is not assumed lifted.
async fn check(
    services: &Services,
    bearer: &str,
    now: Timestamp,
) -> Result<Result<(ImpersonationClaims, Consent), Refusal>, StoreError> {
    // Nothing in a token whose signature fails can be trusted to name a user: such refusals
    // go to the unattributed stream. Past the signature, refusals are the user's events.
    // A token that verified before (same bytes, key still in the ring, before its `exp`) is
    // served from the cache; the claims, the clock and the consent are checked every time.
    let claims = match services.verified.verify_signature(bearer, &services.keys, now.unix()) {
        Ok(claims) => claims,
        Err(rejection) => return Ok(Err((rejection, None))),
    };
    if let Err(rejection) = token::check_claims(&claims, &services.policy, now) {
        return Ok(Err((rejection, Some(claims))));
    }
    let (consent, controls) =
        tokio::join!(services.consent_reader.current(&claims.sub, now), services.controls.read(Some(&claims.act.sub)));
    let (consent, controls) = (consent?, controls?);
    if controls.stop.is_some() {
        return Ok(Err((Rejection::EmergencyStop, Some(claims))));
    }
    if controls.revocation.is_some_and(|r| r.agent == claims.act.sub && r.kills(Timestamp::from_unix(claims.iat))) {
        return Ok(Err((Rejection::AgentRevoked, Some(claims))));
    }
    Ok(match consent {
        None => Err((Rejection::NoConsent, Some(claims))),
        Some(c) if c.consent_id != claims.cid => Err((Rejection::ConsentReplaced, Some(claims))),
        Some(c) => Ok((claims, c)),
    })
}

/// Decides one use of an impersonation token for `method` on `path`: the shared checks, then
/// the scope (`read` passes only GET, HEAD and OPTIONS). Every decision is audited,
/// `token.used` or `token.rejected`, and the audit write is committed before the answer,
/// but for refusals of tokens whose signature failed: those are counted and written per
/// window ([`super::flush_refusals`]), never by the refused request on its own. A
/// use is recorded on condition that the consent is still live, so a revoke that commits
/// between the check and the write turns the use into a refusal; or, where the store
/// sequences its chains (`Services::audit_intake`), as one write by a deadline taken before
/// the consent read, which the sequencer places before any revoke that committed after that
/// read (docs/design.md, "Decide now, sequence later").
///
/// Writes this process's window of unattributed refusals beside its own work, if one is due
/// (`super::refusals`).
pub async fn authorize(
    services: &Services,
    bearer: &str,
    method: &Method,
    path: &str,
) -> Result<Authorized, AuthorizeError> {
    super::refusals::beside_due_refusals(services, decide_use(services, bearer, method, path)).await
}

async fn decide_use(
    services: &Services,
    bearer: &str,
    method: &Method,
    path: &str,
) -> Result<Authorized, AuthorizeError> {
    // Taken before the consent read: a use recorded through the intake must be durable
    // within this deadline of the read that decided it (see `ports::sequencing`).
    let (deadline, now) = (Deadline::for_use(), services.clock.now());
    let checked = match check(services, bearer, now).await.map_err(AuthorizeError::Unavailable)? {
        Ok((claims, _)) if !claims.scope.allows(method) => Err((Rejection::Scope, Some(claims))),
        other => other,
    };
    let path = truncate(path, 256);
    let refuse = async |rejection: Rejection, claims: Option<&ImpersonationClaims>| {
        let detail = format!("{} {method} {path}", rejection.code());
        rejected(services, rejection, claims, detail).await.map_err(AuthorizeError::Unavailable)?;
        Err(AuthorizeError::Rejected(rejection))
    };
    let (claims, consent) = match checked {
        Ok(checked) => checked,
        Err((rejection, claims)) => return refuse(rejection, claims.as_ref()).await,
    };
    // The use's `at` is the time its consent was read at: a verifier checks it against the
    // consent's end.
    let used = AuditEvent::new(AuditEventType::TokenUsed, now, Some(claims.sub.clone()), agent(&claims))
        .with_consent(&claims.cid, claims.scope, token::expires_at(&claims))
        .with_jti(&claims.jti)
        .with_detail(format!("{method} {path}"));
    let recorded = match &services.audit_intake {
        // Decided by the consent read above; one write, no condition (#18).
        Some(intake) => intake.record(used, deadline).await,
        None => services.token_ledger.record_under_consent(&consent, now, used).await.map(|_| ()),
    };
    match recorded {
        Ok(_) => {}
        Err(StoreError::ConsentChanged) => return refuse(Rejection::NoConsent, Some(&claims)).await,
        Err(e) => return Err(AuthorizeError::Unavailable(e)),
    }
    Ok(Authorized {
        user_id: claims.sub,
        acting_agent: claims.act.sub,
        scope: claims.scope,
        consent_id: claims.cid,
        jti: claims.jti,
    })
}

/// `POST /introspect` (RFC 7662) for `resource_server`: the claims when the token is active
/// (the same checks as [`authorize`]), `None` when it is not.
///
/// Audit: an introspection is a question about a token, not a use of it: the resource server
/// that asks may ask again for every request or cache the answer, and only it knows which
/// method and path the token was presented for. So an active answer writes nothing here
/// (writing `token.used` would both miss real uses and invent some); the resource server
/// reports the use itself, with its method and path ([`report_use`]). A refusal is written as `token.rejected` (detail
/// `<code> introspect by <resource server>`), exactly as on the other entry points, because a
/// forged, stale or revoked token shown to any of the app's servers is a security signal
/// that must reach the user's log or the unattributed stream. There is no method here, so no
/// scope check: the answer carries `scope` and the resource server enforces it.
///
/// Writes this process's window of unattributed refusals beside its own work, if one is due.
pub async fn introspect(
    services: &Services,
    bearer: &str,
    resource_server: &AgentId,
) -> Result<Option<ImpersonationClaims>, StoreError> {
    super::refusals::beside_due_refusals(services, async {
        match check(services, bearer, services.clock.now()).await? {
            Ok((claims, _)) => Ok(Some(claims)),
            Err((rejection, claims)) => {
                let detail = format!("{} introspect by {resource_server}", rejection.code());
                rejected(services, rejection, claims.as_ref(), detail).await?;
                Ok(None)
            }
        }
    })
    .await
}

/// How many characters of a use's path its detail keeps ([`authorize`] truncates its `path`
/// argument to this many).
const USE_DETAIL_PATH_CHARS: usize = 256;

/// `POST /introspect/uses`: `resource_server` (a caller in the introspect group) reports that
/// it served `method` on `path` with `bearer`. The report is [`authorize`] itself, called with
/// the reporter appended to the path, so a reported use passes the same checks and the same
/// scope rule, is recorded as the same `token.used` in the same way (and follows the store's
/// sequencing where that is on), and a refusal is the same `token.rejected`; the detail reads
/// `<METHOD> <path> reported by <resource server>` (a refusal's, `<code> <METHOD> <path>
/// reported by <resource server>`), the path cut so that the reporter always fits.
///
/// Presenting the token is the point: a resource server records a use only of a token it
/// holds, so it cannot invent uses of tokens it never saw, nor report for a user or agent
/// other than the token's. `path` must hold no whitespace (the caller validates it), so the
/// last ` reported by ` of a detail is the reporter's.
pub async fn report_use(
    services: &Services,
    bearer: &str,
    method: &Method,
    path: &str,
    resource_server: &AgentId,
) -> Result<Authorized, AuthorizeError> {
    let by = format!(" reported by {resource_server}");
    // An AgentId is at most 128 ASCII characters, so at least 115 of the path remain.
    let path = truncate(path, USE_DETAIL_PATH_CHARS - by.len());
    authorize(services, bearer, method, &format!("{path}{by}")).await
}

fn agent(claims: &ImpersonationClaims) -> Actor {
    Actor { sub: claims.act.sub.clone(), role: Role::Support }
}

/// Records a refusal: with authentic claims, `token.rejected` appended to the user's stream
/// before the answer; without (the signature failed: anyone can send such a token), counted
/// in this process's tally, written with the other refusals of its window to the
/// unattributed stream (`super::refusals`), so that a flood never writes per request.
async fn rejected(
    services: &Services,
    rejection: Rejection,
    claims: Option<&ImpersonationClaims>,
    detail: String,
) -> Result<(), StoreError> {
    debug_assert_eq!(claims.is_some(), rejection.after_signature(), "{rejection:?}");
    let Some(c) = claims else {
        super::refusals::count_refusal(services, rejection.code(), &detail).await;
        return Ok(());
    };
    let event = AuditEvent::new(AuditEventType::TokenRejected, services.clock.now(), Some(c.sub.clone()), agent(c))
        .with_consent(&c.cid, c.scope, token::expires_at(c))
        .with_jti(&c.jti)
        .with_detail(detail);
    services.audit_appender.append(event).await.map(|_| ())
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}
