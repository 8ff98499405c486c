use durable::prelude::*;

const APPROVAL: ExternalEvent<bool> = ExternalEvent::new("Approval");

async fn approve(client: Client) -> Result<(), durable::client::Error> {
    // The payload's type is the event's.
    client.raise_event("expense-7", APPROVAL, "yes").await
}

fn main() {
    let _ = approve;
}
