//! Expansion of `#[entity]` on an `impl` block: every method with a `self` receiver is an
//! operation. The block is kept as written (its methods stay callable, for unit tests), and
//! the macro adds `impl durable::Entity` — a `match` on the operation name — and three
//! typed proxies: calls from orchestrators, signals, and client signals.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat, PathArguments,
    ReturnType, Type,
};

/// One operation, read from a method.
struct Operation {
    ident: Ident,
    name: LitStr,
    read_only: bool,
    takes_context: bool,
    args: Vec<(Ident, Type)>,
    /// `Some(T)` when the method returns `Result<T, E>`; the output type otherwise.
    output: Output,
}

enum Output {
    Unit,
    Value(Type),
    Result(Type),
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_impl(attr, item.clone()) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#error #item)
        }
    }
}

fn expand_impl(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let block: ItemImpl = syn::parse2(item)?;
    if let Some((path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[entity] goes on the type's own `impl` block (with its operations), not on a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "entities cannot be generic: each entity type is registered and stored under one name",
        ));
    }
    let type_ident = type_ident(&block.self_ty)?;
    let name = parse_name(attr)?
        .unwrap_or_else(|| LitStr::new(&type_ident.to_string(), type_ident.span()));
    let mut operations = Vec::new();
    for item in &block.items {
        if let ImplItem::Fn(method) = item
            && method.sig.receiver().is_some()
        {
            operations.push(operation(method)?);
        }
    }
    if operations.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "an entity needs at least one operation: a method taking `&self` or `&mut self`",
        ));
    }
    let self_ty = &block.self_ty;
    let generated = generate(&type_ident, self_ty, &name, &operations);
    Ok(quote! {
        #block
        #generated
    })
}

fn type_ident(ty: &Type) -> syn::Result<Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path
            .path
            .segments
            .last()
            .map(|segment| segment.ident.clone())
            .ok_or_else(|| syn::Error::new_spanned(ty, "expected a type name")),
        other => Err(syn::Error::new_spanned(
            other,
            "#[entity] goes on the `impl` block of a named struct or enum",
        )),
    }
}

fn parse_name(attr: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse::<LitStr>()?);
            Ok(())
        } else {
            Err(meta.error("unknown option of #[entity]; the only option is `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

fn operation(method: &ImplItemFn) -> syn::Result<Operation> {
    let sig = &method.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new(
            asyncness.span(),
            "entity operations cannot be `async`: an entity runs its operations one at a time, and one that waited would hold up all the others; do slow work in an activity (start an orchestration with `ctx.start_orchestration`)",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "entity operations cannot be generic: their inputs are decoded from JSON",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let read_only = match inputs.next() {
        Some(FnArg::Receiver(syn::Receiver {
            kind: syn::ReceiverKind::Reference(_, _, mutability),
            ..
        })) => mutability.is_none(),
        other => {
            return Err(syn::Error::new(
                other.map_or(sig.span(), Spanned::span),
                "entity operations take `&self` (to read the state) or `&mut self` (to change it)",
            ));
        }
    };
    let mut takes_context = false;
    let mut args = Vec::new();
    for (index, input) in inputs.enumerate() {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        if index == 0 && is_context(&typed.ty)? {
            takes_context = true;
            continue;
        }
        if let Type::Reference(reference) = &*typed.ty {
            return Err(syn::Error::new_spanned(
                reference,
                "operation arguments are decoded from JSON and owned by the operation: take the type by value (`String`, not `&str`)",
            ));
        }
        let ident = match &*typed.pat {
            Pat::Ident(pat) => pat.ident.clone(),
            _ => format_ident!("arg{}", index),
        };
        args.push((ident, (*typed.ty).clone()));
    }
    Ok(Operation {
        ident: sig.ident.clone(),
        name: LitStr::new(&sig.ident.to_string(), sig.ident.span()),
        read_only,
        takes_context,
        args,
        output: output(&sig.output),
    })
}

/// Whether a parameter is the `EntityContext` (by reference).
fn is_context(ty: &Type) -> syn::Result<bool> {
    let (inner, mutable) = match ty {
        Type::Reference(reference) => (&*reference.elem, reference.mutability.is_some()),
        other => (other, false),
    };
    let named = matches!(inner, Type::Path(path)
        if path.path.segments.last().is_some_and(|segment| segment.ident == "EntityContext"));
    if !named {
        return Ok(false);
    }
    if mutable || !matches!(ty, Type::Reference(_)) {
        return Err(syn::Error::new_spanned(
            ty,
            "take the entity context as `ctx: &EntityContext`",
        ));
    }
    Ok(true)
}

fn output(ret: &ReturnType) -> Output {
    let ReturnType::Type(_, ty) = ret else {
        return Output::Unit;
    };
    if let Type::Path(path) = &**ty
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(arguments) = &last.arguments
    {
        let types: Vec<&Type> = arguments
            .args
            .iter()
            .filter_map(|argument| match argument {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
            .collect();
        if let [ok, _] = types[..] {
            return Output::Result(ok.clone());
        }
    }
    Output::Value((**ty).clone())
}

fn generate(
    type_ident: &Ident,
    self_ty: &Type,
    name: &LitStr,
    operations: &[Operation],
) -> TokenStream {
    let calls = format_ident!("__{}Calls", type_ident);
    let signals = format_ident!("__{}Signals", type_ident);
    let client_signals = format_ident!("__{}ClientSignals", type_ident);
    let call_methods = operations.iter().map(|op| {
        let (ident, op_name) = (&op.ident, &op.name);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let input = input_expr(op);
        let output = match &op.output {
            Output::Unit => quote!(()),
            Output::Value(ty) | Output::Result(ty) => quote!(#ty),
        };
        quote! {
            #[doc = concat!("Calls operation `", #op_name, "` and waits for its result.")]
            pub fn #ident(&self, #(#params),*) -> ::durable::DurableTask<#output> {
                self.0.call(#op_name, &#input)
            }
        }
    });
    let signal_methods = operations.iter().map(|op| {
        let (ident, op_name) = (&op.ident, &op.name);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let input = input_expr(op);
        quote! {
            #[doc = concat!("Signals operation `", #op_name, "` (fire-and-forget).")]
            pub fn #ident(&self, #(#params),*) {
                self.0.signal(#op_name, &#input)
            }
        }
    });
    let client_methods = operations.iter().map(|op| {
        let (ident, op_name) = (&op.ident, &op.name);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let input = input_expr(op);
        quote! {
            #[doc = concat!("Signals operation `", #op_name, "`; returns once the signal is stored.")]
            pub async fn #ident(&self, #(#params),*) -> ::core::result::Result<(), ::durable::client::Error> {
                self.0.signal(#op_name, &#input).await
            }
        }
    });
    let arms = operations.iter().map(|op| dispatch_arm(op, name));
    let read_only: Vec<&LitStr> = operations
        .iter()
        .filter(|op| op.read_only)
        .map(|op| &op.name)
        .collect();
    let names: Vec<&LitStr> = operations.iter().map(|op| &op.name).collect();
    let read_only_check = if read_only.is_empty() {
        quote!(false)
    } else {
        quote!(matches!(operation, #(#read_only)|*))
    };
    let span = Span::call_site();
    quote::quote_spanned! {span=>
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        pub struct #calls<'a>(::durable::entity::EntityProxy<'a>);

        #[allow(dead_code)]
        impl<'a> #calls<'a> {
            #(#call_methods)*

            /// The entity's signals (fire-and-forget operations).
            pub fn signal(&self) -> #signals<'a> {
                #signals(self.0.signaler())
            }

            /// The entity's id.
            pub fn id(&self) -> &::durable::EntityId {
                self.0.id()
            }
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        pub struct #signals<'a>(::durable::entity::EntitySignaler<'a>);

        #[allow(dead_code)]
        impl #signals<'_> {
            #(#signal_methods)*
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        pub struct #client_signals(::durable::entity::ClientSignaler);

        #[allow(dead_code)]
        impl #client_signals {
            #(#client_methods)*
        }

        impl ::durable::Entity for #self_ty {
            const NAME: &'static str = #name;
            type Calls<'a> = #calls<'a>;
            type Signals<'a> = #signals<'a>;
            type ClientSignals = #client_signals;

            fn calls(proxy: ::durable::entity::EntityProxy<'_>) -> Self::Calls<'_> {
                #calls(proxy)
            }

            fn signals(signaler: ::durable::entity::EntitySignaler<'_>) -> Self::Signals<'_> {
                #signals(signaler)
            }

            fn client_signals(signaler: ::durable::entity::ClientSignaler) -> Self::ClientSignals {
                #client_signals(signaler)
            }

            #[allow(clippy::useless_conversion, clippy::unit_arg)]
            fn dispatch(
                &mut self,
                ctx: &::durable::EntityContext,
                operation: &str,
                input: &::durable::Json,
            ) -> ::core::result::Result<::durable::Json, ::durable::Error> {
                let _ = ctx;
                match operation {
                    #(#arms)*
                    other => ::core::result::Result::Err(::durable::entity::unknown_operation(
                        #name,
                        other,
                        &[#(#names),*],
                    )),
                }
            }

            fn is_read_only(operation: &str) -> bool {
                #read_only_check
            }

            fn operations() -> &'static [&'static str] {
                &[#(#names),*]
            }
        }
    }
}

/// The value sent as an operation's input: nothing, its one argument, or a tuple of them.
fn input_expr(op: &Operation) -> TokenStream {
    let idents: Vec<&Ident> = op.args.iter().map(|(ident, _)| ident).collect();
    match idents.as_slice() {
        [] => quote!(()),
        [one] => quote!(#one),
        many => quote!((#(#many),*)),
    }
}

fn dispatch_arm(op: &Operation, entity: &LitStr) -> TokenStream {
    let (ident, op_name) = (&op.ident, &op.name);
    let types: Vec<&Type> = op.args.iter().map(|(_, ty)| ty).collect();
    let idents: Vec<&Ident> = op.args.iter().map(|(ident, _)| ident).collect();
    let decode = match types.as_slice() {
        [] => quote!(),
        [ty] => {
            let one = idents[0];
            quote!(let #one: #ty = ::durable::entity::decode_input(#entity, #op_name, input)?;)
        }
        many => {
            quote!(let (#(#idents),*): (#(#many),*) = ::durable::entity::decode_input(#entity, #op_name, input)?;)
        }
    };
    let context = op.takes_context.then(|| quote!(ctx,));
    let call = quote!(self.#ident(#context #(#idents),*));
    let run = match &op.output {
        Output::Unit => quote!({ #call; }; let output = ();),
        Output::Value(_) => quote!(let output = #call;),
        Output::Result(_) => {
            quote!(let output = #call.map_err(::core::convert::Into::<::durable::Error>::into)?;)
        }
    };
    quote! {
        #op_name => {
            #decode
            #run
            ::durable::entity::encode_output(#entity, #op_name, &output)
        }
    }
}
