//! Access requests on DynamoDB (`AccessRequests`): keyed by user and request id, so a user's
//! lookup can only find their own; the agent index lists what an agent filed. Filing and
//! every decision are one `TransactWriteItems` with their audit events.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::dynamodb::{DynamoStore, Tables, built, n, s, unavailable};
use super::items::{Item, PENDING_KEY, RequestItem, consent_item, request_item, request_key};
use shared::domain::{AccessRequest, AgentId, AuditEvent, Consent, RequestId, RequestStatus, Timestamp, UserId};
use shared::ports::{AccessRequestReader, AccessRequestWriter, PendingRequests, StoreError};

fn requests_of(items: &[Item], limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
    items.iter().take(limit).map(|i| RequestItem::try_from(i).map(|r| r.0)).collect()
}

fn query_limit(limit: usize) -> i32 {
    i32::try_from(limit.clamp(1, 1000)).expect("bounded")
}

#[async_trait]
impl AccessRequestReader for DynamoStore {
    async fn request(&self, user: &UserId, id: &RequestId) -> Result<Option<AccessRequest>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.requests)
            .set_key(Some(request_key(user, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(|i| RequestItem::try_from(i).map(|r| r.0)).transpose()
    }

    async fn requests_for_user(&self, user: &UserId, limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.requests)
            .key_condition_expression("user_id = :u")
            .expression_attribute_values(":u", s(user.as_str()))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(query_limit(limit))
            .send()
            .await
            .map_err(unavailable)?;
        requests_of(out.items(), limit)
    }

    async fn requests_by_agent(&self, agent: &AgentId, limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
        // A global index reads eventually consistently: a request filed a moment ago may be
        // missing for a moment; its user's own view is consistent.
        let out = self
            .client
            .query()
            .table_name(&self.tables.requests)
            .index_name(Tables::AGENT_INDEX)
            .key_condition_expression("agent = :a")
            .expression_attribute_values(":a", s(agent.as_str()))
            .scan_index_forward(false)
            .limit(query_limit(limit))
            .send()
            .await
            .map_err(unavailable)?;
        requests_of(out.items(), limit)
    }
}

#[async_trait]
impl AccessRequestWriter for DynamoStore {
    async fn file(&self, request: &AccessRequest, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let put = Put::builder()
            .table_name(&self.tables.requests)
            .set_item(Some(request_item(request)))
            .condition_expression("attribute_not_exists(request_id)");
        let mut recorded =
            self.commit_all(vec![TransactWriteItem::builder().put(built(put.build())?).build()], vec![event]).await?;
        Ok(recorded.pop().expect("one event in, one out"))
    }

    async fn decide(
        &self,
        decided: &AccessRequest,
        grant: Option<&Consent>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if decided.decided_at.is_none() {
            return Err(StoreError::Corrupt("a decision without decided_at".into()));
        }
        let floor = decided.decided_before_deadline().map_or(i64::MIN / 2, |t| t.unix());
        let put = Put::builder()
            .table_name(&self.tables.requests)
            .set_item(Some(request_item(decided)))
            .condition_expression("#st = :pending AND expires_at > :floor")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":pending", s(RequestStatus::Pending.as_str()))
            .expression_attribute_values(":floor", n(floor));
        let mut own = vec![TransactWriteItem::builder().put(built(put.build())?).build()];
        if let Some(consent) = grant {
            let put = Put::builder().table_name(&self.tables.consents).set_item(Some(consent_item(consent)));
            own.push(TransactWriteItem::builder().put(built(put.build())?).build());
        }
        match self.commit_all(own, events).await {
            Err(StoreError::ConsentChanged) => {
                Err(StoreError::Conflict(format!("access request {} is no longer pending", decided.request_id)))
            }
            other => other,
        }
    }
}

#[async_trait]
impl PendingRequests for DynamoStore {
    async fn pending_due(&self, now: Timestamp, limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
        // The index is eventually consistent: a request decided a moment ago may still show
        // here; its conditioned expiry then fails harmlessly (it is no longer pending).
        let out = self
            .client
            .query()
            .table_name(&self.tables.requests)
            .index_name(Tables::PENDING_INDEX)
            .key_condition_expression("#p = :p AND pending_deadline <= :now")
            .expression_attribute_names("#p", PENDING_KEY)
            .expression_attribute_values(":p", s(PENDING_KEY))
            .expression_attribute_values(":now", n(now.unix()))
            .limit(query_limit(limit))
            .send()
            .await
            .map_err(unavailable)?;
        requests_of(out.items(), limit)
    }
}
