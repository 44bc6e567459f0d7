// Configuration and command structs are read from JSON objects only. serde's derive also reads a
// struct from an array of its fields in order, so `[]` would pass as "every field defaulted".

use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};

/// A struct whose derived (remote = "Self") deserializer is reached through [`ObjectOnly`].
pub(crate) trait FromObject: Sized {
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Accepts a map and hands it to the derived deserializer; anything else is "invalid type:
/// sequence, expected a JSON object", with serde_json's line and column.
pub(crate) struct ObjectOnly<T>(pub PhantomData<T>);

impl<'de, T: FromObject> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// For types declared `#[serde(remote = "Self")]`: the serde traits, with deserialization
/// limited to JSON objects and serialization unchanged.
macro_rules! object_only {
    ($($ty:ty),* $(,)?) => {$(
        impl crate::objects::FromObject for $ty {
            fn from_map<'de, A: serde::de::MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
                // The inherent function serde generates for remote = "Self".
                <$ty>::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(crate::objects::ObjectOnly::<$ty>(std::marker::PhantomData))
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                <$ty>::serialize(self, serializer)
            }
        }
    )*};
}

pub(crate) use object_only;
