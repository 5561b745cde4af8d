//! InitProducerId: ids and epochs for idempotent producers.
//!
//! Only non-transactional producers are served. A request naming a transactional id is
//! answered NOT_COORDINATOR, Kafka's answer from a broker that does not coordinate that id:
//! no broker here coordinates any (FindCoordinator answers COORDINATOR_NOT_AVAILABLE for
//! transaction keys), so a transactional client keeps looking for a coordinator until its own
//! timeout, as it would against a Kafka cluster whose transaction coordinator is down, rather
//! than failing with a misleading authorization error. Clients only send a transactional id
//! when the application configured transactions.
//!
//! A v3+ request carrying the producer id and epoch this cluster gave the client (KIP-360,
//! sent by librdkafka and kafka-python to recover from a sequence error) gets the same id at
//! the next epoch, which resets the producer's sequences on every partition; when the epoch
//! is exhausted, or the id is not one this cluster issued, it gets a new id at epoch 0.
//! `transaction_timeout_ms` only matters for transactions and is ignored.

use std::sync::Arc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::error::ServeError;
use super::{ApiError, Ctx, Reply};
use crate::broker::Broker;

/// Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
/// Kafka's `TransactionMetadata.isEpochExhausted`: from this epoch on, a bump moves the
/// producer to a new id instead (clients use `i16::MAX` for their own local bumps).
const EXHAUSTED_EPOCH: i16 = i16::MAX - 1;

/// What to hand out, decided from the request alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// A new producer id at epoch 0.
    NewId,
    /// The producer's own id at the next epoch.
    Bump { producer_id: i64, epoch: i16 },
}

/// `was_issued` tells whether this cluster ever handed out a producer id.
fn plan(
    req: &InitProducerIdRequest,
    version: i16,
    was_issued: impl Fn(i64) -> bool,
) -> Result<Plan, ServeError> {
    if let Some(id) = &req.transactional_id {
        if id.is_empty() {
            // Kafka refuses an empty transactional id the same way (the client never sends one).
            return Err(ServeError::InvalidRequest(
                "the transactional id must be null or non-empty".into(),
            ));
        }
        return Err(ServeError::TransactionsUnsupported(format!(
            "transactional id {:?}: this broker does not coordinate transactions",
            &**id
        )));
    }
    if version < 3 {
        return Ok(Plan::NewId);
    }
    match (req.producer_id.0, req.producer_epoch) {
        (NO_PRODUCER_ID, NO_PRODUCER_EPOCH) => Ok(Plan::NewId),
        // Kafka's KafkaApis check: both or neither.
        (NO_PRODUCER_ID, _) | (_, NO_PRODUCER_EPOCH) => Err(ServeError::InvalidRequest(
            "producer id and epoch must both be set or both be -1".into(),
        )),
        (producer_id, epoch)
            if (0..EXHAUSTED_EPOCH).contains(&epoch) && was_issued(producer_id) =>
        {
            Ok(Plan::Bump {
                producer_id,
                epoch: epoch + 1,
            })
        }
        _ => Ok(Plan::NewId),
    }
}

pub async fn init(
    broker: &Arc<Broker>,
    ctx: &Ctx,
    req: InitProducerIdRequest,
) -> Result<Reply, ApiError> {
    let ids = &broker.producer_ids;
    let outcome = match plan(&req, ctx.version, |id| ids.was_issued(id)) {
        Ok(Plan::NewId) => ids
            .next_id()
            .await
            .map(|id| (id, 0))
            .map_err(ServeError::ProducerIdsUnavailable),
        Ok(Plan::Bump { producer_id, epoch }) => Ok((producer_id, epoch)),
        Err(e) => Err(e),
    };
    let resp = InitProducerIdResponse::default();
    let resp = match outcome {
        Ok((id, epoch)) => {
            tracing::debug!(producer_id = id, epoch, "InitProducerId");
            resp.with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch)
        }
        Err(e) => {
            tracing::debug!(error = %e, "InitProducerId refused");
            resp.with_error_code(e.code())
                .with_producer_id(ProducerId(NO_PRODUCER_ID))
                .with_producer_epoch(NO_PRODUCER_EPOCH)
        }
    };
    ctx.reply(&resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TransactionalId;

    fn req(pid: i64, epoch: i16) -> InitProducerIdRequest {
        InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
    }

    fn issued_below_100(id: i64) -> bool {
        (0..100).contains(&id)
    }

    #[test]
    fn new_ids_for_fresh_producers_and_old_versions() {
        assert_eq!(
            plan(&req(-1, -1), 4, issued_below_100).unwrap(),
            Plan::NewId
        );
        // v0-v2 have no id/epoch fields: whatever the struct holds is ignored.
        assert_eq!(plan(&req(5, 3), 2, issued_below_100).unwrap(), Plan::NewId);
        assert_eq!(plan(&req(5, 3), 0, issued_below_100).unwrap(), Plan::NewId);
    }

    #[test]
    fn bumps_the_epoch_of_an_issued_id() {
        assert_eq!(
            plan(&req(5, 3), 3, issued_below_100).unwrap(),
            Plan::Bump {
                producer_id: 5,
                epoch: 4
            }
        );
        assert_eq!(
            plan(&req(5, EXHAUSTED_EPOCH - 1), 5, issued_below_100).unwrap(),
            Plan::Bump {
                producer_id: 5,
                epoch: EXHAUSTED_EPOCH
            }
        );
        // Exhausted epochs and ids this cluster never issued get a new id.
        assert_eq!(
            plan(&req(5, EXHAUSTED_EPOCH), 4, issued_below_100).unwrap(),
            Plan::NewId
        );
        assert_eq!(
            plan(&req(5, i16::MAX), 4, issued_below_100).unwrap(),
            Plan::NewId
        );
        assert_eq!(
            plan(&req(500, 0), 4, issued_below_100).unwrap(),
            Plan::NewId
        );
    }

    #[test]
    fn refuses_half_set_ids_and_transactions() {
        for (pid, epoch) in [(-1, 0), (7, -1)] {
            let e = plan(&req(pid, epoch), 3, issued_below_100).unwrap_err();
            assert_eq!(e.code(), 42, "{e}"); // INVALID_REQUEST
        }
        let txn = req(-1, -1).with_transactional_id(Some(TransactionalId(
            kafka_protocol::protocol::StrBytes::from_static_str("tx-1"),
        )));
        let e = plan(&txn, 4, issued_below_100).unwrap_err();
        assert_eq!(e.code(), 16, "{e}"); // NOT_COORDINATOR
        let empty = req(-1, -1).with_transactional_id(Some(TransactionalId(
            kafka_protocol::protocol::StrBytes::from_static_str(""),
        )));
        assert_eq!(plan(&empty, 0, issued_below_100).unwrap_err().code(), 42);
    }
}
