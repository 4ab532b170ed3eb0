//! The use cases: grant, read and revoke a consent, mint a token, authorize a token's use,
//! and query the audit log. Each takes the [`Services`] (clock included)
//! and domain values already parsed at the edge, so the same code serves every Lambda, the
//! local API and the tests.

mod access;
mod access_request;
mod audit_query;
mod authorize;
mod checkpoint;
mod consent;
mod cursor;
mod error;
mod expiry;
mod mint;
mod notify;
mod operator;
mod refusals;
mod sequence;
mod services;

pub use access::{Access, AccessContext, authorize_bearer};
pub use access_request::{
    MAX_SWEPT_REQUESTS, RequestListing, RequestPageView, agent_requests, approve_request, deny_request,
    expire_requests, file_request, user_requests,
};
pub use audit_query::{AuditPageView, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, query_audit};
pub use authorize::{AuthorizeError, Authorized, authorize, introspect, report_use};
pub use checkpoint::{
    CHECKPOINT_RUN_MARGIN, CheckpointError, CheckpointRun, EXPORT_PAGE_BYTES, EXPORT_PAGE_READS, EXPORT_PAGE_TIME,
    EXPORT_READ_CHECKPOINTS, EXPORT_READ_EVENTS, ExportBudget, ExportPage, ExportScope, MAX_LEAVES_PER_CHECKPOINT,
    checkpoint_all, checkpoint_keys, checkpoint_now, checkpoint_run, export_page, make_checkpoint, seal_heads,
};
pub use consent::{current_consent, grant_consent, revoke_consent};
pub use cursor::{CursorKey, CursorKeys};
pub use error::ApiError;
pub use expiry::record_expiry;
pub use mint::{MintedToken, mint_token};
pub use notify::{
    FIRST_USE_MEMORY, FirstUseMemory, RelayError, RelaySettings, RelayStats, RememberedFirstUses, publish_committed,
    relay_forever, relay_once, should_publish,
};
pub use operator::{
    CONTROLS_CACHE_TTL, CachedControls, MAX_REVOCATION_SCAN, RevocationView, StopView, emergency_stop, engage_stop,
    lift_stop, revoke_agent_tokens, stopped,
};
pub use refusals::{
    REFUSAL_SAMPLE_CHARS, REFUSAL_WINDOW_COUNT, REFUSAL_WINDOW_SECONDS, RefusalTally, flush_refusals,
    flush_refusals_every, refused_in,
};
pub use sequence::{ListedHere, SEQUENCER_PARALLEL_STREAMS, SEQUENCER_RUN_LIMIT, SequencedStreams, sequence_named};
pub use services::Services;
