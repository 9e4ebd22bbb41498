//! The payment gateway the service calls, synchronously, to authorize and refund. Today it is a
//! deterministic simulation driven by the payment token; a real HTTP gateway will take its place
//! behind the same methods, which are async for that reason.

use uuid::Uuid;

/// The token the simulation authorizes.
pub const TOKEN_AUTHORIZED: &str = "tok_ok";
/// The token the simulation declines as a refused card.
pub const TOKEN_DECLINED: &str = "tok_decline";

/// The gateway's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayOutcome {
    Authorized { authorization_id: String },
    Declined { reason: String },
}

/// The payment gateway.
#[derive(Debug, Clone, Default)]
pub struct Gateway {}

impl Gateway {
    /// The simulated gateway: `tok_ok` is authorized, `tok_decline` is declined as
    /// `card_declined`, any other token as `unsupported_payment_method`.
    pub fn simulated() -> Gateway {
        Gateway {}
    }

    /// Authorizes `amount_cents` on `payment_method`. The reaction that calls this may run more
    /// than once for the same order, so the order id is the idempotency key: asking again with
    /// the same key answers with the same authorization instead of charging twice.
    pub async fn authorize(
        &self,
        idempotency_key: Uuid,
        payment_method: &str,
        amount_cents: i64,
    ) -> GatewayOutcome {
        tracing::debug!(%idempotency_key, amount_cents, "gateway authorization");
        match payment_method {
            TOKEN_AUTHORIZED => GatewayOutcome::Authorized {
                authorization_id: format!("auth_{}", idempotency_key.simple()),
            },
            TOKEN_DECLINED => GatewayOutcome::Declined {
                reason: "card_declined".to_owned(),
            },
            _ => GatewayOutcome::Declined {
                reason: "unsupported_payment_method".to_owned(),
            },
        }
    }

    /// Gives `amount_cents` of an authorization back. The simulation always succeeds.
    pub async fn refund(&self, authorization_id: &str, amount_cents: i64) {
        tracing::debug!(authorization_id, amount_cents, "gateway refund");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Uuid = Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_0001);

    #[tokio::test]
    async fn the_ok_token_is_authorized_with_an_id_derived_from_the_key() {
        let gateway = Gateway::simulated();
        let first = gateway.authorize(KEY, "tok_ok", 2500).await;
        let again = gateway.authorize(KEY, "tok_ok", 2500).await;
        assert_eq!(
            first,
            GatewayOutcome::Authorized {
                authorization_id: "auth_01980000000070008000000000000001".into()
            }
        );
        assert_eq!(again, first);
        let other = gateway.authorize(Uuid::nil(), "tok_ok", 2500).await;
        assert_ne!(other, first);
    }

    #[tokio::test]
    async fn the_decline_token_is_declined_as_a_refused_card() {
        assert_eq!(
            Gateway::simulated()
                .authorize(KEY, "tok_decline", 2500)
                .await,
            GatewayOutcome::Declined {
                reason: "card_declined".into()
            }
        );
    }

    #[tokio::test]
    async fn any_other_token_is_declined_as_unsupported() {
        for token in ["", "tok_OK", "4111111111111111"] {
            assert_eq!(
                Gateway::simulated().authorize(KEY, token, 2500).await,
                GatewayOutcome::Declined {
                    reason: "unsupported_payment_method".into()
                }
            );
        }
    }
}
