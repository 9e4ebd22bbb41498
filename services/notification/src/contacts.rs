//! The contacts read model as a projection of the `ORDER` stream, so it can be rebuilt from
//! the start of the stream (`notification-service rebuild-contacts`) while the service runs.

use events::streams::Context;
use runtime::consumer::{HandlerError, Incoming};
use runtime::replay::Projection;
use sqlx::PgConnection;

use crate::reactions::apply_to_contacts;

/// `contacts`, made of every `order.placed`.
#[derive(Debug, Clone, Copy)]
pub struct ContactsProjection;

impl Projection for ContactsProjection {
    const TABLE: &'static str = "contacts";
    const CREATE_COPY: &'static str =
        "CREATE TABLE rebuild.contacts (LIKE public.contacts INCLUDING ALL)";
    // Notifications refer to contacts: they wait too, so none refers to a contact the copy
    // has not caught up with.
    const LOCK: &'static str =
        "LOCK TABLE public.contacts, public.notifications IN SHARE ROW EXCLUSIVE MODE";
    const SWITCH: &'static str = "ALTER TABLE public.notifications \
            DROP CONSTRAINT notifications_order_id_fkey; \
        DROP TABLE public.contacts; \
        ALTER TABLE rebuild.contacts SET SCHEMA public; \
        ALTER TABLE public.notifications ADD CONSTRAINT notifications_order_id_fkey \
            FOREIGN KEY (order_id) REFERENCES public.contacts (order_id)";

    fn stream(&self) -> Context {
        Context::Order
    }

    fn event_types(&self) -> Vec<&'static str> {
        vec!["order.placed"]
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        incoming: &'a Incoming,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        apply_to_contacts(tx, incoming)
    }
}
