//! `#[interface]`: one declaration of a plugin interface, everything mechanical generated.
//!
//! Put on a safe trait in `plugin-abi` (`pub trait KeyValueBasic: Driver { async fn get(&self,
//! key: &str) -> PluginResult<Option<Vec<u8>>>; … }`), it emits, in the same module:
//!
//! - the trait plugin authors implement (each `async fn` becomes
//!   `fn … -> impl Future<Output = …> + Send`);
//! - `FfiX`, the `#[sabi_trait]` object that crosses the library boundary, and its box
//!   `XBox` (types spelled by [`ffi_type`]; the last method ends the 1.0 prefix);
//! - the plugin-side adapter `impl<D: X> FfiX for Adapter<D>`;
//! - `DynX`, an object-safe form with a blanket impl for every `X`, so the host can hold
//!   a driver compiled into itself (process isolation's forwarder) without crossing FFI;
//! - the host's `XHandle`, calling either form and timing every call;
//! - `XCall`, the interface's calls as plain serde values, its `dispatch` onto a handle,
//!   and the forwarder `impl<T: Transport + Driver> X for T` (unless `manual_remote`).
//!
//! Conversions are not generated per method: every plain type has one `Crossing` (or
//! `Returned`) impl in `plugin_abi::ffi::crossing`, which the generated code calls.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::visit_mut::VisitMut;
use syn::{
    parse_macro_input, spanned::Spanned, Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, Pat,
    PathArguments, ReturnType, TraitItem, Type,
};

#[proc_macro_attribute]
pub fn interface(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let declaration = parse_macro_input!(item as ItemTrait);
    match Interface::parse(options, declaration) {
        Ok(interface) => interface.expand().into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// `#[interface]` or `#[interface(manual_remote)]`: the interface's remote calls are
/// written by hand (it hands out something a wire cannot carry as a value, like an upload).
struct Options {
    manual_remote: bool,
}

impl syn::parse::Parse for Options {
    fn parse(input: syn::parse::ParseStream) -> syn::Result<Self> {
        if input.is_empty() {
            return Ok(Options { manual_remote: false });
        }
        let word: Ident = input.parse()?;
        if word != "manual_remote" {
            return Err(Error::new(word.span(), "expected `manual_remote` or nothing"));
        }
        Ok(Options { manual_remote: true })
    }
}

/// How a parameter crosses: borrowed text is re-borrowed on the far side.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    OptionStr,
    Owned,
}

struct Param {
    name: Ident,
    ty: Type,
    kind: Kind,
}

/// An associated type (`type Upload: ObjectUpload;`) and how it crosses:
/// `#[crossing(ffi = Path, erased = Path)]`.
struct Assoc {
    name: Ident,
    ffi: Type,
    erased: Type,
}

struct Method {
    attrs: Vec<Attribute>,
    name: Ident,
    /// `async fn …(&self, …) -> PluginResult<T>`; otherwise a plain
    /// `fn …(self: Arc<Self>, …) -> Feed<T>` with a default body (derived from the others).
    is_async: bool,
    params: Vec<Param>,
    /// For async methods, `T` of `PluginResult<T>`.
    output: Type,
    /// The return type as declared (`PluginResult<T>` for async methods).
    declared_output: Type,
    /// An async method with a default body: added in a later minor release, so a plugin
    /// built before it lacks it (its FFI method answers `Unimplemented` by default).
    added: bool,
}

struct Interface {
    options: Options,
    declaration: ItemTrait,
    methods: Vec<Method>,
    assocs: Vec<Assoc>,
}

impl Interface {
    fn parse(options: Options, mut declaration: ItemTrait) -> syn::Result<Interface> {
        let mut methods = Vec::new();
        let mut assocs = Vec::new();
        for item in &mut declaration.items {
            match item {
                TraitItem::Fn(function) => methods.push(Method::parse(function)?),
                TraitItem::Type(assoc) => {
                    let crossing = take_attr(&mut assoc.attrs, "crossing").ok_or_else(|| {
                        Error::new(assoc.span(), "an associated type needs #[crossing(ffi = …, erased = …)]")
                    })?;
                    let (ffi, erased) = parse_crossing(&crossing)?;
                    assocs.push(Assoc { name: assoc.ident.clone(), ffi, erased });
                }
                other => {
                    return Err(Error::new(other.span(), "an interface declares methods and types only"))
                }
            }
        }
        if methods.is_empty() {
            return Err(Error::new(declaration.ident.span(), "an interface needs at least one method"));
        }
        Ok(Interface { options, declaration, methods, assocs })
    }

    fn expand(&self) -> Tokens {
        let pieces = [
            self.safe_trait(),
            self.ffi_trait(),
            self.adapter(),
            self.dyn_trait(),
            self.handle(),
            self.remote(),
        ];
        quote!(#(#pieces)*)
    }

    fn ident(&self, prefix: &str, suffix: &str) -> Ident {
        format_ident!("{}{}{}", prefix, self.declaration.ident, suffix)
    }

    fn assoc(&self, ty: &Type) -> Option<&Assoc> {
        let Type::Path(path) = ty else { return None };
        let segments: Vec<_> = path.path.segments.iter().collect();
        match segments.as_slice() {
            [first, second] if first.ident == "Self" => self.assocs.iter().find(|a| a.name == second.ident),
            _ => None,
        }
    }

    /// The type the host and `DynX` see for a result: an associated type's erased form.
    fn erased(&self, ty: &Type) -> Type {
        self.assoc(ty).map(|a| a.erased.clone()).unwrap_or_else(|| ty.clone())
    }

    fn ffi_output(&self, ty: &Type) -> syn::Result<Tokens> {
        match self.assoc(ty) {
            Some(assoc) => {
                let ffi = &assoc.ffi;
                Ok(quote!(#ffi))
            }
            None => ffi_type(ty),
        }
    }

    fn safe_trait(&self) -> Tokens {
        let mut declaration = self.declaration.clone();
        for (item, method) in declaration.items.iter_mut().filter_map(as_fn).zip(&self.methods) {
            if method.is_async {
                let declared = &method.declared_output;
                item.sig.asyncness = None;
                item.sig.output = syn::parse_quote! {
                    -> impl ::std::future::Future<Output = #declared> + Send
                };
                if let Some(body) = item.default.take() {
                    item.default = Some(syn::parse_quote!({ async move #body }));
                }
            }
        }
        quote!(#declaration)
    }

    fn ffi_trait(&self) -> Tokens {
        let ffi = self.ident("Ffi", "");
        let to = self.ident("Ffi", "_TO");
        let boxed = self.ident("", "Box");
        let doc =
            format!("The FFI object of [`{}`], generated from its declaration.", self.declaration.ident);
        // The 1.0 prefix ends at the last method that is not a later addition; the
        // marker never moves (docs/PLUGIN_ABI.md).
        let last = self.methods.iter().rposition(|m| !m.added).unwrap_or(0);
        let methods = self.methods.iter().enumerate().map(|(index, method)| {
            let name = &method.name;
            let params = method.params.iter().map(|param| {
                let name = ffi_param_name(param);
                let ty = ffi_type(&param.ty).unwrap_or_else(Error::into_compile_error);
                quote!(#name: #ty)
            });
            let output = self.ffi_output(&method.output).unwrap_or_else(Error::into_compile_error);
            let output = if method.is_async { quote!(crate::ffi::FfiResult<#output>) } else { output };
            let prefix = (index == last).then(|| quote!(#[sabi(last_prefix_field)]));
            let body = if method.added {
                let unused = method.params.iter().map(ffi_param_name);
                quote!({
                    let _ = (#(#unused),*);
                    crate::ffi::missing_method(stringify!(#name))
                })
            } else {
                quote!(;)
            };
            quote! {
                #prefix
                fn #name(&self, #(#params),*) -> #output #body
            }
        });
        quote! {
            #[doc = #doc]
            #[::abi_stable::sabi_trait]
            pub trait #ffi: Send + Sync {
                #(#methods)*
            }

            pub type #boxed = #to<'static, ::abi_stable::std_types::RBox<()>>;
        }
    }

    fn adapter(&self) -> Tokens {
        let trait_name = &self.declaration.ident;
        let ffi = self.ident("Ffi", "");
        let methods = self.methods.iter().map(|method| {
            let name = &method.name;
            let params = method.params.iter().map(|param| {
                let ffi_name = ffi_param_name(param);
                let ty = ffi_type(&param.ty).unwrap_or_else(Error::into_compile_error);
                quote!(#ffi_name: #ty)
            });
            let owned = method.params.iter().map(|param| {
                let (name, ffi_name, ty) = (&param.name, ffi_param_name(param), &param.ty);
                match param.kind {
                    Kind::Str => quote!(let #name: String = #ffi_name.as_str().to_owned();),
                    Kind::OptionStr => quote! {
                        let #name: Option<String> = #ffi_name.into_option().map(|s| s.as_str().to_owned());
                    },
                    Kind::Owned => quote! {
                        let #name = <#ty as crate::ffi::crossing::Crossing>::from_ffi(#ffi_name);
                    },
                }
            });
            let args: Vec<Tokens> = method.params.iter().map(borrowed_arg).collect();
            let output = self.ffi_output(&method.output).unwrap_or_else(Error::into_compile_error);
            let convert = match self.assoc(&method.output) {
                Some(assoc) => {
                    let ffi = &assoc.ffi;
                    quote!(<_ as crate::ffi::crossing::AssocIntoFfi<#ffi>>::assoc_into_ffi(value, &runtime))
                }
                None => {
                    let ty = &method.output;
                    quote!(<#ty as crate::ffi::crossing::Returned>::into_ffi(value, &runtime))
                }
            };
            if method.is_async {
                quote! {
                    fn #name(&self, #(#params),*) -> crate::ffi::FfiResult<#output> {
                        #(#owned)*
                        let runtime = self.runtime.clone();
                        self.call(
                            move |driver| async move { <D as #trait_name>::#name(&driver, #(#args),*).await },
                            move |value| #convert,
                        )
                    }
                }
            } else {
                quote! {
                    fn #name(&self, #(#params),*) -> #output {
                        #(#owned)*
                        let runtime = self.runtime.clone();
                        let driver = self.driver.clone();
                        let value = crate::ffi::bridge::guarded_feed(stringify!(#name), move || {
                            <D as #trait_name>::#name(driver, #(#args),*)
                        });
                        #convert
                    }
                }
            }
        });
        quote! {
            impl<D: #trait_name> #ffi for crate::ffi::export::Adapter<D> {
                #(#methods)*
            }
        }
    }

    fn dyn_trait(&self) -> Tokens {
        let trait_name = &self.declaration.ident;
        let dyn_name = self.ident("Dyn", "");
        let doc =
            format!("[`{trait_name}`] as an object: what the host holds of a driver compiled into itself.");
        let mut declarations = Vec::new();
        let mut bodies = Vec::new();
        for method in &self.methods {
            let name = &method.name;
            let arg_names: Vec<&Ident> = method.params.iter().map(|p| &p.name).collect();
            let output = self.erased(&method.output);
            if method.is_async {
                let params = method.params.iter().map(|param| {
                    let name = &param.name;
                    let mut ty = param.ty.clone();
                    NameLifetimes.visit_type_mut(&mut ty);
                    quote!(#name: #ty)
                });
                let signature = quote! {
                    fn #name<'life>(&'life self, #(#params),*) -> ::std::pin::Pin<Box<
                        dyn ::std::future::Future<Output = crate::PluginResult<#output>> + Send + 'life
                    >>
                };
                let call = quote!(<T as #trait_name>::#name(self, #(#arg_names),*));
                let body = match self.assoc(&method.output) {
                    Some(assoc) => {
                        let erased = &assoc.erased;
                        quote! {
                            Box::pin(async move {
                                #call.await.map(<#erased as crate::ffi::crossing::Erase<_>>::erase)
                            })
                        }
                    }
                    None => quote!(Box::pin(#call)),
                };
                declarations.push(quote!(#signature;));
                bodies.push(quote!(#signature { #body }));
            } else {
                let params = method.params.iter().map(|Param { name, ty, .. }| quote!(#name: #ty));
                let signature = quote!(fn #name(self: ::std::sync::Arc<Self>, #(#params),*) -> #output);
                declarations.push(quote!(#signature;));
                bodies.push(quote!(#signature { <T as #trait_name>::#name(self, #(#arg_names),*) }));
            }
        }
        quote! {
            #[doc = #doc]
            #[doc(hidden)]
            pub trait #dyn_name: Send + Sync + 'static {
                #(#declarations)*
            }

            impl<T: #trait_name> #dyn_name for T {
                #(#bodies)*
            }
        }
    }

    fn handle(&self) -> Tokens {
        let trait_name = &self.declaration.ident;
        let handle = self.ident("", "Handle");
        let object = self.ident("", "Object");
        let boxed = self.ident("", "Box");
        let dyn_name = self.ident("Dyn", "");
        let doc = format!(
            "The host's handle on an instance's [`{trait_name}`]: the trait's methods, timed for the instance's observer."
        );
        let methods = self.methods.iter().map(|method| {
            let Method { attrs, name, .. } = method;
            let docs: Vec<&Attribute> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
            let params = method.params.iter().map(|Param { name, ty, .. }| quote!(#name: #ty));
            let arg_names: Vec<&Ident> = method.params.iter().map(|p| &p.name).collect();
            let ffi_args = method.params.iter().map(|param| {
                let (name, ty) = (&param.name, &param.ty);
                match param.kind {
                    Kind::Str => quote!(::abi_stable::std_types::RStr::from_str(#name)),
                    Kind::OptionStr => quote! {
                        ::abi_stable::std_types::ROption::from(#name.map(::abi_stable::std_types::RStr::from_str))
                    },
                    Kind::Owned => quote!(<#ty as crate::ffi::crossing::Crossing>::into_ffi(#name)),
                }
            });
            let output = self.erased(&method.output);
            let from_ffi = match self.assoc(&method.output) {
                Some(assoc) => {
                    let ffi = &assoc.ffi;
                    quote!(<#output as crate::ffi::crossing::AssocFromFfi<#ffi>>::assoc_from_ffi)
                }
                None => quote!(<#output as crate::ffi::crossing::Returned>::from_ffi),
            };
            if method.is_async {
                quote! {
                    #(#docs)*
                    pub async fn #name(&self, #(#params),*) -> crate::PluginResult<#output> {
                        match self.object {
                            #object::Ffi(object) => self.calls.time(async move {
                                let value = object.#name(#(#ffi_args),*).await.into_result()?;
                                Ok(#from_ffi(value))
                            }).await,
                            #object::Local(object) => self.calls.time(object.#name(#(#arg_names),*)).await,
                        }
                    }
                }
            } else {
                quote! {
                    #(#docs)*
                    pub fn #name(&self, #(#params),*) -> #output {
                        match self.object {
                            #object::Ffi(object) => {
                                #from_ffi(object.#name(#(#ffi_args),*))
                            }
                            #object::Local(object) => object.clone().#name(#(#arg_names),*),
                        }
                    }
                }
            }
        });
        quote! {
            /// What an instance holds of one interface: the plugin's FFI object, or a
            /// driver built into the host.
            #[doc(hidden)]
            pub enum #object {
                Ffi(#boxed),
                Local(::std::sync::Arc<dyn #dyn_name>),
            }

            #[doc = #doc]
            pub struct #handle<'a> {
                object: &'a #object,
                calls: crate::ffi::host::Calls<'a>,
            }

            impl<'a> #handle<'a> {
                pub(crate) fn new(object: &'a #object, calls: crate::ffi::host::Calls<'a>) -> Self {
                    #handle { object, calls }
                }

                #(#methods)*
            }
        }
    }

    fn remote(&self) -> Tokens {
        let trait_name = &self.declaration.ident;
        let call = self.ident("", "Call");
        let handle = self.ident("", "Handle");
        let doc =
            format!("The calls of [`{trait_name}`] as plain values, for a plugin served in another process.");
        let remote: Vec<&Method> = if self.options.manual_remote {
            Vec::new()
        } else {
            self.methods.iter().filter(|m| m.is_async).collect()
        };
        let variants = remote.iter().map(|method| {
            let variant = camel(&method.name);
            let fields = method.params.iter().map(|param| {
                let (name, ty) = (&param.name, &param.ty);
                match param.kind {
                    Kind::Str => quote!(#name: String),
                    Kind::OptionStr => quote!(#name: Option<String>),
                    Kind::Owned => quote!(#name: #ty),
                }
            });
            quote!(#variant { #(#fields),* })
        });
        let arms = remote.iter().map(|method| {
            let (name, variant) = (&method.name, camel(&method.name));
            let fields = method.params.iter().map(|p| &p.name);
            let args = method.params.iter().map(borrowed_arg);
            quote! {
                #call::#variant { #(#fields),* } => {
                    crate::remote::Reply::reply(handle.#name(#(#args),*).await, respond)
                }
            }
        });
        let dispatch_body = if remote.is_empty() {
            quote! { let _ = (handle, respond); match self {} }
        } else {
            quote! { match self { #(#arms)* } }
        };
        let forwarder = (!self.options.manual_remote).then(|| {
            let methods = self.methods.iter().filter(|m| m.is_async).map(|method| {
                let (name, variant, output) = (&method.name, camel(&method.name), &method.output);
                let params = method.params.iter().map(|Param { name, ty, .. }| quote!(#name: #ty));
                let fields = method.params.iter().map(|param| {
                    let name = &param.name;
                    match param.kind {
                        Kind::Str => quote!(#name: #name.to_owned()),
                        Kind::OptionStr => quote!(#name: #name.map(str::to_owned)),
                        Kind::Owned => quote!(#name),
                    }
                });
                quote! {
                    fn #name(&self, #(#params),*)
                        -> impl ::std::future::Future<Output = crate::PluginResult<#output>> + Send
                    {
                        let call = crate::remote::Call::#trait_name(#call::#variant { #(#fields),* });
                        <#output as crate::remote::Fetch>::fetch(self, call)
                    }
                }
            });
            quote! {
                impl<T: crate::remote::Transport + crate::Driver> #trait_name for T {
                    #(#methods)*
                }
            }
        });
        quote! {
            #[doc = #doc]
            #[derive(Debug, ::serde::Serialize, ::serde::Deserialize)]
            pub enum #call {
                #(#variants,)*
            }

            impl #call {
                /// Runs the call on `handle` and hands its result to `respond`.
                pub async fn dispatch(self, handle: #handle<'_>, respond: impl crate::remote::Respond) {
                    #dispatch_body
                }
            }

            #forwarder
        }
    }
}

impl Method {
    fn parse(function: &mut syn::TraitItemFn) -> syn::Result<Method> {
        let sig = &function.sig;
        let is_async = sig.asyncness.is_some();
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(receiver)) if is_async && receiver.reference.is_some() && receiver.mutability.is_none() => {}
            Some(FnArg::Receiver(receiver)) if !is_async && receiver.colon_token.is_some() => {}
            _ => {
                return Err(Error::new(
                    sig.span(),
                    "an interface method is `async fn name(&self, …)`, or a provided `fn name(self: Arc<Self>, …)`",
                ))
            }
        }
        let mut params = Vec::new();
        for input in inputs {
            let FnArg::Typed(typed) = input else { unreachable!("only the first input is a receiver") };
            let Pat::Ident(pat) = &*typed.pat else {
                return Err(Error::new(typed.pat.span(), "name each parameter with a plain identifier"));
            };
            let kind = if is_str_ref(&typed.ty) {
                Kind::Str
            } else if option_of(&typed.ty).is_some_and(is_str_ref) {
                Kind::OptionStr
            } else {
                Kind::Owned
            };
            params.push(Param { name: pat.ident.clone(), ty: (*typed.ty).clone(), kind });
        }
        let ReturnType::Type(_, declared) = &sig.output else {
            return Err(Error::new(sig.span(), "an interface method returns a value"));
        };
        let output = if is_async {
            generic_arg(declared, "PluginResult").cloned().ok_or_else(|| {
                Error::new(declared.span(), "an async interface method returns PluginResult<T>")
            })?
        } else {
            if function.default.is_none() {
                return Err(Error::new(sig.span(), "a non-async interface method needs a default body"));
            }
            (**declared).clone()
        };
        Ok(Method {
            attrs: function.attrs.clone(),
            name: sig.ident.clone(),
            is_async,
            params,
            output,
            declared_output: (**declared).clone(),
            added: is_async && function.default.is_some(),
        })
    }
}

fn as_fn(item: &mut TraitItem) -> Option<&mut syn::TraitItemFn> {
    match item {
        TraitItem::Fn(function) => Some(function),
        _ => None,
    }
}

fn take_attr(attrs: &mut Vec<Attribute>, name: &str) -> Option<Attribute> {
    let index = attrs.iter().position(|a| a.path().is_ident(name))?;
    Some(attrs.remove(index))
}

fn parse_crossing(attr: &Attribute) -> syn::Result<(Type, Type)> {
    let (mut ffi, mut erased) = (None, None);
    attr.parse_nested_meta(|meta| {
        let value: Type = meta.value()?.parse()?;
        if meta.path.is_ident("ffi") {
            ffi = Some(value);
        } else if meta.path.is_ident("erased") {
            erased = Some(value);
        } else {
            return Err(meta.error("expected `ffi` or `erased`"));
        }
        Ok(())
    })?;
    match (ffi, erased) {
        (Some(ffi), Some(erased)) => Ok((ffi, erased)),
        _ => Err(Error::new(attr.span(), "#[crossing] needs both `ffi = …` and `erased = …`")),
    }
}

/// The name a parameter has in the FFI trait: durations travel as `…_millis`.
fn ffi_param_name(param: &Param) -> Ident {
    let is_duration = last_ident(&param.ty).is_some_and(|i| i == "Duration")
        || option_of(&param.ty).and_then(last_ident).is_some_and(|i| i == "Duration");
    if is_duration {
        format_ident!("{}_millis", param.name)
    } else {
        param.name.clone()
    }
}

/// How an owned parameter is passed to the trait method: borrowed text re-borrowed.
fn borrowed_arg(param: &Param) -> Tokens {
    let name = &param.name;
    match param.kind {
        Kind::Str => quote!(&#name),
        Kind::OptionStr => quote!(#name.as_deref()),
        Kind::Owned => quote!(#name),
    }
}

fn camel(name: &Ident) -> Ident {
    let camel: String = name
        .to_string()
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    Ident::new(&camel, name.span())
}

fn is_str_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(r) if r.mutability.is_none() && last_ident(&r.elem).is_some_and(|i| i == "str"))
}

fn last_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// `T` of `Wrapper<T>` when `ty` is spelled `Wrapper<T>`.
fn generic_arg<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}

fn option_of(ty: &Type) -> Option<&Type> {
    generic_arg(ty, "Option")
}

/// How a plain type is spelled across the boundary. The spelling must name the same
/// type as the plain type's `Crossing::Ffi` (or `Returned::Ffi`): the generated code
/// converts through those impls, so a disagreement is a compile error, not a bad layout.
fn ffi_type(ty: &Type) -> syn::Result<Tokens> {
    let std = quote!(::abi_stable::std_types);
    if is_str_ref(ty) {
        return Ok(quote!(#std::RStr<'_>));
    }
    match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => return Ok(quote!(())),
        Type::Tuple(tuple) => {
            let names: Vec<String> =
                tuple.elems.iter().map(|e| quote!(#e).to_string().replace(' ', "")).collect();
            return match names.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["String", "Vec<u8>"] => Ok(quote!(crate::ffi::FfiEntry)),
                ["String", "String"] => Ok(quote!(crate::ffi::FfiHeader)),
                ["u32", "Option<u64>"] => Ok(quote!(crate::ffi::FfiCommitted)),
                _ => Err(Error::new(
                    ty.span(),
                    "no FFI form for this tuple: add one to plugin-abi-macros' ffi_type",
                )),
            };
        }
        _ => {}
    }
    let Some(name) = last_ident(ty) else {
        return Err(Error::new(
            ty.span(),
            "no FFI form for this type: add one to plugin-abi-macros' ffi_type",
        ));
    };
    let inner = |wrapper: &str| generic_arg(ty, wrapper).map(ffi_type).transpose();
    Ok(match name.to_string().as_str() {
        "u8" | "u32" | "u64" | "i64" | "bool" => quote!(#ty),
        "String" => quote!(#std::RString),
        "Duration" | "TransactionId" => quote!(u64),
        "Option" if option_of(ty).and_then(last_ident).is_some_and(|i| i == "Duration") => quote!(u64),
        "Option" => {
            let inner = inner("Option")?;
            quote!(#std::ROption<#inner>)
        }
        "Vec" => {
            let inner = inner("Vec")?;
            quote!(#std::RVec<#inner>)
        }
        "PluginResult" => {
            let inner = inner("PluginResult")?;
            quote!(#std::RResult<#inner, crate::PluginError>)
        }
        "KeyTtl" => quote!(crate::ffi::FfiTtl),
        "CasResult" => quote!(crate::ffi::FfiCas),
        "Subscription" => quote!(crate::ffi::MessageStreamBox),
        "RecordFeed" | "GroupFeed" => quote!(crate::ffi::EventStreamBox),
        "Feed" => {
            let item = generic_arg(ty, "Feed").map(|t| quote!(#t).to_string().replace(' ', ""));
            match item.as_deref() {
                Some("(String,Vec<u8>)") => quote!(crate::ffi::EntryStreamBox),
                Some("Vec<u8>") => quote!(crate::ffi::ChunkStreamBox),
                _ => return Err(Error::new(ty.span(), "no FFI stream for this feed's items")),
            }
        }
        other => {
            let ffi = format_ident!("Ffi{}", other);
            quote!(crate::ffi::#ffi)
        }
    })
}

/// Gives every elided reference in a type the lifetime `'life`.
struct NameLifetimes;

impl VisitMut for NameLifetimes {
    fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
        if reference.lifetime.is_none() {
            reference.lifetime = Some(syn::Lifetime::new("'life", Span::call_site()));
        }
        syn::visit_mut::visit_type_reference_mut(self, reference);
    }
}
