//! Every bad flag value at once. clap stops at the first value a parser
//! refuses; the agent's flags use [`checked`] parsers instead, which keep
//! clap's error as the value, so that turning the arguments into a
//! configuration can name every bad one in a single run (as linkerd2-proxy
//! reports every invalid variable), each in clap's own words: one bad
//! value reads exactly as clap would have printed it.

use std::ffi::OsStr;
use std::sync::Arc;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::parser::ValueSource;

/// A flag's value, or clap's error for it.
#[derive(Clone, Debug)]
pub(crate) struct Checked<T>(Result<T, Arc<clap::Error>>);

impl<T> Checked<T> {
    /// The value, or the refusal as the error clap would have exited with.
    pub(crate) fn value(self) -> Result<T, clap::Error> {
        self.0.map_err(|refused| combined(vec![refused]))
    }
}

/// `value_parser = checked(parser)`: `parser`, its refusals kept for later.
/// The possible values are `parser`'s, so `--help` lists the same.
pub(crate) fn checked<P: TypedValueParser>(parser: P) -> Checking<P> {
    Checking(parser)
}

#[derive(Clone)]
pub(crate) struct Checking<P>(P);

impl<P: TypedValueParser> TypedValueParser for Checking<P> {
    type Value = Checked<P::Value>;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Self::Value, clap::Error> {
        Ok(Checked(self.0.parse_ref(cmd, arg, value).map_err(Arc::new)))
    }

    fn parse_ref_(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
        source: ValueSource,
    ) -> Result<Self::Value, clap::Error> {
        Ok(Checked(
            self.0.parse_ref_(cmd, arg, value, source).map_err(Arc::new),
        ))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.0.possible_values()
    }
}

/// A field of checked values: one, optional, or a list.
pub(crate) trait Refusals {
    fn refusals(&self) -> Vec<Arc<clap::Error>>;
}

impl<T> Refusals for Checked<T> {
    fn refusals(&self) -> Vec<Arc<clap::Error>> {
        self.0.as_ref().err().cloned().into_iter().collect()
    }
}

impl<T> Refusals for Option<Checked<T>> {
    fn refusals(&self) -> Vec<Arc<clap::Error>> {
        self.iter().flat_map(Refusals::refusals).collect()
    }
}

impl<T> Refusals for Vec<Checked<T>> {
    fn refusals(&self) -> Vec<Arc<clap::Error>> {
        self.iter().flat_map(Refusals::refusals).collect()
    }
}

/// One error naming every value `fields` refused, in their order; None
/// when all are valid.
pub(crate) fn refused(fields: &[&dyn Refusals]) -> Option<clap::Error> {
    let refusals: Vec<_> = fields.iter().flat_map(|field| field.refusals()).collect();
    (!refusals.is_empty()).then(|| combined(refusals))
}

const TRY_HELP: &str = "For more information, try '--help'.";

/// A single refusal is clap's own error, untouched. Several become one
/// error: each refusal's message on its own `error:` line, then clap's
/// pointer to `--help` once.
fn combined(mut refusals: Vec<Arc<clap::Error>>) -> clap::Error {
    if refusals.len() == 1 {
        match Arc::try_unwrap(refusals.remove(0)) {
            Ok(alone) => return alone,
            Err(shared) => refusals.push(shared),
        }
    }
    let lines: Vec<String> = refusals
        .iter()
        .map(|refusal| {
            let text = refusal.to_string();
            let text = text.trim_end();
            let text = text.strip_suffix(TRY_HELP).unwrap_or(text).trim_end();
            text.strip_prefix("error: ").unwrap_or(text).to_string()
        })
        .collect();
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("{}\n\n{TRY_HELP}\n", lines.join("\nerror: ")),
    )
}
