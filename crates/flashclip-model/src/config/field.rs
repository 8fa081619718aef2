//! One JSON value of a config, deserialized without ever failing so that the conversion,
//! which knows the key's dotted path, can report a wrong type with that path.
//!
//! serde's own type errors name neither the key nor the value found, so leaves are read
//! as [`Field`]s and checked afterwards by [`Field::resolve`].

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::ConfigError;

/// A value a [`Field`] can hold.
pub(crate) trait Leaf: Sized {
    /// What the value must be, for error messages ("a non-negative integer").
    const EXPECTED: &'static str;
    /// The value, or why it is not one.
    fn parse(value: &Value) -> Result<Self, Bad>;
}

/// Why a JSON value is not a valid [`Leaf`].
#[derive(Debug, Clone)]
pub(crate) enum Bad {
    /// It has the wrong type or range.
    Type,
    /// It is well-formed but describes something unsupported (the reason).
    Unsupported(String),
}

/// A config key as found in the JSON: absent (or `null`, which HF writes for unset keys),
/// a valid value, or an invalid one kept for the error message.
#[derive(Debug, Clone, Default)]
pub(crate) enum Field<T> {
    #[default]
    Absent,
    Present(T),
    Invalid(Value, Bad),
}

impl<'de, T: Leaf> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(match value {
            Value::Null => Field::Absent,
            value => match T::parse(&value) {
                Ok(parsed) => Field::Present(parsed),
                Err(bad) => Field::Invalid(value, bad),
            },
        })
    }
}

impl<T: Leaf> Field<T> {
    /// Whether the key holds anything (valid or not).
    pub(crate) fn is_given(&self) -> bool {
        !matches!(self, Field::Absent)
    }

    /// The value, `None` when absent, or an error naming `path`.
    pub(crate) fn resolve(self, path: &str) -> Result<Option<T>, ConfigError> {
        match self {
            Field::Absent => Ok(None),
            Field::Present(value) => Ok(Some(value)),
            Field::Invalid(value, bad) => Err(match bad {
                Bad::Unsupported(why) => ConfigError::Unsupported {
                    what: format!("{path} = {}: {why}", shorten(&value)),
                },
                Bad::Type => ConfigError::WrongType {
                    field: path.to_string(),
                    expected: T::EXPECTED,
                    found: shorten(&value),
                },
            }),
        }
    }

    /// The value, or an error naming `path` when absent.
    pub(crate) fn required(self, path: &str) -> Result<T, ConfigError> {
        self.resolve(path)?
            .ok_or_else(|| ConfigError::MissingField {
                field: path.to_string(),
            })
    }
}

/// The JSON text of a value, cut short so that a whole object passed by mistake keeps the
/// message readable.
fn shorten(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 80 {
        let cut = (0..=77)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn as_usize(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn as_u32(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

impl Leaf for usize {
    const EXPECTED: &'static str = "a non-negative integer";
    fn parse(value: &Value) -> Result<Self, Bad> {
        as_usize(value).ok_or(Bad::Type)
    }
}

impl Leaf for f64 {
    const EXPECTED: &'static str = "a number";
    fn parse(value: &Value) -> Result<Self, Bad> {
        value.as_f64().ok_or(Bad::Type)
    }
}

impl Leaf for bool {
    const EXPECTED: &'static str = "true or false";
    fn parse(value: &Value) -> Result<Self, Bad> {
        value.as_bool().ok_or(Bad::Type)
    }
}

impl Leaf for String {
    const EXPECTED: &'static str = "a string";
    fn parse(value: &Value) -> Result<Self, Bad> {
        value.as_str().map(str::to_string).ok_or(Bad::Type)
    }
}

/// Any JSON value: for keys whose mere presence matters (`timm_model_name`) or whose shape
/// is checked by hand (open_clip's `layers`, a list for ResNets).
impl Leaf for Value {
    const EXPECTED: &'static str = "any value";
    fn parse(value: &Value) -> Result<Self, Bad> {
        Ok(value.clone())
    }
}

/// A 32-bit token id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenId(pub u32);

impl Leaf for TokenId {
    const EXPECTED: &'static str = "a 32-bit token id";
    fn parse(value: &Value) -> Result<Self, Bad> {
        as_u32(value).map(TokenId).ok_or(Bad::Type)
    }
}

/// A token id that HF may also write as a one-element list (`"eos_token_id": [49407]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenIdOrList(pub u32);

impl Leaf for TokenIdOrList {
    const EXPECTED: &'static str = "a 32-bit token id";
    fn parse(value: &Value) -> Result<Self, Bad> {
        match value {
            Value::Array(items) => match items.as_slice() {
                [single] => as_u32(single).map(TokenIdOrList).ok_or(Bad::Type),
                _ => Err(Bad::Unsupported(
                    "several ids are listed; exactly one is supported".into(),
                )),
            },
            other => as_u32(other).map(TokenIdOrList).ok_or(Bad::Type),
        }
    }
}

/// A square side in pixels: an integer, or a `[height, width]` pair with equal values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side(pub usize);

impl Leaf for Side {
    const EXPECTED: &'static str = "a non-negative integer or a [height, width] pair";
    fn parse(value: &Value) -> Result<Self, Bad> {
        match value {
            Value::Array(sides) => match sides.as_slice() {
                [h, w] => match (as_usize(h), as_usize(w)) {
                    (Some(h), Some(w)) if h == w => Ok(Side(h)),
                    (Some(_), Some(_)) => {
                        Err(Bad::Unsupported("only square sides are supported".into()))
                    }
                    _ => Err(Bad::Type),
                },
                _ => Err(Bad::Type),
            },
            other => as_usize(other).map(Side).ok_or(Bad::Type),
        }
    }
}

/// A nested JSON object read into the serde struct `T`.
#[derive(Debug, Clone)]
pub(crate) struct Section<T>(pub T);

impl<T: for<'de> Deserialize<'de>> Leaf for Section<T> {
    const EXPECTED: &'static str = "a JSON object";
    fn parse(value: &Value) -> Result<Self, Bad> {
        // Checked first: serde's derived structs would also accept a JSON list.
        if !value.is_object() {
            return Err(Bad::Type);
        }
        // Cannot fail for the config structs, whose keys are all `Field`s.
        T::deserialize(value.clone())
            .map(Section)
            .map_err(|_| Bad::Type)
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for TokenIdOrList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// open_clip's vision `layers`: a count, or a list of stage depths for a ResNet tower.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layers {
    Count(usize),
    ResNet,
}

impl Leaf for Layers {
    const EXPECTED: &'static str = "a non-negative integer";
    fn parse(value: &Value) -> Result<Self, Bad> {
        match value {
            Value::Array(_) => Ok(Layers::ResNet),
            other => as_usize(other).map(Layers::Count).ok_or(Bad::Type),
        }
    }
}

/// Parses the top level of a config file into `T`, which must be a JSON object.
pub(crate) fn root_object<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, ConfigError> {
    Section::<T>::parse(value)
        .map(|Section(t)| t)
        .map_err(|_| ConfigError::WrongType {
            field: "<root>".into(),
            expected: Section::<T>::EXPECTED,
            found: shorten(value),
        })
}

impl std::fmt::Display for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layers::Count(n) => n.fmt(f),
            Layers::ResNet => f.write_str("a list of stage depths"),
        }
    }
}
