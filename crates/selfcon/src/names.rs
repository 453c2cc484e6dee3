//! The names an enum takes on the command line, in `config.json` and in messages, written once
//! per variant: each enum derives them with strum (`Display` and `IntoStaticStr` give the name,
//! `EnumMessage::get_serializations` every accepted spelling, `EnumIter` the choices) and
//! [`named_enum!`](crate::named_enum) derives from those its `FromStr` (an unknown name is a
//! one-line error naming the flag and the choices) and its serde form (the name as a string).

use strum::{EnumMessage, IntoEnumIterator};

use crate::error::{Error, Result};

/// The enum's name of a value (what `Display` writes): `Architecture::ResNet18.name()` is
/// "resnet18".
pub trait Named: Copy + Into<&'static str> {
    fn name(self) -> &'static str {
        self.into()
    }
}

impl<E: Copy + Into<&'static str> + IntoEnumIterator + EnumMessage> Named for E {}

/// The variant spelled `s` (any of its serializations; in any ASCII case if `ignore_case`), else
/// `--flag: unknown WHAT 's' (choose from ...)`.
pub fn parse<E: Named + IntoEnumIterator + EnumMessage>(
    s: &str,
    flag: &str,
    what: &str,
    ignore_case: bool,
) -> Result<E> {
    let same = |name: &&str| if ignore_case { name.eq_ignore_ascii_case(s) } else { *name == s };
    E::iter().find(|e| e.get_serializations().iter().any(same)).ok_or_else(|| {
        let names: Vec<&str> = E::iter().map(Named::name).collect();
        Error::option(flag, format!("unknown {what} '{s}' (choose from {})", names.join(", ")))
    })
}

/// `FromStr` (through [`parse`]) and serde (the name as a string) for an enum deriving strum's
/// `Display`, `IntoStaticStr`, `EnumIter` and `EnumMessage`: `named_enum!(Method, "method", "method")`
/// (flag, what the names are); `ignore_case` after them accepts any ASCII case; `parse_only`
/// leaves serde to the enum (whose files have always stored other names).
#[macro_export]
macro_rules! named_enum {
    ($ty:ty, $flag:literal, $what:literal) => {
        $crate::named_enum!($ty, $flag, $what, parse_only);
        $crate::named_enum!(@serde $ty);
    };
    ($ty:ty, $flag:literal, $what:literal, ignore_case) => {
        $crate::named_enum!(@from_str $ty, $flag, $what, true);
        $crate::named_enum!(@serde $ty);
    };
    ($ty:ty, $flag:literal, $what:literal, parse_only) => {
        $crate::named_enum!(@from_str $ty, $flag, $what, false);
    };
    (@from_str $ty:ty, $flag:literal, $what:literal, $ignore_case:literal) => {
        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                $crate::names::parse(s, $flag, $what, $ignore_case)
            }
        }
    };
    (@serde $ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str($crate::names::Named::name(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
