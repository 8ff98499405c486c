use durable::prelude::*;

#[orchestrator]
async fn echo<T>(_ctx: OrchestrationContext, value: T) -> Result<T, Error>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    Ok(value)
}

fn main() {}
