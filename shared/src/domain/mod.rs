//! Types that can only hold valid values. Everything that crosses the HTTP edge is parsed
//! into one of these first, so nothing unvalidated reaches a store key or a token claim.

mod access_request;
mod audit;
mod consent;
mod controls;
mod notification;
mod policy;
mod step_up;
mod time;

pub use access_request::{AccessRequest, ApproveError, NotPending, RequestId, RequestStatus, agent_is_user};
pub use audit::{Actor, AuditEvent, AuditEventType, AuditFilter, Role};
pub use consent::{Consent, ConsentDuration};
pub use controls::{AgentRevocation, ControlState, EmergencyStop};
pub use notification::{NOTIFICATION_SOURCE, Notification, is_notified};
pub use policy::{Policy, PolicyError, is_loopback_name, issuer_url_problem, origin_problem};
pub use step_up::{SignIn, StepUpMissing, StepUpPolicy};
// The validated values that token claims are made of live in the verifier crate, so that it
// and this service share one definition of each; they are this domain's types all the same.
pub use support_access_verify::{AgentId, ConsentId, EventId, Jti, Note, Reason, Scope, UserId, ValidationError};
pub use time::Timestamp;
