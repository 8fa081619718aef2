//! The record of defaults a loader filled in for keys a config file leaves out.
//!
//! Real Hugging Face and open_clip configs omit keys whose default is right, so defaults
//! are applied; but a key left out by mistake (a hand-written `config.json` without
//! `hidden_size`) would then surface as a puzzling validation error. [`Assumed`] keeps
//! what was assumed so that errors and callers can say so.

use std::fmt;

use super::field::{Field, Leaf};
use super::ConfigError;

/// Whose defaults were applied: the wording of notes depends on the file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defaults {
    /// transformers' `CLIPVisionConfig` / `CLIPTextConfig` / `CLIPConfig`.
    HuggingFace,
    /// open_clip's `CLIPVisionCfg` / `CLIPTextCfg`.
    OpenClip,
}

/// One key that was missing and the default assumed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct AssumedDefault {
    field: String,
    value: String,
    defaults: Defaults,
    /// The [`ClipConfig`](super::ClipConfig) fields (`vision.hidden_size`, ...) the key
    /// determines, to find the defaults relevant to a validation error.
    feeds: &'static [&'static str],
}

impl AssumedDefault {
    /// Dotted JSON path of the missing key, e.g. `vision_config.hidden_size`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The value assumed, as JSON-like text (`768`, `"quick_gelu"`).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for AssumedDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, value) = (&self.field, &self.value);
        match self.defaults {
            Defaults::HuggingFace => write!(
                f,
                "{field} was missing from config.json, HF's default {value} was assumed"
            ),
            Defaults::OpenClip => write!(
                f,
                "{field} was missing, open_clip's default {value} was assumed"
            ),
        }
    }
}

/// A whole sub-config (`vision_config`, `text_cfg`) that was missing.
#[derive(Debug, Clone, PartialEq)]
struct MissingSection {
    section: String,
    defaults: Defaults,
}

impl fmt::Display for MissingSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = &self.section;
        let tower = if section.contains("vision") {
            "Vision"
        } else {
            "Text"
        };
        match self.defaults {
            Defaults::HuggingFace => write!(
                f,
                "config.json has no {section}; HF's CLIP{tower}Config defaults were assumed"
            ),
            Defaults::OpenClip => write!(
                f,
                "the open_clip config has no {section}; open_clip's CLIP{tower}Cfg defaults were assumed"
            ),
        }
    }
}

/// Which defaults were assumed while reading a config file, returned next to the config
/// by [`ClipConfig::from_json_file_noting_defaults`](super::ClipConfig::from_json_file_noting_defaults)
/// and friends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assumed {
    defaults: Vec<AssumedDefault>,
    sections: Vec<MissingSection>,
}

impl Assumed {
    /// Every key that was missing, with the value assumed, in reading order.
    pub fn defaults(&self) -> &[AssumedDefault] {
        &self.defaults
    }

    /// The value assumed for a dotted JSON path, `None` if the file had the key.
    pub fn value_of(&self, field: &str) -> Option<&str> {
        self.defaults
            .iter()
            .find(|d| d.field == field)
            .map(|d| d.value.as_str())
    }

    /// Sub-configs missing entirely (`vision_config`, `text_config`, `vision_cfg`, ...),
    /// whose every key took its default.
    pub fn missing_sections(&self) -> Vec<&str> {
        self.sections.iter().map(|s| s.section.as_str()).collect()
    }

    /// Whether nothing was assumed.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.sections.is_empty()
    }

    /// A sentence per missing sub-config ("config.json has no vision_config; HF's
    /// CLIPVisionConfig defaults were assumed"), for a caller to show; `None` when every
    /// sub-config was present. Single missing keys are not mentioned: real configs omit
    /// many keys on purpose.
    pub fn note(&self) -> Option<String> {
        if self.sections.is_empty() {
            return None;
        }
        let notes: Vec<String> = self.sections.iter().map(ToString::to_string).collect();
        Some(notes.join("; "))
    }

    /// The defaults that determine any of `fields` ([`ClipConfig`](super::ClipConfig)
    /// paths), as one clause for an error message.
    pub(crate) fn note_for(&self, fields: &[&str]) -> Option<String> {
        let relevant: Vec<String> = self
            .defaults
            .iter()
            .filter(|d| d.feeds.iter().any(|f| fields.contains(f)))
            .map(ToString::to_string)
            .collect();
        (!relevant.is_empty()).then(|| relevant.join("; "))
    }

    /// Records that the sub-config at `section` was missing.
    pub(crate) fn missing_section(&mut self, section: &str, defaults: Defaults) {
        self.sections.push(MissingSection {
            section: section.to_string(),
            defaults,
        });
    }

    /// The value of `field` at `path`, or `default` (recorded) when the key is absent.
    pub(crate) fn take<T: Leaf + fmt::Display>(
        &mut self,
        field: Field<T>,
        path: &str,
        default: T,
        defaults: Defaults,
        feeds: &'static [&'static str],
    ) -> Result<T, ConfigError> {
        match field.resolve(path)? {
            Some(value) => Ok(value),
            None => {
                self.defaults.push(AssumedDefault {
                    field: path.to_string(),
                    value: default.to_string(),
                    defaults,
                    feeds,
                });
                Ok(default)
            }
        }
    }
}

/// Reads the keys of one sub-config (at `prefix`), recording the defaults it applies.
pub(crate) struct Reader<'a> {
    pub(crate) assumed: &'a mut Assumed,
    pub(crate) prefix: &'a str,
    pub(crate) defaults: Defaults,
}

impl Reader<'_> {
    /// Dotted path of `key` under the prefix.
    pub(crate) fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The value of `key`, or `default` (recorded as assumed) when absent.
    pub(crate) fn take<T: Leaf + fmt::Display>(
        &mut self,
        field: Field<T>,
        key: &str,
        default: T,
        feeds: &'static [&'static str],
    ) -> Result<T, ConfigError> {
        let path = self.path(key);
        self.assumed
            .take(field, &path, default, self.defaults, feeds)
    }

    /// The value of an optional key without a default (`None` when absent).
    pub(crate) fn opt<T: Leaf>(
        &self,
        field: Field<T>,
        key: &str,
    ) -> Result<Option<T>, ConfigError> {
        field.resolve(&self.path(key))
    }
}
