//! # weir-macros
//!
//! `#[derive(Row)]` for [weir-sql](https://docs.rs/weir-sql)'s `Row` trait. Use it
//! through `weir_sql::Row` (or `weir::Row`), not from this crate directly: the
//! generated code names `weir_sql` (or `weir::sql`), whichever of the two your
//! `Cargo.toml` depends on.

use std::collections::HashMap;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::{quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    parse_macro_input, parse_quote, Data, DeriveInput, Error, Expr, ExprLit, Fields, Lit, LitStr,
    Result, Token, Type,
};

/// Implement weir-sql's `Row` for a struct with named fields: each field becomes a
/// column named after it, in declaration order, its SQL type and nullability taken
/// from the field's `ToValue` implementation (`Option<T>` is nullable).
///
/// Field attributes:
/// - `#[weir(rename = "column name")]`: the column's name differs from the field's.
/// - `#[weir(skip)]`: the field is not written (its type need not be `ToValue`).
///
/// ```
/// use weir_sql::{ColumnType, Row, Value};
///
/// #[derive(Row)]
/// struct Click {
///     user: String,
///     #[weir(rename = "at")]
///     at_ms: i64,
///     referrer: Option<String>,
///     #[weir(skip)]
///     cached_html: String,
/// }
///
/// let cols = Click::columns()?;
/// let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
/// assert_eq!(names, ["user", "at", "referrer"]);
/// assert_eq!((cols[1].ty, cols[2].nullable), (ColumnType::BigInt, true));
///
/// let click = Click { user: "ada".into(), at_ms: 7, referrer: None, cached_html: String::new() };
/// let mut values = Vec::new();
/// click.values(&mut values);
/// assert_eq!(values, [Value::Text("ada"), Value::BigInt(7), Value::Null(ColumnType::Text)]);
/// # Ok::<(), weir_sql::Error>(())
/// ```
///
/// Lifetimes and type parameters work; a type parameter used by a written field must
/// implement `ToValue` (the derive adds that bound), and the struct must be
/// `Send + Sync` like every `Row`:
///
/// ```
/// use weir_sql::{Row, ToValue, Value};
///
/// #[derive(Row)]
/// struct Tagged<'a, T> {
///     tag: &'a str,
///     value: T,
/// }
///
/// let row = Tagged { tag: "n", value: 5_i32 };
/// let mut values = Vec::new();
/// row.values(&mut values);
/// assert_eq!(values, [Value::Text("n"), Value::Int(5)]);
/// ```
///
/// Errors are reported at compile time: an enum, a tuple or unit struct, a union, an
/// unknown `weir` attribute, a malformed `rename`, a column name weir would refuse,
/// two fields with the same column name (compared ignoring ASCII case, as SQLite and
/// MySQL do), or a struct none of whose fields is written.
///
/// ```compile_fail
/// #[derive(weir_sql::Row)]
/// struct Twice {
///     id: i64,
///     #[weir(rename = "id")]
///     other_id: i64,
/// }
/// ```
#[proc_macro_derive(Row, attributes(weir))]
pub fn derive_row(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// The longest column name weir accepts (weir-sql's `MAX_IDENT_BYTES`).
const MAX_COLUMN_BYTES: usize = 63;

/// A field that becomes a column.
struct Written<'a> {
    field: &'a syn::Ident,
    ty: &'a Type,
    column: String,
    /// Where to point when the column's name is wrong: the `rename` string, else the
    /// field's name.
    name_span: Span,
}

fn expand(input: &DeriveInput) -> Result<TokenStream2> {
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            Fields::Unnamed(f) => {
                return Err(Error::new(
                    f.span(),
                    format!(
                        "#[derive(Row)] needs named fields (each names a column); `{name}` is a tuple struct"
                    ),
                ))
            }
            Fields::Unit => {
                return Err(Error::new(
                    name.span(),
                    format!("#[derive(Row)] needs named fields (each names a column); `{name}` is a unit struct"),
                ))
            }
        },
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span,
                format!("#[derive(Row)] supports only structs with named fields; `{name}` is an enum"),
            ))
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span,
                format!("#[derive(Row)] supports only structs with named fields; `{name}` is a union"),
            ))
        }
    };
    if let Some(attr) = input.attrs.iter().find(|a| a.path().is_ident("weir")) {
        return Err(Error::new_spanned(
            attr,
            format!(
                "#[weir(...)] is not supported on the struct `{name}`; put `rename` or `skip` on a field"
            ),
        ));
    }

    let mut written = Vec::new();
    for field in fields {
        let Some(ident) = field.ident.as_ref() else {
            continue;
        };
        let attrs = FieldAttrs::parse(field, ident)?;
        if attrs.skip {
            continue;
        }
        let (column, name_span) = match attrs.rename {
            Some(lit) => (lit.value(), lit.span()),
            None => (ident.unraw().to_string(), ident.span()),
        };
        written.push(Written {
            field: ident,
            ty: &field.ty,
            column,
            name_span,
        });
    }
    if written.is_empty() {
        return Err(Error::new(
            name.span(),
            format!(
                "`{name}` has no field to write: #[derive(Row)] needs at least one field without #[weir(skip)]"
            ),
        ));
    }
    let mut seen: HashMap<String, &Written<'_>> = HashMap::new();
    for w in &written {
        if let Some(first) = seen.insert(w.column.to_ascii_lowercase(), w) {
            return Err(Error::new(
                w.name_span,
                format!(
                    "duplicate column name `{}`: fields `{}` and `{}` of `{name}` both write it \
                     (column names are compared ignoring ASCII case, as SQLite and MySQL do)",
                    w.column,
                    first.field.unraw(),
                    w.field.unraw()
                ),
            ));
        }
    }

    let krate = weir_sql_path()?;
    let mut generics = input.generics.clone();
    let params: Vec<syn::Ident> = input
        .generics
        .type_params()
        .map(|p| p.ident.clone())
        .collect();
    if !params.is_empty() {
        let where_clause = generics.make_where_clause();
        for w in &written {
            if mentions_any(w.ty.to_token_stream(), &params) {
                let ty = w.ty;
                where_clause
                    .predicates
                    .push(parse_quote!(#ty: #krate::ToValue));
            }
        }
        where_clause
            .predicates
            .push(parse_quote!(Self: ::std::marker::Send + ::std::marker::Sync));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let columns = written.iter().map(|w| {
        let field = w.field;
        let column = LitStr::new(&w.column, w.name_span);
        quote_spanned! {w.ty.span()=>
            #krate::Column::of(#column, |r: &Self| &r.#field)?
        }
    });
    let values = written.iter().map(|w| {
        let field = w.field;
        quote_spanned! {w.ty.span()=>
            out.push(#krate::ToValue::to_value(&self.#field));
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::Row for #name #ty_generics #where_clause {
            fn columns() -> #krate::Result<::std::vec::Vec<#krate::Column>> {
                ::std::result::Result::Ok(::std::vec![#(#columns),*])
            }
            fn values<'__weir_row>(
                &'__weir_row self,
                out: &mut ::std::vec::Vec<#krate::Value<'__weir_row>>,
            ) {
                #(#values)*
            }
        }
    })
}

/// A field's `#[weir(...)]` attributes.
#[derive(Default)]
struct FieldAttrs {
    rename: Option<LitStr>,
    skip: bool,
}

impl FieldAttrs {
    fn parse(field: &syn::Field, ident: &syn::Ident) -> Result<Self> {
        let mut out = FieldAttrs::default();
        let mut skip_span = None;
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("weir")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    if skip_span.is_some() {
                        return Err(meta.error(format!("duplicate `skip` on field `{ident}`")));
                    }
                    skip_span = Some(meta.path.span());
                    out.skip = true;
                    Ok(())
                } else if meta.path.is_ident("rename") {
                    if out.rename.is_some() {
                        return Err(meta.error(format!("duplicate `rename` on field `{ident}`")));
                    }
                    if !meta.input.peek(Token![=]) {
                        return Err(meta.error(format!(
                            "`rename` on field `{ident}` needs a value: #[weir(rename = \"column_name\")]"
                        )));
                    }
                    let value: Expr = meta.value()?.parse()?;
                    let lit = match value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => s,
                        other => {
                            return Err(Error::new_spanned(
                                other,
                                format!(
                                    "`rename` on field `{ident}` takes a string literal: #[weir(rename = \"column_name\")]"
                                ),
                            ))
                        }
                    };
                    check_column_name(&lit, ident)?;
                    out.rename = Some(lit);
                    Ok(())
                } else {
                    let path = meta.path.to_token_stream().to_string().replace(' ', "");
                    Err(meta.error(format!(
                        "unknown weir attribute `{path}` on field `{ident}`; expected `rename = \"...\"` or `skip`"
                    )))
                }
            })?;
        }
        if let (Some(skip), Some(rename)) = (skip_span, &out.rename) {
            let mut err = Error::new(
                rename.span(),
                format!(
                    "field `{ident}` has both `skip` and `rename`; a skipped field has no column"
                ),
            );
            err.combine(Error::new(skip, "skipped here"));
            return Err(err);
        }
        Ok(out)
    }
}

/// The checks weir-sql's `Ident::new` makes at run time, made here so that a bad
/// `rename` fails to compile instead.
fn check_column_name(lit: &LitStr, field: &syn::Ident) -> Result<()> {
    let name = lit.value();
    let problem = if name.is_empty() {
        Some("is empty".to_owned())
    } else if name.contains('\0') {
        Some("contains a NUL byte".to_owned())
    } else if name.len() > MAX_COLUMN_BYTES {
        Some(format!(
            "is {} bytes long, at most {MAX_COLUMN_BYTES} are allowed",
            name.len()
        ))
    } else if name.ends_with(' ') {
        Some("ends with a space (MySQL drops it)".to_owned())
    } else if name.chars().any(|c| u32::from(c) > 0xFFFF) {
        Some(
            "contains a character outside the Basic Multilingual Plane (MySQL refuses it)"
                .to_owned(),
        )
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::new(
            lit.span(),
            format!("column name {name:?} for field `{field}` {p}"),
        )),
        None => Ok(()),
    }
}

/// Whether `tokens` name one of the type parameters `params` (then the field's type
/// needs a `ToValue` bound).
fn mentions_any(tokens: TokenStream2, params: &[syn::Ident]) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i),
        TokenTree::Group(g) => mentions_any(g.stream(), params),
        _ => false,
    })
}

/// The path of weir-sql as the crate being compiled sees it: `::weir_sql` (or its
/// renamed name) when it depends on weir-sql, else `::weir::sql` when it depends on
/// the facade `weir`.
fn weir_sql_path() -> Result<TokenStream2> {
    let direct = crate_name("weir-sql");
    match direct {
        // Inside weir-sql itself, including its doc tests and examples (where `crate`
        // would be the test's crate): weir-sql declares `extern crate self as
        // weir_sql`, so the absolute path works in every one of them.
        Ok(FoundCrate::Itself) => return Ok(quote!(::weir_sql)),
        Ok(FoundCrate::Name(n)) => {
            let id = syn::Ident::new(&n, Span::call_site());
            return Ok(quote!(::#id));
        }
        Err(_) => {}
    }
    match crate_name("weir") {
        Ok(FoundCrate::Itself) => Ok(quote!(crate::sql)),
        Ok(FoundCrate::Name(n)) => {
            let id = syn::Ident::new(&n, Span::call_site());
            Ok(quote!(::#id::sql))
        }
        Err(e) => Err(Error::new(
            Span::call_site(),
            format!(
                "#[derive(Row)] generates code for weir-sql: add `weir` or `weir-sql` to [dependencies] in Cargo.toml ({e})"
            ),
        )),
    }
}
