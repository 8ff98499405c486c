//! [`ExternalEvent`]: an external event's name and payload type, declared once and shared
//! by the code that raises it and the orchestrator that waits for it — so the two cannot
//! disagree on the spelling or the type. [`EventName`] lets the same methods take a plain
//! string, for events raised by other programs.

use std::fmt;
use std::marker::PhantomData;

/// An external event: its name, and the type of its payload.
///
/// ```
/// use durable::prelude::*;
/// use durable::ExternalEvent;
///
/// /// Sent by the approver; `true` approves.
/// pub const APPROVAL: ExternalEvent<bool> = ExternalEvent::new("Approval");
///
/// #[orchestrator]
/// async fn expense(ctx: OrchestrationContext, amount: u64) -> Result<bool, Error> {
///     // The payload's type comes from the declaration.
///     ctx.wait_for_event(APPROVAL).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::builder().in_memory().register(expense).start().await?;
/// let client = runtime.client();
/// client.start_with_id(expense, "expense-7", 120).await?;
/// client.raise_event("expense-7", APPROVAL, true).await?; // a `&str` here would not compile
/// let status = client.wait_for_completion("expense-7", std::time::Duration::from_secs(10)).await?;
/// assert_eq!(status.output_as::<bool>()?, Some(true));
/// # runtime.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct ExternalEvent<T> {
    name: &'static str,
    payload: PhantomData<fn() -> T>,
}

impl<T> ExternalEvent<T> {
    /// The event called `name`, whose payload is a `T`.
    pub const fn new(name: &'static str) -> ExternalEvent<T> {
        ExternalEvent {
            name,
            payload: PhantomData,
        }
    }

    /// The event's name, as it travels (and as other programs raise it).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// Not derived: a derive would require `T: Clone`, and the payload type is only a marker.
impl<T> Clone for ExternalEvent<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ExternalEvent<T> {}

impl<T> fmt::Debug for ExternalEvent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ExternalEvent<{}>({:?})",
            std::any::type_name::<T>(),
            self.name
        )
    }
}

/// What names an external event whose payload is a `T`: an [`ExternalEvent<T>`], which
/// fixes `T`, or a string, which leaves `T` to the caller.
pub trait EventName<T> {
    /// The event's name.
    fn event_name(&self) -> &str;
}

impl<T> EventName<T> for ExternalEvent<T> {
    fn event_name(&self) -> &str {
        self.name
    }
}

impl<T> EventName<T> for &str {
    fn event_name(&self) -> &str {
        self
    }
}

impl<T> EventName<T> for String {
    fn event_name(&self) -> &str {
        self
    }
}

impl<T> EventName<T> for &String {
    fn event_name(&self) -> &str {
        self
    }
}
