//! Incident response: what operators can switch at run time, beside the deployment's policy.
//! The emergency stop refuses every grant, mint, approval and token use until it is lifted;
//! an agent revocation kills every token one agent holds, at once, without touching anyone
//! else's. Both are stored (see `ports::Controls`) and read on every use.

use serde::{Deserialize, Serialize};

use super::{AgentId, Policy, Reason, Timestamp};

/// The emergency stop, while engaged: who engaged it, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyStop {
    pub by: AgentId,
    pub at: Timestamp,
    pub reason: Reason,
}

/// Every token `agent` was issued at or before `revoked_before` is dead. The entry is kept
/// until `expires_at`, when no such token can still be accepted (the longest token lifetime
/// the policy allows, plus the longest leeway): after that it decides nothing and storage may
/// drop it (DynamoDB TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRevocation {
    pub agent: AgentId,
    pub revoked_before: Timestamp,
    pub by: AgentId,
    pub reason: Reason,
    pub expires_at: Timestamp,
}

impl AgentRevocation {
    /// How long a revocation must be kept: no token lives longer than the largest TTL the
    /// policy accepts, nor is accepted past its `exp` by more than the largest leeway.
    pub const KEPT_SECONDS: i64 = Policy::MAX_TOKEN_TTL_SECONDS + Policy::MAX_LEEWAY_SECONDS + 60;

    /// Revokes every token of `agent` issued up to `now`.
    pub fn at(agent: AgentId, now: Timestamp, by: AgentId, reason: Reason) -> Self {
        Self { agent, revoked_before: now, by, reason, expires_at: now.plus_seconds(Self::KEPT_SECONDS) }
    }

    /// Whether a token issued at `issued_at` is killed by this revocation.
    pub fn kills(&self, issued_at: Timestamp) -> bool {
        issued_at <= self.revoked_before
    }
}

/// What a use must know, read in one go: the stop, and the acting agent's revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlState {
    pub stop: Option<EmergencyStop>,
    /// The revocation of the agent asked about, if there is one.
    pub revocation: Option<AgentRevocation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_kills_tokens_up_to_its_second_and_outlives_every_token() {
        let agent = AgentId::parse("agent-7").unwrap();
        let r = AgentRevocation::at(
            agent.clone(),
            Timestamp::from_unix(1000),
            AgentId::parse("op-1").unwrap(),
            Reason::parse("laptop stolen").unwrap(),
        );
        assert!(r.kills(Timestamp::from_unix(999)) && r.kills(Timestamp::from_unix(1000)));
        assert!(!r.kills(Timestamp::from_unix(1001)));
        assert!(r.expires_at.unix() - 1000 > Policy::MAX_TOKEN_TTL_SECONDS + Policy::MAX_LEEWAY_SECONDS);
    }
}
