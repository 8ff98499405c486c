//! Expansion of `#[entity]` on an `impl` block: every method is an operation, taking
//! `&self` or `&mut self`, optionally a `&EntityContext`, then owned arguments. The block
//! is kept as written (its methods stay callable, for unit tests), and the macro adds
//! `impl durable::Entity` — a `match` on the operation name — and three typed proxies:
//! calls from orchestrators, signals, and client signals.
//!
//! Whatever cannot work is rejected with an error at the offending part that says what to
//! write instead; every operation is checked, so one build reports all of them. The trait
//! bounds the compiler checks (`Serialize` arguments, a `Default` state, an error type that
//! converts into `durable::Error`) are spanned at the type in the user's code.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use std::collections::BTreeSet;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::visit_mut::VisitMut;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ImplItem, ImplItemFn, Item, ItemImpl,
    LitStr, Pat, PathArguments, ReceiverKind, ReturnType, Type, TypeReference,
};

/// Names the generated call proxy already uses for its own methods.
const RESERVED: &[(&str, &str)] = &[
    ("signal", "selects the entity's signals"),
    ("id", "returns the entity's id"),
];

/// One operation, read from a method.
struct Operation {
    /// The method, as written (possibly a raw identifier).
    ident: Ident,
    /// The operation's name, sent with every call and signal.
    name: LitStr,
    /// The method's `#[cfg(..)]` attributes, repeated on everything generated for it.
    cfgs: Vec<Attribute>,
    read_only: bool,
    takes_context: bool,
    /// The arguments after the context, with `Self` replaced by the entity type.
    args: Vec<(Ident, Type)>,
    /// The parameter list, where errors about all the arguments together point.
    params_span: Span,
    output: Output,
}

enum Output {
    Unit,
    Value(Type),
    Result { ok: Type, error: Box<Type> },
}

impl Output {
    /// The type the caller receives.
    fn value_type(&self) -> TokenStream {
        match self {
            Output::Unit => quote!(()),
            Output::Value(ty) | Output::Result { ok: ty, .. } => quote!(#ty),
        }
    }
}

/// Errors gathered over the whole block, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_impl(attr, item.clone()) {
        Ok(tokens) => tokens,
        // Keep the item so that one error does not cascade into "cannot find" errors.
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#error #item)
        }
    }
}

fn expand_impl(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let name = match parse_name(attr) {
        Ok(name) => name,
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let block = match syn::parse2::<Item>(item)? {
        Item::Impl(block) => block,
        other => return Err(not_an_impl(&other)),
    };
    check_block(&block)?;
    let type_ident = type_ident(&block.self_ty)?;
    // Entity names are case-insensitive, as in Durable Functions: held lowercased.
    let name = name.map_or_else(
        || {
            LitStr::new(
                &type_ident.unraw().to_string().to_lowercase(),
                type_ident.span(),
            )
        },
        |name| LitStr::new(&name.value().to_lowercase(), name.span()),
    );
    let mut operations = Vec::new();
    let mut seen = BTreeSet::new();
    let mut any_method = false;
    for item in &block.items {
        let ImplItem::Fn(method) = item else {
            continue;
        };
        any_method = true;
        match operation(method, &block.self_ty, &type_ident) {
            // Two methods of one name under the same `cfg`s: the compiler reports the
            // duplicate in the block itself, so generate the operation only once.
            Ok(op) => {
                let cfgs = op.cfgs.iter().map(|cfg| cfg.to_token_stream().to_string());
                if seen.insert((op.name.value(), cfgs.collect::<Vec<_>>())) {
                    operations.push(op);
                }
            }
            Err(error) => errors.push(error),
        }
    }
    if !any_method {
        errors.push(syn::Error::new_spanned(
            &block.self_ty,
            "an entity needs at least one operation: a method taking `&self` (to read the state) or `&mut self` (to change it)",
        ));
    }
    // The valid operations are generated even next to errors, so that code using them
    // reports nothing more.
    let generated = generate(&type_ident, &block.self_ty, &name, &operations);
    let errors = errors.finish().err().map(syn::Error::into_compile_error);
    Ok(quote! {
        #errors
        // Operations take owned arguments and `&self` because the macro asks them to.
        #[allow(clippy::needless_pass_by_value, clippy::unused_self)]
        #block
        #generated
    })
}

/// The error for `#[entity]` on anything but an `impl` block.
fn not_an_impl(item: &Item) -> syn::Error {
    match item {
        Item::Fn(function) => {
            let sig = &function.sig;
            let (fn_token, ident) = (&sig.fn_token, &sig.ident);
            syn::Error::new_spanned(
                quote!(#fn_token #ident),
                "#[entity] goes on the `impl` block of the entity's state type, whose methods are its operations (`#[entity] impl Counter { fn add(&mut self, amount: i64) { .. } }`), not on a function; a function that does work is an #[activity] or an #[orchestrator]",
            )
        }
        Item::Struct(item) => on_type_definition(&item.struct_token, &item.ident),
        Item::Enum(item) => on_type_definition(&item.enum_token, &item.ident),
        other => syn::Error::new(
            other.span(),
            "#[entity] goes on the `impl` block of the entity's state type, whose methods are its operations: `#[entity] impl Counter { fn add(&mut self, amount: i64) { .. } }`",
        ),
    }
}

fn on_type_definition(keyword: &dyn ToTokens, ident: &Ident) -> syn::Error {
    syn::Error::new_spanned(
        quote!(#keyword #ident),
        format!(
            "#[entity] goes on the `impl` block of `{ident}`, not on its definition: derive `Default, Serialize, Deserialize` for `{ident}`, and write its operations in `#[entity] impl {ident} {{ .. }}`"
        ),
    )
}

/// Rejects trait impls and generic impls.
fn check_block(block: &ItemImpl) -> syn::Result<()> {
    if let Some((path, for_token)) = &block.trait_ {
        let self_ty = &block.self_ty;
        return Err(syn::Error::new_spanned(
            quote!(#path #for_token #self_ty),
            format!(
                "#[entity] goes on the type's own `impl` block, whose methods are its operations, not on a trait impl: write `#[entity] impl {} {{ .. }}`, and leave this impl without the attribute",
                tokens_text(self_ty)
            ),
        ));
    }
    let generics = &block.generics;
    let has_types = generics
        .params
        .iter()
        .any(|param| !matches!(param, GenericParam::Lifetime(_)));
    if has_types {
        return Err(syn::Error::new_spanned(
            generics,
            "entities cannot be generic: each entity type is registered and stored under one name, and its state is decoded from JSON as one concrete type; write the `impl` block for a concrete type (`impl Counter<u64>`, not `impl<T> Counter<T>`)",
        ));
    }
    if !generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            generics,
            "entities cannot have lifetime parameters: the state is kept between operations and decoded from JSON, so it owns its data (`String`, not `&str`)",
        ));
    }
    Ok(())
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
            let value: LitStr = meta.value()?.parse()?;
            check_name(&value)?;
            name = Some(value);
            Ok(())
        } else {
            Err(meta.error("unknown option of #[entity]; the only option is `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

/// The rules of `durable::EntityId` for names, checked here rather than on the first call.
fn check_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() {
        return Err(syn::Error::new(name.span(), "the name must not be empty"));
    }
    if value.contains('@') {
        return Err(syn::Error::new(
            name.span(),
            "entity names cannot contain `@`: it separates the name from the key in an entity's id (`@name@key`)",
        ));
    }
    if let Some(found) = value
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
    {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "entity names cannot contain {found:?}: ids appear unescaped in URL paths, so `/ \\ # ?` and control characters are not allowed"
            ),
        ));
    }
    Ok(())
}

/// Reads one method as an operation, or says everything that is wrong with it.
fn operation(method: &ImplItemFn, self_ty: &Type, type_ident: &Ident) -> syn::Result<Operation> {
    let sig = &method.sig;
    let mut errors = Errors::default();
    if let Some(asyncness) = sig.asyncness {
        errors.push(syn::Error::new(
            asyncness.span(),
            "entity operations cannot be `async`: an entity runs its operations one at a time, and one that waited would hold up all the others; remove `async`, and do slow work in an activity (start an orchestration with `ctx.start_orchestration`)",
        ));
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        errors.push(syn::Error::new(
            unsafety.span(),
            "entity operations cannot be `unsafe`: the runtime calls them like any other method",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "entity operations cannot be generic: their arguments are decoded from JSON, so their types must be concrete",
        ));
    }
    let name = sig.ident.unraw().to_string();
    if let Some((_, why)) = RESERVED.iter().find(|(reserved, _)| *reserved == name) {
        errors.push(syn::Error::new(
            sig.ident.span(),
            format!(
                "an operation cannot be named `{name}`: `ctx.entity::<{type_ident}>(key).{name}()` {why}; rename the operation"
            ),
        ));
    }
    let mut inputs = sig.inputs.iter();
    let read_only = match inputs.next() {
        Some(FnArg::Receiver(receiver)) => match &receiver.kind {
            ReceiverKind::Reference(_, _, mutability) => mutability.is_none(),
            _ => {
                errors.push(syn::Error::new_spanned(
                    receiver,
                    format!(
                        "entity operations borrow the state, which the entity keeps between operations: take `&self` (to read it) or `&mut self` (to change it), not `{}`",
                        tokens_text(receiver)
                    ),
                ));
                false
            }
        },
        _ => {
            let ident = &sig.ident;
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "`{ident}` has no `self`, but every method of an #[entity] block is an operation: take `&self` (to read the state) or `&mut self` (to change it), or move `{ident}` to another `impl {type_ident}` block, without #[entity]"
                ),
            ));
            false
        }
    };
    let inputs: Vec<&FnArg> = match sig.receiver() {
        Some(_) => inputs.collect(),
        None => sig.inputs.iter().collect(),
    };
    let mut takes_context = false;
    let mut args = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        if is_context(&typed.ty) {
            if let Err(error) = check_context(sig, &inputs, index, takes_context, typed) {
                errors.push(error);
            }
            takes_context = true;
            continue;
        }
        if let Err(error) = check_owned(&typed.ty, Position::Argument) {
            errors.push(error);
            continue;
        }
        let ident = match &*typed.pat {
            Pat::Ident(pat) => pat.ident.clone(),
            other => format_ident!("__durable_arg{}", index, span = other.span()),
        };
        args.push((ident, replace_self(&typed.ty, self_ty)));
    }
    let output = match output(&sig.output, self_ty) {
        Ok(output) => Some(output),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    errors.finish()?;
    let cfgs = method
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .cloned()
        .collect();
    Ok(Operation {
        ident: sig.ident.clone(),
        name: LitStr::new(&name, sig.ident.span()),
        cfgs,
        read_only,
        takes_context,
        args,
        params_span: sig.paren_token.span.join(),
        output: output.unwrap_or(Output::Unit),
    })
}

/// Whether a parameter's type is the `EntityContext` (by reference or not).
fn is_context(ty: &Type) -> bool {
    let inner = match ty {
        Type::Reference(reference) => &*reference.elem,
        other => other,
    };
    matches!(inner, Type::Path(path)
        if path.path.segments.last().is_some_and(|segment| segment.ident == "EntityContext"))
}

/// The context comes once, right after `self`, as `&EntityContext`.
fn check_context(
    sig: &syn::Signature,
    inputs: &[&FnArg],
    index: usize,
    seen: bool,
    param: &syn::PatType,
) -> syn::Result<()> {
    let (ty, wanted) = (
        &*param.ty,
        format!("{}: &EntityContext", tokens_text(&param.pat)),
    );
    if seen {
        return Err(syn::Error::new_spanned(
            ty,
            "an operation takes the entity context once: remove this parameter",
        ));
    }
    if index > 0 {
        let receiver = sig
            .receiver()
            .map_or_else(|| "&self".to_owned(), |receiver| tokens_text(receiver));
        let mut params = vec![receiver, wanted];
        params.extend(inputs.iter().filter_map(|input| match input {
            FnArg::Typed(typed) if !is_context(&typed.ty) => Some(tokens_text(typed)),
            _ => None,
        }));
        return Err(syn::Error::new_spanned(
            ty,
            format!(
                "the entity context comes first, right after `self`: `fn {}({})`",
                sig.ident,
                params.join(", ")
            ),
        ));
    }
    match ty {
        Type::Reference(reference) if reference.mutability.is_none() => Ok(()),
        _ => Err(syn::Error::new_spanned(
            ty,
            format!("the runtime lends the entity context to the operation: take it as `{wanted}`"),
        )),
    }
}

#[derive(Clone, Copy)]
enum Position {
    Argument,
    Output,
}

/// Arguments and outputs travel as JSON: no references, no `impl Trait`.
fn check_owned(ty: &Type, position: Position) -> syn::Result<()> {
    let mut finder = Borrowed::default();
    finder.visit_type(ty);
    if let Some(reference) = finder.reference {
        let owned = owned_text(reference);
        let written = tokens_text(reference);
        let message = match position {
            Position::Argument => format!(
                "operation arguments are decoded from JSON into values the operation owns, so they cannot be references: take `{owned}` instead of `{written}`"
            ),
            Position::Output => format!(
                "the output of entity operations is sent as JSON to the caller, which decodes it, so it cannot be a reference: return `{owned}` instead of `{written}`"
            ),
        };
        return Err(syn::Error::new_spanned(reference, message));
    }
    if let Some(impl_trait) = finder.impl_trait {
        let message = match position {
            Position::Argument => {
                "operation arguments are decoded from JSON, so they need a concrete type, not `impl Trait`"
            }
            Position::Output => {
                "the output of entity operations is decoded from JSON by the caller, so it needs a concrete type, not `impl Trait`"
            }
        };
        return Err(syn::Error::new_spanned(impl_trait, message));
    }
    Ok(())
}

/// The first reference and the first `impl Trait` in a type.
#[derive(Default)]
struct Borrowed<'a> {
    reference: Option<&'a TypeReference>,
    impl_trait: Option<&'a syn::TypeImplTrait>,
}

impl<'a> Visit<'a> for Borrowed<'a> {
    fn visit_type_reference(&mut self, reference: &'a TypeReference) {
        self.reference.get_or_insert(reference);
    }

    fn visit_type_impl_trait(&mut self, impl_trait: &'a syn::TypeImplTrait) {
        self.impl_trait.get_or_insert(impl_trait);
    }
}

/// What to write instead of a reference: `String` for `&str`, `Vec<T>` for `&[T]`, `T`
/// otherwise.
fn owned_text(reference: &TypeReference) -> String {
    match &*reference.elem {
        Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", tokens_text(&slice.elem)),
        other => tokens_text(other),
    }
}

/// Code as a user would write it (`Vec<u64>`, not `Vec < u64 >`), for messages.
fn tokens_text(tokens: &dyn ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (index, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let before = index.checked_sub(1).map(|i| chars[i]);
            let after_path = index >= 2 && chars[index - 1] == ':' && chars[index - 2] == ':';
            let next = chars.get(index + 1).copied();
            let drop = matches!(before, Some('<' | '&' | '(' | '['))
                || after_path
                || matches!(next, Some('<' | '>' | ',' | ')' | ']' | ':'));
            if drop {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Reads the return type: nothing, a value, or `Result<Output, Error>`.
fn output(ret: &ReturnType, self_ty: &Type) -> syn::Result<Output> {
    let ReturnType::Type(_, ty) = ret else {
        return Ok(Output::Unit);
    };
    if let Type::Path(path) = &**ty
        && let Some(last) = path.path.segments.last()
        && last.ident == "Result"
    {
        let types: Vec<&Type> = match &last.arguments {
            PathArguments::AngleBracketed(arguments) => arguments
                .args
                .iter()
                .filter_map(|argument| match argument {
                    GenericArgument::Type(ty) => Some(ty),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let [ok, error] = types[..] else {
            return Err(syn::Error::new_spanned(
                ty,
                "entity operations that can fail return `Result<Output, Error>`, spelled out so the macro can read the output type (for example `Result<u64, Error>`)",
            ));
        };
        check_owned(ok, Position::Output)?;
        return Ok(Output::Result {
            ok: replace_self(ok, self_ty),
            error: Box::new(replace_self(error, self_ty)),
        });
    }
    check_owned(ty, Position::Output)?;
    Ok(Output::Value(replace_self(ty, self_ty)))
}

/// `Self` in an operation's signature means the entity type; in the generated proxies it
/// would mean the proxy.
fn replace_self(ty: &Type, self_ty: &Type) -> Type {
    struct ReplaceSelf<'a>(&'a Type);

    impl VisitMut for ReplaceSelf<'_> {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if let Type::Path(path) = ty
                && path.qself.is_none()
                && path.path.is_ident("Self")
            {
                *ty = self.0.clone();
                return;
            }
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }

    let mut ty = ty.clone();
    ReplaceSelf(self_ty).visit_type_mut(&mut ty);
    ty
}

fn generate(
    type_ident: &Ident,
    self_ty: &Type,
    name: &LitStr,
    operations: &[Operation],
) -> TokenStream {
    // Spanned at the type in `impl Counter`: "method `nope` not found for this struct"
    // points there, at the operations.
    let (type_ident, at) = (type_ident.unraw(), self_ty.span());
    let [calls, signals, client_signals] = proxy_names(&type_ident, operations, at);
    let call_methods = operations.iter().map(|op| {
        let (ident, op_name, cfgs) = (&op.ident, &op.name, &op.cfgs);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let (input, input_ty) = input(op);
        let output = op.output.value_type();
        quote_spanned! {ident.span()=>
            #(#cfgs)*
            #[doc = concat!("Calls operation `", #op_name, "` and waits for its result.")]
            pub fn #ident(&self, #(#params),*) -> ::durable::DurableTask<#output> {
                self.0.call::<#input_ty, #output>(#op_name, &#input)
            }
        }
    });
    let signal_methods = operations.iter().map(|op| {
        let (ident, op_name, cfgs) = (&op.ident, &op.name, &op.cfgs);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let (input, input_ty) = input(op);
        quote_spanned! {ident.span()=>
            #(#cfgs)*
            #[doc = concat!("Signals operation `", #op_name, "` (fire-and-forget).")]
            pub fn #ident(&self, #(#params),*) {
                self.0.signal::<#input_ty>(#op_name, &#input)
            }
        }
    });
    let client_methods = operations.iter().map(|op| {
        let (ident, op_name, cfgs) = (&op.ident, &op.name, &op.cfgs);
        let params = op.args.iter().map(|(arg, ty)| quote!(#arg: #ty));
        let (input, input_ty) = input(op);
        // The future is awaited at the argument too, so a type that is not `Serialize` is
        // reported there once.
        let signal = quote_spanned!(input_span(op)=> self.0.signal::<#input_ty>(#op_name, &#input).await);
        quote_spanned! {ident.span()=>
            #(#cfgs)*
            #[doc = concat!("Signals operation `", #op_name, "`; returns once the signal is stored.")]
            pub async fn #ident(&self, #(#params),*) -> ::core::result::Result<(), ::durable::client::Error> {
                #signal
            }
        }
    });
    let arms = operations.iter().map(|op| dispatch_arm(op, name));
    let read_only = operations.iter().filter(|op| op.read_only).map(|op| {
        let (op_name, cfgs) = (&op.name, &op.cfgs);
        quote!(#(#cfgs)* #op_name => true,)
    });
    let checks = operations.iter().map(|op| {
        let (op_name, cfgs) = (&op.name, &op.cfgs);
        let check = match op.args.as_slice() {
            [] => quote!(::durable::entity::check_no_input(input)),
            _ => {
                let arguments = arguments_fn(op);
                quote! {
                    #arguments(input)
                        .map(::core::mem::drop)
                        .map_err(::durable::OperationError::InvalidInput)
                }
            }
        };
        quote!(#(#cfgs)* #op_name => #check,)
    });
    // Where the type is written, when `impl Counter` names it here; a path to elsewhere
    // keeps the trait's default (the compiler's name of the type).
    let rust_path = matches!(self_ty, Type::Path(path) if path.qself.is_none() && path.path.segments.len() == 1)
        .then(|| {
            let text = type_ident.to_string();
            quote! {
                fn rust_path() -> &'static str {
                    ::core::concat!(::core::module_path!(), "::", #text)
                }
            }
        });
    let decoders = operations.iter().filter_map(arguments_decoder);
    let names = operations.iter().map(|op| {
        let (op_name, cfgs) = (&op.name, &op.cfgs);
        quote!(#(#cfgs)* operations.push(#op_name);)
    });
    // The impl is spanned at the type, so that a state that is not `Default`, `Serialize`
    // or `Deserialize` is reported once, at `impl Counter`.
    let entity_impl = quote_spanned!(self_ty.span()=> impl ::durable::Entity for #self_ty);
    let calls_struct =
        quote_spanned!(at=> pub struct #calls<'a>(::durable::entity::EntityProxy<'a>););
    let signals_struct =
        quote_spanned!(at=> pub struct #signals<'a>(::durable::entity::EntitySignaler<'a>););
    let client_signals_struct =
        quote_spanned!(at=> pub struct #client_signals(::durable::client::ClientSignaler););
    let client_impl =
        quote_spanned!(self_ty.span()=> impl ::durable::client::EntityClient for #self_ty);
    let span = Span::call_site();
    // In an anonymous `const`, so the proxies are reached only through the `Entity` impl
    // and two `#[entity]` blocks for one type clash only as two impls of `Entity`.
    quote_spanned! {span=>
        const _: () = {
            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code)]
            #calls_struct

            #[allow(dead_code)]
            impl<'a> #calls<'a> {
                #(#call_methods)*

                /// The entity's signals (fire-and-forget operations).
                pub fn signal(&self) -> #signals<'a> {
                    #signals(self.0.signaler())
                }

                /// The entity's id (an error when its key is invalid).
                pub fn id(&self) -> ::core::result::Result<&::durable::EntityId, ::durable::Error> {
                    self.0.id()
                }
            }

            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code)]
            #signals_struct

            #[allow(dead_code)]
            impl #signals<'_> {
                #(#signal_methods)*
            }

            #[doc(hidden)]
            #[allow(non_camel_case_types, dead_code)]
            #client_signals_struct

            #[allow(dead_code)]
            impl #client_signals {
                #(#client_methods)*
            }

            #entity_impl {
                const NAME: &'static str = #name;
                type Calls<'a> = #calls<'a>;
                type Signals<'a> = #signals<'a>;

                fn calls(proxy: ::durable::entity::EntityProxy<'_>) -> #calls<'_> {
                    #calls(proxy)
                }

                fn signals(signaler: ::durable::entity::EntitySignaler<'_>) -> #signals<'_> {
                    #signals(signaler)
                }

                #[allow(clippy::useless_conversion, clippy::unit_arg, unreachable_patterns)]
                fn dispatch(
                    &mut self,
                    __durable_ctx: &::durable::EntityContext,
                    __durable_operation: &str,
                    __durable_input: &::durable::Json,
                ) -> ::core::result::Result<::durable::Json, ::durable::Error> {
                    let _ = (__durable_ctx, __durable_input);
                    match __durable_operation {
                        #(#arms)*
                        other => ::core::result::Result::Err(::durable::entity::unknown_operation(
                            #name,
                            other,
                            __durable_operations(),
                        )),
                    }
                }

                #[allow(unreachable_patterns)]
                fn is_read_only(operation: &str) -> bool {
                    match operation {
                        #(#read_only)*
                        _ => false,
                    }
                }

                fn operations() -> &'static [&'static str] {
                    __durable_operations()
                }

                #[allow(unreachable_patterns)]
                fn check_operation(
                    operation: &str,
                    input: &::durable::Json,
                ) -> ::core::result::Result<(), ::durable::OperationError> {
                    match operation {
                        #(#checks)*
                        _ => ::core::result::Result::Err(::durable::OperationError::Unknown),
                    }
                }

                #rust_path
            }

            #client_impl {
                type ClientSignals = #client_signals;

                fn client_signals(signaler: ::durable::client::ClientSignaler) -> #client_signals {
                    #client_signals(signaler)
                }
            }

            #(#decoders)*

            /// The names of the operations compiled in (each one's `cfg`s hold).
            fn __durable_operations() -> &'static [&'static str] {
                static OPERATIONS: ::std::sync::OnceLock<::std::vec::Vec<&'static str>> =
                    ::std::sync::OnceLock::new();
                OPERATIONS.get_or_init(|| {
                    #[allow(unused_mut)]
                    let mut operations = ::std::vec::Vec::new();
                    #(#names)*
                    operations
                })
            }
        };
    }
}

/// The names of the three proxies: `CounterCalls`, `CounterSignals`,
/// `CounterClientSignals`, which compile errors show ("no method named `nope` found for
/// struct `CounterCalls`"). They live in an anonymous `const` beside copies of the
/// operations' signatures, so a type of the same name in a signature would resolve to the
/// proxy: then, and only then, the names take a `__` prefix that no one writes.
fn proxy_names(type_ident: &Ident, operations: &[Operation], at: Span) -> [Ident; 3] {
    let names = ["Calls", "Signals", "ClientSignals"].map(|suffix| format!("{type_ident}{suffix}"));
    let mut written = Idents::default();
    for op in operations {
        for (_, ty) in &op.args {
            written.visit_type(ty);
        }
        if let Output::Value(ty) | Output::Result { ok: ty, .. } = &op.output {
            written.visit_type(ty);
        }
    }
    let clash = names.iter().any(|name| written.0.contains(name));
    let prefix = if clash { "__" } else { "" };
    names.map(|name| format_ident!("{prefix}{name}", span = at))
}

/// Every identifier in a type's paths.
#[derive(Default)]
struct Idents(BTreeSet<String>);

impl Visit<'_> for Idents {
    fn visit_ident(&mut self, ident: &Ident) {
        self.0.insert(ident.unraw().to_string());
    }
}

/// The value sent as an operation's input (nothing, its one argument, or a tuple of them)
/// and its type, spelled out so that a type that is not `Serialize` is reported at the
/// argument (or, for several, at the parameter list).
fn input(op: &Operation) -> (TokenStream, TokenStream) {
    let idents: Vec<&Ident> = op.args.iter().map(|(ident, _)| ident).collect();
    let types: Vec<&Type> = op.args.iter().map(|(_, ty)| ty).collect();
    match (idents.as_slice(), types.as_slice()) {
        ([], _) => (quote!(()), quote!(())),
        ([one], [ty]) => (quote!(#one), quote!(#ty)),
        (many, tys) => (
            quote!((#(#many),*)),
            quote_spanned!(op.params_span=> (#(#tys),*)),
        ),
    }
}

/// Where errors about the input as a whole point: the argument, or the parameter list.
fn input_span(op: &Operation) -> Span {
    match op.args.as_slice() {
        [(_, ty)] => ty.span(),
        _ => op.params_span,
    }
}

/// The name of the function that decodes an operation's arguments.
fn arguments_fn(op: &Operation) -> Ident {
    format_ident!("__durable_arguments_{}", op.ident.unraw())
}

/// The function that decodes an operation's arguments from JSON, which both the dispatch
/// and the check of a client's signal call: a type that is not `Deserialize` is reported
/// once, at the argument.
fn arguments_decoder(op: &Operation) -> Option<TokenStream> {
    if op.args.is_empty() {
        return None;
    }
    let (_, input_ty) = input(op);
    let (arguments, cfgs) = (arguments_fn(op), &op.cfgs);
    Some(quote! {
        #(#cfgs)*
        #[allow(non_snake_case)]
        fn #arguments(
            input: &::durable::Json,
        ) -> ::core::result::Result<#input_ty, ::std::string::String> {
            ::durable::entity::decode_arguments::<#input_ty>(input)
        }
    })
}

fn dispatch_arm(op: &Operation, entity: &LitStr) -> TokenStream {
    let (ident, op_name, cfgs) = (&op.ident, &op.name, &op.cfgs);
    let idents: Vec<&Ident> = op.args.iter().map(|(ident, _)| ident).collect();
    let arguments = arguments_fn(op);
    let decoded = quote! {
        #arguments(__durable_input).map_err(|message| {
            ::durable::entity::invalid_input(#entity, #op_name, message)
        })?
    };
    let decode = match idents.as_slice() {
        [] => quote!(),
        [one] => quote!(let #one = #decoded;),
        many => quote!(let (#(#many),*) = #decoded;),
    };
    let context = op.takes_context.then(|| quote!(__durable_ctx,));
    let call = quote!(self.#ident(#context #(#idents),*));
    let run = match &op.output {
        Output::Unit => quote!({ #call; }; let __durable_output = ();),
        Output::Value(_) => quote!(let __durable_output = #call;),
        Output::Result { error, .. } => {
            // Spanned at the error type: one that does not convert is reported there.
            let convert = quote_spanned! {error.span()=>
                <#error as ::core::convert::Into<::durable::Error>>::into(error)
            };
            quote! {
                let __durable_output = match #call {
                    ::core::result::Result::Ok(output) => output,
                    ::core::result::Result::Err(error) => {
                        return ::core::result::Result::Err(#convert);
                    }
                };
            }
        }
    };
    let output = op.output.value_type();
    quote! {
        #(#cfgs)*
        #op_name => {
            #decode
            #run
            ::durable::entity::encode_output::<#output>(#entity, #op_name, &__durable_output)
        }
    }
}
