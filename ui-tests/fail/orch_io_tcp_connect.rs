use durable::prelude::*;

#[orchestrator]
async fn orchestration(ctx: OrchestrationContext) -> Result<(), Error> {
    let _ = &ctx;
    let _ = std::net::TcpStream::connect("127.0.0.1:80");
    Ok(())
}

fn main() {}
