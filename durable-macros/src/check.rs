//! The body check of `#[orchestrator]`: rejects APIs that break replay (clocks,
//! randomness, threads, sleeping, I/O), pointing at the replay-safe alternative.

use syn::Block;

/// Checks an orchestrator body. (The rules arrive with the compile-time constraints.)
pub(crate) fn check_body(_body: &Block) -> syn::Result<()> {
    Ok(())
}
