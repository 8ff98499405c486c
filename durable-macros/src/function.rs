//! Expansion of `#[activity]` and `#[orchestrator]`: read the signature, reject what
//! cannot work (with an error at the offending part and what to write instead), and emit
//! the unit struct with its `Activity`/`Orchestrator` and `Registrable` impls.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, ItemFn, LitStr, Pat, PathArguments, ReturnType, Type,
    Visibility,
};

/// Which macro is expanding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Activity,
    Orchestrator,
}

impl Kind {
    fn attribute(self) -> &'static str {
        match self {
            Kind::Activity => "#[activity]",
            Kind::Orchestrator => "#[orchestrator]",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Activity => "activities",
            Kind::Orchestrator => "orchestrators",
        }
    }

    fn context(self) -> &'static str {
        match self {
            Kind::Activity => "ActivityContext",
            Kind::Orchestrator => "OrchestrationContext",
        }
    }
}

/// The parts of the function the expansion needs.
struct Parts {
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: syn::Ident,
    name: LitStr,
    context: (Box<Pat>, Box<Type>),
    input: Option<(Box<Pat>, Box<Type>)>,
    output: Type,
    error: Type,
    return_type: Type,
    body: Box<syn::Block>,
    signature_span: Span,
}

/// Expands one macro invocation; errors become `compile_error!`s.
pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let parts = syn::parse2::<ItemFn>(item.clone()).and_then(|function| {
        let name = parse_options(kind, attr)?;
        analyze(kind, function, name)
    });
    let mut parts = match parts {
        Ok(parts) => parts,
        // Keep the item so that one error does not cascade into "cannot find" errors.
        Err(error) => {
            let error = error.into_compile_error();
            return quote!(#error #item);
        }
    };
    let checked = match kind {
        Kind::Orchestrator => crate::check::check_body(&mut parts.body),
        Kind::Activity => Ok(()),
    };
    let generated = generate(kind, parts);
    match checked {
        Ok(()) => generated,
        // The function still exists, so code that uses it reports nothing more.
        Err(error) => {
            let error = error.into_compile_error();
            quote!(#error #generated)
        }
    }
}

/// Reads `name = "..."`, the only option.
fn parse_options(kind: Kind, attr: TokenStream) -> syn::Result<Option<LitStr>> {
    let mut name = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let value: LitStr = meta.value()?.parse()?;
            if value.value().is_empty() {
                return Err(syn::Error::new(value.span(), "the name must not be empty"));
            }
            name = Some(value);
            Ok(())
        } else {
            Err(meta.error(format!(
                "unknown option of {}; the only option is `name = \"...\"`",
                kind.attribute()
            )))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

fn analyze(kind: Kind, function: ItemFn, name: Option<LitStr>) -> syn::Result<Parts> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = function;
    let plural = kind.plural();
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!(
                "{plural} must be `async fn`: write `async fn {}(...)`",
                sig.ident
            ),
        ));
    }
    if let Some(constness) = sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            format!("{plural} cannot be `const`"),
        ));
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        return Err(syn::Error::new(
            unsafety.span(),
            format!("{plural} cannot be `unsafe`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            format!("{plural} cannot have an ABI"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!(
                "{plural} cannot be generic: the runtime finds them by name and decodes their input from JSON, so their types must be concrete"
            ),
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            format!("{plural} cannot be variadic"),
        ));
    }
    let signature_span = sig.span();
    let mut params = sig.inputs.iter();
    let context = match params.next() {
        Some(param) => context_param(kind, param)?,
        None => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "{plural} take their context first: `{}(ctx: {}, input: T)`",
                    sig.ident,
                    kind.context()
                ),
            ));
        }
    };
    let input = params
        .next()
        .map(|param| input_param(kind, param))
        .transpose()?;
    if let Some(extra) = params.next() {
        return Err(syn::Error::new_spanned(
            extra,
            format!(
                "{plural} take one input after the context; pass several values as a tuple or a struct: `(a, b): (u64, String)`"
            ),
        ));
    }
    let (return_type, output, error) = result_types(kind, &sig.output)?;
    let name = name.unwrap_or_else(|| LitStr::new(&sig.ident.to_string(), sig.ident.span()));
    Ok(Parts {
        attrs,
        vis,
        ident: sig.ident,
        name,
        context,
        input,
        output,
        error,
        return_type,
        body: block,
        signature_span,
    })
}

fn context_param(kind: Kind, param: &FnArg) -> syn::Result<(Box<Pat>, Box<Type>)> {
    let FnArg::Typed(typed) = param else {
        return Err(syn::Error::new(
            param.span(),
            format!(
                "{} are free functions, not methods: remove `self`",
                kind.plural()
            ),
        ));
    };
    let is_context = matches!(&*typed.ty, Type::Path(path)
        if path.qself.is_none()
            && path.path.segments.last().is_some_and(|segment| segment.ident == kind.context()));
    if !is_context {
        return Err(syn::Error::new_spanned(
            &typed.ty,
            format!(
                "the first parameter of {} must be the context, taken by value: `ctx: {}`",
                kind.attribute(),
                kind.context()
            ),
        ));
    }
    Ok((typed.pat.clone(), typed.ty.clone()))
}

fn input_param(kind: Kind, param: &FnArg) -> syn::Result<(Box<Pat>, Box<Type>)> {
    let FnArg::Typed(typed) = param else {
        return Err(syn::Error::new(param.span(), "unexpected `self` parameter"));
    };
    match &*typed.ty {
        Type::Reference(reference) => {
            let why = match kind {
                Kind::Activity => "the input is decoded from JSON into a value the activity owns",
                Kind::Orchestrator => {
                    "the input is decoded from history on every replay, so the orchestrator owns it; a borrowed or `&mut` input cannot be replayed"
                }
            };
            let mut message = format!("{} cannot take a reference: {why}", kind.plural());
            if let Type::Path(path) = &*reference.elem
                && path.path.is_ident("str")
            {
                message.push_str("; take `String` instead of `&str`");
            } else {
                message.push_str("; take the type by value");
            }
            Err(syn::Error::new_spanned(&typed.ty, message))
        }
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            &typed.ty,
            format!(
                "{} need a concrete input type to decode from JSON, not `impl Trait`",
                kind.plural()
            ),
        )),
        _ => Ok((typed.pat.clone(), typed.ty.clone())),
    }
}

/// Splits `Result<Output, Error>` into its parts.
fn result_types(kind: Kind, output: &ReturnType) -> syn::Result<(Type, Type, Type)> {
    let advice = format!(
        "{} must return `Result<Output, Error>`, spelled out so the macro can read the output type (for example `Result<u64, Error>`)",
        kind.plural()
    );
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new(output.span(), advice));
    };
    let Type::Path(path) = &**ty else {
        return Err(syn::Error::new_spanned(ty, advice));
    };
    let Some(last) = path.path.segments.last() else {
        return Err(syn::Error::new_spanned(ty, advice));
    };
    let PathArguments::AngleBracketed(arguments) = &last.arguments else {
        return Err(syn::Error::new_spanned(ty, advice));
    };
    let types: Vec<&Type> = arguments
        .args
        .iter()
        .filter_map(|argument| match argument {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match (last.ident == "Result", types.as_slice()) {
        (true, [Type::Reference(reference), _]) => {
            let owned = match &*reference.elem {
                Type::Path(path) if path.path.is_ident("str") => "`String` instead of `&str`",
                _ => "the type by value",
            };
            Err(syn::Error::new_spanned(
                reference,
                format!(
                    "the output of {} is stored as JSON and decoded again by whoever reads it, so it cannot be a reference: return {owned}",
                    kind.plural()
                ),
            ))
        }
        (true, [output, error]) => Ok(((**ty).clone(), (*output).clone(), (*error).clone())),
        _ => Err(syn::Error::new_spanned(ty, advice)),
    }
}

/// Emits the unit struct and its impls.
fn generate(kind: Kind, parts: Parts) -> TokenStream {
    let Parts {
        attrs,
        vis,
        ident,
        name,
        context: (context_pat, context_ty),
        input,
        output,
        error,
        return_type,
        body,
        signature_span,
    } = parts;
    let (docs, other_attrs): (Vec<&Attribute>, Vec<&Attribute>) =
        attrs.iter().partition(|attr| attr.path().is_ident("doc"));
    let body_fn = format_ident!("__{}_body", ident);
    let input_ty = match &input {
        Some((_, ty)) => quote!(#ty),
        None => quote!(()),
    };
    let (body_params, call) = match &input {
        Some((pat, ty)) => (
            quote!(#context_pat: #context_ty, #pat: #ty),
            quote!(#body_fn(__durable_ctx, __durable_input)),
        ),
        None => (
            quote!(#context_pat: #context_ty),
            quote!({ let () = __durable_input; #body_fn(__durable_ctx) }),
        ),
    };
    // The conversion of the user's error type, spanned at the error type so that a type
    // that does not convert is reported there.
    let convert = quote_spanned!(error.span()=> ::core::convert::Into::<::durable::Error>::into);
    let (trait_path, context_path, future, register, replace) = match kind {
        Kind::Activity => (
            quote!(::durable::Activity),
            quote!(::durable::ActivityContext),
            quote!(::durable::BoxFuture),
            quote!(add_activity),
            quote!(replace_activity),
        ),
        Kind::Orchestrator => (
            quote!(::durable::Orchestrator),
            quote!(::durable::OrchestrationContext),
            quote!(::durable::LocalBoxFuture),
            quote!(add_orchestrator),
            quote!(replace_orchestrator),
        ),
    };
    // Where the function is written, for the error that names two functions of one name.
    let ident_text = ident.unraw().to_string();
    // Spanned at the signature: a future that is not `Send` is reported at the function.
    let boxed = quote_spanned! {signature_span=>
        ::std::boxed::Box::pin(async move {
            let __durable_result: #return_type = #call.await;
            __durable_result.map_err(#convert)
        })
    };
    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #ident;

        impl #trait_path for #ident {
            type Input = #input_ty;
            type Output = #output;
            const NAME: &'static str = #name;

            fn rust_path() -> &'static str {
                ::core::concat!(::core::module_path!(), "::", #ident_text)
            }

            // `E` may already be `durable::Error`; the conversion is for every other `E`.
            #[allow(clippy::useless_conversion)]
            fn run(
                __durable_ctx: #context_path,
                __durable_input: Self::Input,
            ) -> #future<'static, ::core::result::Result<Self::Output, ::durable::Error>> {
                #(#other_attrs)*
                async fn #body_fn(#body_params) -> #return_type #body
                #boxed
            }
        }

        impl ::durable::Registrable for #ident {
            fn register(self, registry: &mut ::durable::Registry) {
                registry.#register::<Self>();
            }

            fn replace(self, registry: &mut ::durable::Registry) {
                registry.#replace::<Self>();
            }
        }
    }
}
