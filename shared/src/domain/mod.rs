//! Types that can only hold valid values. Everything that crosses the HTTP edge is parsed
//! into one of these first, so nothing unvalidated reaches a store key or a token claim.

mod audit;
mod consent;
mod error;
mod ids;
mod policy;
mod scope;
mod text;
mod time;

pub use audit::{Actor, AuditEvent, AuditEventType, AuditFilter, Role};
pub use consent::{Consent, ConsentDuration};
pub use error::ValidationError;
pub use ids::{AgentId, ConsentId, EventId, Jti, UserId};
pub use policy::{Policy, PolicyError};
pub use scope::Scope;
pub use text::{Note, Reason};
pub use time::Timestamp;
