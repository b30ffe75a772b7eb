//! `#[spore_process::process]`: registers an `async fn` as a process
//! function that any context running the same build can spawn. Use it
//! through the `spore-process` crate.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{FnArg, ItemFn, Pat, ReturnType, Type, parse_macro_input, spanned::Spanned};

/// Registers a process function. See `spore_process::process`.
#[proc_macro_attribute]
pub fn process(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            Span::call_site(),
            "#[spore_process::process] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a #[spore_process::process] function must be an async fn: it runs as a process",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a #[spore_process::process] function cannot be generic: its name must identify one concrete function",
        ));
    }
    if sig.variadic.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            "a #[spore_process::process] function must be a plain async Rust fn",
        ));
    }
    let mut arg_types = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    "a #[spore_process::process] function cannot take self",
                ));
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new(
                        r.span(),
                        "arguments of a #[spore_process::process] function must be owned (they are deserialized in the context that spawns it)",
                    ));
                }
                let name = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__arg{}", i),
                };
                arg_names.push(format_ident!("__spore_a{}_{}", i, name));
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    let vis = &func.vis;
    let name = &sig.ident;
    let attrs = &func.attrs;
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let impl_name = format_ident!("__spore_process_impl_{}", name);
    let marker = format_ident!("__spore_process_{}", name);
    let mut impl_fn = func.clone();
    impl_fn.sig.ident = impl_name.clone();
    impl_fn.vis = syn::Visibility::Inherited;
    impl_fn.attrs.retain(|a| !a.path().is_ident("doc"));
    let fn_ptr_ty = quote!(fn(#(#arg_types),*) -> ::spore_process::__private::BoxProcess<#ret_ty>);

    Ok(quote! {
        #impl_fn

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #marker { _private: () }

        #(#attrs)*
        #[allow(non_upper_case_globals)]
        #vis const #name: #marker = #marker { _private: () };

        impl ::core::ops::Deref for #marker {
            type Target = #fn_ptr_ty;
            fn deref(&self) -> &Self::Target {
                const F: #fn_ptr_ty = |#(#arg_names),*| ::std::boxed::Box::pin(#impl_name(#(#arg_names),*));
                &F
            }
        }

        impl ::spore_process::ProcessFunction for #marker {
            type Args = (#(#arg_types,)*);
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
        }

        const _: () = {
            #[::spore_process::__private::linkme::distributed_slice(::spore_process::__private::PROCESS_FUNCTIONS)]
            #[linkme(crate = ::spore_process::__private::linkme)]
            static ENTRY: ::spore_process::__private::ProcessEntry = ::spore_process::__private::ProcessEntry {
                name: <#marker as ::spore_process::ProcessFunction>::NAME,
                start: |__args| {
                    let (#(#arg_names,)*): (#(#arg_types,)*) =
                        ::spore_process::__private::decode_args(<#marker as ::spore_process::ProcessFunction>::NAME, __args)?;
                    ::std::result::Result::Ok(::spore_process::__private::into_process(#impl_name(#(#arg_names),*)))
                },
            };
        };
    })
}
