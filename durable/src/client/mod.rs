//! [`Client`]: start, query, wait for, terminate, list and purge orchestration instances,
//! and signal and read entities.
//!
//! A client reaches what runs the instances through one narrow `Backend`: commands that
//! change an instance are answered once their effects are durable (a start with the
//! instance's first turn); reads go to the store. The client checks what it can before it
//! sends (ids, payload sizes, registered names) so that a bad request gets its error at
//! once.

mod backend;
mod entity;
mod error;
mod instances;
mod reuse;
mod status;

pub(crate) use backend::{Backend, Command, EndWatch};
pub use entity::{ClientEntity, ClientSignaler, EntityClient};
pub use error::Error;
pub(crate) use instances::new_instance_id;
#[cfg(feature = "http")]
pub(crate) use instances::once_encoded;
pub use instances::{Client, EVENT_NAME_MAX_LEN, InstanceHandle, REASON_MAX_LEN, StartOptions};
pub use reuse::IdReuse;
pub use status::{EntityPage, EntityStatus, InstancePage, InstanceStatus};
