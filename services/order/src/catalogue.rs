//! The catalogue read model as a projection of the `INVENTORY` stream, so it can be rebuilt
//! from the start of the stream (`order-service rebuild-catalogue`) and switched in while the
//! service runs.

use events::streams::Context;
use runtime::consumer::{HandlerError, Incoming};
use runtime::replay::Projection;
use sqlx::PgConnection;

use crate::reactions::apply_to_catalogue;

/// `catalogue`, made of every `inventory.product_updated`.
#[derive(Debug, Clone, Copy)]
pub struct CatalogueProjection;

impl Projection for CatalogueProjection {
    const TABLE: &'static str = "catalogue";
    const CREATE_COPY: &'static str =
        "CREATE TABLE rebuild.catalogue (LIKE public.catalogue INCLUDING ALL)";
    const LOCK: &'static str = "LOCK TABLE public.catalogue IN EXCLUSIVE MODE";
    const SWITCH: &'static str =
        "DROP TABLE public.catalogue; ALTER TABLE rebuild.catalogue SET SCHEMA public";

    fn stream(&self) -> Context {
        Context::Inventory
    }

    fn event_types(&self) -> Vec<&'static str> {
        vec!["inventory.product_updated"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        apply_to_catalogue(tx, incoming)
    }
}
