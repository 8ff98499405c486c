use durable::prelude::*;
mod uuid {
    pub struct Uuid;
    impl Uuid {
        pub fn new_v4() -> Uuid {
            Uuid
        }
    }
}

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _id = uuid::Uuid::new_v4();
    Ok(())
}

fn main() {}
