//! Access requests on DynamoDB (`AccessRequests`): keyed by user and request id, so a user's
//! lookup can only find their own; the agent index lists what an agent filed. Filing and
//! every decision are one `TransactWriteItems` with their audit events.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::dynamodb::{DynamoStore, Range, Tables, built, n, page_from, s, unavailable};
use super::items::{Item, PENDING_KEY, RequestItem, consent_item, request_item, request_key};
use shared::domain::{AccessRequest, AgentId, AuditEvent, Consent, RequestId, RequestStatus, Timestamp, UserId};
use shared::ports::{AccessRequestReader, AccessRequestWriter, PendingRequests, RequestPage, RequestQuery, StoreError};

fn requests_of(items: &[Item], limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
    items.iter().take(limit).map(|i| RequestItem::try_from(i).map(|r| r.0)).collect()
}

fn query_limit(limit: usize) -> i32 {
    i32::try_from(limit.clamp(1, 1000)).expect("bounded")
}

impl DynamoStore {
    /// One page of the requests whose `key_attr` is `key` (the table by user, or the agent
    /// index), by `request_id` descending, after the query's position. Pending-only is a
    /// filter: a page of decided requests reads on (within the range read's call budget) and
    /// may answer short with a position to resume from.
    async fn request_page(
        &self,
        index: Option<&'static str>,
        key_attr: &str,
        key: &str,
        query: &RequestQuery,
    ) -> Result<RequestPage, StoreError> {
        let mut names = HashMap::new();
        let mut values = HashMap::from([(":k".to_owned(), s(key))]);
        let mut key_condition = format!("{key_attr} = :k");
        if let Some(after) = &query.after {
            values.insert(":after".to_owned(), s(after));
            key_condition.push_str(" AND request_id < :after");
        }
        let filter = query.pending_at.map(|now| {
            names.insert("#st".to_owned(), "status".to_owned());
            values.insert(":pending".to_owned(), s(RequestStatus::Pending.as_str()));
            values.insert(":now".to_owned(), n(now.unix()));
            "#st = :pending AND expires_at > :now".to_owned()
        });
        let range = Range { index, key_condition, filter, names: &names, values };
        let found = self.read_range(&self.tables.requests, "request_id", &range, query.limit + 1).await?;
        let (items, next) = page_from(found, query.limit, "request_id");
        Ok(RequestPage { requests: requests_of(&items, query.limit)?, next })
    }
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

    async fn requests_for_user(&self, user: &UserId, query: &RequestQuery) -> Result<RequestPage, StoreError> {
        // The table itself, read consistently.
        self.request_page(None, "user_id", user.as_str(), query).await
    }

    async fn requests_by_agent(&self, agent: &AgentId, query: &RequestQuery) -> Result<RequestPage, StoreError> {
        // A global index reads eventually consistently: a request filed a moment ago may be
        // missing for a moment; its user's own view is consistent.
        self.request_page(Some(Tables::AGENT_INDEX), "agent", agent.as_str(), query).await
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
