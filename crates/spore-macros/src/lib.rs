//! Procedural macros for spore. Use them through the `spore` crate.
//!
//! `#[spore::remote]` registers a function at compile time so that any
//! context running the same build can be asked to run it. See the `spore`
//! crate's documentation of `remote` for the full contract.
//! `#[spore_process::process]` (used through `spore-process`) registers a
//! process function the same way.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type, parse_macro_input, spanned::Spanned};

/// Registers a function so other contexts can call it. See `spore::remote`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(Span::call_site(), "#[spore::remote] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    match expand(func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// The checks both attributes make on the function's signature: one
/// concrete, plain Rust fn with owned arguments. Returns the names the
/// generated code gives the arguments, and their types.
fn checked_args(sig: &syn::Signature, attr: &str) -> syn::Result<(Vec<Ident>, Vec<Type>)> {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!(
                "a {attr} function cannot be generic: its name must identify one concrete function"
            ),
        ));
    }
    if sig.variadic.is_some() || sig.unsafety.is_some() || sig.abi.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            format!("a {attr} function must be a plain (optionally async) Rust fn"),
        ));
    }
    let mut arg_types = Vec::new();
    let mut arg_names = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new(
                    r.span(),
                    format!("a {attr} function cannot take self"),
                ));
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new(
                        r.span(),
                        format!(
                            "arguments of a {attr} function must be owned (they are deserialized); use String instead of &str, Vec<T> instead of &[T]"
                        ),
                    ));
                }
                let name = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__spore_arg{}", i),
                };
                arg_names.push(format_ident!("__spore_a{}_{}", i, name));
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    Ok((arg_names, arg_types))
}

fn expand(func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    let (arg_names, arg_types) = checked_args(sig, "#[spore::remote]")?;

    let name = &sig.ident;
    let is_async = sig.asyncness.is_some();
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let fallible = returns_result(&ret_ty);

    let impl_name = format_ident!("__spore_impl_{}", name);
    let marker = format_ident!("__spore_remote_{}", name);
    let entry = Ident::new(&format!("__SPORE_ENTRY_{name}"), name.span());

    let mut impl_fn = func.clone();
    impl_fn.sig.ident = impl_name.clone();
    impl_fn.vis = syn::Visibility::Inherited;
    impl_fn.attrs.retain(|a| !a.path().is_ident("doc"));

    let output_ty = if fallible {
        quote!(<#ret_ty as ::spore::__private::RemoteResult>::Ok)
    } else {
        quote!(#ret_ty)
    };
    let encode = if fallible {
        quote!(::spore::__private::encode_result::<#ret_ty>)
    } else {
        quote!(::spore::__private::encode_value::<#ret_ty>)
    };
    let fn_ptr_ty = if is_async {
        quote!(fn(#(#arg_types),*) -> ::spore::__private::BoxFuture<#ret_ty>)
    } else {
        quote!(fn(#(#arg_types),*) -> #ret_ty)
    };
    let fn_ptr_value = if is_async {
        quote!(|#(#arg_names),*| ::std::boxed::Box::pin(#impl_name(#(#arg_names),*)))
    } else {
        quote!(#impl_name)
    };
    let invoke = if is_async {
        quote! {
            ::spore::__private::Invoke::Async(|__args| {
                ::std::boxed::Box::pin(async move {
                    let (#(#arg_names,)*): (#(#arg_types,)*) =
                        ::spore::__private::decode_args(<#marker as ::spore::RemoteFunction>::NAME, &__args)?;
                    #encode(#impl_name(#(#arg_names),*).await)
                })
            })
        }
    } else {
        quote! {
            ::spore::__private::Invoke::Blocking(|__args| {
                let (#(#arg_names,)*): (#(#arg_types,)*) =
                    ::spore::__private::decode_args(<#marker as ::spore::RemoteFunction>::NAME, __args)?;
                #encode(#impl_name(#(#arg_names),*))
            })
        }
    };

    let marker_items = marker_items(&func, &marker, &fn_ptr_ty, &fn_ptr_value);
    Ok(quote! {
        #impl_fn

        #marker_items

        impl ::spore::RemoteFunction for #marker {
            type Args = (#(#arg_types,)*);
            type Output = #output_ty;
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name));
        }

        #[::spore::__private::linkme::distributed_slice(::spore::__private::REMOTE_FUNCTIONS)]
        #[linkme(crate = ::spore::__private::linkme)]
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #entry: ::spore::__private::RemoteEntry = ::spore::__private::RemoteEntry {
            name: <#marker as ::spore::RemoteFunction>::NAME,
            invoke: #invoke,
        };
    })
}

/// Registers an `async fn` as a process function that any context of the
/// tree can be asked to spawn. Use it as `#[spore_process::process]`; see
/// that crate's documentation.
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
    match expand_process(func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// `#[spore_process::process]`: the function, a marker constant that
/// names it (and derefs to a function returning its boxed future), its
/// `ProcessFunction` impl and its registry entry. Everything is reached
/// through `::spore_process`.
fn expand_process(func: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "a #[spore_process::process] function must be an async fn: it runs as a process",
        ));
    }
    let (arg_names, arg_types) = checked_args(sig, "#[spore_process::process]")?;
    let name = &sig.ident;
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
    let fn_ptr_value =
        quote!(|#(#arg_names),*| ::std::boxed::Box::pin(#impl_name(#(#arg_names),*)));
    let marker_items = marker_items(&func, &marker, &fn_ptr_ty, &fn_ptr_value);

    Ok(quote! {
        #impl_fn

        #marker_items

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

/// The marker type and the constant named like `func` that stands for it
/// (keeping `func`'s attributes and docs), which derefs to a plain function
/// pointer of type `fn_ptr_ty` (`fn_ptr_value`), so the name stays
/// callable. Shared by `#[spore::remote]` and `#[spore_process::process]`.
fn marker_items(
    func: &ItemFn,
    marker: &syn::Ident,
    fn_ptr_ty: &proc_macro2::TokenStream,
    fn_ptr_value: &proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let (vis, name, attrs) = (&func.vis, &func.sig.ident, &func.attrs);
    quote! {
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
                const F: #fn_ptr_ty = #fn_ptr_value;
                &F
            }
        }
    }
}

/// Whether the declared return type is spelled `...::Result<..>`; such
/// functions report `Err` as a remote error instead of serializing it.
fn returns_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}
