//! Attribute macros of durable (being written).
use proc_macro::TokenStream;

/// Placeholder.
#[proc_macro_attribute]
pub fn activity(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Placeholder.
#[proc_macro_attribute]
pub fn orchestrator(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
